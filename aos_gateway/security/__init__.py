"""Security of the gateway: who may use which topic, whose card is whose, what is stored in the clear.

- :mod:`~aos_gateway.security.passwords`: generated passwords in files (mode 0600), never printed.
- :mod:`~aos_gateway.security.acls`: the service principals (worker, ingress, agents, tenants), their
  SCRAM users and their Kafka ACLs, derived from the topic catalog.
- :mod:`~aos_gateway.security.clients`: the same credentials for Faust (aiokafka) and for an admin.
- :mod:`~aos_gateway.security.cards`: agent cards signed with Ed25519 and verified against a trust
  file that binds each public key to an agent id or a tenant.
- :mod:`~aos_gateway.security.crypto`: the per-tenant keyring and AES-GCM tokens (key id inside).
- :mod:`~aos_gateway.security.sealing`: which experience fields are sealed before they are stored.
- :mod:`~aos_gateway.security.redact`: PII redaction of text (pure).

Errors: :class:`~aos_gateway.security.crypto.KeyringError` (a :class:`~aos_gateway.errors.ConfigError`)
and :class:`~aos_gateway.security.crypto.DecryptionError` (a :class:`~aos_gateway.errors.StoreError`).
How to run it all: ``docs/security.md``.
"""

from __future__ import annotations
