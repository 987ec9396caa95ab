from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from aos_gateway.client import new_task
from aos_gateway.errors import ValidationError
from aos_gateway.matching.cards import card_from_json, card_text, read_cards
from aos_gateway.matching.index import ExactIndex
from aos_gateway.matching.matcher import Matcher, RoleRules
from aos_gateway.perception.task import perceive
from aos_gateway.perception.text import TextEncoder
from tests.unit.perception.test_task import FakeEncoder


def _card(aid: str, **kw: object) -> dict[str, object]:
    return dict(card_from_json({"agent_id": aid, "description": f"{aid} agent", **kw}, now_ms=1))


def test_card_validation() -> None:
    with pytest.raises(ValidationError, match="agent_id"):
        card_from_json({"name": "x"})
    with pytest.raises(ValidationError, match="status"):
        card_from_json({"agent_id": "a", "status": "sleepy"})
    with pytest.raises(ValidationError, match="negative"):
        card_from_json({"agent_id": "a", "cost": -1})
    c = card_from_json({"agent_id": " a ", "description": "d", "capabilities": ["x"]}, now_ms=5)
    assert c["agent_id"] == "a" and c["name"] == "a" and c["tenant"] == "public" and c["updated_at"] == 5
    assert "Capabilities: x." in card_text(c)


def test_read_cards_names_the_bad_line(tmp_path: Path) -> None:
    f = tmp_path / "a.jsonl"
    f.write_text(json.dumps({"agent_id": "a"}) + "\n\n{not json\n")
    with pytest.raises(ValidationError, match=r"a\.jsonl:3"):
        list(read_cards(f))


def test_metatool_agents_file_parses() -> None:
    path = Path(__file__).resolve().parents[4] / "shared" / "datasets" / "metatool" / "agents.jsonl"
    if not path.is_file():
        pytest.skip("shared MetaTool data not beside the checkout")
    cards = list(read_cards(path))
    assert len(cards) == 199 and len({c["agent_id"] for c in cards}) == 199


def _index() -> ExactIndex:
    idx = ExactIndex(4)
    idx.upsert(_card("a", capabilities=["x"]), np.array([1, 0, 0, 0]))  # type: ignore[arg-type]
    idx.upsert(_card("b", cost=5.0), np.array([0.9, 0.1, 0, 0]))  # type: ignore[arg-type]
    idx.upsert(_card("c", tenant="acme"), np.array([0.8, 0.2, 0, 0]))  # type: ignore[arg-type]
    idx.upsert(_card("d", status="INACTIVE"), np.array([1, 0, 0, 0]))  # type: ignore[arg-type]
    return idx


def _perceived(**kw: object) -> list:  # type: ignore[type-arg]
    # "abcde": 5 chars -> FakeEncoder puts 1.0 at index 1 ... use 4 chars -> index 0
    return perceive([new_task("abcd", **kw)], ["abcd"], FakeEncoder(), 1, "float32")  # type: ignore[arg-type]


def test_index_versions_and_removal() -> None:
    idx = _index()
    assert idx.get("a").version == 1  # type: ignore[union-attr]
    idx.upsert(_card("a", capabilities=["x"]), np.array([1, 0, 0, 0]))  # type: ignore[arg-type]
    assert idx.get("a").version == 1  # type: ignore[union-attr]  # same card: no new version
    idx.upsert(_card("a", capabilities=["x", "y"]), np.array([1, 0, 0, 0]))  # type: ignore[arg-type]
    assert idx.get("a").version == 2  # type: ignore[union-attr]
    assert idx.remove("a") and not idx.remove("a") and len(idx) == 3


def test_matcher_filters_and_ranks() -> None:
    m = Matcher(_index(), top_k=5, min_similarity=0.2)
    (res,) = m.match(_perceived(), 10)
    assert [c["agent_id"] for c in res["candidates"]] == ["a", "b"]  # c: other tenant, d: inactive
    (res,) = m.match(_perceived(tenant="acme"), 10)
    assert [c["agent_id"] for c in res["candidates"]] == ["a", "b", "c"]
    (res,) = m.match(_perceived(required_capabilities=["x"]), 10)
    assert [c["agent_id"] for c in res["candidates"]] == ["a"]
    (res,) = m.match(_perceived(max_cost=1.0), 10)
    assert [c["agent_id"] for c in res["candidates"]] == ["a"]
    assert res["timings"]["matched"] == 10 and not res["abstained"]


