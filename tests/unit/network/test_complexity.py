from __future__ import annotations

from typing import Any

from aos_gateway.network.complexity import Clause, find_roles, split_clauses


def test_a_two_part_request_splits_and_a_pronoun_makes_it_sequential() -> None:
    cs = split_clauses("Show me the weather conditions for the next 10 days in Paris and convert it into a PDF file.")
    assert [c.text for c in cs] == [
        "Show me the weather conditions for the next 10 days in Paris",
        "convert it into a PDF file.",
    ]
    assert [c.depends_on_previous for c in cs] == [False, True]


def test_independent_sentences_split_without_dependency() -> None:
    cs = split_clauses(
        "Can you tell me if it will rain in London tomorrow? Also, suggest some popular cafes near the museums."
    )
    assert len(cs) == 2 and not cs[1].depends_on_previous
    assert cs[1].text.startswith("suggest some popular cafes")


def test_then_marks_a_sequence() -> None:
    cs = split_clauses("Find research articles on music education, then build a playlist from the findings")
    assert len(cs) == 2 and cs[1].depends_on_previous


def test_a_single_request_stays_whole_and_short_fragments_join() -> None:
    text = ' "Can you provide me with a list of discounted houses in the city?"'
    assert split_clauses(text) == [Clause(text.strip(' "'), False, 2, len(text) - 1)]
    cs = split_clauses("Compare salt and pepper prices in my town")  # "salt" alone is too short
    assert [c.text for c in cs] == ["Compare salt and pepper prices in my town"]
    assert split_clauses("  ") == []


def test_spans_point_into_the_text() -> None:
    text = "Find flights to Rome, and also book a hotel there. Then email me the itinerary, ok?"
    cs = split_clauses(text)
    assert len(cs) == 3
    assert all(text[c.start : c.end] == c.text for c in cs)
    assert cs[2].depends_on_previous  # "Then ..."


def test_many_clauses_are_capped() -> None:
    text = ". ".join(f"Please do task number {i} now" for i in range(10))
    cs = split_clauses(text, max_clauses=4)
    assert len(cs) == 4 and "task number 9" in cs[-1].text


def _c(agent: str, score: float) -> Any:
    return {
        "agent_id": agent,
        "name": agent,
        "score": score,
        "similarity": score,
        "quality": None,
        "card_version": 1,
        "cost": 0.0,
        "p95_latency_ms": 0,
    }


def test_roles_come_from_clauses_whose_best_agent_differs() -> None:
    whole = [_c("weather", 0.6), _c("pdf", 0.2)]
    clauses = [Clause("weather in Paris"), Clause("convert it into a PDF", True)]
    rankings = [[_c("weather", 0.9)], [_c("pdf", 0.8), _c("weather", 0.1)]]
    roles = find_roles("t", whole, clauses, rankings)
    assert [r.candidates[0]["agent_id"] for r in roles] == ["weather", "pdf"]
    assert roles[1].depends_on == ["r1"] and roles[0].depends_on == []
    assert roles[1].text == "convert it into a PDF"


def test_low_scoring_clauses_and_repeats_add_no_role() -> None:
    whole = [_c("weather", 0.9), _c("pdf", 0.05)]
    clauses = [Clause("a b c"), Clause("d e f")]
    rankings = [[_c("weather", 0.9)], [_c("pdf", 0.3)]]
    roles = find_roles("t", whole, clauses, rankings, min_clause_score=0.5)
    assert [r.candidates[0]["agent_id"] for r in roles] == ["weather"]


def test_a_close_runner_up_of_the_whole_task_is_a_role() -> None:
    whole = [_c("houses", 0.45), _c("discount", 0.35), _c("other", 0.1)]
    roles = find_roles("discounted houses", whole, [], [], runner_up_ratio=0.5)
    assert [r.candidates[0]["agent_id"] for r in roles] == ["houses", "discount"]
    assert all(c["agent_id"] != "houses" for c in roles[1].candidates)
    assert len(find_roles("discounted houses", whole, [], [], runner_up_ratio=0.9)) == 1
    assert find_roles("x", [], [], []) == []
