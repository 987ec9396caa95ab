"""Genetic optimisation of a network (DEAP), started from the greedy network.

The genome is a flat list of ints (see :mod:`aos_gateway.network.problem`): the option chosen
per role, then a 0/1 per forward pair of roles. Variation is DEAP's uniform crossover and a
mutation that re-draws a role's option or flips an edge; every child is repaired (required
edges back on), so each individual is a valid DAG. Selection is (μ + λ) with tournaments and
the best individual always kept. The search stops after ``max_generations`` or when the best
fitness has not improved for ``patience`` generations; a local search then polishes the best:
every network that differs from it in one or two roles' agents is scored with its own best set of
edges (vectorised, :func:`~aos_gateway.network.problem.best_edges`), the best one taken, until none
improves. Fitness values are cached per genome.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from deap import algorithms, base, creator, tools

from aos_gateway.network.problem import IntArray, Problem, best_edges

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
    evaluations: int  # networks scored: the GA's distinct ones, then the local search's


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
    genome, polished, scored = _polish(problem, list(best), lambda g: evaluate(g)[0])
    if polished > best_f + 1e-12:
        best_f = problem.fitness(genome)
    else:
        genome = list(best)
    return GaResult(
        genome=genome,
        fitness=best_f,
        greedy_fitness=greedy_f,
        generations=gen,
        converged_at=converged_at,
        evaluations=len(cache) + scored,
    )


#: the local search re-chooses every edge of each neighbour while the optional edges allow at most
#: this many sets (4 roles: 6 pairs, 64 sets); beyond, it changes one gene or two at a time
EDGE_SETS_LIMIT = 256
#: networks scored per round of the local search; beyond, neighbours differ in one role only
NEIGHBOURHOOD_LIMIT = 500_000


def _polish(problem: Problem, genome: list[int], fitness: Callable[[list[int]], float]) -> tuple[list[int], float, int]:
    """Local search on the GA's best: the best of its neighbours (its agents with every other agent
    for one role, or for two roles at once, each with its best edges) while one improves it.
    Returns the network, its fitness and how many networks were scored outside ``fitness``."""
    free = len(problem.pairs) - len(problem.required)
    if 1 << free > EDGE_SETS_LIMIT:
        return (*_polish_moves(problem, genome, fitness), 0)
    n = len(problem.roles)
    sizes = [len(r.options) for r in problem.roles]
    best, scored = fitness(genome), 0
    for _ in range(20):
        cands = _neighbours(sizes, genome[:n], NEIGHBOURHOOD_LIMIT >> free)
        fits, genomes = best_edges(problem, cands)
        scored += len(cands) << free
        k = int(np.argmax(fits))
        if fits[k] - best <= 1e-12:
            break
        genome, best = [int(x) for x in genomes[k]], float(fits[k])
    return genome, best, scored


def _neighbours(sizes: list[int], agents: list[int], limit: int) -> IntArray:
    """The agent choices that differ from ``agents`` in one role, then (when there are at most
    ``limit`` in all) in two roles; ``agents`` itself first."""
    here = np.array(agents, dtype=np.int64)
    others = [np.array([o for o in range(k) if o != agents[r]], dtype=np.int64) for r, k in enumerate(sizes)]
    blocks = [here[None, :]]
    for r, alt in enumerate(others):
        block = np.tile(here, (len(alt), 1))
        block[:, r] = alt
        blocks.append(block)
    if sum(len(b) for b in blocks) + sum(len(x) * len(y) for x, y in itertools.combinations(others, 2)) <= limit:
        for (r, x), (t, y) in itertools.combinations(enumerate(others), 2):
            block = np.tile(here, (len(x) * len(y), 1))
            block[:, r] = np.repeat(x, len(y))
            block[:, t] = np.tile(y, len(x))
            blocks.append(block)
    return np.concatenate(blocks)


def _polish_moves(
    problem: Problem, genome: list[int], fitness: Callable[[list[int]], float]
) -> tuple[list[int], float]:
    """The local search when the optional edges have too many sets to try each: the best single
    change (another agent for a role, a free edge flipped) while one improves, then the best change
    of two genes at once (an agent together with an edge, or two agents whose pairing matters),
    until neither helps."""
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
