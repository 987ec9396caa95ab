"""From the experience history to every learned state the gateway uses — one deterministic pass.

:func:`learn_all` takes experience records (as replayed from ``aos.experience.v1``) and returns:

- the matcher's learned state (``matching.ranker``: memories of which agent was right per task
  vector, a classifier over them — :mod:`aos_gateway.matching.experience`);
- the network quality predictor (``network.quality``: reliability per agent and task cluster,
  synergy per pair — :mod:`aos_gateway.network.quality`);
- the mining report (task clusters, association rules, anomalies — :mod:`.mining`) and, from it,
  the anomaly list (``experience.anomalies``) that matchers use to de-rank flagged agents.

Determinism: records are deduplicated by id and ordered by (time, id); the clock for decay and
anomaly windows is the history's own (its latest record), never the wall clock; every random
choice is seeded. So the live worker and ``aos experience replay`` reach byte-identical payloads
from the same history (:meth:`Learned.fingerprints`). Feedback is joined by task id first.

Bias controls: ``since_ms`` (the latest ``aos experience reset``, or ``--from``) drops older
evidence; mining decays evidence with ``experience.half_life_days``; the matcher keeps at most
``per_agent`` memories per agent (the latest).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aos_gateway.contracts.records import ExperienceRecord, Weights
from aos_gateway.errors import ValidationError
from aos_gateway.experience.feedback import join_feedback
from aos_gateway.experience.mining import MiningReport, mine
from aos_gateway.matching import weights as matching_weights
from aos_gateway.matching.experience import learn_from_memories, memories
from aos_gateway.matching.learned import FORMAT as LEARNED_FORMAT
from aos_gateway.matching.learned import LearnedState
from aos_gateway.network import quality as network_quality
from aos_gateway.network.quality import QualityModel
from aos_gateway.settings import Settings

ANOMALIES = "experience.anomalies"
ANOMALIES_FORMAT = "aos-anomalies-json-1"
CANDIDATE = "matching.ranker.candidate"
RESET = "experience.reset"
RESET_FORMAT = "aos-reset-json-1"
#: a flagged agent's matching score is multiplied by this
ANOMALY_PENALTY = 0.5


@dataclass
class Learned:
    records: int
    clock_ms: int
    report: MiningReport
    matching: LearnedState | None = None
    quality: QualityModel | None = None
    skipped: dict[str, int] = field(default_factory=dict)

    def anomalies_payload(self) -> bytes:
        flagged = sorted({a.agent_id for a in self.report.anomalies})
        doc = {
            "penalty": ANOMALY_PENALTY,
            "agents": flagged,
            "anomalies": [a.to_dict() for a in self.report.anomalies],
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    def records_to_publish(self, version: int) -> list[Weights]:
        """The learned states as ``aos.weights.v1`` records of this version (each with its
        fingerprint in its metadata)."""
        fps = self.fingerprints()
        return [
            Weights(**{**r, "metadata": {**r["metadata"], "fingerprint": fps.get(r["name"], "")}})
            for r in self._records(version)
        ]

    def _records(self, version: int) -> list[Weights]:
        out: list[Weights] = []
        if self.matching is not None:
            self.matching.version = version
            out.append(matching_weights.to_record(self.matching, version))
        if self.quality is not None:
            self.quality.version = version
            out.append(network_quality.to_record(self.quality, version))
        out.append(
            Weights(
                name=ANOMALIES,
                version=version,
                format=ANOMALIES_FORMAT,
                payload=self.anomalies_payload(),
                created_at=version,
                metadata={"anomalies": str(len(self.report.anomalies)), "clock": str(self.clock_ms)},
            )
        )
        return out

    def fingerprints(self) -> dict[str, str]:
        """sha256 of each learned payload, whatever version it is published as: equal
        fingerprints, equal weights."""
        out = {ANOMALIES: hashlib.sha256(self.anomalies_payload()).hexdigest()}
        if self.matching is not None:
            out[matching_weights.NAME] = self.matching.fingerprint()
        if self.quality is not None:  # small: its archive is cheap
            held, self.quality.version = self.quality.version, 0
            try:
                out[network_quality.NAME] = hashlib.sha256(self.quality.to_bytes()).hexdigest()
            finally:
                self.quality.version = held
        return out

    def summary(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "clock_ms": self.clock_ms,
            "memories": 0 if self.matching is None else int(self.matching.memory.shape[0]),
            "agents": 0 if self.matching is None else len(self.matching.agent_ids),
            "quality_agents": 0 if self.quality is None else len(self.quality.agent_ids),
            "clusters": len(self.report.clusters),
            "rules": len(self.report.rules),
            "anomalies": [a.to_dict() for a in self.report.anomalies],
            "skipped": self.skipped,
            "fingerprints": self.fingerprints(),
        }


def iso_ms(ms: int) -> str:
    """Epoch ms as ISO 8601 UTC to the second, for messages: ``2026-12-06T05:40:49Z``."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ordered(records: Iterable[ExperienceRecord], since_ms: int | None = None) -> list[ExperienceRecord]:
    """Distinct records (first of each id), from ``since_ms`` on, in (time, id) order."""
    seen: set[str] = set()
    out: list[ExperienceRecord] = []
    for r in records:
        if r["experience_id"] in seen or (since_ms is not None and r["occurred_at"] < since_ms):
            continue
        seen.add(r["experience_id"])
        out.append(r)
    out.sort(key=lambda r: (r["occurred_at"], r["experience_id"]))
    return out


