"""What the matcher learns from experience, and how it scores agents with it.

The learned state (:class:`LearnedState`) is small numeric data, serialisable to bytes for
``aos.weights.v1``:

- a **memory** of past tasks: task vectors with the agent that handled them and whether that
  was right (success) or not (failure), capped per agent (most recent kept);
- a **classifier** over task vectors (multinomial logistic regression; one row per agent),
  fitted on the successes.

Scoring (:func:`score_agents`) blends three probability distributions over agents: the cards
(softmax of cosine similarity), a similarity-weighted vote of the nearest successful past
tasks, and the classifier. The blend is normalised, so a score is an estimate of "this agent
is the right one" that an abstain threshold can use. Agents with no history keep only their
card share. Two feedback modes feed the memory: the right agent is known (gold), or only the
success or failure of the chosen agent is (bandit; see :mod:`aos_gateway.matching.bandit`).
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from aos_gateway.errors import ValidationError
from aos_gateway.perception.cache import ResultCache
from aos_gateway.perception.vectors import FloatArray

IntArray = npt.NDArray[np.int32]
BoolArray = npt.NDArray[np.bool_]

FORMAT = "aos-matching-npz-v1"


@dataclass(frozen=True)
class BlendWeights:
    """How much each source counts, and the softmax temperatures (cosine units)."""

    card: float = 0.3
    knn: float = 1.0
    classifier: float = 1.0
    card_temperature: float = 0.05
    knn_temperature: float = 0.05
    k: int = 20
    evidence_k: int = 200  # neighbours counted for local success / failure evidence
    #: a similarity floor for the vote (None: none): a pseudo-vote of weight exp((floor - 1) / T) for
    #: the cards' ranking. With a few outcomes learned, a far past task outvoted every far card (a
    #: ratio of tiny kernel weights: the calculator came second for a photo question after a dozen
    #: arithmetic tasks); close past tasks still decide. Two-fold on train: no change up to 0.4
    floor: float | None = 0.4


@dataclass
class LearnedState:
    """Everything the matcher learned; ``agent_ids`` index the classifier rows and memory labels."""

    agent_ids: list[str]
    memory: FloatArray  # (n, d) task vectors (stored as float16 on the wire)
    memory_agent: IntArray  # (n,) index into agent_ids
    memory_success: BoolArray  # (n,)
    coef: FloatArray | None = None  # (len(classes), d)
    intercept: FloatArray | None = None  # (len(classes),)
    classes: IntArray | None = None  # agent indices the classifier knows
    #: (len(agent_ids), d) card prototypes adapted to unlabelled tasks (:mod:`.adapt`), or None:
    #: the ranker's card similarity is taken to them instead of the cards (a NaN row: to the card)
    prototypes: FloatArray | None = None
    version: int = 0
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.memory.shape[1])

    @property
    def successes(self) -> int:
        return int(self.memory_success.sum())

    def to_bytes(self) -> bytes:
        """A compressed numpy archive (``FORMAT``); floats travel as float16."""
        buf = io.BytesIO()
        arrays: dict[str, npt.NDArray[np.generic]] = {
            "agent_ids": np.array(json.dumps(self.agent_ids)),
            "memory": self.memory.astype(np.float16),
            "memory_agent": self.memory_agent.astype(np.int32),
            "memory_success": self.memory_success.astype(np.bool_),
            "version": np.array(self.version, dtype=np.int64),
            "metadata": np.array(json.dumps(self.metadata)),
        }
        if self.coef is not None and self.intercept is not None and self.classes is not None:
            arrays |= {
                "coef": self.coef.astype(np.float16),
                "intercept": self.intercept.astype(np.float32),
                "classes": self.classes.astype(np.int32),
            }
        if self.prototypes is not None:
            arrays["prototypes"] = self.prototypes.astype(np.float16)
        np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
        return buf.getvalue()

    def fingerprint(self) -> str:
        """sha256 of the content as :meth:`to_bytes` publishes it (floats as float16), without the
        version: equal fingerprints, equal states. No archive is built: compressing a large memory
        for each learning pass's change check was a tenth of a busy worker's CPU."""
        h = hashlib.sha256(FORMAT.encode())
        h.update(json.dumps([self.agent_ids, self.metadata], sort_keys=True).encode())
        arrays: list[npt.NDArray[np.generic]] = [
            self.memory.astype(np.float16),
            self.memory_agent.astype(np.int32),
            self.memory_success.astype(np.bool_),
        ]
        if self.coef is not None and self.intercept is not None and self.classes is not None:
            arrays += [self.coef.astype(np.float16), self.intercept.astype(np.float32), self.classes.astype(np.int32)]
        if self.prototypes is not None:
            h.update(b"prototypes")
            arrays.append(self.prototypes.astype(np.float16))
        for a in arrays:
            h.update(repr(a.shape).encode())
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()

    @classmethod
    def from_bytes(cls, data: bytes) -> LearnedState:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                agent_ids = json.loads(str(z["agent_ids"]))
                has_clf = "coef" in z.files
                state = cls(
                    agent_ids=[str(a) for a in agent_ids],
                    memory=z["memory"].astype(np.float32),
                    memory_agent=z["memory_agent"].astype(np.int32),
                    memory_success=z["memory_success"].astype(np.bool_),
                    coef=z["coef"].astype(np.float32) if has_clf else None,
                    intercept=z["intercept"].astype(np.float32) if has_clf else None,
                    classes=z["classes"].astype(np.int32) if has_clf else None,
                    prototypes=z["prototypes"].astype(np.float32) if "prototypes" in z.files else None,
                    version=int(z["version"]),
                    metadata={str(k): str(v) for k, v in json.loads(str(z["metadata"])).items()},
                )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValidationError(f"not a learned matching state ({FORMAT}): {exc}") from exc
        n = state.memory.shape[0]
        if state.memory_agent.shape != (n,) or state.memory_success.shape != (n,):
            raise ValidationError("learned matching state: memory arrays disagree in length")
        if n and int(state.memory_agent.max()) >= len(state.agent_ids):
            raise ValidationError("learned matching state: memory refers to an unknown agent")
        if state.prototypes is not None and state.prototypes.shape != (len(state.agent_ids), state.dim):
            raise ValidationError(
                f"learned matching state: prototypes are {state.prototypes.shape}, "
                f"not {len(state.agent_ids)} agents x {state.dim}"
            )
        return state


def empty_state(agent_ids: Sequence[str], dim: int) -> LearnedState:
    return LearnedState(
        agent_ids=list(agent_ids),
        memory=np.zeros((0, dim), dtype=np.float32),
        memory_agent=np.zeros(0, dtype=np.int32),
        memory_success=np.zeros(0, dtype=np.bool_),
    )


def cap_memory(state: LearnedState, per_agent: int) -> LearnedState:
    """Keep the ``per_agent`` most recent memories of each (agent, outcome)."""
    n = state.memory.shape[0]
    if n == 0:
        return state
    keep = np.zeros(n, dtype=np.bool_)
    seen: dict[tuple[int, bool], int] = {}
    for i in range(n - 1, -1, -1):
        key = (int(state.memory_agent[i]), bool(state.memory_success[i]))
        if seen.get(key, 0) < per_agent:
            seen[key] = seen.get(key, 0) + 1
            keep[i] = True
    state.memory = state.memory[keep]
    state.memory_agent = state.memory_agent[keep]
    state.memory_success = state.memory_success[keep]
    return state


def fit_classifier(
    state: LearnedState, c: float = 10.0, max_iter: int = 3000, warm: LearnedState | None = None
) -> LearnedState:
    """(Re)fit the classifier on the successes in memory; needs two agents with successes.

    ``warm``: a state fitted before on much the same memory (the previous learning pass); its
    rows start the optimisation (agents it lacks start at zero), so a few iterations suffice.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    ok = state.memory_success
    x, y = state.memory[ok], state.memory_agent[ok]
    classes = np.unique(y)
    if len(classes) < 2:
        state.coef = state.intercept = state.classes = None
        return state
    lr = LogisticRegression(C=c, max_iter=max_iter)
    start = _warm_start(warm, [state.agent_ids[i] for i in classes], x.shape[1]) if len(classes) > 2 else None
    if start is not None:
        lr.set_params(warm_start=True)
        lr.coef_, lr.intercept_ = start
    with warnings.catch_warnings():  # early in a stream, few tasks per agent: sklearn warns, rightly but uselessly
        warnings.filterwarnings("ignore", message="The number of unique classes", category=UserWarning)
        if start is not None:  # a bounded continuation: not converging within max_iter is expected
            warnings.filterwarnings("ignore", category=ConvergenceWarning)
        lr.fit(x, y)
    state.coef = np.asarray(lr.coef_, dtype=np.float32)
    state.intercept = np.asarray(lr.intercept_, dtype=np.float32)
    state.classes = np.asarray(lr.classes_, dtype=np.int32)
    return state


