from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aos_gateway.errors import ValidationError
from aos_gateway.matching.adapt import adapt_prototypes, unlabelled_state
from aos_gateway.matching.dataset import read_examples
from aos_gateway.matching.learned import LearnedState, Ranker, learn_gold
from aos_gateway.perception.vectors import l2_normalize

AGENTS = ["a", "b", "c", "d", "e", "f"]


def _world(seed: int = 0, n: int = 60, draw: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Six agents whose tasks share a style their cards lack (users write alike, card authors do
    not), but one card is written in that style: it attracts other agents' tasks (a hub). ``seed``
    makes the world, ``draw`` its tasks. Returns cards, tasks, task labels, centres."""
    rng = np.random.default_rng(seed)
    centres = l2_normalize(rng.normal(size=(6, 16)).astype(np.float32))
    style = l2_normalize(rng.normal(size=(1, 16)).astype(np.float32))
    cards = centres.copy()
    cards[0] = l2_normalize(centres[0:1] + style)[0]
    tasks_rng = np.random.default_rng([seed, draw])
    labels = tasks_rng.integers(0, 6, n)
    noise = 0.5 * tasks_rng.normal(size=(n, 16)).astype(np.float32) / 4
    return cards, l2_normalize(centres[labels] + 0.8 * style + noise), labels, centres


def _top1(protos: np.ndarray, tasks: np.ndarray, labels: np.ndarray) -> float:
    return float((np.argmax(tasks @ protos.T, axis=1) == labels).mean())


@pytest.mark.parametrize("seed", [0, 2, 5])
def test_prototypes_move_toward_the_tasks_their_cards_attract_and_rank_better(seed: int) -> None:
    cards, tasks, _, centres = _world(seed)
    protos = adapt_prototypes(cards, tasks)
    assert protos.shape == cards.shape and np.allclose(np.linalg.norm(protos, axis=1), 1.0, atol=1e-5)
    # the hub's prototype no longer out-reaches the others: every other agent's prototype is nearer
    # its tasks' typical vector than its card was
    typical = l2_normalize(centres + 0.8 * (tasks.mean(axis=0) - centres.mean(axis=0)))
    assert all(float(protos[i] @ typical[i]) > float(cards[i] @ typical[i]) for i in range(1, 6))
    # on tasks it has not seen (another draw of the same world) it ranks better than the cards
    _, fresh, fresh_labels, _ = _world(seed, n=300, draw=2)
    assert _top1(protos, fresh, fresh_labels) >= _top1(cards, fresh, fresh_labels) + 0.05


def test_an_agent_no_task_comes_near_keeps_its_card() -> None:
    cards, tasks, _, _ = _world()
    lonely = -cards.mean(axis=0, keepdims=True)
    lonely /= np.linalg.norm(lonely)
    protos = adapt_prototypes(np.vstack([cards, lonely]), tasks)
    assert np.allclose(protos[6], lonely[0], atol=1e-3)


def test_an_unlabelled_state_keeps_no_prototype_for_an_agent_no_task_came_near() -> None:
    cards, tasks, _, _ = _world()
    lonely = -cards.mean(axis=0, keepdims=True)
    lonely /= np.linalg.norm(lonely)
    state = unlabelled_state([*AGENTS, "lonely"], np.vstack([cards, lonely]), tasks)
    assert state.prototypes is not None
    assert np.isnan(state.prototypes[6]).all() and not np.isnan(state.prototypes[:6]).any()
    back = LearnedState.from_bytes(state.to_bytes())  # NaN survives the wire
    assert back.prototypes is not None and np.isnan(back.prototypes[6]).all()
    ranker = Ranker(back)
    q = lonely[0]
    sims = ranker.card_similarities(q, ["lonely", "a"], np.array([0.9, 0.1], dtype=np.float32))
    assert sims[0] == pytest.approx(0.9) and sims[1] != pytest.approx(0.1)  # its card's own; a's prototype
    assert "lonely" not in ranker.propose(q, 7)  # the search finds it by its card; only prototypes proposed


def test_no_tasks_or_no_iterations_leave_the_normalised_cards() -> None:
    cards = np.array([[3.0, 0.0], [1.0, 1.0]], dtype=np.float32)
    want = l2_normalize(cards)
    assert np.allclose(adapt_prototypes(cards, np.zeros((0, 2), dtype=np.float32)), want)
    assert np.allclose(adapt_prototypes(cards, np.ones((4, 2), dtype=np.float32), iterations=0), want)


def test_chunking_does_not_change_the_result() -> None:
    cards, tasks, _, _ = _world(n=100)
    assert np.allclose(adapt_prototypes(cards, tasks, chunk=7), adapt_prototypes(cards, tasks, chunk=1000), atol=1e-5)


def test_bad_shapes_and_settings_are_validation_errors() -> None:
    cards, tasks, _, _ = _world()
    with pytest.raises(ValidationError, match="cannot adapt"):
        adapt_prototypes(cards, tasks[:, :8])
    with pytest.raises(ValidationError, match="temperature"):
        adapt_prototypes(cards, tasks, temperature=0.0)
    with pytest.raises(ValidationError, match="6 agents but 2 card vectors"):
        unlabelled_state(AGENTS, cards[:2], tasks)


def test_a_ranker_with_an_unlabelled_state_ranks_by_the_prototypes() -> None:
    cards, tasks, labels, centres = _world()
    state = unlabelled_state(AGENTS, cards, tasks, model="enc")
    assert state.memory.shape == (0, 16) and state.prototypes is not None and state.metadata["model"] == "enc"
    ranker, zero = Ranker(state), Ranker(None)
    assert not ranker.learned and ranker.prototypes is not None and ranker.model == "enc"
    right = 0
    for q, y in zip(tasks, labels, strict=True):
        scores, learned = ranker.score(q, AGENTS, cards @ q)
        assert learned is None
        right += int(np.argmax(scores)) == y
    pairs = zip(tasks, labels, strict=True)
    zero_right = sum(int(np.argmax(zero.score(q, AGENTS, cards @ q)[0])) == y for q, y in pairs)
    assert right > zero_right
    # propose names the nearest prototypes, so a matcher adds them to its search's candidates
    assert ranker.propose(centres[2], 1) == [AGENTS[int(np.argmax(state.prototypes @ centres[2]))]]
    # an agent the state does not know keeps its card similarity
    sims = ranker.card_similarities(centres[0], ["new", "a"], np.array([0.5, 0.5], dtype=np.float32))
    assert sims[0] == 0.5 and sims[1] == pytest.approx(float(state.prototypes[0] @ centres[0]), abs=1e-5)


def test_prototypes_round_trip_through_bytes_and_change_the_fingerprint() -> None:
    cards, tasks, _, _ = _world()
    state = unlabelled_state(AGENTS, cards, tasks)
    back = LearnedState.from_bytes(state.to_bytes())
    assert back.prototypes is not None and state.prototypes is not None
    assert np.allclose(back.prototypes, state.prototypes, atol=1e-3)
    plain = unlabelled_state(AGENTS, cards, tasks)
    plain.prototypes = None
    assert plain.fingerprint() != state.fingerprint()
    assert LearnedState.from_bytes(plain.to_bytes()).prototypes is None


def test_prototypes_of_the_wrong_shape_are_refused_on_read() -> None:
    cards, tasks, _, _ = _world()
    state = unlabelled_state(AGENTS, cards, tasks)
    state.prototypes = state.prototypes[:2] if state.prototypes is not None else None
    with pytest.raises(ValidationError, match="prototypes are"):
        LearnedState.from_bytes(state.to_bytes())


def test_a_learned_state_with_prototypes_takes_its_card_share_from_them() -> None:
    cards, tasks, labels, centres = _world()
    learned = learn_gold(AGENTS, tasks, [AGENTS[y] for y in labels])
    q = centres[1]
    plain = Ranker(learned).score(q, AGENTS, cards @ q)[0]
    learned.prototypes = adapt_prototypes(cards, tasks)
    adapted = Ranker(learned).score(q, AGENTS, cards @ q)[0]
    assert not np.allclose(plain, adapted)
    assert int(np.argmax(adapted)) == 1


def test_unlabelled_task_files_may_leave_gold_out(tmp_path: Path) -> None:
    f = tmp_path / "t.jsonl"
    f.write_text('{"task_id": "1", "text": "hi"}\n{"text": "x", "gold": ["A"]}\n')
    assert [e.gold for e in read_examples(f, labelled=False)] == [(), ("A",)]
    with pytest.raises(ValidationError, match=r"t\.jsonl:1"):
        read_examples(f)
    f.write_text('{"text": "x", "gold": "A"}\n')
    with pytest.raises(ValidationError, match="'gold' must be a list"):
        read_examples(f, labelled=False)
    f.write_text('{"text": "x", "gold": null}\n["a list"]\n')
    assert [e.gold for e in read_examples(f, limit=1, labelled=False)] == [()]
    with pytest.raises(ValidationError, match=r"t\.jsonl:2: not a JSON object"):
        read_examples(f, labelled=False)
