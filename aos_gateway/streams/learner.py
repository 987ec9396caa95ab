"""Learning from the Kafka experience history: replay, learn every state, publish what changed.

Used by ``aos experience mine | replay | reset``, which read ``aos.experience.v1`` from the
beginning (the replayable source of truth) and learn with
:func:`aos_gateway.experience.learning.learn_all`, and by the worker's periodic timer
(``experience.mine_interval_s``; each pass in a process of its own, :func:`pass_in_child`), which
does the same while the history is at most ``experience.learn_window`` records — so the live run
and a replay agree — and beyond learns only what arrived since its last pass
(:mod:`aos_gateway.experience.incremental`). Both honour the latest reset marker on
``aos.weights.v1``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aos_gateway import topics
from aos_gateway.contracts.records import EXPERIENCE, WEIGHTS, ExperienceRecord, Weights
from aos_gateway.contracts.wire import codec_for
from aos_gateway.errors import AosError, ValidationError
from aos_gateway.experience import abtest, incremental, learning
from aos_gateway.experience.learning import Learned
from aos_gateway.matching import weights as matching_weights
from aos_gateway.settings import Settings
from aos_gateway.streams.kafka import read_range, read_to_end

log = logging.getLogger("aos_gateway.learner")
Progress = Callable[[str], None]


def _quiet(_m: str) -> None:
    pass


def replay(
    settings: Settings, progress: Progress = _quiet, timeout: float = 300.0, label: str = "experience"
) -> tuple[list[ExperienceRecord], int]:
    """Every record of the experience topic (undecodable ones counted, not returned)."""
    codec = codec_for(EXPERIENCE, topics.EXPERIENCE.name, settings.schema_registry)
    progress(f"{label}: replaying {topics.EXPERIENCE.name}")
    out: list[ExperienceRecord] = []
    bad = 0
    for m in read_to_end(settings.kafka, topics.EXPERIENCE.name, timeout=timeout):
        if m.value() is None:
            continue
        try:
            out.append(codec.decode(m.value()))  # type: ignore[arg-type]
        except AosError:
            bad += 1
    return out, bad


def latest_weights(settings: Settings) -> dict[str, Weights]:
    """The newest record of each name on the weights topic."""
    codec = codec_for(WEIGHTS, topics.WEIGHTS.name, settings.schema_registry)
    out: dict[str, Weights] = {}
    for m in read_to_end(settings.kafka, topics.WEIGHTS.name, timeout=120):
        if m.value() is None:
            continue
        try:
            rec: Weights = codec.decode(m.value())  # type: ignore[assignment]
        except AosError:
            continue
        if rec["name"] not in out or rec["version"] >= out[rec["name"]]["version"]:
            out[rec["name"]] = rec
    return out


def learn_from_history(
    settings: Settings, since_ms: int | None = None, progress: Progress = _quiet, flag: str = "--since"
) -> Learned:
    """Replay the experience topic and learn every state (from the later of ``since_ms``, given as
    ``flag``, and the latest reset)."""
    records, bad = replay(settings, progress)
    return _learn(settings, records, latest_weights(settings), since_ms, progress, bad, flag)


def learning_bound(
    records: Sequence[ExperienceRecord],
    since_ms: int | None,
    reset_ms: int | None,
    progress: Callable[[str], None],
    flag: str = "--since",
    undecodable: int = 0,
) -> int | None:
    """The time learning starts from: the later of the user's ``since_ms`` (given as ``flag``) and
    the last reset. Says so when the reset overrides the user's time, and how many of the records
    read fall from that time on.

    Raises:
        ValidationError: None of them does: nothing to learn.
    """
    since = since_ms
    if reset_ms is not None and (since_ms is None or since_ms < reset_ms):
        if since_ms is not None:
            progress(
                f"experience: {flag} {learning.iso_ms(since_ms)} is before the last reset "
                f"({learning.iso_ms(reset_ms)}); using the reset time"
            )
        since = reset_ms
    read = f"{len(records)} records read" + (f" ({undecodable} undecodable)" if undecodable else "")
    if since is None:
        progress(f"experience: {read}; learning from all of them")
        return None
    after = sum(1 for r in records if r["occurred_at"] >= since)
    if since == reset_ms:
        where = f"after the reset of {learning.iso_ms(since)} (`aos experience reset`)"
    else:
        where = f"from {learning.iso_ms(since)} on ({flag})"
    if after == 0:
        raise ValidationError(f"{read}, none {where}: nothing to learn")
    progress(f"experience: {read}, {after} {where}: learning from those")
    return since


def _learn(
    settings: Settings,
    records: list[ExperienceRecord],
    latest: dict[str, Weights],
    since_ms: int | None,
    progress: Progress = _quiet,
    bad: int = 0,
    flag: str = "--since",
) -> Learned:
    """:func:`learning.learn_all` over ``records`` from :func:`learning_bound` (the later of
    ``since_ms`` and the reset marker among ``latest``), for the agents registered now."""
    from aos_gateway.cli.registry_cmds import current_cards

    reset_rec = latest.get(learning.RESET)
    reset_ms = None if reset_rec is None else learning.reset_since(reset_rec)
    since = learning_bound(records, since_ms, reset_ms, progress, flag, bad)
    t0 = time.perf_counter()
    learned = learning.learn_all(records, sorted(current_cards(settings)), settings, since_ms=since)
    progress(f"experience: learned in {time.perf_counter() - t0:.1f}s")
    return learned


def publish(settings: Settings, learned: Learned, skip: dict[str, str] | None = None) -> dict[str, int]:
    """Publish the learned states (those whose fingerprint differs from ``skip``); name -> version."""
    from aos_gateway.cli.learn_cmds import publish_record

    version = int(time.time() * 1000)
    fps = learned.fingerprints()
    out: dict[str, int] = {}
    for rec in learned.records_to_publish(version):
        if skip is not None and skip.get(rec["name"]) == fps.get(rec["name"]):
            continue
        out[rec["name"]] = publish_record(settings, rec)
    return out


def checkpoint_path(settings: Settings) -> Path:
    """Where the worker's learning pass keeps its :class:`~aos_gateway.experience.incremental.Checkpoint`."""
    return settings.worker.data_dir / "learner-checkpoint.npz"


