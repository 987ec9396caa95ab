from __future__ import annotations

from typing import Any

import pytest

from aos_gateway.network.planner import PlannerSettings, critical_path, graph_of, plan_network, problem_for, solve
from aos_gateway.network.problem import Objective
from aos_gateway.network.quality import QualityModel


def _c(agent: str, score: float, latency: int = 100, cost: float = 0.0) -> Any:
    return {
        "agent_id": agent,
        "name": agent.upper(),
        "score": score,
        "similarity": score,
        "quality": None,
        "card_version": 1,
        "cost": cost,
        "p95_latency_ms": latency,
    }


def _task(cands: list[Any], roles: list[Any] | None = None, abstained: bool = False) -> Any:
    return {
        "task_id": "t1",
        "tenant": "d",
        "submitted_at": 1,
        "text": "weather in Paris, news about Tesla and convert it into a PDF",
        "transcript": None,
        "modalities": ["text"],
        "fused": {},
        "candidates": cands,
        "roles": roles or [],
        "abstained": abstained,
        "reason": "nothing fits" if abstained else None,
        "index_size": 9,
        "reply_to": None,
        "trace_id": None,
        "notes": [],
        "timings": {"submitted": 1},
    }


def _three_roles() -> Any:
    roles = [
        {
            "role_id": "r1",
            "text": "weather in Paris",
            "depends_on": [],
            "candidates": [_c("weather", 0.9, 400), _c("w2", 0.5, 300)],
        },
        {
            "role_id": "r2",
            "text": "news about Tesla",
            "depends_on": [],
            "candidates": [_c("news", 0.8, 900), _c("n2", 0.4)],
        },
        {
            "role_id": "r3",
            "text": "convert it into a PDF",
            "depends_on": ["r2"],
            "candidates": [_c("pdf", 0.95, 200), _c("p2", 0.3)],
        },
    ]
    return _task([_c("weather", 0.6), _c("news", 0.3)], roles)


def test_roles_become_parallel_stages_with_the_data_flow_kept() -> None:
    plan = plan_network(_three_roles(), now_ms=5)
    assert plan["status"] == "PLANNED" and plan["planner"] == "network-exact"  # small: enumerated
    ga = plan_network(_three_roles(), now_ms=5, settings=PlannerSettings(exact_limit=0))
    assert ga["planner"] == "network-genetic" and ga["steps"] == plan["steps"]
    assert any(n.startswith("network: 3 roles") for n in ga["notes"])
    by_agent = {s["agent_id"]: s for s in plan["steps"]}
    assert set(by_agent) == {"weather", "news", "pdf"}
    assert by_agent["weather"]["stage"] == by_agent["news"]["stage"] == 0
    assert by_agent["pdf"]["stage"] == 1 and by_agent["pdf"]["depends_on"] == [by_agent["news"]["step_id"]]
    assert by_agent["pdf"]["role"] == "convert it into a PDF"
    assert plan["estimated_duration_ms"] == 900 + 200  # the critical path: news then pdf
    assert plan["predicted_quality"] == pytest.approx(0.9 * 0.8 * 0.95)
    assert by_agent["weather"]["fallback_agent_id"] == "w2"
    assert by_agent["weather"]["timeout_ms"] == 1200 and by_agent["pdf"]["timeout_ms"] == 1000  # 3x p95, >= 1 s


def test_a_task_without_roles_is_one_role_of_its_candidates() -> None:
    plan = plan_network(_task([_c("a", 0.7, 50), _c("b", 0.6, 50)]), now_ms=5)
    assert [s["agent_id"] for s in plan["steps"]] == ["a"]
    assert plan["steps"][0]["fallback_agent_id"] == "b" and plan["steps"][0]["depends_on"] == []


def test_cost_and_latency_weights_change_the_choice() -> None:
    task = _task([_c("slow-good", 0.8, 20_000), _c("fast-ok", 0.7, 100)])
    assert plan_network(task, 1)["steps"][0]["agent_id"] == "fast-ok"  # 0.01/s: 20 s costs 0.2
    s = PlannerSettings(objective=Objective(latency_weight=0.0))
    assert plan_network(task, 1, s)["steps"][0]["agent_id"] == "slow-good"


