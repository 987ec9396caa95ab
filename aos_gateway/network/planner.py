"""The network planner: from a matched task's roles to an optimised, executable plan.

matched task (roles with candidates) -> :class:`~aos_gateway.network.problem.Problem` (fit from
the matcher, reliability and synergy from the learned :class:`QualityModel`, cost and latency from
the cards) -> greedy start -> genetic optimisation (or exact enumeration when the problem is
small) -> quality check (a network predicted below ``min_quality`` is REJECTED with a
``LowQualityNetwork`` reason that names the weakest role) -> plan: topological stages of
parallel steps (networkx), per-step timeout, retries and fallback agent, and the estimated
duration from the critical path of expected latencies.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx

from aos_gateway.contracts.records import Candidate, MatchedTask, Plan, PlanStep
from aos_gateway.errors import AosError
from aos_gateway.network.genetic import GaSettings, optimise
from aos_gateway.network.problem import CapabilitiesOf, Objective, Option, Problem, Role, can_stand_in, exhaustive
from aos_gateway.network.quality import QualityModel
from aos_gateway.network.sequential import base_plan, no_match
from aos_gateway.perception.vectors import unpack
from aos_gateway.settings import PlanningSettings


class LowQualityNetwork(AosError):
    """The best network found is predicted to succeed too rarely to be worth running."""


@dataclass(frozen=True)
class PlannerSettings:
    max_roles: int = 4  # roles beyond this are dropped (the matcher limits them already)
    options_per_role: int = 5  # candidates per role the optimiser chooses from
    min_quality: float = 0.05
    objective: Objective = field(default_factory=Objective)
    ga: GaSettings = field(default_factory=GaSettings)
    exact_limit: int = 1_000_000  # enumerate instead of the GA when a problem has at most this many networks
    step_timeout_ms: int = 30_000  # the longest a step may take
    min_step_timeout_ms: int = 1_000
    timeout_factor: float = 3.0  # a step's timeout: this times its expected latency, within the bounds
    retries: int = 1
    default_latency_ms: int = 1_000  # for an agent whose card states none
    fallback_min_similarity: float = 0.2  # a fallback's card must be at least this similar to its role


@dataclass(frozen=True)
class Network:
    problem: Problem
    genome: list[int]
    fitness: float
    quality: float
    method: str
    generations: int = 0
    greedy_fitness: float = 0.0
    converged_at: int = 0
    evaluations: int = 0


def _option(c: Candidate, quality: QualityModel | None, cluster: int | None, default_latency: int) -> Option:
    rel = quality.reliability(c["agent_id"], cluster) if quality is not None else 1.0
    return Option(
        agent_id=c["agent_id"],
        name=c["name"],
        fit=max(min(float(c["score"]), 1.0), 0.0),
        reliability=rel,
        cost=float(c["cost"]),
        latency_ms=float(c["p95_latency_ms"] or default_latency),
        similarity=float(c["similarity"]),
    )


def problem_for(task: MatchedTask, settings: PlannerSettings, quality: QualityModel | None = None) -> Problem:
    """The optimisation problem of a matched task (one role of the whole task when it has no roles)."""
    # the task vector is read only when the model has clusters to place it in
    cluster = quality.cluster_of(unpack(task["fused"])) if quality is not None and quality.centroids.size else None
    specs = list(task.get("roles") or [])[: settings.max_roles]
    if not specs:
        specs = [{"role_id": "r1", "text": task["text"] or "", "depends_on": [], "candidates": task["candidates"]}]
    roles: list[Role] = []
    index = {s["role_id"]: i for i, s in enumerate(specs)}
    required: set[tuple[int, int]] = set()
    for j, s in enumerate(specs):
        opts = tuple(
            _option(c, quality, cluster, settings.default_latency_ms)
            for c in s["candidates"][: settings.options_per_role]
        )
        roles.append(Role(role_id=s["role_id"], text=s["text"], options=opts))
        for dep in s["depends_on"]:
            i = index.get(dep)
            if i is not None and i < j:
                required.add((i, j))
    syn = quality.synergy if quality is not None else (lambda _a, _b: 1.0)
    return Problem(
        roles=roles,
        required=frozenset(required),
        objective=settings.objective,
        synergy=syn,
        min_quality=settings.min_quality,
    )


def solve(problem: Problem, settings: PlannerSettings, seed: int = 0) -> Network:
    """The best network: enumerated when small enough, else genetic from the greedy start."""
    if len(problem.roles) == 1:  # no edges: each option on its own, so the greedy pick is the optimum
        genome = problem.greedy()
        fit = problem.fitness(genome)
        return Network(problem, genome, fit, problem.score(genome).quality, "exact", 0, fit, 0, problem.size)
    if problem.size <= max(settings.exact_limit, 1):
        genome, fit = exhaustive(problem)
        return Network(problem, genome, fit, problem.score(genome).quality, "exact", 0, fit, 0, problem.size)
    res = optimise(problem, settings.ga, seed=seed)
    return Network(
        problem,
        res.genome,
        res.fitness,
        problem.score(res.genome).quality,
        "genetic",
        res.generations,
        res.greedy_fitness,
        res.converged_at,
        res.evaluations,
    )


def graph_of(net: Network) -> nx.DiGraph[int]:
    """The network as a networkx DAG of role indices, each node with its option and latency."""
    g: nx.DiGraph[int] = nx.DiGraph()
    for r, role in enumerate(net.problem.roles):
        opt = role.options[net.genome[r]]
        g.add_node(r, option=opt, latency=opt.latency_ms)
    g.add_edges_from(net.problem.edges(net.genome))
    if not nx.is_directed_acyclic_graph(g):  # impossible by construction; checked all the same
        raise AosError("the network is not a DAG")
    return g


def critical_path(g: nx.DiGraph[int]) -> tuple[list[int], float]:
    """The longest chain of expected latencies, and its length in ms."""
    h: nx.DiGraph[int | str] = nx.DiGraph()
    h.add_nodes_from(["start", *g.nodes])
    for v in g.nodes:
        h.add_edge("start", v, weight=g.nodes[v]["latency"])
    for u, v in g.edges:
        h.add_edge(u, v, weight=g.nodes[v]["latency"])
    path = nx.dag_longest_path(h, weight="weight")
    length = nx.dag_longest_path_length(h, weight="weight")
    return [int(v) for v in path if v != "start"], float(length)


def weakest_role(net: Network) -> str:
    worst = min(range(len(net.problem.roles)), key=lambda r: net.problem.roles[r].options[net.genome[r]].quality)
    role = net.problem.roles[worst]
    o = role.options[net.genome[worst]]
    what = f" ({role.text!r})" if role.text else ""
    return f"weakest role {role.role_id}{what}: {o.name} fit {o.fit:.2f} x reliability {o.reliability:.2f}"


def plan_network(
    task: MatchedTask,
    now_ms: int,
    settings: PlannerSettings | None = None,
    quality: QualityModel | None = None,
    seed: int = 0,
    capabilities: CapabilitiesOf | None = None,
) -> Plan:
    """A plan for a matched task: PLANNED, NO_MATCH (the matcher abstained) or REJECTED (quality).
    ``capabilities`` (the registry's) keeps a fallback that shares none of its agent's out."""
    s = settings or PlannerSettings()
    plan = base_plan(task, now_ms, "network")
    if no_match(plan, task):
        return plan
    problem = problem_for(task, s, quality)
    net, steps, duration = realise(problem, s, seed, capabilities)
    plan["planner"] = f"network-{net.method}"
    plan["predicted_quality"] = round(net.quality, 6)
    plan["estimated_duration_ms"] = round(duration)
    plan["steps"] = steps
    if net.method == "genetic" and len(problem.roles) > 1:
        plan["notes"].append(
            f"network: {len(problem.roles)} roles, {problem.candidates} candidates, GA {net.generations} "
            f"generations, fitness {net.fitness:.4f} (greedy {net.greedy_fitness:.4f})"
        )
    if net.quality < s.min_quality:
        plan["status"] = "REJECTED"
        plan["reason"] = (
            f"{LowQualityNetwork.__name__}: predicted quality {net.quality:.3f} is below the threshold "
            f"{s.min_quality}; {weakest_role(net)}"
        )
    return plan


def realise(
    problem: Problem, settings: PlannerSettings, seed: int = 0, capabilities: CapabilitiesOf | None = None
) -> tuple[Network, list[PlanStep], float]:
    """Solve a problem and lay the network out as plan steps; with the critical path in ms."""
    net = solve(problem, settings, seed=seed)
    g = graph_of(net)
    _, duration = critical_path(g)
    return net, _steps(net, g, settings, capabilities), duration


def _steps(
    net: Network, g: nx.DiGraph[int], s: PlannerSettings, capabilities: CapabilitiesOf | None = None
) -> list[PlanStep]:
    caps = capabilities or (lambda _agent: ())
    stage_of = {v: k for k, layer in enumerate(nx.topological_generations(g)) for v in layer}
    order = sorted(g.nodes, key=lambda v: (stage_of[v], v))
    step_id = {v: f"s{k + 1}" for k, v in enumerate(order)}
    chosen = {net.problem.roles[r].options[net.genome[r]].agent_id for r in g.nodes}
    steps: list[PlanStep] = []
    for v in order:
        role = net.problem.roles[v]
        opt: Option = g.nodes[v]["option"]
        # a fallback must fit the role on its own (a review: a text reverser "answered" a haiku request
        # as the poet's fallback, SUCCEEDED, and was learned as a success)
        spare = [
            o
            for o in role.options
            if o.agent_id != opt.agent_id
            and o.agent_id not in chosen
            and o.similarity >= s.fallback_min_similarity
            and can_stand_in(caps(opt.agent_id), caps(o.agent_id))
        ]
        fallback = max(spare, key=lambda o: o.quality).agent_id if spare else None
        timeout = int(min(max(s.timeout_factor * opt.latency_ms, s.min_step_timeout_ms), s.step_timeout_ms))
        steps.append(
            PlanStep(
                step_id=step_id[v],
                stage=stage_of[v],
                agent_id=opt.agent_id,
                agent_name=opt.name,
                score=round(opt.fit, 6),
                depends_on=[step_id[u] for u in sorted(g.predecessors(v))],
                timeout_ms=timeout,
                retries=s.retries,
                fallback_agent_id=fallback,
                expected_latency_ms=round(opt.latency_ms),
                role=role.text or None,
            )
        )
    return steps


def planner_settings_from(p: PlanningSettings) -> PlannerSettings:
    """The planner's settings from the plan stage's (``AOS_PLANNING__*``)."""
    return PlannerSettings(
        options_per_role=p.options_per_role,
        min_quality=p.min_quality,
        objective=Objective(cost_weight=p.cost_weight, latency_weight=p.latency_weight),
        ga=GaSettings(
            population=p.ga_population,
            offspring=p.ga_offspring,
            max_generations=p.ga_max_generations,
            patience=p.ga_patience,
        ),
        exact_limit=p.exact_limit,
        step_timeout_ms=p.step_timeout_ms,
        min_step_timeout_ms=p.min_step_timeout_ms,
        timeout_factor=p.timeout_factor,
        retries=p.step_retries,
        fallback_min_similarity=p.fallback_min_similarity,
    )