def _warm_start(
    warm: LearnedState | None, agents: Sequence[str], dim: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None:
    """``warm``'s coefficients rearranged for ``agents`` (in class order), or None when it has none."""
    if warm is None or warm.coef is None or warm.intercept is None or warm.classes is None or warm.dim != dim:
        return None
    row = {warm.agent_ids[int(k)]: i for i, k in enumerate(warm.classes)}
    coef = np.zeros((len(agents), dim))
    icpt = np.zeros(len(agents))
    for i, a in enumerate(agents):
        j = row.get(a)
        if j is not None:
            coef[i] = warm.coef[j]
            icpt[i] = warm.intercept[j]
    return coef, icpt


def learn_gold(
    agent_ids: Sequence[str],
    vectors: FloatArray,
    labels: Sequence[str],
    per_agent: int = 1000,
    c: float = 10.0,
) -> LearnedState:
    """A state from (task vector, right agent) pairs; labels naming no known agent are skipped."""
    index = {a: i for i, a in enumerate(agent_ids)}
    keep = [i for i, a in enumerate(labels) if a in index]
    vecs = np.asarray(vectors, dtype=np.float32)
    dim = vecs.shape[1] if vecs.ndim == 2 else 0
    state = empty_state(agent_ids, dim)
    state.memory = vecs[keep]
    state.memory_agent = np.array([index[labels[i]] for i in keep], dtype=np.int32)
    state.memory_success = np.ones(len(keep), dtype=np.bool_)
    return fit_classifier(cap_memory(state, per_agent), c=c)


def _softmax(s: FloatArray, temperature: float) -> FloatArray:
    z = s / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    out: FloatArray = (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)
    return out


def knn_votes(
    state: LearnedState,
    queries: FloatArray,
    k: int,
    temperature: float,
    success: bool = True,
    sims: FloatArray | None = None,
) -> FloatArray:
    """(n, agents): similarity-weighted votes of the k nearest memories with this outcome.

    Unnormalised: the weight of a neighbour is exp((cos - 1) / temperature), 1 for an exact
    repeat, so the sum says how much close evidence there is. ``sims``: ``queries @ memory.T``
    when the caller has it already (left unchanged).
    """
    q = np.atleast_2d(queries)
    out = np.zeros((q.shape[0], len(state.agent_ids)), dtype=np.float32)
    sel = state.memory_success == success
    n = int(sel.sum())
    if n == 0:
        return out
    if sims is None:
        sims = q @ state.memory.T  # no copy of the memory: the other outcome is masked out instead
    elif n < sel.shape[0]:
        sims = sims.copy()  # masked below: the caller's rows stay as they were
    if n < sel.shape[0]:
        sims[:, ~sel] = -np.inf
    kk = min(k, n)
    top = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
    lab = state.memory_agent
    for i in range(q.shape[0]):
        np.add.at(out[i], lab[top[i]], np.exp((sims[i, top[i]] - 1.0) / temperature))
    return out


def classifier_proba(state: LearnedState, queries: FloatArray) -> FloatArray | None:
    """(n, agents) class probabilities, or None without a classifier."""
    if state.coef is None or state.intercept is None or state.classes is None:
        return None
    q = np.atleast_2d(queries)
    logits = q @ state.coef.T + state.intercept
    out = np.zeros((q.shape[0], len(state.agent_ids)), dtype=np.float32)
    if state.coef.shape[0] == 1:  # sklearn's binary case: one row for the second class
        p1 = 1.0 / (1.0 + np.exp(-logits[:, 0]))
        out[:, state.classes[0]] = 1.0 - p1
        out[:, state.classes[1]] = p1
    else:
        out[:, state.classes] = _softmax(logits, 1.0)
    return out


#: query-memory similarity rows a ranker keeps (bytes): one task vector is compared with the whole
#: memory by ``propose``, ``score`` and the bandit evidence, for the task and each clause; with
#: tens of thousands of memories that product was a third of the worker's CPU (soak, 2026-11-28)
SIMS_CACHE_BYTES = 32 * 1024 * 1024


class Ranker:
    """Scores candidate agents for one task vector with a learned state (or zero-shot without).

    Candidates are any agents (ids): those the state never saw keep only their card share.
    ``propose`` names the agents the learned state favours, so a matcher can add them to the
    ones its similarity search found. A ranker's state is never changed in place (a new state
    gets a new ranker), so the similarities of a query to the memory are computed once and kept
    for the next calls with the same vector (:meth:`prefetch` computes several in one product).
    """

    def __init__(self, state: LearnedState | None = None, weights: BlendWeights | None = None) -> None:
        self.state = state if state is not None and state.successes else None
        #: card prototypes adapted to unlabelled tasks (aligned with the state's agents), or None
        self.prototypes = state.prototypes if state is not None else None
        rows = self.state.memory.shape[0] if self.state is not None else 0
        self._sims_cache: ResultCache[FloatArray] = ResultCache(max(8, SIMS_CACHE_BYTES // (4 * max(rows, 1))))
        self.weights = weights or BlendWeights()
        self._pos = {a: i for i, a in enumerate(state.agent_ids)} if state is not None else {}
        self._ids = list(state.agent_ids) if state is not None else []
        self.version = state.version if state is not None else 0
        self._failures = self.state is not None and self.state.successes < self.state.memory.shape[0]
        # the encoder whose vectors the state holds ("" or absent: not recorded)
        used = self.state is not None or self.prototypes is not None
        self.model = state.metadata.get("model") if state is not None and used else None

    @property
    def learned(self) -> bool:
        return self.state is not None

    def similarities(self, queries: FloatArray) -> FloatArray:
        """(n, memories): ``queries @ memory.T``, rows seen before from the cache (the state's
        vector size is required)."""
        state = self.state
        assert state is not None
        q = np.atleast_2d(np.asarray(queries, dtype=np.float32))

        def compute(first: list[int]) -> list[FloatArray]:
            # memory @ q.T, not q @ memory.T: the same numbers, and with several rows BLAS takes a
            # faster path for this shape (measured: 2.8 against 4.9 ms for 12 rows and 10k memories)
            return [row.copy() for row in (state.memory @ q[first].T).T]  # rows of their own, not views

        out: FloatArray = np.stack(self._sims_cache.get_or_compute([row.tobytes() for row in q], compute))
        return out

    def prefetch(self, queries: FloatArray) -> None:
        """Compute the similarities of several vectors (a task's and its clauses') in one product."""
        q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if self.state is not None and q.shape[0] and q.shape[1] == self.state.dim:
            self.similarities(q)

    def learned_distribution(self, query: FloatArray, card_sims: FloatArray | None = None) -> FloatArray | None:
        """Over ``state.agent_ids``: kNN + classifier probabilities, backed off to the cards.

        The cards count as memories too: each agent's card votes with the same kernel as a past
        task, exp((cos - 1) / T). Where past tasks are close, they outweigh the cards (task-task
        similarity runs higher than task-card); where none is, the cards decide, so one success
        does not pull every task to its agent; below ``weights.floor`` the cards' ranking outweighs
        them all. The classifier is trusted in the same proportion.
        ``card_sims`` are aligned with ``state.agent_ids`` (NaN: unknown, no vote).
        """
        if self.state is None:
            return None
        cards = None if card_sims is None else np.asarray(card_sims, dtype=np.float32)[None, :]
        row: FloatArray = self.learned_distributions(np.atleast_2d(np.asarray(query, dtype=np.float32)), cards)[0]
        return row

    def learned_distributions(
        self, queries: FloatArray, card_sims: FloatArray | None = None, extra_card_sims: FloatArray | None = None
    ) -> FloatArray:
        """:meth:`learned_distribution` of several vectors at once: (n, agents) rows; ``card_sims``
        (n, agents) or None (no card votes). Needs a learned state.

        ``extra_card_sims`` (n, m): the cards of m candidates the state never saw (registered after
        it was learned); they take part like agents without memories (their cards vote and share the
        back-off) and their m columns follow the state's agents. Without them in the vote, the floor
        backed off to the state's agents only, and a dozen far outcomes outranked a new agent whose
        card fit the task (a weather question went to the one stock-quote agent learned)."""
        assert self.state is not None
        w = self.weights
        q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        n_rows, n = q.shape[0], len(self.state.agent_ids)
        extra = None if extra_card_sims is None else np.atleast_2d(np.asarray(extra_card_sims, dtype=np.float32))
        m = 0 if extra is None else extra.shape[1]
        votes = knn_votes(self.state, q, w.k, w.knn_temperature, sims=self.similarities(q))
        mass = votes.sum(axis=1, keepdims=True)
        if card_sims is None:
            card_votes = np.zeros((n_rows, n), dtype=np.float32)
        else:
            card_votes = np.nan_to_num(np.exp((np.asarray(card_sims, dtype=np.float32) - 1.0) / w.knn_temperature))
        if extra is not None and m:
            votes = np.pad(votes, ((0, 0), (0, m)))
            card_votes = np.concatenate([card_votes, np.nan_to_num(np.exp((extra - 1.0) / w.knn_temperature))], axis=1)
            n += m
        cmass = card_votes.sum(axis=1, keepdims=True)
        # the floor's pseudo-vote goes to the cards' ranking: past tasks and cards less similar than
        # the floor weigh less than it, so where nothing is close the cards' ranking decides
        prior = 0.0 if w.floor is None else float(np.exp((w.floor - 1.0) / w.knn_temperature))
        trust = mass / np.maximum(mass + cmass + prior, 1e-30)
        back = np.where(cmass > 0, card_votes / np.where(cmass > 0, cmass, 1.0), np.float32(1.0 / n))
        dist = w.knn * (votes + card_votes + prior * back) / np.maximum(mass + cmass + prior, 1e-30)
        total = w.knn
        proba = classifier_proba(self.state, q)
        if proba is not None:
            if m:
                proba = np.pad(proba, ((0, 0), (0, m)))  # the classifier never saw them: no vote
            dist = dist + w.classifier * (trust * proba + (1.0 - trust) * back)
            total += w.classifier
        out: FloatArray = (dist / total).astype(np.float32)
        return out

    def propose(self, query: FloatArray, n: int) -> list[str]:
        """The n agents with the highest learned probability; with adapted prototypes and nothing
        learned, the n nearest prototypes (none without either)."""
        if n <= 0:
            return []
        dist = self.learned_distribution(query)
        if dist is None:
            if self.prototypes is None:
                return []
            dist = self.prototypes @ np.asarray(query, dtype=np.float32).reshape(-1)
            dist = np.where(np.isnan(dist), -np.inf, dist)  # agents whose card serves: the search finds them
            return [self._ids[j] for j in np.argsort(-dist)[:n] if np.isfinite(dist[j])]
        top = np.argsort(-dist)[:n]
        return [self._ids[j] for j in top if dist[j] > 0]

    def card_similarities(self, query: FloatArray, agent_ids: Sequence[str], card_sims: FloatArray) -> FloatArray:
        """``card_sims`` with each agent that has an adapted prototype taking its similarity to that
        instead (the others, and agents whose prototype row is NaN, keep their card's)."""
        sims = np.asarray(card_sims, dtype=np.float32).reshape(-1)
        if self.prototypes is None or not sims.shape[0]:
            return sims
        cols = np.array([self._pos.get(a, -1) for a in agent_ids])
        known = cols >= 0
        if not known.any():
            return sims
        adapted = self.prototypes[cols[known]] @ np.asarray(query, dtype=np.float32).reshape(-1)
        out = sims.copy()
        out[known] = np.where(np.isnan(adapted), sims[known], adapted)  # NaN row: the card's own
        return out

    def score(
        self, query: FloatArray, agent_ids: Sequence[str], card_sims: FloatArray
    ) -> tuple[FloatArray, FloatArray | None]:
        """(scores, learned probabilities or None), aligned with ``agent_ids``.

        score = (card * softmax(card_sims / T) + learned mass) / total weight: a probability
        spread over the candidates (it sums to at most 1). With adapted prototypes, ``card_sims``
        are taken to them (:meth:`card_similarities`).
        """
        w = self.weights
        sims = self.card_similarities(query, agent_ids, card_sims)
        if sims.shape[0] == 0:
            return sims, None
        card = _softmax(sims, w.card_temperature)
        total = w.card * card
        mass = w.card
        learned: FloatArray | None = None
        if self.state is not None:
            cols = np.array([self._pos.get(a, -1) for a in agent_ids])
            known = cols >= 0
            n_state = len(self.state.agent_ids)
            back = np.full(n_state, np.nan, dtype=np.float32)
            back[cols[known]] = sims[known]
            # candidates the state never saw vote with their cards too (columns after the state's)
            cols = np.where(known, cols, n_state + np.cumsum(~known) - 1)
            q1 = np.atleast_2d(np.asarray(query, dtype=np.float32))
            dist = self.learned_distributions(q1, back[None, :], sims[~known][None, :])[0]
            learned = dist[cols].astype(np.float32)
            lmass = w.knn + (w.classifier if self.state.coef is not None else 0.0)
            total = total + lmass * learned
            mass += lmass
            if self._failures:
                # bandit feedback: an agent that failed on tasks like this one is discounted by its
                # local success odds, (1 + wins) / (1 + wins + losses) (kernel-weighted counts)
                sims_q = self.similarities(q1)
                wins = knn_votes(self.state, q1, w.evidence_k, w.knn_temperature, True, sims_q)[0]
                losses = knn_votes(self.state, q1, w.evidence_k, w.knn_temperature, False, sims_q)[0]
                c = np.where(known, cols, 0)
                odds = np.where(known, (1.0 + wins[c]) / (1.0 + wins[c] + losses[c]), 1.0)
                total = total * odds
        out: FloatArray = (total / mass).astype(np.float32)
        return out, learned