def test_low_predicted_quality_is_rejected_with_the_reason() -> None:
    plan = plan_network(_three_roles(), 1, PlannerSettings(min_quality=0.9))
    assert plan["status"] == "REJECTED"
    assert plan["reason"] is not None and plan["reason"].startswith("LowQualityNetwork: predicted quality 0.684")
    assert "weakest role r2 ('news about Tesla'): NEWS fit 0.80" in plan["reason"]
    assert plan["steps"]  # what was rejected stays visible


def test_learned_reliability_lowers_quality_and_moves_the_choice() -> None:
    import numpy as np

    q = QualityModel(agent_ids=["a", "b"], successes=np.array([[1.0], [50.0]]), trials=np.array([[50.0], [50.0]]))
    task = _task([_c("a", 0.7), _c("b", 0.6)])
    plan = plan_network(task, 1, quality=q)
    assert plan["steps"][0]["agent_id"] == "b"
    assert plan["predicted_quality"] == pytest.approx(0.6 * q.reliability("b"), rel=1e-5)


def test_abstained_task_gets_no_match() -> None:
    plan = plan_network(_task([], abstained=True), 1)
    assert plan["status"] == "NO_MATCH" and plan["reason"] == "nothing fits" and plan["steps"] == []


def test_exact_solver_for_small_problems_and_the_critical_path() -> None:
    s = PlannerSettings(exact_limit=10_000)
    net = solve(problem_for(_three_roles(), s), s)
    assert net.method == "exact"
    path, length = critical_path(graph_of(net))
    assert path == [1, 2] and length == 1100


def test_a_fallback_needs_a_card_that_fits_the_role() -> None:
    """A review: a text reverser was the haiku poet's fallback (nothing else was registered), answered
    the haiku request with the reversed text, SUCCEEDED and was learned as a success. A spare agent
    whose card is less similar than the threshold is no fallback."""
    poet, reverser = _c("poet", 0.9), {**_c("reverser", 0.02), "similarity": 0.05}
    plan = plan_network(_task([poet, reverser]), now_ms=5)
    assert plan["steps"][0]["agent_id"] == "poet" and plan["steps"][0]["fallback_agent_id"] is None
    loose = plan_network(_task([poet, reverser]), now_ms=5, settings=PlannerSettings(fallback_min_similarity=0.0))
    assert loose["steps"][0]["fallback_agent_id"] == "reverser"


def test_a_fallback_shares_a_capability_with_its_agent() -> None:
    """A review: "Transcribe the speech in /x/nope.wav" failed on the transcriber (file not found); its
    fallback, a summarizer, "summarised" the request and the task ended SUCCEEDED with it as output."""
    caps = {"transcriber": ["speech-to-text"], "summarizer": ["summarization"], "asr2": ["speech-to-text"]}
    transcriber, summarizer = _c("transcriber", 0.9), _c("summarizer", 0.5)
    blind = plan_network(_task([transcriber, summarizer]), now_ms=5)
    assert blind["steps"][0]["fallback_agent_id"] == "summarizer"  # without the registry's capabilities
    plan = plan_network(_task([transcriber, summarizer]), now_ms=5, capabilities=lambda a: caps.get(a, []))
    assert plan["steps"][0]["agent_id"] == "transcriber" and plan["steps"][0]["fallback_agent_id"] is None
    other = plan_network(
        _task([transcriber, summarizer, _c("asr2", 0.4)]), now_ms=5, capabilities=lambda a: caps.get(a, [])
    )
    assert other["steps"][0]["fallback_agent_id"] == "asr2"
    # a card without capabilities says nothing either way: it may stand in, as before
    loose = plan_network(_task([transcriber, _c("plain", 0.5)]), now_ms=5, capabilities=lambda a: caps.get(a, []))
    assert loose["steps"][0]["fallback_agent_id"] == "plain"
