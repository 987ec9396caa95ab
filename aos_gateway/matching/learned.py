"""Learning which agent is right from labelled experience (the agent that was right is known).

A first learned state over frozen task vectors: a logistic-regression classifier and a
nearest-neighbour vote over past tasks, added as probabilities. Agents never seen in the
experience keep their zero-shot (card similarity) score in the blend.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from aos_gateway.perception.vectors import FloatArray


def _softmax(s: FloatArray, temperature: float) -> FloatArray:
    z = s / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: FloatArray = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
    return out


class GoldLearner:
    """Scores agents for task vectors from (task vector, right agent) pairs."""

    def __init__(self, agent_ids: Sequence[str], k: int = 20, temperature: float = 0.05, c: float = 10.0) -> None:
        self.agent_ids = list(agent_ids)
        self._index = {a: i for i, a in enumerate(self.agent_ids)}
        self.k = k
        self.temperature = temperature
        self.c = c
        self._x: FloatArray | None = None
        self._y: npt.NDArray[np.int64] | None = None
        self._lr: object | None = None

    def fit(self, vectors: FloatArray, labels: Sequence[str]) -> GoldLearner:
        from sklearn.linear_model import LogisticRegression

        keep = [i for i, a in enumerate(labels) if a in self._index]
        self._x = np.asarray(vectors, dtype=np.float32)[keep]
        self._y = np.array([self._index[labels[i]] for i in keep], dtype=np.int64)
        if len(set(self._y.tolist())) >= 2:
            self._lr = LogisticRegression(C=self.c, max_iter=3000).fit(self._x, self._y)
        return self

    def scores(self, queries: FloatArray, card_scores: FloatArray) -> FloatArray:
        """Per query, a score per agent (rows align with ``agent_ids``)."""
        q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        n, m = q.shape[0], len(self.agent_ids)
        out = 0.3 * _softmax(np.atleast_2d(card_scores), self.temperature)
        if self._x is None or self._y is None or len(self._y) == 0:
            return out
        sims = q @ self._x.T
        k = min(self.k, sims.shape[1])
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        knn = np.zeros((n, m), dtype=np.float32)
        for i in range(n):
            np.add.at(knn[i], self._y[top[i]], np.exp((sims[i, top[i]] - 1.0) / self.temperature))
        knn /= np.maximum(knn.sum(axis=1, keepdims=True), 1e-12)
        out = out + knn
        if self._lr is not None:
            proba = np.zeros((n, m), dtype=np.float32)
            proba[:, self._lr.classes_] = self._lr.predict_proba(q)  # type: ignore[attr-defined]
            out = out + proba
        return out
