"""aos_gateway.streams.learner.pass_in_child: the worker's learning pass in a process of its own."""

from __future__ import annotations

import asyncio
import sys

import pytest

from aos_gateway.errors import AosError
from aos_gateway.streams import learner


def _run(argv: list[str], timeout: float = 30.0) -> dict[str, int]:
    return asyncio.run(learner.pass_in_child(timeout, argv)).published


def test_what_the_child_published_comes_back() -> None:
    doc = "{'published': {'matching': 7, 'quality': 8}, 'pass': {'kind': 'incremental', 'seconds': 1.5}}"
    child = f"import json; print('progress on stdout first'); print(json.dumps({doc}))"
    out = asyncio.run(learner.pass_in_child(30.0, [sys.executable, "-c", child]))
    assert out.published == {"matching": 7, "quality": 8}
    assert out.info == {"kind": "incremental", "seconds": 1.5}
    assert _run([sys.executable, "-c", "pass"]) == {}


def test_a_failed_child_is_an_error_with_its_last_words() -> None:
    with pytest.raises(AosError, match=r"exit 1: .*no experience yet"):
        _run([sys.executable, "-c", "import sys; print('no experience yet', file=sys.stderr); sys.exit(1)"])
    with pytest.raises(AosError, match="unreadable answer"):
        _run([sys.executable, "-c", "print('not json')"])


def test_a_hung_child_is_killed_at_the_timeout() -> None:
    with pytest.raises(AosError, match=r"no answer in 1s; killed"):
        _run([sys.executable, "-c", "import time; time.sleep(60)"], timeout=1.0)
