from __future__ import annotations

from typing import Any

from aos_gateway.network.sequential import plan_sequential


def _matched(scores: list[float], abstained: bool = False) -> Any:
    cands = [
        {
            "agent_id": f"a{i}",
            "name": f"A{i}",
            "score": s,
            "similarity": s,
            "quality": None,
            "card_version": 1,
            "cost": 0.0,
            "p95_latency_ms": 100 * (i + 1),
        }
        for i, s in enumerate(scores)
    ]
    return {
        "task_id": "t",
        "tenant": "d",
        "submitted_at": 1,
        "text": "x",
        "transcript": None,
        "modalities": ["text"],
        "fused": {},
        "candidates": cands,
        "abstained": abstained,
        "reason": "r" if abstained else None,
        "index_size": len(cands),
        "reply_to": None,
        "trace_id": None,
        "notes": [],
        "timings": {"submitted": 1},
    }


def test_top_agents_within_margin_become_a_chain_with_fallbacks() -> None:
    plan = plan_sequential(_matched([0.9, 0.85, 0.5, 0.4]), now_ms=7, max_steps=3, margin=0.1)
    assert plan["status"] == "PLANNED"
    assert [s["agent_id"] for s in plan["steps"]] == ["a0", "a1"]
    assert [s["fallback_agent_id"] for s in plan["steps"]] == ["a2", "a3"]
    assert plan["steps"][1]["depends_on"] == ["s1"] and plan["estimated_duration_ms"] == 300
    assert plan["timings"]["planned"] == 7


def test_plan_id_is_stable_per_task() -> None:
    assert plan_sequential(_matched([0.9]), 1)["plan_id"] == plan_sequential(_matched([0.9]), 2)["plan_id"]


def test_abstained_task_gets_no_match_with_reason() -> None:
    plan = plan_sequential(_matched([0.1], abstained=True), 1)
    assert plan["status"] == "NO_MATCH" and plan["reason"] == "r" and plan["steps"] == []


def test_a_fallback_needs_a_card_similar_enough_to_the_task() -> None:
    plan = plan_sequential(_matched([0.9, 0.5, 0.1]), now_ms=7, max_steps=1, margin=0.1)
    assert [s["fallback_agent_id"] for s in plan["steps"]] == ["a1"]
    plan = plan_sequential(_matched([0.9, 0.15, 0.1]), now_ms=7, max_steps=1, margin=0.1)
    assert [s["fallback_agent_id"] for s in plan["steps"]] == [None]  # below the 0.2 default


def test_a_fallback_shares_a_capability_with_its_step_agent() -> None:
    caps = {"a0": ["asr"], "a1": ["summarization"], "a2": ["asr"]}
    plan = plan_sequential(_matched([0.9, 0.5, 0.4]), now_ms=7, max_steps=1, capabilities=lambda a: caps[a])
    assert [s["fallback_agent_id"] for s in plan["steps"]] == ["a2"]  # a1 is closer but cannot stand in
    plan = plan_sequential(_matched([0.9, 0.5]), now_ms=7, max_steps=1, capabilities=lambda a: caps[a])
    assert [s["fallback_agent_id"] for s in plan["steps"]] == [None]
