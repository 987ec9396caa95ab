"""Per-tenant keys and AES-256-GCM tokens for what is stored at rest.

The keyring (``AOS_SECURITY__KEYRING``: a JSON object, or the path of a file holding one) maps a
tenant to its keys, newest first; ``"*"`` holds master keys from which every other tenant gets a
key of its own (HKDF-SHA256 with the tenant's name), so new tenants need no new entry::

    {"acme": ["<base64 32 bytes: newest>", "<older>"], "*": ["<base64 32 bytes>"]}

The newest key encrypts; every key decrypts. A token carries the id of the key that made it —
``aosenc:1:<key id>:<base64url(nonce + ciphertext + tag)>`` — so after a rotation old tokens are
still read with the older key until they are re-encrypted (``aos security keys rotate``), and
then the older key can be removed. Each token is bound (AES-GCM associated data) to its tenant,
record and field: it cannot be moved to another tenant's row, record or column and still open.
A key id is a hash of the key, which tells nothing about the key.

Errors: :class:`KeyringError` (a :class:`~aos_gateway.errors.ConfigError`: no key for a tenant,
a malformed keyring) and :class:`DecryptionError` (a :class:`~aos_gateway.errors.StoreError`: a
token that no key of its tenant opens). No message ever holds key material or plaintext.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aos_gateway.errors import ConfigError, StoreError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from pydantic import SecretStr

TOKEN_PREFIX = "aosenc:1:"
KEY_BYTES = 32
NONCE_BYTES = 12
WILDCARD = "*"


class KeyringError(ConfigError):
    """A keyring that cannot be used: malformed, or without a key for a tenant."""


class DecryptionError(StoreError):
    """A stored token that no key of its tenant opens (wrong tenant, a removed key, tampering)."""


def key_id(secret: bytes) -> str:
    """A short public name of a key: a hash of it (the key cannot be recovered from it)."""
    return hashlib.sha256(b"aos-key-id:" + secret).hexdigest()[:16]


def new_key() -> str:
    """A random 256-bit key, base64 (what a keyring entry holds)."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def is_token(value: object) -> bool:
    return isinstance(value, str) and value.startswith(TOKEN_PREFIX)


@dataclass(frozen=True)
class Key:
    kid: str
    secret: bytes


def _decode_key(text: Any, where: str) -> bytes:
    if not isinstance(text, str):
        raise KeyringError(f"{where}: a key must be a base64 string")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise KeyringError(f"{where}: a key is not base64") from None
    if len(raw) != KEY_BYTES:
        raise KeyringError(f"{where}: a key must be {KEY_BYTES} bytes, not {len(raw)}")
    return raw


def _derive(master: bytes, tenant: str) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=b"aos-tenant-key:" + tenant.encode())
    return hkdf.derive(master)


