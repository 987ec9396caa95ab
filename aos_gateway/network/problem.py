"""The network optimisation problem: roles, candidate agents per role, edges, and fitness.

A task that needs several capabilities has several **roles** (e.g. "the news about Tesla" and
"its stock price"); each role has candidate agents (:class:`Option`) from the matcher. A
**network** chooses one agent per role and a set of edges between roles. Roles are kept in a
fixed order (the order of the task's clauses) and edges only go forward in it, so every network
is a DAG by construction; edges the task's data flow needs (:attr:`Problem.required`) are always
present (see :meth:`Problem.repair`).

Fitness = predicted quality − λ·cost − μ·latency (minus a large constant for a network predicted
below the quality threshold, so the search prefers any network that would not be rejected), with

- predicted quality: the product over roles of *fit* (probability the agent is the right one for
  the role: the matcher's score) × *reliability* (probability it succeeds when called, learned
  from experience), times the learned *synergy* of each edge's agent pair (1 = neutral);
- cost: the sum of the chosen agents' costs;
- latency: the critical path of the expected latencies, in seconds.

:func:`exhaustive` enumerates every network of a small problem (vectorised) and is the
reference the genetic optimiser is measured against.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from aos_gateway.errors import ValidationError

FloatArray = npt.NDArray[np.float64]
INFEASIBLE = 1_000.0
Genome = Sequence[int]  # one option index per role, then one 0/1 per forward pair of roles


@dataclass(frozen=True)
class Option:
    """A candidate agent for a role."""

    agent_id: str
    name: str
    fit: float  # probability this agent is the right one for the role
    reliability: float = 1.0  # probability it succeeds when called
    cost: float = 0.0
    latency_ms: float = 0.0  # expected latency
    similarity: float = 1.0  # the card's similarity to the role's text (a fallback needs enough of it)

    @property
    def quality(self) -> float:
        return self.fit * self.reliability


#: an agent's capabilities by id (from the registry); empty when unknown
CapabilitiesOf = Callable[[str], Collection[str]]


def can_stand_in(agent_caps: Collection[str], fallback_caps: Collection[str]) -> bool:
    """Whether a fallback can stand in for an agent: when both cards list capabilities, they share
    one. (A review: a transcriber's permanent error went to a summarizer as its fallback, which
    "summarised" the request and ended SUCCEEDED; card similarity alone let it in.)"""
    return not agent_caps or not fallback_caps or bool(set(agent_caps) & set(fallback_caps))


@dataclass(frozen=True)
class Role:
    """One sub-capability the task needs, with its candidate agents (best first)."""

    role_id: str
    text: str
    options: tuple[Option, ...]


@dataclass(frozen=True)
class Objective:
    """The weights of the fitness: quality − ``cost_weight``·cost − ``latency_weight``·seconds."""

    cost_weight: float = 0.01
    latency_weight: float = 0.01


@dataclass(frozen=True)
class Score:
    fitness: float
    quality: float
    cost: float
    latency_ms: float


@dataclass
class Problem:
    """Roles in data-flow order, the edges the data flow requires, and learned pair synergies."""

    roles: list[Role]
    required: frozenset[tuple[int, int]] = frozenset()
    objective: Objective = field(default_factory=Objective)
    #: (agent_id, agent_id) -> quality multiplier of an edge from the first to the second
    synergy: Callable[[str, str], float] = field(default=lambda _a, _b: 1.0)
    #: networks predicted below this quality are infeasible (they would be rejected): their
    #: fitness is lowered by INFEASIBLE, so any feasible network ranks above every infeasible one
    min_quality: float = 0.0

    def __post_init__(self) -> None:
        if not self.roles:
            raise ValidationError("a network problem needs at least one role")
        for r in self.roles:
            if not r.options:
                raise ValidationError(f"role {r.role_id!r} has no candidate agent")
        n = len(self.roles)
        for i, j in self.required:
            if not 0 <= i < j < n:
                raise ValidationError(f"required edge {i}->{j} does not go forward between roles 0..{n - 1}")
        self.pairs: list[tuple[int, int]] = list(itertools.combinations(range(n), 2))
        self._pair_at = {pair: n + p for p, pair in enumerate(self.pairs)}  # genome position of an edge
        self._syn_cache: dict[tuple[str, str], float] = {}

    @property
    def size(self) -> int:
        """How many networks there are (after the required edges are fixed)."""
        choices = 1
        for r in self.roles:
            choices *= len(r.options)
        return choices * (1 << (len(self.pairs) - len(self.required)))

    @property
    def candidates(self) -> int:
        return sum(len(r.options) for r in self.roles)

    def repair(self, genome: list[int]) -> list[int]:
        """The genome with every required edge present and option indices in range (in place)."""
        n = len(self.roles)
        for r in range(n):
            genome[r] = min(max(int(genome[r]), 0), len(self.roles[r].options) - 1)
        for p, pair in enumerate(self.pairs):
            if pair in self.required:
                genome[n + p] = 1
            else:
                genome[n + p] = 1 if genome[n + p] else 0
        return genome

    def edges(self, genome: Genome) -> list[tuple[int, int]]:
        n = len(self.roles)
        return [pair for p, pair in enumerate(self.pairs) if genome[n + p]]

    def syn(self, a: str, b: str) -> float:
        key = (a, b)
        v = self._syn_cache.get(key)
        if v is None:
            v = self._syn_cache[key] = max(float(self.synergy(a, b)), 0.0)
        return v

    def score(self, genome: Genome) -> Score:
        """Fitness and its parts for one network."""
        n = len(self.roles)
        opts = [self.roles[r].options[genome[r]] for r in range(n)]
        quality = 1.0
        for o in opts:
            quality *= o.quality
        finish = [0.0] * n
        for j in range(n):
            start = 0.0
            for i in range(j):
                if genome[self._pair_at[(i, j)]]:
                    quality *= self.syn(opts[i].agent_id, opts[j].agent_id)
                    start = max(start, finish[i])
            finish[j] = start + opts[j].latency_ms
        quality = min(quality, 1.0)
        cost = sum(o.cost for o in opts)
        latency = max(finish)
        ob = self.objective
        fitness = quality - ob.cost_weight * cost - ob.latency_weight * latency / 1000.0
        if quality < self.min_quality:
            fitness -= INFEASIBLE
        return Score(fitness, quality, cost, latency)

    def fitness(self, genome: Genome) -> float:
        return self.score(genome).fitness

    def greedy(self) -> list[int]:
        """The greedy start: each role's best option on its own (or, when that network would fall
        below the quality threshold, each role's most likely option), the required edges, then each
        optional edge that improves the fitness, in order."""
        ob = self.objective
        local = [
            int(
                np.argmax(
                    [o.quality - ob.cost_weight * o.cost - ob.latency_weight * o.latency_ms / 1000 for o in r.options]
                )
            )
            for r in self.roles
        ]
        likely = [int(np.argmax([o.quality for o in r.options])) for r in self.roles]
        edges = [1 if pair in self.required else 0 for pair in self.pairs]
        genome = max((local + edges, likely + edges), key=self.fitness)
        best = self.fitness(genome)
        n = len(self.roles)
        for p, pair in enumerate(self.pairs):
            if pair in self.required:
                continue
            genome[n + p] = 1
            f = self.fitness(genome)
            if f > best:
                best = f
            else:
                genome[n + p] = 0
        return genome


IntArray = npt.NDArray[np.int64]


def best_edges(problem: Problem, choice: IntArray) -> tuple[FloatArray, IntArray]:
    """For each row of agent choices (an ``(M, roles)`` array of option indices), the fitness of
    its best network, and that network's genome: the choices with the best set of optional edges
    (every set tried, vectorised over the rows; ties keep the first set in enumeration order)."""
    roles, n = problem.roles, len(problem.roles)
    ob = problem.objective
    rows = choice.shape[0]
    q = np.ones(rows)
    cost = np.zeros(rows)
    lat = []
    for r, role in enumerate(roles):
        qa = np.array([o.quality for o in role.options])
        ca = np.array([o.cost for o in role.options])
        la = np.array([o.latency_ms for o in role.options])
        q *= qa[choice[:, r]]
        cost += ca[choice[:, r]]
        lat.append(la[choice[:, r]])
    syn: dict[tuple[int, int], FloatArray] = {}
    for i, j in problem.pairs:
        m = np.array([[problem.syn(a.agent_id, b.agent_id) for b in roles[j].options] for a in roles[i].options])
        syn[(i, j)] = m[choice[:, i], choice[:, j]]
    free = [pair for pair in problem.pairs if pair not in problem.required]
    best_f = np.full(rows, -np.inf)
    best_set = np.zeros(rows, dtype=np.int64)
    table: list[list[int]] = []  # per edge set, its edge genes
    for k, bits in enumerate(itertools.product((0, 1), repeat=len(free))):
        on = set(problem.required) | {pair for pair, b in zip(free, bits, strict=True) if b}
        table.append([1 if pair in on else 0 for pair in problem.pairs])
        quality = q.copy()
        finish: list[FloatArray] = []
        for j in range(n):
            start = np.zeros_like(q)
            for i in range(j):
                if (i, j) in on:
                    quality *= syn[(i, j)]
                    start = np.maximum(start, finish[i])
            finish.append(start + lat[j])
        latency = np.max(np.stack(finish), axis=0)
        quality = np.minimum(quality, 1.0)
        f = quality - ob.cost_weight * cost - ob.latency_weight * latency / 1000.0
        f = np.where(quality < problem.min_quality, f - INFEASIBLE, f)
        better = f > best_f
        best_f[better] = f[better]
        best_set[better] = k
    edges = np.array(table, dtype=np.int64).reshape(len(table), len(problem.pairs))
    return best_f, np.concatenate([choice.astype(np.int64), edges[best_set]], axis=1)


def exhaustive(problem: Problem, limit: int = 20_000_000) -> tuple[list[int], float]:
    """The best network by enumeration (vectorised over agent choices, looped over edge sets)."""
    if problem.size > limit:
        raise ValidationError(f"{problem.size} networks are too many to enumerate (limit {limit})")
    grids = np.meshgrid(*[np.arange(len(r.options)) for r in problem.roles], indexing="ij")
    choice = np.stack([g.ravel() for g in grids], axis=1)  # (N, n)
    fits, genomes = best_edges(problem, choice)
    k = int(np.argmax(fits))
    return [int(x) for x in genomes[k]], float(fits[k])