@dataclass
class _PassInput:
    full: bool  # learn from scratch (``new`` is the whole history)
    new: list[ExperienceRecord]  # records after the checkpoint's offsets
    window: list[ExperienceRecord]  # the latest ``learn_window`` records (all, when they are fewer)
    ends: dict[int, int]  # partition -> the offset the next pass starts at
    read: int  # messages read


def _read_for_pass(settings: Settings, ckpt: incremental.Checkpoint | None) -> _PassInput:
    """Read what one pass needs: the whole history while it is at most ``learn_window`` records
    or without a checkpoint, else the records after the checkpoint and the latest window."""
    window = settings.experience.learn_window
    shape: dict[str, Any] = {}

    def start_at(marks: dict[int, tuple[int, int]]) -> dict[int, int]:
        total = sum(high - low for low, high in marks.values())
        tail = -(-window // max(1, len(marks)))
        shape.update(full=ckpt is None or total <= window, small=total <= window, tail=tail)
        if shape["full"]:
            return {p: low for p, (low, _high) in marks.items()}
        assert ckpt is not None
        return {p: min(ckpt.offsets.get(p, low), max(low, high - tail)) for p, (low, high) in marks.items()}

    msgs, marks = read_range(settings.kafka, topics.EXPERIENCE.name, start_at, timeout=300.0)
    codec = codec_for(EXPERIENCE, topics.EXPERIENCE.name, settings.schema_registry)
    decoded: list[tuple[int, int, ExperienceRecord]] = []
    for m in msgs:
        if m.value() is None:
            continue
        try:
            rec: ExperienceRecord = codec.decode(m.value())  # type: ignore[assignment]
        except AosError:
            continue  # undecodable: the consuming stages dead-letter them; nothing to learn
        decoded.append((m.partition(), m.offset(), rec))
    tail = int(shape.get("tail", window))
    in_window = [r for p, o, r in decoded if shape.get("small") or o >= marks[p][1] - tail]
    if shape.get("full", True):
        new = [r for _, _, r in decoded]
    else:
        assert ckpt is not None
        new = [r for p, o, r in decoded if o >= ckpt.offsets.get(p, 0)]
    ends = {p: high for p, (_low, high) in marks.items()}
    return _PassInput(bool(shape.get("full", True)), new, in_window, ends, len(msgs))


class PeriodicLearner:
    """The worker's learning pass: publishes the learned states that changed; with
    ``experience.ab_share`` > 0, a new matcher state goes through an A/B rollout
    (:mod:`aos_gateway.experience.abtest`) instead of replacing the one in force."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.passes = 0
        self.last_verdict: abtest.Verdict | None = None
        self.last_pass: dict[str, Any] = {}

    def run_once(self) -> dict[str, int]:
        """One pass: learn (from scratch while the history is at most ``experience.learn_window``
        records, else from the records since the last pass: :mod:`aos_gateway.experience.incremental`)
        and publish what changed."""
        from aos_gateway.cli.learn_cmds import publish_record
        from aos_gateway.cli.registry_cmds import current_cards

        s = self.settings
        t0 = time.perf_counter()
        latest = latest_weights(s)
        reset_rec = latest.get(learning.RESET)
        since = None if reset_rec is None else learning.reset_since(reset_rec)
        path = checkpoint_path(s)
        ckpt = incremental.load(path)
        if ckpt is not None and ckpt.since != since:
            ckpt = None  # learned before the latest reset
        read = _read_for_pass(s, ckpt)
        if read.full:
            ckpt = incremental.Checkpoint(since=since)
        elif not read.new:
            return {}  # nothing new since the last pass
        assert ckpt is not None
        try:
            learned = incremental.advance(ckpt, read.new, read.window, sorted(current_cards(s)), s)
        except AosError as exc:  # e.g. no experience yet: nothing to do
            log.info("learning pass skipped: %s", exc)
            return {}
        records = read.window
        fps = learned.fingerprints()
        version = int(time.time() * 1000)
        control = latest.get(matching_weights.NAME)
        has_control = control is not None and control["metadata"].get("memories", "0") != "0"
        ab = s.experience.ab_share > 0 and has_control and learned.matching is not None
        sent: dict[str, int] = {}
        for rec in learned.records_to_publish(version):
            name = rec["name"]
            if ab and name == matching_weights.NAME:
                continue  # the A/B path below
            held = latest.get(name)
            if held is not None and held["metadata"].get("fingerprint") == fps.get(name):
                continue
            sent[name] = publish_record(s, rec)
        if ab and learned.matching is not None and control is not None:
            sent |= self._rollout(latest, control, learned, fps, records, version)
        ckpt.offsets = read.ends
        incremental.save(ckpt, path)
        self.passes += 1
        self.last_pass = {
            "kind": "full" if read.full else "incremental",
            "read": read.read,
            "new": len(read.new),
            "window": len(read.window),
            "records": learned.records,
            "seconds": round(time.perf_counter() - t0, 2),
        }
        log.info(
            "learning pass %d (%s): %d new records, %d learned in all, %.1fs; published %s; %d anomalies",
            self.passes,
            self.last_pass["kind"],
            len(read.new),
            learned.records,
            self.last_pass["seconds"],
            ", ".join(f"{k} v{v}" for k, v in sent.items()) or "nothing",
            len(learned.report.anomalies),
        )
        return sent

    def _rollout(
        self,
        latest: dict[str, Weights],
        control: Weights,
        learned: Learned,
        fps: dict[str, str],
        records: list[ExperienceRecord],
        version: int,
    ) -> dict[str, int]:
        from aos_gateway.cli.learn_cmds import publish_record

        s = self.settings
        x = s.experience
        cand = latest.get(learning.CANDIDATE)
        if cand is not None and cand["metadata"].get("retired") != "true":
            since = cand["created_at"]
            verdict = abtest.compare(
                [r for r in records if r["occurred_at"] >= since], cand["version"], x.ab_min_samples, x.ab_alpha
            )
            self.last_verdict = verdict
            log.info("A/B candidate v%d: %s (%s)", cand["version"], verdict.action, verdict.reason)
            if verdict.action == "promote":
                promoted = Weights(
                    **{
                        **cand,
                        "name": matching_weights.NAME,
                        "version": version,
                        "created_at": version,
                        "metadata": {**cand["metadata"], "promoted": verdict.reason[:500]},
                    }
                )
                out = {matching_weights.NAME: publish_record(s, promoted)}
                out[learning.CANDIDATE] = publish_record(s, learning.retired_candidate(version, verdict.reason))
                return out
            if verdict.action == "retire":
                return {learning.CANDIDATE: publish_record(s, learning.retired_candidate(version, verdict.reason))}
            return {}
        if learned.matching is not None and control["metadata"].get("fingerprint") != fps[matching_weights.NAME]:
            rec = learning.candidate_record(learned.matching, version, fps[matching_weights.NAME])
            return {learning.CANDIDATE: publish_record(s, rec)}
        return {}


def reset(settings: Settings, reason: str = "") -> tuple[int, dict[str, int]]:
    """Forget what was learned: empty states published (matchers go back to card similarity, the
    planner to its priors, no agent flagged) and a reset marker, so later learning ignores the
    evidence before now. Returns the reset time and the versions published."""
    from aos_gateway.cli.learn_cmds import publish_record
    from aos_gateway.cli.registry_cmds import current_cards
    from aos_gateway.experience.mining import MiningReport
    from aos_gateway.matching.learned import empty_state
    from aos_gateway.network.quality import learn_quality
    from aos_gateway.perception.text import TextEncoder

    now = int(time.time() * 1000)
    p = settings.perception
    enc = TextEncoder(p.text_model, p.device, 0, p.torch_threads)
    enc.load()
    cleared = Learned(
        records=0,
        clock_ms=now,
        report=MiningReport(generated_at=now, records=0, executions=0, steps=0, half_life_days=0.0),
        matching=empty_state(sorted(current_cards(settings)), int(enc.dim)),
        quality=learn_quality([]),
    )
    versions = {rec["name"]: publish_record(settings, rec) for rec in cleared.records_to_publish(now)}
    versions[learning.RESET] = publish_record(settings, learning.reset_record(now, reason))
    return now, versions


#: the worker's learning pass, run as ``python -m aos_gateway.streams.learner``
CHILD_ARGV = (sys.executable, "-m", "aos_gateway.streams.learner")


@dataclass(frozen=True)
class PassOutcome:
    published: dict[str, int]  # name -> version
    info: dict[str, Any]  # :attr:`PeriodicLearner.last_pass` (empty when nothing was learned)


async def pass_in_child(timeout_s: float, argv: Sequence[str] = CHILD_ARGV) -> PassOutcome:
    """One learning pass in a child process (it inherits the environment, so the same settings):
    what it published and its summary.

    Why not a thread of the worker: a full pass replays the whole experience history and decodes
    every record in Python. In a thread it held the worker's GIL for a minute (the soak's
    pipeline stalled at each pass: p50 0.4 s -> 14 s) and the history's peak stayed in the
    worker's heap (RSS +0.2-0.5 GB per pass). A child runs at a lower CPU priority and gives
    its memory back when it exits. Raises :class:`AosError` when the child fails or times out.
    """
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AosError(f"learning pass: no answer in {timeout_s:.0f}s; killed") from None
    if proc.returncode != 0:
        tail = err.decode(errors="replace").strip().splitlines()[-3:]
        raise AosError(f"learning pass: exit {proc.returncode}: {' | '.join(tail) or 'no output'}")
    try:
        lines = out.decode().strip().splitlines()
        doc = json.loads(lines[-1]) if lines else {}
        sent = doc.get("published", {})
        return PassOutcome({str(k): int(v) for k, v in sent.items()}, dict(doc.get("pass", {})))
    except (ValueError, AttributeError, TypeError) as exc:
        raise AosError(f"learning pass: unreadable answer {out[-200:]!r}") from exc


def main() -> int:
    """One learning pass (the worker's timer runs this in a child): JSON of what was published."""
    os.nice(10)  # the pipeline's stages first: a pass may take longer, tasks should not wait
    logging.basicConfig(level=logging.INFO, format="%(asctime)s [learner] %(message)s", stream=sys.stderr)
    from threadpoolctl import threadpool_limits

    from aos_gateway.settings import get_settings

    try:
        with threadpool_limits(1):  # one core: the other stays with the pipeline
            live = PeriodicLearner(get_settings())
            sent = live.run_once()
    except AosError as exc:
        print(f"learning pass: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"published": sent, "pass": live.last_pass}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
