"""PII redaction of free text before it is stored (pure, no I/O).

Replaces, in this order (so a card number or an IP address is not taken for a phone number):

=========  ==========  ======================================================================
kind       becomes     what counts
=========  ==========  ======================================================================
email      ``[EMAIL]``  ``local@domain.tld``
iban       ``[IBAN]``   two letters, two check digits, 11-30 letters/digits (spaces allowed),
                        valid by the ISO 13616 mod-97 check
card       ``[CARD]``   13-19 digits (spaces or dashes between groups) passing the Luhn check
ip         ``[IP]``     IPv4 and IPv6 addresses (checked by :mod:`ipaddress`; a version number
                        like ``1.2.3.4`` is an address too)
phone      ``[PHONE]``  9-15 digits written like a phone number: a leading ``+``, ``0`` or
                        ``(``, or at least two separators between digit groups (dates are not)
=========  ==========  ======================================================================

It is a filter against the common shapes, not a guarantee: names, street addresses and
numbers written in words pass through.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from functools import lru_cache

KINDS = ("email", "iban", "card", "ip", "phone")

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])")
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){11,30}(?![A-Za-z0-9])")
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_PHONE = re.compile(r"(?<![\w+])(?:\+|00|\()?\d[\d ().-]{7,}\d(?![\w])")
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_IPV6 = re.compile(r"(?<![\w:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:])")
_DATE = re.compile(r"^\d{4}[-./]\d{1,2}[-./]\d{1,2}$|^\d{1,2}[-./]\d{1,2}[-./]\d{2,4}$")


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum of a digit string (card numbers)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_ok(text: str) -> bool:
    """The ISO 13616 mod-97 check of an IBAN (spaces ignored)."""
    s = text.replace(" ", "").upper()
    if not 15 <= len(s) <= 34:
        return False
    moved = s[4:] + s[:4]
    num = "".join(str(int(c, 36)) for c in moved)
    return int(num) % 97 == 1


def _email(m: re.Match[str]) -> str:
    return "[EMAIL]"


def _iban(m: re.Match[str]) -> str:
    return "[IBAN]" if iban_ok(m.group(0)) else m.group(0)


def _card(m: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", m.group(0))
    return "[CARD]" if 13 <= len(digits) <= 19 and luhn_ok(digits) else m.group(0)


def _phone(m: re.Match[str]) -> str:
    text = m.group(0)
    digits = re.sub(r"\D", "", text)
    if not 9 <= len(digits) <= 15 or _DATE.match(text.strip()):
        return text
    separators = len(re.findall(r"[ ().-]+", text.strip("+(")))
    if text.startswith(("+", "0", "(")) or separators >= 2:
        return "[PHONE]"
    return text


def _ipv4(m: re.Match[str]) -> str:
    try:
        ipaddress.IPv4Address(m.group(0))
    except ValueError:
        return m.group(0)
    return "[IP]"


def _ipv6(m: re.Match[str]) -> str:
    if not re.search(r"[0-9A-Fa-f]", m.group(0)):
        return m.group(0)
    try:
        ipaddress.IPv6Address(m.group(0))
    except ValueError:
        return m.group(0)
    return "[IP]"


_RULES: dict[str, list[tuple[re.Pattern[str], Callable[[re.Match[str]], str]]]] = {
    "email": [(_EMAIL, _email)],
    "iban": [(_IBAN, _iban)],
    "card": [(_CARD, _card)],
    "ip": [(_IPV6, _ipv6), (_IPV4, _ipv4)],
    "phone": [(_PHONE, _phone)],
}


class Redactor:
    """Redacts the chosen kinds of PII (all of :data:`KINDS` by default)."""

    def __init__(self, kinds: Iterable[str] = KINDS) -> None:
        wanted = list(dict.fromkeys(kinds))
        unknown = [k for k in wanted if k not in _RULES]
        if unknown:
            raise ValueError(f"unknown PII kinds {unknown}: choose from {', '.join(KINDS)}")
        # always in the order of KINDS, whatever order they were asked for in
        self.kinds = tuple(k for k in KINDS if k in wanted)
        self._rules = [rule for k in self.kinds for rule in _RULES[k]]

    def __call__(self, text: str) -> str:
        for pattern, repl in self._rules:
            text = pattern.sub(repl, text)
        return text


_DEFAULT = Redactor()


def redact(text: str, kinds: Iterable[str] | None = None) -> str:
    """``text`` with every PII of ``kinds`` (default: all) replaced by its placeholder."""
    return _DEFAULT(text) if kinds is None else Redactor(kinds)(text)


@lru_cache(maxsize=8)
def _redactor(kinds: tuple[str, ...]) -> Redactor:
    return Redactor(kinds)


def stored_text_redactor() -> Callable[[str], str] | None:
    """The redactor the process settings ask for before text is stored (``security.redact_pii``), or None."""
    from aos_gateway.settings import get_settings

    sec = get_settings().security
    return _redactor(tuple(sec.redact_kinds)) if sec.redact_pii else None