def test_matcher_abstains_with_a_reason() -> None:
    (res,) = Matcher(_index(), min_similarity=0.2).match(_perceived(required_capabilities=["nope"]), 1)
    assert res["abstained"] and res["reason"] == "no agent satisfies the task's constraints"
    (res,) = Matcher(ExactIndex(4)).match(_perceived(), 1)
    assert res["abstained"] and res["reason"] == "no agent is registered"
    (res,) = Matcher(_index(), min_similarity=1.5).match(_perceived(), 1)
    assert res["abstained"] and "below the threshold" in (res["reason"] or "")


def _far_index() -> ExactIndex:
    """Agent e is far from every task vector the FakeEncoder makes; f also, but for tenant acme only."""
    idx = _index()
    idx.upsert(_card("e"), np.array([0, 0, 0, 1]))  # type: ignore[arg-type]
    idx.upsert(_card("f", tenant="acme"), np.array([0, 0, 0, 1]))  # type: ignore[arg-type]
    return idx


def test_learned_state_brings_in_agents_the_search_missed_and_respects_filters() -> None:
    from aos_gateway.matching.learned import learn_gold

    (task,) = _perceived()
    from aos_gateway.perception.vectors import unpack

    q = unpack(task["fused"])
    # f succeeded once on a task like this one (far card): the state proposes it, ranked after e; an
    # agent the state never saw but whose card fits (d) competes with its card, so f needs evidence
    state = learn_gold(["a", "e", "f"], np.stack([q] * 3 + [-q] * 2 + [q]), ["e", "e", "e", "a", "a", "f"])
    m = Matcher(_far_index(), top_k=1, search_factor=1)  # the search alone returns one agent: a
    (zero,) = m.match([task], 1)
    assert [c["agent_id"] for c in zero["candidates"]] == ["a"] and zero["candidates"][0]["quality"] is None
    m.set_state(state)
    (res,) = m.match([task], 2)
    assert res["candidates"][0]["agent_id"] == "e"  # learned: tasks like this one went to e
    assert res["candidates"][0]["quality"] is not None and res["candidates"][0]["quality"] > 0.5
    assert 0 < res["candidates"][0]["score"] <= 1
    ranked = [c["agent_id"] for c in m.rank(q, None, 3)]
    assert "f" in ranked  # with no constraints f may be proposed ...
    from aos_gateway.matching.filters import TaskConstraints

    cons = TaskConstraints.of(task)
    assert "f" not in [c["agent_id"] for c in m.rank(q, cons, 3)]  # ... but not to another tenant's task


def test_an_unlabelled_state_ranks_by_adapted_prototypes_and_proposes_agents_the_search_missed() -> None:
    from aos_gateway.matching.adapt import unlabelled_state
    from aos_gateway.matching.filters import TaskConstraints

    ids = ["a", "e", "g"]
    cards = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]], dtype=np.float32)
    idx = ExactIndex(4)
    for aid, vec, kw in zip(ids, cards, [{}, {}, {"tenant": "acme"}], strict=True):
        idx.upsert(_card(aid, **kw), vec)  # type: ignore[arg-type]
    # tasks seen without outcomes, nearer e's card than a's: e's prototype moves to them
    t = np.array([0.6, 0.7, 0, 0.39], dtype=np.float32)
    tasks = np.stack([t / np.linalg.norm(t)] * 5)
    state = unlabelled_state(ids, cards, tasks)
    q = np.array([0.75, 0.6, 0, 0.3], dtype=np.float32)
    q /= np.linalg.norm(q)  # a task like them, a little nearer a's card than e's
    m = Matcher(idx, top_k=1, search_factor=1)  # the search alone returns one agent
    assert [c["agent_id"] for c in m.rank(q, None, 1)] == ["a"]
    m.set_state(state)
    (best,) = m.rank(q, None, 1)
    assert best["agent_id"] == "e" and best["quality"] is None  # proposed, ranked first; nothing learned
    cons = TaskConstraints("public", frozenset(), None, None)
    assert "g" not in [c["agent_id"] for c in m.rank(q, cons, 3)]  # proposals still pass the filters
    with pytest.raises(ValidationError, match="8-dim"):
        m.set_state(unlabelled_state(ids, np.eye(3, 8, dtype=np.float32), np.eye(2, 8, dtype=np.float32)))


