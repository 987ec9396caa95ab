"""Reference agents' logic (the MiniLM/Whisper ones are exercised in the integration tests)."""

from __future__ import annotations

import pytest

from aos_gateway.agents.reference import calculate, keywords
from aos_gateway.errors import PermanentAgentError


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("what is 12 * (3 + 4)?", "84"),
        ("compute 1500 divided by 12", "125"),
        ("add 17 and 25", "42"),
        ("multiply 6 by 7", "42"),
        ("subtract 5 from 20", "15"),
        ("what is 15% of 200", "30"),
        ("the total of 1,200 + 300", "1500"),
        ("2 to the power of 10 minus 24", "1000"),
        ("what is 7 / 2", "3.5"),
        ("Compute 12 * (3 + 4). Then list the key terms of the result.", "84"),
        ("it costs 3.5 + 1.25.", "4.75"),
    ],
)
def test_calculator(text: str, value: str) -> None:
    assert calculate(text).endswith(f"= {value}")


@pytest.mark.parametrize("text", ["hello there", "1 / 0", "9 ** 999"])
def test_calculator_refuses_what_it_cannot_do(text: str) -> None:
    with pytest.raises(PermanentAgentError):
        calculate(text)


def test_calculator_never_evaluates_code() -> None:
    with pytest.raises(PermanentAgentError):
        calculate("__import__('os').system('true') 1 +")


def test_keywords_rank_repeated_phrases_first() -> None:
    text = "Kafka streams carry tasks. The gateway plans agent networks over Kafka streams for tasks."
    got = keywords(text, k=3)
    assert got[0] == "kafka streams"
    assert "the" not in got and "over" not in got


def test_keywords_need_content() -> None:
    with pytest.raises(PermanentAgentError):
        keywords("the and of to")
