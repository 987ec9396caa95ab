"""What of an experience record is sealed (redacted, encrypted) before the cold store writes it.

Experience records are mostly ids, outcomes and numbers, which the stores, the dashboards and
learning need in the clear. The fields that may carry what a user or an agent wrote are sealed:

- ``error``: an agent's or the dispatcher's failure text (it may quote the task);
- every ``metadata`` value except the known structural keys (:data:`PLAIN_METADATA`, ``weights.*``):
  a step's ``role`` (a clause of the task's text), a feedback ``comment``, and any key added later.

Sealing = redaction (``security.redact_pii``) then encryption with the tenant's newest key
(``security.keyring``), each value bound to its tenant, record and field. Values written before
encryption was on are plain and read as they are; :meth:`ExperienceSealer.reseal_table`
re-encrypts everything with the newest keys (after a rotation, or to encrypt old data).

The task vector is not sealed (learning and statistics need it), nor are the hot store's rows and
the PostgreSQL statistics, which hold ids and numbers only: see docs/security.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aos_gateway.security.crypto import Keyring, is_token

if TYPE_CHECKING:
    import pyarrow as pa

    from aos_gateway.settings import Settings

#: metadata keys that stay in the clear: structure the learners and dashboards read, no user text
PLAIN_METADATA = frozenset(
    {
        "source",
        "feedback_id",
        "correct_agent_id",
        "edges",
        "planner",
        "steps",
        "predicted_quality",
        "step_id",
        "attempts",
        "fallback",
    }
)
PLAIN_PREFIXES = ("weights.",)
SEALED_COLUMNS = ("error",)


def is_plain_key(key: str) -> bool:
    return key in PLAIN_METADATA or key.startswith(PLAIN_PREFIXES)


class ExperienceSealer:
    """Seals and opens the sensitive fields of experience rows, per tenant."""

    def __init__(
        self,
        keyring: Keyring | None = None,
        redactor: Callable[[str], str] | None = None,
        reseal_tenants: frozenset[str] | None = None,
    ) -> None:
        self.keyring = keyring
        self.redactor = redactor
        #: :meth:`reseal_table` re-encrypts only these tenants' values (None: every tenant's)
        self.reseal_tenants = reseal_tenants

    def only_tenants(self, tenants: frozenset[str]) -> ExperienceSealer:
        """A copy whose :meth:`reseal_table` leaves every other tenant's values as they are
        (``aos security keys rotate --tenant T``)."""
        return ExperienceSealer(self.keyring, self.redactor, tenants)

    @classmethod
    def from_settings(cls, settings: Settings) -> ExperienceSealer | None:
        """The sealer of ``settings.security`` (keyring and/or redaction), or None when neither is on.

        Raises:
            KeyringError: The keyring setting is malformed or its file cannot be read.
        """
        from aos_gateway.security.redact import Redactor

        sec = settings.security
        keyring = Keyring.from_setting(sec.keyring)
        redactor = Redactor(sec.redact_kinds) if sec.redact_pii else None
        if keyring is None and redactor is None:
            return None
        return cls(keyring, redactor)

    @property
    def encrypts(self) -> bool:
        return self.keyring is not None

    # -- one value -------------------------------------------------------------------------------

    def seal(self, tenant: str, experience_id: str, field: str, value: str | None) -> str | None:
        """A value as it is stored: redacted, then encrypted (already sealed values are left alone)."""
        if value is None or value == "" or is_token(value):
            return value
        if self.redactor is not None:
            value = self.redactor(value)
        if self.keyring is None:
            return value
        return self.keyring.encrypt(tenant, value, f"{experience_id}|{field}")

    def open(self, tenant: str, experience_id: str, field: str, value: str | None) -> str | None:
        """A stored value as it was sealed (plain values come back as they are).

        Raises:
            DecryptionError: Encrypted, and no key of the tenant opens it.
            KeyringError: Encrypted, and the sealer has no keyring.
        """
        if not is_token(value):
            return value
        assert value is not None
        if self.keyring is None:
            from aos_gateway.security.crypto import KeyringError

            raise KeyringError("stored experience is encrypted: set AOS_SECURITY__KEYRING to read it")
        return self.keyring.decrypt(tenant, value, f"{experience_id}|{field}")

    # -- records and tables -----------------------------------------------------------------------

    def _apply(self, table: pa.Table, fn: Callable[[str, str, str, str | None], str | None]) -> pa.Table:
        import pyarrow as pa

        if table.num_rows == 0:
            return table
        tenants = table.column("tenant").to_pylist()
        ids = table.column("experience_id").to_pylist()
        for name in SEALED_COLUMNS:
            idx = table.schema.get_field_index(name)
            values = table.column(name).to_pylist()
            out = [fn(t, e, name, v) for t, e, v in zip(tenants, ids, values, strict=True)]
            table = table.set_column(idx, table.schema.field(idx), pa.array(out, type=table.schema.field(idx).type))
        idx = table.schema.get_field_index("metadata")
        field = table.schema.field(idx)
        metas = table.column("metadata").to_pylist()
        new_metas: list[list[tuple[str, Any]] | None] = []
        for t, e, meta in zip(tenants, ids, metas, strict=True):
            if meta is None:
                new_metas.append(None)
                continue
            new_metas.append([(k, v if is_plain_key(k) else fn(t, e, f"metadata.{k}", v)) for k, v in meta])
        return table.set_column(idx, field, pa.array(new_metas, type=field.type))

    def seal_table(self, table: pa.Table) -> pa.Table:
        """A cold-store table with its sensitive values sealed."""
        return self._apply(table, self.seal)

    def open_table(self, table: pa.Table) -> pa.Table:
        """A cold-store table with its sealed values opened (needs the tenants' keys)."""
        if self.keyring is None:
            return table
        return self._apply(table, self.open)

    def reseal_table(self, table: pa.Table) -> pa.Table:
        """Every sensitive value opened and sealed again with the newest key of its tenant
        (plain values, written before encryption, are sealed for the first time); with
        ``reseal_tenants``, only those tenants' values."""
        only = self.reseal_tenants

        def again(t: str, e: str, f: str, v: str | None) -> str | None:
            if only is not None and t not in only:
                return v
            return self.seal(t, e, f, self.open(t, e, f, v))

        return self._apply(table, again)

    def key_ids(self, table: pa.Table) -> dict[str, int]:
        """How many sealed values each key id holds in a table (``"plain"``: not encrypted)."""
        counts: dict[str, int] = {}

        def count(t: str, e: str, f: str, v: str | None) -> str | None:
            if v:
                kid = self.keyring.token_key_id(v) if self.keyring is not None else None
                kid = kid or ("plain" if not is_token(v) else v.split(":")[2])
                counts[kid] = counts.get(kid, 0) + 1
            return v

        self._apply(table, count)
        return counts