def test_matcher_abstains_below_the_confidence_threshold() -> None:
    (res,) = Matcher(_index(), min_confidence=0.99).match(_perceived(), 1)
    assert res["abstained"] and "confidence threshold" in (res["reason"] or "")
    (res,) = Matcher(_index(), min_confidence=0.1).match(_perceived(), 1)
    assert not res["abstained"]


def test_a_task_fused_in_another_space_is_matched_there_zero_shot_with_its_own_threshold() -> None:
    from aos_gateway.matching.learned import learn_gold
    from aos_gateway.perception.vectors import pack

    clip = ExactIndex(3)
    clip.upsert(_card("a", capabilities=["x"]), np.array([0, 0, 1]))  # type: ignore[arg-type]
    clip.upsert(_card("b"), np.array([0, 1, 0]))  # type: ignore[arg-type]
    (task,) = _perceived()
    # learned in the text space: "b" for everything; it must not leak into the CLIP space
    state = learn_gold(["a", "b"], np.stack([np.array([1, 0, 0, 0], dtype=np.float32)] * 2), ["b", "b"])
    m = Matcher(_index(), min_similarity=0.9, state=state, spaces={"clip-model": clip}, space_min_similarity=0.5)
    task["fused"] = pack("fused", np.array([0, 0.6, 0.8]), "FLOAT32", "clip-model")
    (res,) = m.match([task], 1)
    assert [c["agent_id"] for c in res["candidates"]] == ["a", "b"] and res["candidates"][0]["quality"] is None
    assert not res["abstained"]  # 0.8 passes the CLIP threshold (0.5), not the text one (0.9)
    task["fused"] = pack("fused", np.array([0.9, 0.3, 0.3]), "FLOAT32", "clip-model")
    (res,) = m.match([task], 1)
    assert res["abstained"] and "below the threshold 0.5" in (res["reason"] or "")


def _weather_pdf_sql() -> tuple[TextEncoder, ExactIndex]:
    """The real text encoder and an index of three agents: weather, pdf and sql."""
    enc = TextEncoder()
    cards = [
        _card("weather", description="Weather forecasts and current conditions for any city."),
        _card("pdf", description="Converts documents and web pages into PDF files."),
        _card("sql", description="Turns a question into an SQL query."),
    ]
    idx = ExactIndex(enc.dim)
    for c, v in zip(cards, enc.encode([card_text(c) for c in cards]), strict=True):  # type: ignore[arg-type]
        idx.upsert(c, v)  # type: ignore[arg-type]
    return enc, idx


def test_a_multi_part_task_gets_one_role_per_clause_agent() -> None:
    from aos_gateway.matching.learned import learn_gold

    enc, idx = _weather_pdf_sql()
    text = "Show me the weather for the next 10 days in Paris and convert it into a PDF file."
    single = "Will it rain in Berlin tomorrow?"
    tasks = perceive([new_task(text), new_task(single)], [text, single], enc, 1, "float32")
    m = Matcher(idx, top_k=3, roles=RoleRules(runner_up_ratio=0.0, min_clause_score=0.3, min_successes=0))
    two, one = m.match(tasks, 1)
    assert [r["candidates"][0]["agent_id"] for r in two["roles"]] == ["weather", "pdf"]
    assert two["roles"][1]["depends_on"] == ["r1"] and two["roles"][1]["text"] == "convert it into a PDF file."
    assert one["roles"] == []  # zero-shot: even a 0 runner-up ratio adds no role (card scores are flat)
    # with a learned state and no token windows (perceived without them) the runner-up rule applies:
    # here every agent is learned as likely
    vecs = enc.encode(["Will it snow in Rome?", "Turn this into SQL", "Make a PDF of this page"])
    m.set_state(learn_gold(["weather", "sql", "pdf"], vecs, ["weather", "sql", "pdf"]))
    assert tasks[1].get("windows")
    (learned,) = m.match([{**tasks[1], "windows": []}], 2)
    assert len(learned["roles"]) == 2 and learned["roles"][0]["candidates"][0]["agent_id"] == "weather"
    # the same state under the default rules: three successes are too few for the learned rules
    default = Matcher(idx, top_k=3, roles=RoleRules(runner_up_ratio=0.0, min_clause_score=0.3))
    default.set_state(m.ranker.state)
    (few,) = default.match([{**tasks[1], "windows": []}], 2)
    assert few["roles"] == []


