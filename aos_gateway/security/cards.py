"""Agent cards bound to who published them: Ed25519 signatures in the card's ``metadata``.

Kafka's ACLs let an agent write the registry topic but cannot look inside its records, so any
agent could publish a card under another agent's id. A signed card carries, in its ``metadata``
map (no contract change):

- ``aos.signer``: who signed, ``agent:<agent id>`` or ``tenant:<tenant>``;
- ``aos.sig``: ``v1:`` + base64 of the Ed25519 signature of :func:`signed_bytes`.

A reader that requires signatures (``AOS_SECURITY__REQUIRE_SIGNED_CARDS``) takes a card only when
its signer is bound to it — ``agent:<id>`` signs only the card of agent ``<id>``, ``tenant:<t>``
only cards of tenant ``<t>`` — and the signature verifies with one of that signer's public keys
in the trust file::

    {"agents": {"calculator": ["<base64 raw Ed25519 public key>", ...]},
     "tenants": {"acme": ["<...>"]}}

Several keys per signer let a key rotate (add the new one, re-sign, remove the old one). What is
signed: the card's identity and behaviour (every field but ``updated_at``, and the metadata but
the signature itself), as canonical JSON (sorted keys, no spaces), so a card can be re-published
with a new time without signing it again, and a card whose description, topic or tenant is
changed by anyone else no longer verifies.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from aos_gateway.contracts.records import AgentCard
from aos_gateway.errors import ConfigError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SIG = "aos.sig"
SIGNER = "aos.signer"
_SIG_VERSION = "v1:"
#: the card fields a signature covers (new fields added to the contract later are not, so old
#: signatures keep verifying; ``metadata`` is covered except the signature itself)
SIGNED_FIELDS = (
    "agent_id",
    "name",
    "description",
    "capabilities",
    "modalities",
    "examples",
    "tenant",
    "cost",
    "p95_latency_ms",
    "status",
    "invocation_topic",
    "metadata",
)

# reasons a card is not taken (also the values of the rejection counter's label)
UNSIGNED = "unsigned"
UNKNOWN_SIGNER = "unknown_signer"
NOT_THE_SIGNERS = "not_the_signers"
BAD_SIGNATURE = "bad_signature"
KEY_MISMATCH = "key_mismatch"


def signed_bytes(card: Mapping[str, Any]) -> bytes:
    """The canonical bytes a card's signature covers."""
    body: dict[str, Any] = {k: card.get(k) for k in SIGNED_FIELDS}
    meta = dict(body.get("metadata") or {})
    meta.pop(SIG, None)
    body["metadata"] = meta
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def signer_for_agent(agent_id: str) -> str:
    return f"agent:{agent_id}"


def signer_for_tenant(tenant: str) -> str:
    return f"tenant:{tenant}"


def sign_card(card: AgentCard, key: Ed25519PrivateKey, signer: str | None = None) -> AgentCard:
    """A copy of ``card`` signed by ``key`` as ``signer`` (default: ``agent:<the card's id>``)."""
    out = AgentCard(**card)
    meta = dict(card.get("metadata") or {})
    meta.pop(SIG, None)
    meta[SIGNER] = signer or signer_for_agent(card["agent_id"])
    out["metadata"] = meta
    sig = key.sign(signed_bytes(out))
    out["metadata"] = {**meta, SIG: _SIG_VERSION + base64.b64encode(sig).decode("ascii")}
    return out


def signature_metadata(card: AgentCard, key: Ed25519PrivateKey, signer: str | None = None) -> dict[str, str]:
    """The metadata entries that sign ``card`` (``aos.signer``, ``aos.sig``).

    For an agent served by the SDK, whose card is made at start:
    ``agent.metadata.update(signature_metadata(agent.card(0), key))`` (``updated_at`` is not signed).
    """
    meta = sign_card(card, key, signer)["metadata"]
    return {SIGNER: meta[SIGNER], SIG: meta[SIG]}


# -- keys --------------------------------------------------------------------------------------


def new_signing_key() -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate()


#: the line before a key's PEM block that names whom ``aos security cards keygen`` made it for
#: (explanatory text before the block is allowed by RFC 7468 and skipped by PEM readers)
SIGNER_HEADER = "aos.signer: "


def private_pem(key: Ed25519PrivateKey, signer: str | None = None) -> bytes:
    """The key as unencrypted PKCS#8 PEM (keep the file 0600); with ``signer`` (``agent:<id>``,
    ``tenant:<t>``), preceded by a line that names it (:func:`key_signer` reads it back)."""
    from cryptography.hazmat.primitives import serialization

    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return pem if signer is None else f"{SIGNER_HEADER}{signer}\n".encode() + pem


def key_signer(path: Path) -> str | None:
    """Whom the key file at ``path`` was made for (``agent:<id>`` or ``tenant:<t>``), when it says so."""
    try:
        head = path.read_bytes().split(b"-----BEGIN", 1)[0].decode("utf-8", "replace")
    except OSError:
        return None
    for line in head.splitlines():
        if line.startswith(SIGNER_HEADER):
            return line[len(SIGNER_HEADER) :].strip() or None
    return None


