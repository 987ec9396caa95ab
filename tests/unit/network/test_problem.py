from __future__ import annotations

import random

import numpy as np
import pytest

from aos_gateway.errors import ValidationError
from aos_gateway.network.problem import Objective, Option, Problem, Role, best_edges, exhaustive


def _role(rid: str, *opts: tuple[str, float, float, float]) -> Role:
    """options as (agent, quality, cost, latency_ms)"""
    return Role(rid, rid, tuple(Option(a, a.upper(), q, 1.0, c, lat) for a, q, c, lat in opts))


def _synergy_case() -> Problem:
    # greedy takes a and c (the best of each role on its own); b feeding d is better together
    roles = [_role("r1", ("a", 0.9, 0, 0), ("b", 0.85, 0, 0)), _role("r2", ("c", 0.9, 0, 0), ("d", 0.88, 0, 0))]
    syn = {("b", "d"): 1.2}
    return Problem(roles, frozenset({(0, 1)}), Objective(0, 0), synergy=lambda x, y: syn.get((x, y), 1.0))


def test_quality_is_the_product_along_the_network_with_edge_synergy() -> None:
    p = _synergy_case()
    assert p.score([0, 0, 1]).quality == pytest.approx(0.81)
    assert p.score([1, 1, 1]).quality == pytest.approx(0.85 * 0.88 * 1.2)


def test_latency_is_the_critical_path_and_cost_the_sum() -> None:
    roles = [_role("r1", ("a", 1, 1.0, 100)), _role("r2", ("b", 1, 2.0, 500)), _role("r3", ("c", 1, 3.0, 200))]
    p = Problem(roles, objective=Objective(cost_weight=0.1, latency_weight=0.5))
    genome = [0, 0, 0, 0, 1, 0]  # pairs (0,1), (0,2), (1,2): only 0 -> 2
    s = p.score(genome)
    assert s.latency_ms == 500 and s.cost == 6.0
    assert s.fitness == pytest.approx(1.0 - 0.1 * 6.0 - 0.5 * 0.5)
    assert p.score([0, 0, 0, 1, 0, 1]).latency_ms == 100 + 500 + 200  # a chain


def test_repair_forces_required_edges_and_clamps_choices() -> None:
    p = _synergy_case()
    assert p.repair([5, -1, 0]) == [1, 0, 1]


def test_greedy_takes_each_roles_best_and_exhaustive_finds_the_pair() -> None:
    p = _synergy_case()
    assert p.greedy() == [0, 0, 1]
    genome, fit = exhaustive(p)
    assert genome == [1, 1, 1] and fit == pytest.approx(0.85 * 0.88 * 1.2)


def test_optional_edges_are_added_only_when_they_pay() -> None:
    roles = [_role("r1", ("a", 0.5, 0, 100)), _role("r2", ("b", 0.5, 0, 100))]
    neutral = Problem(roles, objective=Objective(0, 0.1))
    assert neutral.greedy() == [0, 0, 0] and exhaustive(neutral)[0] == [0, 0, 0]
    helpful = Problem(roles, objective=Objective(0, 0.1), synergy=lambda a, b: 1.1)
    assert helpful.greedy() == [0, 0, 1] and exhaustive(helpful)[0] == [0, 0, 1]


def _random_roles(seed: int) -> list[Role]:
    """Three roles of three options each, with random fit, reliability and latency."""
    rng = random.Random(seed)
    return [
        _role(f"r{r}", *[(f"a{r}{k}", rng.random(), rng.random(), rng.uniform(10, 900)) for k in range(3)])
        for r in range(3)
    ]


def test_exhaustive_agrees_with_scoring_every_network() -> None:
    roles = _random_roles(3)
    p = Problem(roles, frozenset({(0, 2)}), Objective(0.05, 0.2), synergy=lambda a, b: 0.8 + (hash(a + b) % 5) / 10)
    best = max(
        (
            p.repair([i, j, k, e1, 1, e3])
            for i in range(3)
            for j in range(3)
            for k in range(3)
            for e1 in (0, 1)
            for e3 in (0, 1)
        ),
        key=p.fitness,
    )
    genome, fit = exhaustive(p)
    assert fit == pytest.approx(p.fitness(best)) and p.fitness(genome) == pytest.approx(fit)


def test_bad_problems_are_refused() -> None:
    with pytest.raises(ValidationError, match="at least one role"):
        Problem([])
    with pytest.raises(ValidationError, match="no candidate"):
        Problem([Role("r1", "x", ())])
    with pytest.raises(ValidationError, match="forward"):
        Problem([_role("r1", ("a", 1, 0, 0)), _role("r2", ("b", 1, 0, 0))], frozenset({(1, 0)}))


def test_networks_below_the_quality_threshold_rank_below_every_feasible_one() -> None:
    # the junk agent is free and instant, so without the threshold it would win on fitness
    roles = [_role("r1", ("good", 0.6, 1.0, 2000), ("junk", 0.01, 0.0, 0.0))]
    loose = Problem(roles, objective=Objective(0.5, 0.1))
    assert exhaustive(loose)[0] == [1]
    strict = Problem(roles, objective=Objective(0.5, 0.1), min_quality=0.05)
    assert exhaustive(strict)[0] == [0] and strict.greedy() == [0]
    assert strict.score([1]).fitness < strict.score([0]).fitness


def test_best_edges_gives_each_agent_choice_its_best_edge_set() -> None:
    roles = _random_roles(5)
    p = Problem(roles, frozenset({(0, 1)}), Objective(0.05, 0.2), synergy=lambda a, b: 0.7 + (hash(a + b) % 7) / 10)
    choice = np.array([[i, j, k] for i in range(3) for j in range(3) for k in range(3)])
    fits, genomes = best_edges(p, choice)
    for row, fit, genome in zip(choice.tolist(), fits, genomes.tolist(), strict=True):
        every = [p.repair([*row, 1, e2, e3]) for e2 in (0, 1) for e3 in (0, 1)]
        assert genome[:3] == row and genome[3] == 1  # the choice kept, the required edge on
        assert fit == pytest.approx(max(map(p.fitness, every))) and p.fitness(genome) == pytest.approx(fit)
