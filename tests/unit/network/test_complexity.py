from __future__ import annotations

from typing import Any

import numpy as np

from aos_gateway.network.complexity import Clause, find_roles, locate, split_clauses, window_roles


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


AGENTS = ["weather", "pdf", "sql", "news"]
TEXT = "Show me the weather in Paris and convert it into a PDF file."


def _windows_of(text: str, width: int = 12, step: int = 6) -> list[tuple[int, int]]:
    return [(a, min(a + width, len(text))) for a in range(0, max(1, len(text) - width + step), step)]


def _dists(rows: list[dict[str, float]]) -> np.ndarray:
    out = np.zeros((len(rows), len(AGENTS)), dtype=np.float32)
    for j, row in enumerate(rows):
        for agent, p in row.items():
            out[j, AGENTS.index(agent)] = p
    return out


def _rank_as(dists: np.ndarray) -> Any:
    """Each window's ranking: its agents by probability (as the matcher would rank the window)."""
    return lambda j: [_c(AGENTS[a], float(dists[j, a])) for a in np.argsort(-dists[j]) if dists[j, a] > 0]


def test_locate_finds_each_clause_after_the_one_before() -> None:
    text = "do it and do it again and then do it"
    found = locate(text, [Clause("do it"), Clause("do it again", True), Clause("do it"), Clause("absent", True, 3, 4)])
    assert [(c.start, c.end) for c in found] == [(0, 5), (10, 21), (31, 36), (3, 4)]
    assert all(text[c.start : c.end] == c.text for c in found[:3]) and found[1].depends_on_previous


def test_a_window_another_agent_owns_by_the_margin_adds_its_role() -> None:
    clauses = locate(TEXT, split_clauses(TEXT))
    windows = _windows_of(TEXT)
    pdf_at = next(j for j, (a, _) in enumerate(windows) if a >= TEXT.index("convert"))
    rows = [{"weather": 0.8, "pdf": 0.1} for _ in windows]
    rows[pdf_at] = {"weather": 0.2, "pdf": 0.7}  # pdf leads weather by 0.5 here
    dists = _dists(rows)
    whole = [_c("weather", 0.7), _c("pdf", 0.2)]
    roles = window_roles(TEXT, whole, clauses, windows, dists, AGENTS, _rank_as(dists), margin=0.4)
    assert [r.candidates[0]["agent_id"] for r in roles] == ["weather", "pdf"]
    assert roles[0].candidates == whole  # the best agent's role keeps the whole task's ranking
    assert roles[0].text == "Show me the weather in Paris" and roles[1].text == "convert it into a PDF file."
    assert roles[1].depends_on == ["r1"] and roles[0].depends_on == []  # "it" refers back
    # a narrower lead than the margin adds nothing: one role (the whole task's ranking)
    assert window_roles(TEXT, whole, clauses, windows, dists, AGENTS, _rank_as(dists), margin=0.6) == []


def test_window_roles_keep_the_best_agent_first_and_respect_max_roles() -> None:
    text = "latest news about Tesla and the weather in Austin"
    windows = _windows_of(text)
    rows = [{"sql": 0.6} for _ in windows]
    rows[0] = {"news": 0.9, "sql": 0.05}
    rows[-1] = {"weather": 0.8, "sql": 0.1}
    dists = _dists(rows)
    whole = [_c("sql", 0.5), _c("news", 0.3)]
    roles = window_roles(text, whole, [], windows, dists, AGENTS, _rank_as(dists), margin=0.4)
    # the task's best agent is listed first, the others in the text's order; no clauses: the whole text
    assert [r.candidates[0]["agent_id"] for r in roles] == ["sql", "news", "weather"]
    assert [r.role_id for r in roles] == ["r1", "r2", "r3"] and all(r.text == text for r in roles)
    assert all(r.depends_on == [] for r in roles)
    two = window_roles(text, whole, [], windows, dists, AGENTS, _rank_as(dists), margin=0.4, max_roles=2)
    assert [r.candidates[0]["agent_id"] for r in two] == ["sql", "news"]  # the widest lead first


def test_a_window_whose_ranking_tops_an_agent_already_chosen_adds_nothing() -> None:
    windows = _windows_of(TEXT)
    rows = [{"weather": 0.9} for _ in windows]
    rows[-1] = {"pdf": 0.9, "weather": 0.0}
    dists = _dists(rows)
    whole = [_c("weather", 0.8)]
    # the constraints left the window no other agent than the task's best: its ranking tops "weather"
    roles = window_roles(TEXT, whole, [], windows, dists, AGENTS, lambda j: [_c("weather", 0.5)], margin=0.4)
    assert roles == []
    assert window_roles(TEXT, whole, [], windows, dists, AGENTS, lambda j: [], margin=0.4) == []
    # the best agent unknown to the learned state (never seen): its probability counts as 0
    unknown = [_c("brand-new", 0.9)]
    roles = window_roles(TEXT, unknown, [], windows, dists, AGENTS, _rank_as(dists), margin=0.4)
    assert [r.candidates[0]["agent_id"] for r in roles] == ["brand-new", "weather", "pdf"]
    assert window_roles(TEXT, [], [], windows, dists, AGENTS, _rank_as(dists)) == []
    assert window_roles(TEXT, whole, [], [], dists[:0], AGENTS, _rank_as(dists)) == []


def test_a_window_across_a_separator_serves_the_clause_it_overlaps_most() -> None:
    text = "Find me a cheap flight and a hotel for a weekend in Lisbon."
    clauses = locate(text, split_clauses(text))
    assert [c.text for c in clauses] == ["Find me a cheap flight", "a hotel for a weekend in Lisbon."]
    across = (text.index("cheap"), text.index(" hotel"))  # "cheap flight and a": mostly the first clause
    windows = [across, (text.index("weekend"), len(text))]
    dists = _dists([{"weather": 0.9}, {"pdf": 0.9}])
    roles = window_roles(text, [_c("weather", 0.9)], clauses, windows, dists, AGENTS, _rank_as(dists))
    assert [(r.candidates[0]["agent_id"], r.text) for r in roles] == [
        ("weather", "Find me a cheap flight"),
        ("pdf", "a hotel for a weekend in Lisbon."),
    ]
    # "flight and a hotel": its middle falls in " and ", between the clauses; most of it is in the second
    windows[0] = (text.index("flight"), text.index("hotel") + len("hotel"))
    roles = window_roles(text, [_c("weather", 0.9)], clauses, windows, dists, AGENTS, _rank_as(dists))
    assert [r.text for r in roles] == ["a hotel for a weekend in Lisbon."] * 2
