"""The matcher: search the capability index under the task's constraints, rank, abstain.

encode (upstream) -> search 3k similar agents that pass the filters -> add the agents the learned
state favours (that pass the filters too) -> rank with :class:`~aos_gateway.matching.learned.Ranker`
-> top k. A candidate's ``score`` is the blended probability that it is the right agent (card
similarity alone when nothing is learned yet), ``similarity`` its card's cosine similarity, and
``quality`` the learned part (None without a learned state). The matcher abstains when no agent
passes the filters, when even the best card is too dissimilar (``min_similarity``: nothing here is
about this task), or when the best score is below ``min_confidence``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aos_gateway.contracts.records import Candidate, MatchedTask, PerceivedTask, Role
from aos_gateway.errors import ValidationError
from aos_gateway.experience.abtest import arm_of, label
from aos_gateway.matching.filters import USABLE as USABLE  # re-exported: it lived here
from aos_gateway.matching.filters import TaskConstraints
from aos_gateway.matching.index import CapabilityIndex, Hit
from aos_gateway.matching.learned import LearnedState, Ranker
from aos_gateway.network.complexity import Clause, RoleSpec, find_roles, locate, window_roles
from aos_gateway.perception.vectors import FloatArray, unpack
from aos_gateway.settings import MatchingSettings


class Matcher:
    """Ranks agents for perceived tasks; the learned state can be swapped while it runs."""

    def __init__(
        self,
        index: CapabilityIndex,
        top_k: int = 5,
        min_similarity: float = 0.2,
        min_confidence: float = 0.0,
        search_factor: int = 3,
        state: LearnedState | None = None,
        spaces: dict[str, CapabilityIndex] | None = None,
        space_min_similarity: float = 0.2,
        roles: RoleRules | None = None,
    ) -> None:
        self.index = index
        #: other vector spaces by encoder name (e.g. CLIP for image-only tasks): a task whose fused
        #: vector comes from one of these encoders is matched there, zero-shot (learned states are
        #: learned in the text space)
        self.spaces = dict(spaces or {})
        self.space_min_similarity = space_min_similarity
        self.top_k = top_k
        self.min_similarity = min_similarity
        self.min_confidence = min_confidence
        self.search_factor = search_factor
        self.ranker = Ranker(state)
        self.control_version = 0 if state is None else state.version
        self._zero = Ranker(None)
        self.roles = roles or RoleRules()
        #: A/B rollout: a candidate state for ``ab_share`` of the tasks (aos_gateway.experience.abtest)
        self.candidate: Ranker | None = None
        self.candidate_version = 0
        self.ab_share = 0.0
        #: agent id -> score factor (< 1 for agents mining flagged as anomalous)
        self.penalties: dict[str, float] = {}

    @classmethod
    def from_settings(
        cls,
        index: CapabilityIndex,
        m: MatchingSettings,
        state: LearnedState | None = None,
        spaces: dict[str, CapabilityIndex] | None = None,
    ) -> Matcher:
        """A matcher configured by the match stage's settings (``AOS_MATCHING__*``)."""
        return cls(
            index,
            m.top_k,
            m.min_similarity,
            m.min_confidence,
            m.search_factor,
            state=state,
            spaces=spaces,
            space_min_similarity=m.min_image_similarity,
            roles=RoleRules(m.max_roles, m.runner_up_ratio, m.min_clause_score, m.window_margin, m.roles_min_successes),
        )

    def set_state(self, state: LearnedState | None) -> None:
        """Use a new learned state from the next task on (one reference swap: thread-safe).

        A state learned in another vector space (other dimensions) is refused.
        """
        holds = state is not None and (state.memory.shape[0] or state.prototypes is not None)
        if state is not None and holds and state.dim != self.index.dim:
            raise ValidationError(f"learned state has {state.dim}-dim vectors, the index {self.index.dim}")
        self.ranker = Ranker(state)
        self.control_version = 0 if state is None else state.version
        self._zero = Ranker(None)

    def set_candidate(self, state: LearnedState | None, share: float | None = None) -> None:
        """A candidate state for an A/B rollout (None, or a state with no memory: no candidate);
        ``share`` of tasks (by task id) are matched with it."""
        if share is not None:
            self.ab_share = share
        if state is None or not state.memory.shape[0]:
            self.candidate, self.candidate_version = None, 0
            return
        if state.dim != self.index.dim:
            raise ValidationError(f"candidate state has {state.dim}-dim vectors, the index {self.index.dim}")
        self.candidate, self.candidate_version = Ranker(state), state.version

    def arm(self, task_id: str) -> tuple[Ranker, dict[str, str]]:
        """The ranker for a task, and the label of the state that decides it."""
        cand = self.candidate
        if cand is not None and arm_of(task_id, self.ab_share) == "candidate":
            return cand, {"matching.ranker": label("candidate", self.candidate_version)}
        return self.ranker, {"matching.ranker": label("control", self.control_version)}

    def set_penalties(self, penalties: dict[str, float]) -> None:
        """Score factors for agents flagged by mining (anomalous latency or failures); one swap."""
        self.penalties = dict(penalties)

    def rank(
        self,
        query: FloatArray,
        constraints: TaskConstraints | None,
        k: int,
        model: str | None = None,
        ranker: Ranker | None = None,
    ) -> list[Candidate]:
        """The k best agents for one task vector, best first.

        ``model`` names the encoder of ``query``: a learned state from another encoder's vectors
        is not used for it (zero-shot instead).
        """
        ranker = ranker or self.ranker  # one state for the whole task, even if a new one arrives meanwhile
        index = self.spaces.get(model or "", self.index)
        if (model and ranker.model and model != ranker.model) or index is not self.index:
            ranker = self._zero
        hits = index.search(query, self.search_factor * k, constraints=constraints)[0]
        if not hits:
            return []
        found = {h.agent.card["agent_id"] for h in hits}
        floor = hits[-1].similarity  # an agent the search did not return is at most this similar
        for agent_id in ranker.propose(query, self.search_factor * k):
            agent = index.get(agent_id) if agent_id not in found else None
            if agent is not None and (constraints is None or constraints.allows(agent.card)):
                hits.append(Hit(agent=agent, similarity=floor))
                found.add(agent_id)
        ids = [h.agent.card["agent_id"] for h in hits]
        sims = np.array([h.similarity for h in hits], dtype=np.float32)
        scores, learned = ranker.score(query, ids, sims)
        penalties = self.penalties
        if penalties and any(i in penalties for i in ids):  # flagged agents are de-ranked, not hidden
            scores = scores * np.array([penalties.get(i, 1.0) for i in ids], dtype=scores.dtype)
        order = np.argsort(-scores, kind="stable")[:k]
        return [
            Candidate(
                agent_id=ids[j],
                name=hits[j].agent.card["name"],
                score=round(float(scores[j]), 6),
                similarity=round(float(sims[j]), 6),
                quality=None if learned is None else round(float(learned[j]), 6),
                card_version=hits[j].agent.version,
                cost=hits[j].agent.card["cost"],
                p95_latency_ms=hits[j].agent.card["p95_latency_ms"],
            )
            for j in order
        ]

    def abstain_reason(self, cands: list[Candidate], min_similarity: float | None = None) -> str | None:
        if not cands:
            return "no agent is registered" if len(self.index) == 0 else "no agent satisfies the task's constraints"
        floor = self.min_similarity if min_similarity is None else min_similarity
        best_sim = max(c["similarity"] for c in cands)
        if best_sim < floor:
            return f"best agent similarity {best_sim:.3f} is below the threshold {floor}"
        if cands[0]["score"] < self.min_confidence:
            return f"best agent score {cands[0]['score']:.3f} is below the confidence threshold {self.min_confidence}"
        return None

    def match(self, tasks: list[PerceivedTask], now_ms: int) -> list[MatchedTask]:
        """One MatchedTask per perceived task, in order."""
        out: list[MatchedTask] = []
        for task in tasks:
            fused = task["fused"]
            ranker, weights = self.arm(task["task_id"])
            k = task["top_k"] or self.top_k
            self._prefetch(ranker, task)
            cands = self.rank(unpack(fused), TaskConstraints.of(task), k, fused["model"], ranker)
            other_space = fused["model"] in self.spaces
            reason = self.abstain_reason(cands, self.space_min_similarity if other_space else None)
            roles = [] if reason is not None or other_space else self.find_roles(task, cands, ranker)
            out.append(
                MatchedTask(
                    task_id=task["task_id"],
                    tenant=task["tenant"],
                    submitted_at=task["submitted_at"],
                    text=task["text"],
                    transcript=task["transcript"],
                    modalities=list(task["modalities"]),
                    fused=task["fused"],
                    candidates=cands,
                    roles=roles,
                    abstained=reason is not None,
                    reason=reason,
                    index_size=len(self.index),
                    reply_to=task["reply_to"],
                    trace_id=task["trace_id"],
                    notes=list(task["notes"]),
                    timings={**task["timings"], "matched": now_ms},
                    weights=weights,
                )
            )
        return out

    @staticmethod
    def _prefetch(ranker: Ranker, task: PerceivedTask) -> None:
        """The task's, its clauses' and its token windows' similarities to the learned memory, in one
        product (reading the memory costs more than the rows; see :class:`Ranker`)."""
        if not ranker.learned:
            return
        model = task["fused"]["model"]
        windows = [w["vector"] for w in task.get("windows") or []]
        vecs = [task["fused"], *(c["vector"] for c in task.get("clauses") or []), *windows]
        same = [unpack(v) for v in vecs if (v["model"] or model) == model]
        if same and len({v.shape[0] for v in same}) == 1:
            ranker.prefetch(np.stack(same))

    def find_roles(self, task: PerceivedTask, whole: list[Candidate], ranker: Ranker | None = None) -> list[Role]:
        """The sub-capabilities of the task, each with its own ranking (empty: one role, ``whole``).

        With a learned state and the text's token windows: :func:`~aos_gateway.network.complexity.
        window_roles` (a window whose most likely agent beats the task's best agent there by
        ``window_margin``). Otherwise each clause of the text is ranked on its own, under the task's
        constraints; see :func:`aos_gateway.network.complexity.find_roles` for when a clause or the
        runner-up of the whole task becomes a role.
        """
        r = self.roles
        if r.max_roles < 2:
            return []
        ranker = ranker or self.ranker
        model = task["fused"]["model"]
        constraints = TaskConstraints.of(task)
        k = max(len(whole), 1)
        clause_recs = task.get("clauses") or []
        clauses = [Clause(c["text"], c["depends_on_previous"]) for c in clause_recs]
        text = task["text"] or task["transcript"] or ""
        # the learned distribution is what separates a window's agent from the task's (card
        # similarities alone are flat): windows only with a learned state from the same encoder, and
        # one learned from enough outcomes (a handful would decide every window: roles out of nothing)
        learned = (
            whole[0]["quality"] is not None and ranker.state is not None and ranker.state.successes >= r.min_successes
        )
        specs = self._window_roles(task, whole, clauses, ranker, constraints, k) if learned else None
        if specs is None:
            rankings = [
                self.rank(unpack(c["vector"]), constraints, k, c["vector"]["model"] or model, ranker)
                for c in clause_recs
            ]
            # the runner-up rule reads a learned distribution (peaked where one agent is right); card
            # similarities alone are flat, and their runner-up says little: zero-shot, clauses only
            specs = find_roles(
                text,
                whole,
                clauses,
                rankings,
                runner_up_ratio=r.runner_up_ratio if learned else float("inf"),
                min_clause_score=r.min_clause_score,
                max_roles=r.max_roles,
            )
        if len(specs) < 2:
            return []
        return [Role(role_id=s.role_id, text=s.text, depends_on=s.depends_on, candidates=s.candidates) for s in specs]

    def _window_roles(
        self,
        task: PerceivedTask,
        whole: list[Candidate],
        clauses: list[Clause],
        ranker: Ranker,
        constraints: TaskConstraints,
        k: int,
    ) -> list[RoleSpec] | None:
        """Roles from the text's token windows, or None when the task has none usable (no windows,
        or vectors of another encoder than the learned state's)."""
        state = ranker.state
        model = task["fused"]["model"]
        windows = [w for w in task.get("windows") or [] if (w["vector"]["model"] or model) == (ranker.model or model)]
        if state is None or not windows:
            return None
        vecs = [unpack(w["vector"]) for w in windows]
        if any(v.shape[0] != state.dim for v in vecs):
            return None
        analysed = "\n".join(t for t in (task["text"], task["transcript"]) if t)  # as perception joined them
        return window_roles(
            analysed,
            whole,
            locate(analysed, clauses),
            [(w["start"], w["end"]) for w in windows],
            ranker.learned_distributions(np.stack(vecs)),
            state.agent_ids,
            lambda j: self.rank(vecs[j], constraints, k, model, ranker),
            margin=self.roles.window_margin,
            max_roles=self.roles.max_roles,
        )


@dataclass(frozen=True)
class RoleRules:
    """When a task has several roles (see :func:`aos_gateway.network.complexity.find_roles`)."""

    max_roles: int = 4
    runner_up_ratio: float = 0.5
    min_clause_score: float = 0.3
    window_margin: float = 0.4
    #: the learned rules need a state with this many successes (fewer: the clause rules)
    min_successes: int = 200
