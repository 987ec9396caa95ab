from __future__ import annotations

import numpy as np
import pytest

from aos_gateway.errors import ValidationError
from aos_gateway.matching.bandit import ThompsonLearner
from aos_gateway.matching.learned import (
    LearnedState,
    Ranker,
    cap_memory,
    empty_state,
    fit_classifier,
    learn_gold,
)
from aos_gateway.perception.vectors import l2_normalize

AGENTS = ["a", "b", "c"]


def _clusters(n: int = 20, seed: int = 0) -> tuple[np.ndarray, list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = np.eye(3, 8, dtype=np.float32)
    x = np.concatenate([c + 0.05 * rng.normal(size=(n, 8)) for c in centers]).astype(np.float32)
    return l2_normalize(x), [a for a in AGENTS for _ in range(n)], centers


def _at(cos: float, n: int) -> np.ndarray:
    """n unit vectors at this cosine to e0 (8 dims), each its own."""
    rng = np.random.default_rng(n)
    out = np.zeros((n, 8), dtype=np.float32)
    out[:, 0] = cos
    rest = rng.normal(size=(n, 7)).astype(np.float32)
    out[:, 1:] = np.sqrt(1 - cos * cos) * rest / np.linalg.norm(rest, axis=1, keepdims=True)
    return out


def test_learned_ranking_beats_a_misleading_card_score() -> None:
    x, y, centers = _clusters()
    ranker = Ranker(learn_gold(AGENTS, x, y))
    misleading = np.array([0.9, 0.1, 0.1], dtype=np.float32)  # the cards point at "a"
    scores, learned = ranker.score(centers[1], AGENTS, misleading)
    assert int(np.argmax(scores)) == 1 and learned is not None and int(np.argmax(learned)) == 1
    assert 0.0 < float(scores.sum()) <= 1.0 + 1e-5  # a probability spread over the candidates
    zero_scores, none = Ranker(None).score(centers[1], AGENTS, misleading)
    assert none is None and int(np.argmax(zero_scores)) == 0


def test_candidates_the_state_never_saw_keep_their_card_share() -> None:
    x, y, centers = _clusters()
    ranker = Ranker(learn_gold(AGENTS, x, y))
    scores, learned = ranker.score(centers[0], ["new", "a"], np.array([0.5, 0.5], dtype=np.float32))
    # past tasks right at the query decide: the new agent keeps its card share and no more
    assert learned is not None and learned[0] < 0.01 and scores[0] > 0.0 and scores[1] > scores[0]
    assert ranker.propose(centers[2], 1) == ["c"]
    assert Ranker(None).propose(centers[2], 3) == []


def test_state_round_trips_through_bytes() -> None:
    x, y, _ = _clusters()
    state = learn_gold(AGENTS, x, y)
    state.version, state.metadata = 7, {"trained_on": "60 tasks"}
    back = LearnedState.from_bytes(state.to_bytes())
    assert back.agent_ids == AGENTS and back.version == 7 and back.metadata == {"trained_on": "60 tasks"}
    assert back.memory.shape == state.memory.shape and np.allclose(back.memory, state.memory, atol=1e-3)
    assert back.coef is not None and state.coef is not None and np.allclose(back.coef, state.coef, atol=1e-2)
    q = x[5]
    sims = np.array([0.2, 0.3, 0.1], dtype=np.float32)
    assert np.allclose(Ranker(back).score(q, AGENTS, sims)[0], Ranker(state).score(q, AGENTS, sims)[0], atol=1e-3)


def test_state_from_bad_bytes_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match="not a learned matching state"):
        LearnedState.from_bytes(b"garbage")


def test_cap_memory_keeps_the_most_recent_per_agent_and_outcome() -> None:
    s = empty_state(AGENTS, 2)
    s.memory = np.arange(12, dtype=np.float32).reshape(6, 2)
    s.memory_agent = np.array([0, 0, 0, 1, 0, 0], dtype=np.int32)
    s.memory_success = np.array([True, True, True, True, False, False])
    cap_memory(s, 2)
    assert s.memory_agent.tolist() == [0, 0, 1, 0, 0]
    assert s.memory[:, 0].tolist() == [2.0, 4.0, 6.0, 8.0, 10.0]