def learn_all(
    records: Iterable[ExperienceRecord],
    agent_ids: Sequence[str],
    settings: Settings,
    since_ms: int | None = None,
    per_agent: int = 1000,
) -> Learned:
    """Every learned state from the history (see the module docstring)."""
    recs = join_feedback(ordered(records, since_ms))
    if not recs:
        raise ValidationError("no experience to learn from" + (f" since {iso_ms(since_ms)}" if since_ms else ""))
    clock = max(r["occurred_at"] for r in recs)
    x = settings.experience
    report = mine(recs, x, clock)
    out = Learned(records=len(recs), clock_ms=clock, report=report)
    mems, skipped = memories(recs)
    out.skipped = skipped
    if mems:
        state = learn_from_memories(mems, sorted(agent_ids), per_agent=per_agent)
        state.metadata |= {"source": "aos.experience.v1", "clock": str(clock)}
        out.matching = state
    if any(r["kind"] == "STEP" and r["agent_id"] for r in recs):
        out.quality = network_quality.learn_quality(recs, clusters=x.clusters)
    return out


def penalties_from_record(record: Weights) -> dict[str, float]:
    """Agent id -> score factor, from an ``experience.anomalies`` record."""
    matching_weights.expect(record, ANOMALIES, ANOMALIES_FORMAT)
    try:
        doc = json.loads(record["payload"])
        factor = float(doc.get("penalty", ANOMALY_PENALTY))
        return {str(a): factor for a in doc["agents"]}
    except (ValueError, KeyError, TypeError) as exc:
        raise ValidationError(f"anomalies v{record['version']} cannot be read: {exc}") from exc


def reset_record(at_ms: int, reason: str = "") -> Weights:
    """The marker ``aos experience reset`` publishes: evidence before ``at_ms`` is forgotten."""
    return Weights(
        name=RESET,
        version=at_ms,
        format=RESET_FORMAT,
        payload=json.dumps({"since_ms": at_ms, "reason": reason}).encode(),
        created_at=at_ms,
        metadata={"since_ms": str(at_ms)},
    )


def reset_since(record: Weights) -> int:
    matching_weights.expect(record, RESET, RESET_FORMAT)
    return int(json.loads(record["payload"])["since_ms"])


def candidate_record(state: LearnedState, version: int, fingerprint: str) -> Weights:
    """A matcher state published as the A/B candidate (:mod:`.abtest`)."""
    state.version = version
    rec = matching_weights.to_record(state, version)
    return Weights(**{**rec, "name": CANDIDATE, "metadata": {**rec["metadata"], "fingerprint": fingerprint}})


def retired_candidate(version: int, why: str) -> Weights:
    """The end of an A/B test: matchers drop their candidate."""
    return Weights(
        name=CANDIDATE,
        version=version,
        format=LEARNED_FORMAT,
        payload=b"",
        created_at=version,
        metadata={"retired": "true", "reason": why[:500]},
    )


def candidate_from_record(record: Weights) -> LearnedState | None:
    """The candidate state (None once retired)."""
    if record["name"] != CANDIDATE:
        raise ValidationError(f"weights {record['name']!r} are not {CANDIDATE!r}")
    if record["metadata"].get("retired") == "true" or not record["payload"]:
        return None
    state = LearnedState.from_bytes(record["payload"])
    state.version = record["version"]
    return state
