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
        # numbers as speech transcripts spell them (Whisper heard one clip as "12 times seven")
        ("What is 12 times seven?", "84"),
        ("twelve times seven", "84"),
        ("one hundred and five plus twenty-one", "126"),
        ("three thousand two hundred minus one", "3199"),
        ("Someone asked: what is nine times eleven?", "99"),
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


def test_the_calculator_card_matches_plain_arithmetic_questions() -> None:
    """Regression: "What is 9 * 11?" got NO_MATCH (similarity 0.173 to the calculator's card, below
    min_similarity 0.2) while "What is 8 * 11?" was planned; the card now names such questions."""
    from aos_gateway.agents.reference import calculator
    from aos_gateway.matching.cards import card_text
    from aos_gateway.perception.text import TextEncoder
    from aos_gateway.settings import MatchingSettings

    enc = TextEncoder()
    card = enc.encode([card_text(calculator.card(0))])[0]
    texts = ["What is 9 * 11?", "What is 9*11?", "What is 9 times 11?", "what's 7 plus 5", "What is 58 * 58?"]
    sims = enc.encode(texts) @ card
    assert (sims >= MatchingSettings().min_similarity).all(), dict(zip(texts, sims.round(3).tolist(), strict=True))
