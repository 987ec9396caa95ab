from __future__ import annotations

import pytest

from aos_gateway.security.redact import KINDS, Redactor, iban_ok, luhn_ok, redact


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Mail john.doe+x@example.co.uk now", "Mail [EMAIL] now"),
        ("card 4111 1111 1111 1111.", "card [CARD]."),
        ("card 4111-1111-1111-1111", "card [CARD]"),
        ("card 5500005555555559 ok", "card [CARD] ok"),
        ("IBAN GB82 WEST 1234 5698 7654 32 please", "IBAN [IBAN] please"),
        ("DE89370400440532013000", "[IBAN]"),
        ("call +44 20 7946 0958 or (555) 123-4567", "call [PHONE] or [PHONE]"),
        ("call 555.123.4567 or 06 12 34 56 78 or 0612345678", "call [PHONE] or [PHONE] or [PHONE]"),
        ("from 192.168.1.10 and 2001:db8::1", "from [IP] and [IP]"),
    ],
)
def test_each_kind_is_replaced(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "What is 12 * (3 + 4)?",
        "Compute 1500 divided by 12 and list the key terms.",
        "Show me the weather for the next 10 days in Paris.",
        "on 2024-05-01 at 12:30:45, order 1234567890",
        "not a card 4111 1111 1111 1112",  # fails Luhn
        "not an IBAN GB00WEST12345698765432",  # fails mod-97
        "not an address 999.1.1.1 or ::",
        "costs 0.5 or 100000000 USD",
    ],
)
def test_ordinary_text_and_near_misses_pass_through(text: str) -> None:
    assert redact(text) == text


def test_checksums() -> None:
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("GB82 WEST 1234 5698 7654 32") and not iban_ok("GB83 WEST 1234 5698 7654 32")


def test_kinds_can_be_chosen_and_unknown_ones_are_refused() -> None:
    text = "mail a@b.io from 10.0.0.1"
    assert Redactor(["email"])(text) == "mail [EMAIL] from 10.0.0.1"
    assert Redactor(["ip"])(text) == "mail a@b.io from [IP]"
    assert Redactor(["ip", "email"]).kinds == ("email", "ip")  # always applied in the order of KINDS
    assert set(Redactor().kinds) == set(KINDS)
    with pytest.raises(ValueError, match="unknown PII kinds"):
        Redactor(["ssn"])


def test_redaction_is_idempotent() -> None:
    text = "a@b.io, +1 (555) 123-4567, 4111 1111 1111 1111, 10.1.2.3"
    once = redact(text)
    assert redact(once) == once
    assert once == "[EMAIL], [PHONE], [CARD], [IP]"