def public_b64(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The public key as base64 of its 32 raw bytes (what the trust file holds)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM file.

    Raises:
        ConfigError: Missing, unreadable, or not an Ed25519 private key (the message shows no key material).
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the card signing key {path}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise ConfigError(f"{path} is not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def _public_key(text: str, where: str) -> Ed25519PublicKey:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        raw = base64.b64decode(text, validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError, TypeError):
        raise ConfigError(f"{where}: not a base64 Ed25519 public key (32 bytes)") from None


@dataclass
class TrustStore:
    """Public keys by signer (``agent:<id>``, ``tenant:<t>``)."""

    keys: dict[str, list[Ed25519PublicKey]] = field(default_factory=dict)

    @classmethod
    def from_json(cls, raw: Any, where: str = "trust file") -> TrustStore:
        """From ``{"agents": {ID: [KEY, ...]}, "tenants": {T: [KEY, ...]}}`` (a single key may be a string).

        Raises:
            ConfigError: Another shape, or a key that is not a base64 Ed25519 public key.
        """
        if not isinstance(raw, dict) or not set(raw) <= {"agents", "tenants"}:
            raise ConfigError(f'{where}: expected {{"agents": {{...}}, "tenants": {{...}}}}')
        out = cls()
        for section, make in (("agents", signer_for_agent), ("tenants", signer_for_tenant)):
            entries = raw.get(section) or {}
            if not isinstance(entries, dict):
                raise ConfigError(f"{where}: {section} must be an object of name -> keys")
            for name, keys in entries.items():
                keys = [keys] if isinstance(keys, str) else keys
                if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
                    raise ConfigError(f"{where}: {section}.{name} must be a key or a list of keys")
                signer = make(str(name))
                out.keys[signer] = [_public_key(k, f"{where}: {section}.{name}") for k in keys]
        return out

    @classmethod
    def load(cls, path: Path) -> TrustStore:
        """From a JSON file.

        Raises:
            ConfigError: Missing, not JSON, or another shape.
        """
        return cls.from_json(cls.read_json(path), str(path))

    @staticmethod
    def read_json(path: Path) -> Any:
        """A trust file's JSON, unchecked (``aos security cards keygen`` adds a key to it).

        Raises:
            ConfigError: Missing, unreadable, not UTF-8 or not JSON (naming the file).
        """
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read the card trust file {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path} is not a card trust file: not UTF-8 text") from None
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} is not JSON (line {exc.lineno}, column {exc.colno})") from None

    def signers_of(self, public_key: str) -> list[str]:
        """The signers that list ``public_key`` (base64, as :func:`public_b64` makes it)."""
        return sorted(s for s, keys in self.keys.items() if any(public_b64(k) == public_key for k in keys))

    def check(self, card: Mapping[str, Any], key: str | None = None) -> str | None:
        """Why a card is not taken (one of the reason constants), or None when it is.

        Args:
            card: The decoded card.
            key: The record's key, when it is known: it must be the card's agent id.
        """
        from cryptography.exceptions import InvalidSignature

        if key is not None and key != card.get("agent_id"):
            return KEY_MISMATCH
        meta = card.get("metadata") or {}
        sig, signer = meta.get(SIG), meta.get(SIGNER)
        if not sig or not signer:
            return UNSIGNED
        if signer not in (signer_for_agent(str(card.get("agent_id"))), signer_for_tenant(str(card.get("tenant")))):
            return NOT_THE_SIGNERS
        keys = self.keys.get(signer)
        if not keys:
            return UNKNOWN_SIGNER
        if not sig.startswith(_SIG_VERSION):
            return BAD_SIGNATURE
        try:
            raw = base64.b64decode(sig[len(_SIG_VERSION) :], validate=True)
        except (binascii.Error, ValueError):
            return BAD_SIGNATURE
        body = signed_bytes(card)
        for pub in keys:
            try:
                pub.verify(raw, body)
                return None
            except InvalidSignature:
                continue
        return BAD_SIGNATURE


class CardVerifier:
    """What a registry reader asks about each card; counts rejections by reason."""

    def __init__(self, trust: TrustStore) -> None:
        self.trust = trust
        self.rejected: dict[str, int] = {}

    @classmethod
    def from_settings(cls, settings: Any) -> CardVerifier | None:
        """The verifier the settings ask for (``security.require_signed_cards``), or None.

        Raises:
            ConfigError: Signatures are required but no trust file is set, or it cannot be read.
        """
        sec = settings.security
        if not sec.require_signed_cards:
            return None
        if sec.card_trust_file is None:
            raise ConfigError(
                "security.require_signed_cards needs security.card_trust_file (AOS_SECURITY__CARD_TRUST_FILE)"
            )
        return cls(TrustStore.load(sec.card_trust_file))

    def check(self, card: Mapping[str, Any], key: str | None = None) -> str | None:
        reason = self.trust.check(card, key)
        if reason is not None:
            self.rejected[reason] = self.rejected.get(reason, 0) + 1
        return reason


class RejectedCardsCollector(Collector):
    """``aos_registry_cards_rejected_total{reason}`` for a Prometheus registry, read from a verifier at scrape time.

    Register it where the worker's metrics live: ``registry.register(RejectedCardsCollector(view.verifier))``.
    """

    def __init__(self, verifier: CardVerifier) -> None:
        self.verifier = verifier

    def collect(self) -> Iterator[Metric]:
        fam = CounterMetricFamily(
            "aos_registry_cards_rejected",
            "Agent cards not indexed: unsigned, or not signed by a key bound to their agent",
            labels=["reason"],
        )
        for reason, n in sorted(self.verifier.rejected.items()):
            fam.add_metric([reason], n)
        yield fam
