"""Learning from the Kafka experience history: replay, learn every state, publish what changed.

Used by the worker's periodic timer (``experience.mine_interval_s``) and by ``aos experience
mine | replay | reset``; both read ``aos.experience.v1`` from the beginning (the replayable source
of truth), honour the latest reset marker on ``aos.weights.v1``, and learn with
:func:`aos_gateway.experience.learning.learn_all`, so the live run and a replay agree.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from aos_gateway import topics
from aos_gateway.contracts.records import EXPERIENCE, WEIGHTS, ExperienceRecord, Weights
from aos_gateway.contracts.wire import codec_for
from aos_gateway.errors import AosError
from aos_gateway.experience import learning
from aos_gateway.experience.learning import Learned
from aos_gateway.settings import Settings
from aos_gateway.streams.kafka import read_to_end

log = logging.getLogger("aos_gateway.learner")
Progress = Callable[[str], None]


def _quiet(_m: str) -> None:
    pass


def replay(settings: Settings, progress: Progress = _quiet) -> tuple[list[ExperienceRecord], int]:
    """Every record of the experience topic (undecodable ones counted, not returned)."""
    codec = codec_for(EXPERIENCE, topics.EXPERIENCE.name, settings.schema_registry)
    progress(f"experience: replaying {topics.EXPERIENCE.name}")
    out: list[ExperienceRecord] = []
    bad = 0
    for m in read_to_end(settings.kafka, topics.EXPERIENCE.name, timeout=300):
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


def reset_since(settings: Settings) -> int | None:
    """When the latest ``aos experience reset`` was (epoch ms), if ever."""
    rec = latest_weights(settings).get(learning.RESET)
    return None if rec is None else learning.reset_since(rec)


def learn_from_history(settings: Settings, since_ms: int | None = None, progress: Progress = _quiet) -> Learned:
    """Replay the experience topic and learn every state (from the later of ``since_ms`` and the
    latest reset)."""
    from aos_gateway.cli.registry_cmds import current_cards

    records, bad = replay(settings, progress)
    reset = reset_since(settings)
    since = max(t for t in (since_ms, reset) if t is not None) if (since_ms or reset) else None
    agent_ids = sorted(current_cards(settings))
    progress(
        f"experience: learning from {len(records)} records"
        + (f" since {since}" if since else "")
        + (f" ({bad} undecodable)" if bad else "")
    )
    t0 = time.perf_counter()
    learned = learning.learn_all(records, agent_ids, settings, since_ms=since)
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


class PeriodicLearner:
    """The worker's learning pass: publishes only what changed since its last pass."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.published: dict[str, str] = {}
        self.passes = 0

    def run_once(self) -> dict[str, int]:
        try:
            learned = learn_from_history(self.settings)
        except AosError as exc:  # e.g. no experience yet: nothing to do
            log.info("learning pass skipped: %s", exc)
            return {}
        sent = publish(self.settings, learned, skip=self.published)
        self.published |= {k: v for k, v in learned.fingerprints().items() if k in sent}
        self.passes += 1
        if sent:
            log.info(
                "learning pass %d: %d records; published %s; %d anomalies",
                self.passes,
                learned.records,
                ", ".join(f"{k} v{v}" for k, v in sent.items()),
                len(learned.report.anomalies),
            )
        return sent


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
