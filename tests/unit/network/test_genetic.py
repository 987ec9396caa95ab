from __future__ import annotations

import random

import pytest

from aos_gateway.network.genetic import EDGE_SETS_LIMIT, GaSettings, optimise
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


def test_local_search_changes_two_agents_and_an_edge_at_once() -> None:
    # the best pair pays only through an edge between them: from the greedy network, no change of
    # one or two genes improves (either agent alone, or both without the edge, is worse)
    roles = [
        Role("r1", "", (Option("a", "A", 0.6), Option("b", "B", 0.5))),
        Role("r2", "", (Option("c", "C", 0.6), Option("d", "D", 0.5))),
    ]
    p = Problem(roles, frozenset(), Objective(0, 0), synergy=lambda x, y: 1.6 if (x, y) == ("b", "d") else 1.0)
    res = optimise(p, GaSettings(population=1, offspring=0, max_generations=0), seed=0)  # the local search alone
    assert res.greedy_fitness == pytest.approx(0.36)
    assert res.genome == exhaustive(p)[0] == [1, 1, 1]
    assert res.fitness == pytest.approx(0.4) == pytest.approx(p.fitness(res.genome))


@pytest.mark.parametrize("seed", range(6))
def test_ga_is_never_worse_than_greedy_and_close_to_the_optimum(seed: int) -> None:
    p = _random_problem(seed)
    res = optimise(p, seed=seed)
    _, best = exhaustive(p)
    assert res.fitness >= res.greedy_fitness
    assert res.fitness == pytest.approx(p.fitness(res.genome))
    assert res.fitness <= best + 1e-9
    assert (best - res.fitness) <= 0.05 * abs(best)  # the worst-case gap


def test_with_five_roles_the_local_search_changes_genes_instead_of_trying_every_edge_set() -> None:
    p = _random_problem(11, roles=5, per_role=3)  # 9 optional edges: 512 sets, past EDGE_SETS_LIMIT
    assert 1 << (len(p.pairs) - len(p.required)) > EDGE_SETS_LIMIT
    res = optimise(p, seed=2)
    _, best = exhaustive(p)
    assert res.greedy_fitness <= res.fitness <= best + 1e-9
    assert res.fitness == pytest.approx(p.fitness(res.genome))
    assert (best - res.fitness) <= 0.05 * abs(best)


def test_ga_is_repeatable_with_a_seed_and_stops_on_patience() -> None:
    p = _random_problem(7)
    s = GaSettings(max_generations=200, patience=5)
    a, b = optimise(p, s, seed=3), optimise(p, s, seed=3)
    assert a == b
    assert a.generations - a.converged_at == 5 and a.generations < 200
    assert all(gene in (0, 1) for gene in a.genome[3:])