def test_thompson_learner_finds_the_right_agents_from_success_and_failure_only() -> None:
    x, y, centers = _clusters(n=60, seed=1)
    order = np.random.default_rng(2).permutation(len(y))
    misleading = np.array([0.9, 0.1, 0.1], dtype=np.float32)  # zero-shot would always pick "a"
    learner = ThompsonLearner(AGENTS, 8, candidates=3, seed=0, first_refit=50)
    for i in order:
        chosen = learner.choose(x[i], AGENTS, misleading)
        learner.observe(x[i], chosen, chosen == y[i])
    assert learner.trials == len(y) and learner.successes > len(y) / 2
    ranker = Ranker(learner.finish())
    picks = [AGENTS[int(np.argmax(ranker.score(c, AGENTS, misleading)[0]))] for c in centers]
    assert picks == AGENTS
    assert learner.state.memory_success.sum() < learner.state.memory.shape[0]  # failures were kept too


def _bandit_state(rng: np.random.Generator, n: int = 400, dim: int = 16, agents: int = 5) -> LearnedState:
    vecs = rng.normal(size=(n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    state = empty_state([f"a{i}" for i in range(agents)], dim)
    state.memory = vecs
    state.memory_agent = rng.integers(0, agents, n).astype(np.int32)
    state.memory_success = rng.random(n) < 0.7  # failures too: score() adds the evidence odds
    return fit_classifier(state)


def test_cached_similarities_give_the_same_scores_as_computing_them_afresh() -> None:
    rng = np.random.default_rng(3)
    state = _bandit_state(rng)
    ids = state.agent_ids
    queries = rng.normal(size=(6, state.dim)).astype(np.float32)
    cards = rng.uniform(0.1, 0.6, size=(6, len(ids))).astype(np.float32)
    fresh = [Ranker(state).score(q, ids, c) for q, c in zip(queries, cards, strict=True)]
    cached = Ranker(state)
    cached.prefetch(queries[:4])  # some prefetched together, some not
    for _ in range(2):  # the second round is served from the cache
        for q, c, (want, want_learned) in zip(queries, cards, fresh, strict=True):
            got, learned = cached.score(q, ids, c)
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)  # GEMM vs GEMV rounding
            assert learned is not None and want_learned is not None
            np.testing.assert_allclose(learned, want_learned, rtol=1e-4, atol=1e-7)
            assert cached.propose(q, 3) == Ranker(state).propose(q, 3)
    # the memory is read once per distinct vector, and the rows handed out are not the cached ones
    assert len(cached._sims_cache) == 6
    rows = cached.similarities(queries[:2])
    rows[:] = 0.0
    np.testing.assert_allclose(cached.similarities(queries[:2]), queries[:2] @ state.memory.T, rtol=1e-5, atol=1e-6)


def test_the_similarity_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from aos_gateway.matching import learned

    monkeypatch.setattr(learned, "SIMS_CACHE_BYTES", 4 * 400 * 10)  # ten rows of 400 memories
    rng = np.random.default_rng(4)
    state = _bandit_state(rng)
    ranker = Ranker(state)
    queries = rng.normal(size=(25, state.dim)).astype(np.float32)
    for q in queries:
        ranker.score(q, state.agent_ids, np.full(len(state.agent_ids), 0.3, dtype=np.float32))
    assert len(ranker._sims_cache) == 10
    # a vector of another size is not prefetched (the matcher may hold a CLIP-space task)
    ranker.prefetch(np.ones((1, state.dim + 1), dtype=np.float32))
    assert len(ranker._sims_cache) == 10


def test_fingerprint_ignores_the_version_and_follows_the_published_content() -> None:
    rng = np.random.default_rng(5)
    state = _bandit_state(rng)
    fp = state.fingerprint()
    state.version = 123
    assert state.fingerprint() == fp
    assert LearnedState.from_bytes(state.to_bytes()).fingerprint() == fp  # float16 on the wire: same content
    state.memory_success = ~state.memory_success
    assert state.fingerprint() != fp


def test_the_planned_fallback_is_the_best_scored_other_agent() -> None:
    q = np.ones(8, dtype=np.float32) / 8**0.5
    cards = np.array([0.2, 0.52, 0.5], dtype=np.float32)  # zero-shot order: b, c (close behind), a
    chosen_seen = set()
    for seed in range(20):
        learner = ThompsonLearner(AGENTS, 8, seed=seed)
        chosen, backup = learner.choose_with_fallback(q, AGENTS, cards)
        assert backup == {"b": "c", "c": "b", "a": "b"}[chosen]
        assert chosen == ThompsonLearner(AGENTS, 8, seed=seed).choose(q, AGENTS, cards)  # the same draw
        chosen_seen.add(chosen)
    assert {"b", "c"} <= chosen_seen  # both cases were met
    assert ThompsonLearner(["a"], 8).choose_with_fallback(q, ["a"], cards[:1]) == ("a", None)


def test_learned_distributions_of_many_rows_are_each_rows_own() -> None:
    rng = np.random.default_rng(5)
    state = _bandit_state(rng)
    queries = rng.normal(size=(7, state.dim)).astype(np.float32)
    cards = rng.uniform(0.1, 0.6, size=(7, len(state.agent_ids))).astype(np.float32)
    cards[:, 1] = np.nan  # an agent without a card similarity: no card vote
    ranker = Ranker(state)
    many = ranker.learned_distributions(queries, cards)
    plain = ranker.learned_distributions(queries)
    for j, q in enumerate(queries):
        one = Ranker(state).learned_distribution(q, cards[j])
        assert one is not None
        np.testing.assert_allclose(many[j], one, rtol=1e-4, atol=1e-6)
        no_cards = Ranker(state).learned_distribution(q)
        assert no_cards is not None
        np.testing.assert_allclose(plain[j], no_cards, rtol=1e-4, atol=1e-6)
    assert many.shape == (7, len(state.agent_ids)) and np.allclose(plain.sum(axis=1), 1.0, atol=1e-5)


def test_a_far_past_task_does_not_outvote_the_cards() -> None:
    """A state from a few outcomes: past tasks less similar than the floor (cos 0.35 < 0.4) must not
    outrank the cards for a new task (after a dozen arithmetic tasks the calculator came second for
    "What is in this photo?"); close ones (cos 0.9) still decide."""
    from aos_gateway.matching.learned import BlendWeights

    q = np.eye(8, dtype=np.float32)[0]
    card_sims = np.array([0.3, 0.2, 0.1], dtype=np.float32)  # the cards: "a", weakly
    far = learn_gold(AGENTS, _at(0.35, 3), ["c"] * 3)
    assert int(np.argmax(Ranker(far).score(q, AGENTS, card_sims)[0])) == 0
    # without the floor the far tasks outvote the cards (exp((0.35 - 1) / T) > exp((0.3 - 1) / T))
    assert int(np.argmax(Ranker(far, BlendWeights(floor=None)).score(q, AGENTS, card_sims)[0])) == 2
    close = learn_gold(AGENTS, _at(0.9, 3), ["c"] * 3)
    assert int(np.argmax(Ranker(close).score(q, AGENTS, card_sims)[0])) == 2


def test_an_agent_registered_after_learning_wins_where_its_card_fits_and_the_past_is_far() -> None:
    """A review: after a learning pass over a dozen stock-quote outcomes, a weather agent registered
    later lost its own card's example to the stock-quote agent (past tasks at cosine 0.05-0.16, the
    new card at 0.82): the floor backed off to the state's agents only. An agent the state never saw
    now votes with its card like an agent without memories."""

    q = np.eye(8, dtype=np.float32)[0]
    state = learn_gold(["quote", "fx"], _at(0.1, 12), ["quote"] * 8 + ["fx"] * 4)
    ranker = Ranker(state)
    ids = ["quote", "fx", "weather"]
    scores, learned = ranker.score(q, ids, np.array([0.10, 0.05, 0.82], dtype=np.float32))
    assert learned is not None and int(np.argmax(scores)) == 2 and int(np.argmax(learned)) == 2
    # close past tasks still decide against a new card
    close = Ranker(learn_gold(["quote", "fx"], _at(0.95, 12), ["quote"] * 8 + ["fx"] * 4))
    assert int(np.argmax(close.score(q, ids, np.array([0.10, 0.05, 0.5], dtype=np.float32))[0])) == 0
