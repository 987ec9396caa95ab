"""The code scan: which agents a filter passes (against the reference meaning) and their order by codes."""

from __future__ import annotations

import numpy as np
import pytest

from aos_gateway.contracts.records import AgentCard
from aos_gateway.matching.cards import card_from_json
from aos_gateway.matching.codescan import CodeScan, quantize
from aos_gateway.matching.filters import TaskConstraints


def _cards(n: int, seed: int) -> list[AgentCard]:
    rng = np.random.default_rng(seed)
    caps = ["a", "b", "c", "d", "e"]
    return [
        card_from_json(
            {
                "agent_id": f"r{i}",
                "description": "agent",
                "tenant": ["public", "public", "acme", "zeta"][int(rng.integers(0, 4))],
                "capabilities": sorted({caps[int(j)] for j in rng.integers(0, 5, int(rng.integers(1, 4)))}),
                "modalities": ["text", "image"] if rng.random() < 0.3 else ["text"],
                "cost": float(rng.integers(0, 10)),
                "p95_latency_ms": int(rng.integers(10, 1000)),
                "status": ["ACTIVE", "DEGRADED", "INACTIVE"][int(rng.choice(3, p=[0.8, 0.1, 0.1]))],
            },
            now_ms=1,
        )
        for i in range(n)
    ]


FILTERS = [
    TaskConstraints("acme", frozenset(), None, None),
    TaskConstraints("public", frozenset({"a"}), None, None),
    TaskConstraints("acme", frozenset({"a", "c"}), 5.0, None),
    TaskConstraints("zeta", frozenset({"e"}), None, 300, frozenset({"image"})),
    TaskConstraints("acme", frozenset(), 2.0, 500, frozenset({"image"})),
    TaskConstraints("nobody", frozenset({"b"}), None, None),  # a tenant no card has: public ones only
    TaskConstraints("acme", frozenset({"unknown"}), None, None),
]


@pytest.mark.parametrize("cons", FILTERS)
def test_passing_is_the_reference_meaning_across_writes(cons: TaskConstraints) -> None:
    cards = _cards(400, seed=1)
    rng = np.random.default_rng(2)
    scan = CodeScan(8)
    for c in cards:
        scan.put([c], rng.normal(size=8).astype(np.float32))

    def expected() -> list[str]:
        return sorted(c["agent_id"] for c in live.values() if cons.allows(c))

    live = {c["agent_id"]: c for c in cards}
    assert sorted(scan._slots[r] or "" for r in scan.passing(cons)) == expected()
    # removals free slots, new agents reuse them, changed cards move between members
    for c in cards[::3]:
        scan.remove(c["agent_id"])
        del live[c["agent_id"]]
    for c in _cards(150, seed=3):
        c = {**c, "agent_id": f"n{c['agent_id']}"}
        scan.put([c], rng.normal(size=8).astype(np.float32))
        live[c["agent_id"]] = c
    for c in _cards(100, seed=4)[1::3]:  # new cards for some live agents (ids r1, r4, ...)
        if c["agent_id"] in live:
            scan.put([c], rng.normal(size=8).astype(np.float32))
            live[c["agent_id"]] = c
    assert len(scan) == len(live)
    assert sorted(scan._slots[r] or "" for r in scan.passing(cons)) == expected()
    # the compiled filter of a search passes the same agents
    assert sorted(a for a, _ in scan.top(np.ones(8, np.float32), cons, 10_000)) == expected()


def test_top_orders_by_the_codes_close_to_the_exact_cosine() -> None:
    rng = np.random.default_rng(5)
    n, dim = 5000, 384
    vecs = rng.normal(size=(n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    cards = [
        card_from_json({"agent_id": f"r{i}", "description": "agent", "capabilities": ["x" if i % 7 else "y"]}, now_ms=1)
        for i in range(n)
    ]
    scan = CodeScan(dim)
    scan.put(cards[:100], vecs[:100])
    for c, v in zip(cards[100:], vecs[100:], strict=True):
        scan.put([c], v)
    cons = TaskConstraints("acme", frozenset({"y"}), None, None)
    allowed = np.array([i % 7 == 0 for i in range(n)])
    for _ in range(5):
        q = vecs[rng.integers(0, n)] + 0.5 * rng.normal(size=dim).astype(np.float32) / dim**0.5
        q /= np.linalg.norm(q)
        got = scan.top(q, cons, 40)
        exact = np.where(allowed, vecs @ q, -np.inf)
        assert len(got) == 40 and all(int(a[1:]) % 7 == 0 for a, _ in got)
        for aid, sim in got:  # each approximate similarity within the codes' error
            assert sim == pytest.approx(float(exact[int(aid[1:])]), abs=3e-3)
        # the true top 10 are among the first 20 (what the caller rescores)
        assert {f"r{j}" for j in np.argsort(-exact)[:10]} <= {a for a, _ in got[:20]}
    assert scan.top(vecs[0], TaskConstraints("acme", frozenset({"z"}), None, None), 10) == []


def test_quantize_round_trips_within_half_a_step() -> None:
    v = np.random.default_rng(6).normal(size=(3, 384)).astype(np.float32)
    v[1] *= 0.01  # each row its own scale
    codes, scale = quantize(v)
    assert codes.dtype == np.int8 and (np.abs(codes).max(axis=1) == 127).all()
    assert (np.abs(codes * scale[:, None] - v).max(axis=1) <= scale / 2 + 1e-6).all()
    zeros, _ = quantize(np.zeros(4, np.float32))
    assert zeros.shape == (1, 4) and not zeros.any()