class Keyring:
    """Keys by tenant, newest first, with ``*`` master keys deriving the others'."""

    def __init__(self, entries: Mapping[str, list[bytes]]) -> None:
        if not entries or not all(entries.values()):
            raise KeyringError("a keyring needs at least one key for each of its entries")
        self._entries = {t: list(keys) for t, keys in entries.items()}
        self._keys: dict[str, list[Key]] = {}
        self._aead: dict[str, AESGCM] = {}

    # -- loading -----------------------------------------------------------------------------

    @classmethod
    def from_json(cls, raw: Any, where: str = "keyring") -> Keyring:
        """From ``{TENANT: [KEY, ...], "*": [...]}`` (one key may be a plain string).

        Raises:
            KeyringError: Another shape, or a key that is not base64 of 32 bytes.
        """
        if not isinstance(raw, dict) or not raw:
            raise KeyringError(f'{where}: expected a JSON object {{"TENANT": ["KEY", ...], "*": [...]}}')
        entries: dict[str, list[bytes]] = {}
        for tenant, keys in raw.items():
            if not isinstance(tenant, str) or not tenant.strip():
                raise KeyringError(f"{where}: a tenant must be a non-empty string")
            keys = [keys] if isinstance(keys, str) else keys
            if not isinstance(keys, list) or not keys:
                raise KeyringError(f"{where}: {tenant!r} needs a key or a list of keys")
            entries[tenant] = [_decode_key(k, f"{where}: {tenant!r}") for k in keys]
        return cls(entries)

    @classmethod
    def load(cls, path: Path) -> Keyring:
        """From a JSON file.

        Raises:
            KeyringError: Missing, unreadable, not JSON or another shape (no key material in the message).
        """
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise KeyringError(f"cannot read the keyring {path}: {exc.strerror}") from None
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise KeyringError(f"{path} is not JSON (line {exc.lineno}, column {exc.colno})") from None
        return cls.from_json(raw, str(path))

    @classmethod
    def from_setting(cls, value: SecretStr | None) -> Keyring | None:
        """``security.keyring``: inline JSON, or the path of a file; None when unset."""
        if value is None:
            return None
        text = value.get_secret_value().strip()
        if not text:
            return None
        if text.startswith("{"):
            try:
                raw = json.loads(text)
            except json.JSONDecodeError as exc:
                raise KeyringError(f"AOS_SECURITY__KEYRING is not JSON (column {exc.colno})") from None
            return cls.from_json(raw, "AOS_SECURITY__KEYRING")
        return cls.load(Path(text).expanduser())

    def to_json(self) -> dict[str, list[str]]:
        """The keyring as it is written to its file."""
        return {t: [base64.b64encode(k).decode("ascii") for k in keys] for t, keys in self._entries.items()}

    def save(self, path: Path) -> None:
        """Write the keyring to ``path`` (mode 0600), atomically."""
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(self.to_json(), f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def with_new_key(self, tenant: str) -> tuple[Keyring, str]:
        """A copy whose ``tenant`` (or ``*``) entry has a new newest key; and that key's id.

        A tenant that had no entry of its own keeps its derived keys after the new one, so what
        was stored for it still opens.
        """
        entries = {t: list(keys) for t, keys in self._entries.items()}
        fresh = base64.b64decode(new_key())
        if tenant in entries:
            entries[tenant].insert(0, fresh)
        elif tenant == WILDCARD:
            entries[tenant] = [fresh]
        else:
            derived = [k.secret for k in self._derived(tenant)]
            entries[tenant] = [fresh, *derived]
        return Keyring(entries), key_id(fresh)

    def without_old_keys(self) -> Keyring:
        """A copy that keeps only each entry's newest key (after every stored token was re-encrypted)."""
        return Keyring({t: keys[:1] for t, keys in self._entries.items()})

    # -- keys ----------------------------------------------------------------------------------

    @property
    def tenants(self) -> list[str]:
        return sorted(self._entries)

    def _derived(self, tenant: str) -> list[Key]:
        out = []
        for master in self._entries.get(WILDCARD, []):
            secret = _derive(master, tenant)
            out.append(Key(key_id(secret), secret))
        return out

    def keys_for(self, tenant: str) -> list[Key]:
        """The keys of a tenant, newest first.

        Raises:
            KeyringError: The tenant has no entry and there is no ``*`` entry.
        """
        keys = self._keys.get(tenant)
        if keys is None:
            if tenant in self._entries:
                keys = [Key(key_id(s), s) for s in self._entries[tenant]]
            else:
                keys = self._derived(tenant)
            if not keys:
                raise KeyringError(f"the keyring has no key for tenant {tenant!r} (and no '*' entry)")
            self._keys[tenant] = keys
        return keys

    def current_key_id(self, tenant: str) -> str:
        return self.keys_for(tenant)[0].kid

    def _aesgcm(self, key: Key) -> AESGCM:
        aead = self._aead.get(key.kid)
        if aead is None:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            aead = self._aead[key.kid] = AESGCM(key.secret)
        return aead

    # -- tokens --------------------------------------------------------------------------------

    def encrypt(self, tenant: str, plaintext: str, context: str) -> str:
        """A token of ``plaintext`` under the tenant's newest key, bound to ``context``."""
        key = self.keys_for(tenant)[0]
        nonce = os.urandom(NONCE_BYTES)
        ct = self._aesgcm(key).encrypt(nonce, plaintext.encode("utf-8"), _aad(tenant, context))
        return f"{TOKEN_PREFIX}{key.kid}:{base64.urlsafe_b64encode(nonce + ct).decode('ascii')}"

    def decrypt(self, tenant: str, token: str, context: str) -> str:
        """The plaintext of a token made for ``tenant`` and ``context``.

        Raises:
            DecryptionError: Not a token, the tenant has no key or none with its id, or it does not
                open (another tenant's or record's token, tampered with).
        """
        from cryptography.exceptions import InvalidTag

        if not is_token(token):
            raise DecryptionError("not an encrypted value")
        kid, _, body = token[len(TOKEN_PREFIX) :].partition(":")
        try:
            keys = self.keys_for(tenant)
        except KeyringError:
            raise DecryptionError(f"no key for tenant {tenant!r} in the keyring (and no '*' entry)") from None
        key = next((k for k in keys if k.kid == kid), None)
        if key is None:
            raise DecryptionError(f"no key {kid} for tenant {tenant!r} in the keyring (another tenant's, or removed)")
        try:
            raw = base64.urlsafe_b64decode(body.encode("ascii"))
        except (binascii.Error, ValueError):
            raise DecryptionError(f"a token of key {kid} is garbled") from None
        try:
            plain = self._aesgcm(key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], _aad(tenant, context))
        except InvalidTag:
            raise DecryptionError(f"a token of key {kid} does not open for tenant {tenant!r} ({context})") from None
        return plain.decode("utf-8")

    def token_key_id(self, token: str) -> str | None:
        """The key id inside a token (None for a plain value)."""
        if not is_token(token):
            return None
        return token[len(TOKEN_PREFIX) :].partition(":")[0]


def _aad(tenant: str, context: str) -> bytes:
    return f"aos|{tenant}|{context}".encode()
