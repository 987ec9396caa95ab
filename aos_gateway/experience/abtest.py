"""A/B rollout of new matching weights: a share of traffic, a significance test, then promotion.

With ``experience.ab_share`` > 0, a newly learned matcher state is not put in force at once: it
is published as the *candidate* (``matching.ranker.candidate``) beside the *control* in force
(``matching.ranker``). Matchers route a stable share of tasks (by a hash of the task id,
:func:`arm_of`) with the candidate; every plan, and so every experience record, says which arm
decided it (``metadata["weights.matching.ranker"] = "candidate:v<version>"`` or ``control:...``).
Each learning pass then compares the arms' success rates since the candidate was published
(:func:`compare`, a two-proportion z-test):

- candidate better with p < ``ab_alpha`` (one-sided), both arms with ``ab_min_samples`` executions:
  **promote** (it becomes the control);
- candidate worse with p < ``ab_alpha``: **retire** it (the control stays);
- no significant difference after 5 x ``ab_min_samples`` per arm: **promote** — it is learned from
  more evidence and not worse;
- otherwise **wait** for more executions.

Only the matcher's state is rolled out this way; the network quality predictor and the anomaly
list are published directly.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

from aos_gateway.contracts.records import ExperienceRecord

KEY = "weights.matching.ranker"
Arm = Literal["control", "candidate"]
Action = Literal["promote", "retire", "wait"]


def arm_of(task_id: str, share: float) -> Arm:
    """The arm of a task: stable for its id, ``share`` of ids on the candidate."""
    h = int.from_bytes(hashlib.sha256(task_id.encode()).digest()[:8], "big") / 2**64
    return "candidate" if h < share else "control"


def label(arm: Arm, version: int) -> str:
    return f"{arm}:v{version}"


@dataclass(frozen=True)
class Verdict:
    action: Action
    control: tuple[int, int]  # executions, successes
    candidate: tuple[int, int]
    z: float
    p_better: float
    p_worse: float
    reason: str


def _success(rec: ExperienceRecord) -> bool:
    score = rec["feedback_score"]
    return score >= 0.5 if score is not None else rec["outcome"] == "SUCCEEDED"


def compare(records: Iterable[ExperienceRecord], candidate_version: int, min_samples: int, alpha: float) -> Verdict:
    """The verdict on the candidate of this version, from the EXECUTION records of both arms."""
    want = label("candidate", candidate_version)
    seen: set[str] = set()
    n = {"control": 0, "candidate": 0}
    s = {"control": 0, "candidate": 0}
    for r in records:
        if r["kind"] != "EXECUTION" or r["experience_id"] in seen:
            continue
        seen.add(r["experience_id"])
        tag = r["metadata"].get(KEY, "")
        arm = "candidate" if tag == want else "control" if tag.startswith("control:") else None
        if arm is None:
            continue
        n[arm] += 1
        s[arm] += _success(r)
    nc, nt = n["control"], n["candidate"]
    pc, pt = (s["control"] / nc if nc else 0.0), (s["candidate"] / nt if nt else 0.0)
    pooled = (s["control"] + s["candidate"]) / max(1, nc + nt)
    se = math.sqrt(pooled * (1 - pooled) * (1 / max(nc, 1) + 1 / max(nt, 1)))
    z = (pt - pc) / se if se > 0 else 0.0
    p_better = 1 - NormalDist().cdf(z) if se > 0 else 1.0
    p_worse = NormalDist().cdf(z) if se > 0 else 1.0
    ctl, cand = (nc, s["control"]), (nt, s["candidate"])
    rates = f"candidate {pt:.3f} over {nt}, control {pc:.3f} over {nc}"
    if min(nc, nt) < min_samples:
        return Verdict("wait", ctl, cand, z, p_better, p_worse, f"collecting: {rates} (need {min_samples} each)")
    if p_better < alpha:
        return Verdict("promote", ctl, cand, z, p_better, p_worse, f"better: {rates}, p={p_better:.4f}")
    if p_worse < alpha:
        return Verdict("retire", ctl, cand, z, p_better, p_worse, f"worse: {rates}, p={p_worse:.4f}")
    if min(nc, nt) >= 5 * min_samples:
        return Verdict("promote", ctl, cand, z, p_better, p_worse, f"not worse after {min(nc, nt)} each: {rates}")
    return Verdict("wait", ctl, cand, z, p_better, p_worse, f"no significant difference yet: {rates}")