def test_with_a_learned_state_roles_come_from_token_windows() -> None:
    from aos_gateway.matching.learned import learn_gold

    enc, idx = _weather_pdf_sql()
    past = {
        "weather": ["Will it snow in Rome?", "What is the forecast for Tokyo this weekend?", "Is it windy in Oslo?"],
        "pdf": ["Make a PDF of this page", "Save this report as a PDF document", "Export my notes to PDF"],
        "sql": ["Turn this into SQL", "Write a query listing all customers", "Count the orders per month in SQL"],
    }
    texts = [t for ts in past.values() for t in ts]
    labels = [a for a, ts in past.items() for _ in ts]
    m = Matcher(idx, top_k=3, roles=RoleRules(min_successes=0))
    m.set_state(learn_gold(list(past), enc.encode(texts), labels))
    text = "Show me the weather for the next 10 days in Paris and convert it into a PDF file."
    single = "Will it rain in Berlin tomorrow?"
    two, one = m.match(perceive([new_task(text), new_task(single)], [text, single], enc, 1, "float16"), 1)
    assert [r["candidates"][0]["agent_id"] for r in two["roles"]] == ["weather", "pdf"]
    assert two["roles"][1]["text"] == "convert it into a PDF file." and two["roles"][1]["depends_on"] == ["r1"]
    assert one["roles"] == [] and one["candidates"][0]["agent_id"] == "weather"
    # a margin no window reaches: one role
    strict = Matcher(idx, top_k=3, roles=RoleRules(window_margin=1.0, min_successes=0))
    strict.set_state(m.ranker.state)
    (again,) = strict.match(perceive([new_task(text)], [text], enc, 1, "float16"), 1)
    assert again["roles"] == []


def test_a_state_learned_from_a_few_outcomes_makes_no_roles_out_of_them() -> None:
    """A gateway's first learning pass (a dozen arithmetic tasks done by the calculator) must not
    make the calculator a role of every task with a number in it (seen in a user's review)."""
    from aos_gateway.matching.learned import learn_gold

    enc, idx = _weather_pdf_sql()
    calc = _card("calc", description="Evaluates arithmetic expressions: + - * / and parentheses.")
    idx.upsert(calc, enc.encode([card_text(calc)])[0])  # type: ignore[arg-type]
    past = ["What is 12 * (3 + 4)?", "What is 1500 divided by 12?", "What is 7 + 5?", "What is 3 times 9?"] * 3
    state = learn_gold(
        ["weather", "pdf", "sql", "calc"], enc.encode([*past, "Will it snow?"]), [*["calc"] * 12, "weather"]
    )
    text = "Turn 'all customers who ordered more than three times last month' into a SQL query."
    task = perceive([new_task(text)], [text], enc, 1, "float32")
    eager = Matcher(idx, top_k=3, roles=RoleRules(min_successes=0))
    eager.set_state(state)
    (got,) = eager.match(task, 1)
    agents = [r["candidates"][0]["agent_id"] for r in got["roles"]]
    assert "calc" in agents  # what the rules did with such a state: a calculator role out of "three"
    m = Matcher(idx, top_k=3)  # the default: the learned rules wait for 200 successes
    m.set_state(state)
    (got,) = m.match(task, 1)
    assert got["roles"] == [] and got["candidates"][0]["agent_id"] == "sql"
