"""Learning when only the chosen agent's success or failure is known: Thompson sampling.

For each task the learner scores the candidates with what it knows (:class:`Ranker`: a
probability per agent) and draws one agent from a Beta posterior per candidate:

    alpha = 1 + prior * score + successes of the agent near the task (similarity-weighted)
    beta  = 1 + prior * (1 - score) + failures of the agent near the task (similarity-weighted)

so an agent that failed on similar tasks is tried less, a plausible untried one still gets its
chance, and agents that worked near here win. Every outcome goes to the memory; the classifier
is refitted on the successes as the memory grows (after 250, 500, 1000, ... outcomes), so the
cost of learning stays logarithmic in the stream length.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from aos_gateway.matching.learned import (
    BlendWeights,
    LearnedState,
    Ranker,
    cap_memory,
    empty_state,
    fit_classifier,
    knn_votes,
)
from aos_gateway.perception.vectors import FloatArray


class ThompsonLearner:
    """An online learner from bandit feedback over a fixed agent catalogue."""

    def __init__(
        self,
        agent_ids: Sequence[str],
        dim: int,
        candidates: int = 10,
        prior: float = 10.0,
        seed: int = 0,
        weights: BlendWeights | None = None,
        first_refit: int = 250,
        per_agent: int = 1000,
    ) -> None:
        self.agent_ids = list(agent_ids)
        self.weights = weights or BlendWeights()
        self.candidates = candidates
        self.prior = prior
        self.per_agent = per_agent
        self._rng = np.random.default_rng(seed)
        self._pos = {a: i for i, a in enumerate(self.agent_ids)}
        self._next_refit = first_refit
        # memory in growing buffers (amortised O(1) appends); states are views of the first n rows
        self._vec = np.zeros((1024, dim), dtype=np.float32)
        self._agent = np.zeros(1024, dtype=np.int32)
        self._ok = np.zeros(1024, dtype=np.bool_)
        self._n = 0
        self._classifier: LearnedState | None = None
        self.state: LearnedState = empty_state(self.agent_ids, dim)
        self.ranker = Ranker(None, self.weights)
        self.trials = 0
        self.successes = 0

    def _view(self) -> LearnedState:
        n = self._n
        s = LearnedState(self.agent_ids, self._vec[:n], self._agent[:n], self._ok[:n])
        if self._classifier is not None:
            s.coef, s.intercept, s.classes = self._classifier.coef, self._classifier.intercept, self._classifier.classes
        return s

    def choose(self, query: FloatArray, agent_ids: Sequence[str], card_sims: FloatArray) -> str:
        """One agent among the best ``candidates`` of ``agent_ids``, drawn by Thompson sampling."""
        return self.choose_with_fallback(query, agent_ids, card_sims)[0]

    def choose_with_fallback(
        self, query: FloatArray, agent_ids: Sequence[str], card_sims: FloatArray
    ) -> tuple[str, str | None]:
        """As :meth:`choose`, with the agent a plan falls back to when the chosen one fails: the
        best-scored other one (the planner's fallback is a role's best spare option), decided
        before the outcome is known; None with a single agent."""
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        scores, _ = self.ranker.score(q, agent_ids, card_sims)
        order = np.argsort(-scores)
        top = order[: self.candidates]
        p = np.clip(scores[top], 0.0, 1.0)
        alpha = 1.0 + self.prior * p
        beta = 1.0 + self.prior * (1.0 - p)
        cols = np.array([self._pos.get(agent_ids[j], -1) for j in top])
        known = cols >= 0
        if known.any() and self._n:
            w = self.weights
            view = self.state
            wins = knn_votes(view, q, w.evidence_k, w.knn_temperature, success=True)[0]
            losses = knn_votes(view, q, w.evidence_k, w.knn_temperature, success=False)[0]
            alpha[known] += wins[cols[known]]
            beta[known] += losses[cols[known]]
        theta = self._rng.beta(alpha, beta)
        chosen = agent_ids[int(top[int(np.argmax(theta))])]
        return chosen, next((agent_ids[int(j)] for j in order if agent_ids[int(j)] != chosen), None)

    def observe(self, query: FloatArray, agent_id: str, success: bool) -> None:
        """Record an outcome of the chosen agent (agents outside the catalogue are ignored)."""
        col = self._pos.get(agent_id)
        if col is None:
            return
        if self._n == self._vec.shape[0]:
            self._vec = np.concatenate([self._vec, np.zeros_like(self._vec)])
            self._agent = np.concatenate([self._agent, np.zeros_like(self._agent)])
            self._ok = np.concatenate([self._ok, np.zeros_like(self._ok)])
        self._vec[self._n] = np.asarray(query, dtype=np.float32).reshape(-1)
        self._agent[self._n] = col
        self._ok[self._n] = success
        self._n += 1
        self.trials += 1
        self.successes += bool(success)
        if self.trials >= self._next_refit:
            self._next_refit *= 2
            self._classifier = fit_classifier(self._view())
        self.state = self._view()
        self.ranker = Ranker(self.state, self.weights)

    def finish(self) -> LearnedState:
        """The state the matcher will use: capped memory (copied), classifier refitted."""
        n = self._n
        state = LearnedState(self.agent_ids, self._vec[:n].copy(), self._agent[:n].copy(), self._ok[:n].copy())
        state = fit_classifier(cap_memory(state, self.per_agent))
        self.state = state
        self.ranker = Ranker(state, self.weights)
        return state
