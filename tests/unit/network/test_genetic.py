from __future__ import annotations

import random

import pytest

from aos_gateway.network.genetic import GaSettings, optimise
from aos_gateway.network.problem import Objective, Option, Problem, Role, exhaustive


def _random_problem(seed: int, roles: int = 3, per_role: int = 6) -> Problem:
    rng = random.Random(seed)
    rs = [
        Role(
            f"r{r}",
            f"r{r}",
            tuple(
                Option(
                    f"a{r}_{k}",
                    f"A{r}_{k}",
                    rng.uniform(0.2, 1),
                    rng.uniform(0.7, 1),
                    rng.uniform(0, 5),
                    rng.uniform(50, 3000),
                )
                for k in range(per_role)
            ),
        )
        for r in range(roles)
    ]
    syn = {
        (a.agent_id, b.agent_id): rng.uniform(0.7, 1.3) for x in rs for y in rs for a in x.options for b in y.options
    }
    return Problem(rs, frozenset({(0, 1)}), Objective(0.02, 0.05), synergy=lambda a, b: syn[(a, b)])


def test_ga_finds_what_enumeration_finds_on_a_non_separable_case() -> None:
    roles = [
        Role("r1", "", (Option("a", "A", 0.9), Option("b", "B", 0.85))),
        Role("r2", "", (Option("c", "C", 0.9), Option("d", "D", 0.88))),
    ]
    p = Problem(roles, frozenset({(0, 1)}), Objective(0, 0), synergy=lambda x, y: 1.2 if (x, y) == ("b", "d") else 1.0)
    res = optimise(p, seed=1)
    assert res.genome == exhaustive(p)[0] == [1, 1, 1]
    assert res.fitness > res.greedy_fitness


@pytest.mark.parametrize("seed", range(6))
def test_ga_is_never_worse_than_greedy_and_close_to_the_optimum(seed: int) -> None:
    p = _random_problem(seed)
    res = optimise(p, seed=seed)
    _, best = exhaustive(p)
    assert res.fitness >= res.greedy_fitness
    assert res.fitness == pytest.approx(p.fitness(res.genome))
    assert res.fitness <= best + 1e-9
    assert (best - res.fitness) <= 0.05 * abs(best)  # the worst-case gap


def test_ga_is_repeatable_with_a_seed_and_stops_on_patience() -> None:
    p = _random_problem(7)
    s = GaSettings(max_generations=200, patience=5)
    a, b = optimise(p, s, seed=3), optimise(p, s, seed=3)
    assert a == b
    assert a.generations - a.converged_at == 5 and a.generations < 200
    assert all(gene in (0, 1) for gene in a.genome[3:])
