"""Genetic optimisation of a network (DEAP), started from the greedy network.

The genome is a flat list of ints (see :mod:`aos_gateway.network.problem`): the option chosen
per role, then a 0/1 per forward pair of roles. Variation is DEAP's uniform crossover and a
mutation that re-draws a role's option or flips an edge; every child is repaired (required
edges back on), so each individual is a valid DAG. Selection is (μ + λ) with tournaments and
the best individual always kept. The search stops after ``max_generations`` or when the best
fitness has not improved for ``patience`` generations; a local search then polishes the best
(each single change of an agent or an edge, until none helps). Fitness values are cached per
genome.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from deap import algorithms, base, creator, tools

from aos_gateway.network.problem import Problem

if not hasattr(creator, "AosNetworkFitness"):
    creator.create("AosNetworkFitness", base.Fitness, weights=(1.0,))
if not hasattr(creator, "AosNetwork"):
    creator.create("AosNetwork", list, fitness=creator.AosNetworkFitness)


@dataclass(frozen=True)
class GaSettings:
    population: int = 24
    offspring: int = 36
    max_generations: int = 40
    patience: int = 8
    crossover: float = 0.5
    mutation: float = 0.4
    gene_mutation: float = 0.25  # per gene, in a mutated child
    tournament: int = 3
    immigrants: int = 4  # random individuals added to each generation


@dataclass(frozen=True)
class GaResult:
    genome: list[int]
    fitness: float
    greedy_fitness: float
    generations: int  # generations run
    converged_at: int  # the generation in which the final best was first found (0: the start)
    evaluations: int  # distinct networks scored


def optimise(problem: Problem, settings: GaSettings | None = None, seed: int = 0) -> GaResult:
    """The best network the search finds; never worse than the greedy start."""
    s = settings or GaSettings()
    rng = random.Random(seed)
    n = len(problem.roles)
    sizes = [len(r.options) for r in problem.roles]
    cache: dict[tuple[int, ...], float] = {}

    def evaluate(ind: list[int]) -> tuple[float]:
        key = tuple(ind)
        f = cache.get(key)
        if f is None:
            f = cache[key] = problem.fitness(ind)
        return (f,)

    def mutate(ind: Any) -> tuple[Any]:
        for g in range(len(ind)):
            if rng.random() < s.gene_mutation:
                ind[g] = rng.randrange(sizes[g]) if g < n else 1 - ind[g]
        problem.repair(ind)
        return (ind,)

    def mate(a: Any, b: Any) -> tuple[Any, Any]:
        tools.cxUniform(a, b, 0.5)
        problem.repair(a)
        problem.repair(b)
        return a, b

    def random_individual() -> Any:
        genes = [rng.randrange(k) for k in sizes] + [rng.randrange(2) for _ in problem.pairs]
        return creator.AosNetwork(problem.repair(genes))

    toolbox = base.Toolbox()
    toolbox.register("evaluate", evaluate)
    toolbox.register("mate", mate)
    toolbox.register("mutate", mutate)
    toolbox.register("select", tools.selTournament, tournsize=s.tournament)

    greedy = creator.AosNetwork(problem.greedy())
    pop = [greedy]
    # half the start population: the greedy network slightly changed; the rest random
    while len(pop) < s.population // 2:
        (child,) = mutate(toolbox.clone(greedy))
        pop.append(child)
    while len(pop) < s.population:
        pop.append(random_individual())
    for ind in pop:
        ind.fitness.values = toolbox.evaluate(ind)
    best = max(pop, key=lambda i: i.fitness.values[0])
    best_f, converged_at, gen = best.fitness.values[0], 0, 0
    greedy_f = greedy.fitness.values[0]
    # python's random drives DEAP's variation helpers: seed it for repeatable runs, then restore
    state = random.getstate()
    random.seed(seed)
    try:
        for gen in range(1, s.max_generations + 1):
            offspring = algorithms.varOr(pop, toolbox, s.offspring, s.crossover, s.mutation)
            for ind in offspring:
                if not ind.fitness.valid:
                    ind.fitness.values = toolbox.evaluate(ind)
            pool = pop + offspring
            elite = max(pool, key=lambda i: i.fitness.values[0])
            # the elite, tournament winners, and a few random newcomers against early convergence
            fresh = [random_individual() for _ in range(s.immigrants)]
            for ind in fresh:
                ind.fitness.values = toolbox.evaluate(ind)
            chosen = toolbox.select(pool, s.population - 1 - len(fresh))
            pop = [elite] + [toolbox.clone(i) for i in chosen] + fresh
            if elite.fitness.values[0] > best_f + 1e-12:
                best, best_f, converged_at = elite, elite.fitness.values[0], gen
            if gen - converged_at >= s.patience:
                break
    finally:
        random.setstate(state)
    genome, polished = _polish(problem, list(best), lambda g: evaluate(g)[0])
    if polished > best_f + 1e-12:
        best_f = polished
    else:
        genome = list(best)
    return GaResult(
        genome=genome,
        fitness=best_f,
        greedy_fitness=greedy_f,
        generations=gen,
        converged_at=converged_at,
        evaluations=len(cache),
    )


def _polish(problem: Problem, genome: list[int], fitness: Callable[[list[int]], float]) -> tuple[list[int], float]:
    """Local search on the GA's best: the best single change (another agent for a role, a free edge
    flipped) while one improves, then the best change of two genes at once (an agent together with
    an edge, or two agents whose pairing matters), until neither helps."""
    n = len(problem.roles)
    moves: list[list[tuple[int, int]]] = [
        [(r, o)] for r, role in enumerate(problem.roles) for o in range(len(role.options))
    ] + [[(n + p, -1)] for p, pair in enumerate(problem.pairs) if pair not in problem.required]
    best = fitness(genome)

    def apply(g: list[int], move: list[tuple[int, int]]) -> list[int] | None:
        out = list(g)
        for gene, val in move:
            new = 1 - out[gene] if val < 0 else val
            if new == out[gene]:
                return None
            out[gene] = new
        return out

    paired = [a + b for i, a in enumerate(moves) for b in moves[i + 1 :] if a[0][0] != b[0][0]]
    for _ in range(20):
        found: list[int] | None = None
        gain = 1e-12
        for cands in (moves, paired):
            for move in cands:
                cand = apply(genome, move)
                if cand is not None:
                    f = fitness(cand)
                    if f - best > gain:
                        found, gain = cand, f - best
            if found is not None:
                break
        if found is None:
            break
        genome, best = found, fitness(found)
    return genome, best
