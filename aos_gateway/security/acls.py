"""Service principals, their SCRAM users and their Kafka ACLs, derived from the topic catalog.

Every client authenticates as one principal (``User:<name>`` in Kafka) and may do only what its
ACLs allow (the broker denies whatever no ACL allows: ``allow.everyone.if.no.acl.found=false``):

=============  ======================================================================================
principal      allowed
=============  ======================================================================================
worker         every ``aos.*`` topic and the Faust app's own ``<app_id>-*`` topics (read, write, create,
               describe); its consumer group ``<app_id>`` and the ``aos-reader-*`` groups of its
               helper readers
ingress        write ``aos.tasks.v1``; read ``aos.plans.v1``, ``aos.results.v1``, ``aos.deadletter.v1``
agent.<id>     read (and create) its own invocation topic ``aos.agents.<id>.invocations`` in its own
               consumer group; write its replies, heartbeats and card; nothing else
tenant.<t>     write ``aos.tasks.v1`` and ``aos.feedback.v1``; read, create ``aos.tenants.<t>.*``
               (reply topics of its own tasks) in groups ``aos-tenant.<t>.*`` (``<t>`` without dots, so
               no tenant's prefix covers another's)
=============  ======================================================================================

Every principal may also produce idempotently (``IDEMPOTENT_WRITE`` on the cluster). What ACLs
cannot do: look inside a record. An agent allowed to write ``aos.agents.v1`` could write a card
under another agent's id; that is what signed cards are for (:mod:`aos_gateway.security.cards`).
A tenant could likewise put another tenant's name on a task it writes: tenants that must not
trust each other go through the ingress, which binds each API key to its tenant.

Users are created with ``AdminClient.alter_user_scram_credentials`` (SCRAM-SHA-512) and ACLs with
``AdminClient.create_acls``; both are idempotent (the same password and the same bindings again
change nothing).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

from aos_gateway import topics
from aos_gateway.errors import ConfigError, KafkaError

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient

PrincipalKind = Literal["worker", "ingress", "agent", "tenant"]
Resource = Literal["topic", "group", "cluster"]
Pattern = Literal["literal", "prefixed"]

#: what a principal may do to a resource (Kafka's ACL operation names)
Operation = Literal["READ", "WRITE", "CREATE", "DESCRIBE", "DESCRIBE_CONFIGS", "IDEMPOTENT_WRITE"]

CLUSTER = "kafka-cluster"
WORKER_USER = "aos-worker"
INGRESS_USER = "aos-ingress"
#: the prefix of every topic the gateway owns
TOPIC_PREFIX = "aos."
#: the groups of the helpers' throw-away readers (``streams.kafka.consumer_config``)
READER_GROUP_PREFIX = "aos-reader-"
#: a tenant's own reply topics (``reply_to`` of its tasks) live under this prefix
TENANT_TOPIC_PREFIX = "aos.tenants."
SCRAM_ITERATIONS = 8192

_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def _user_part(text: str) -> str:
    """``text`` as part of a user name; anything else becomes ``_`` plus a short hash, so two never clash."""
    safe = _SAFE.sub("_", text)
    if safe != text or len(safe) > 150:
        safe = f"{safe[:120]}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"
    return safe


def _name_part(text: str) -> str:
    """``text`` as one dot-free segment of a topic or group prefix (so ``acme`` never prefixes ``acme.x``)."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", text)
    if safe != text or len(safe) > 100:
        safe = f"{safe[:80]}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"
    return safe


def agent_group(agent_id: str) -> str:
    """The consumer group of an agent served alone by the SDK (``aos agents run``)."""
    return "aos-agents-" + hashlib.sha1(agent_id.encode()).hexdigest()[:16]


def tenant_topic_prefix(tenant: str) -> str:
    """Where a tenant's own reply topics live: ``aos.tenants.<tenant>.``."""
    return f"{TENANT_TOPIC_PREFIX}{_name_part(tenant)}."


def tenant_group_prefix(tenant: str) -> str:
    """The consumer groups a tenant's clients may use: ``aos-tenant.<tenant>.``."""
    return f"aos-tenant.{_name_part(tenant)}."


@dataclass(frozen=True)
class Principal:
    """A client identity: a SCRAM user and what it stands for."""

    kind: PrincipalKind
    user: str
    agent_id: str | None = None
    tenant: str | None = None

    @property
    def kafka_principal(self) -> str:
        """The principal as Kafka's ACLs name it."""
        return f"User:{self.user}"


def worker(user: str = WORKER_USER) -> Principal:
    return Principal("worker", user)


def ingress(user: str = INGRESS_USER) -> Principal:
    return Principal("ingress", user)


def agent(agent_id: str, tenant: str = "public") -> Principal:
    """The principal of one agent (its user: ``agent.<id>``)."""
    if not agent_id.strip():
        raise ConfigError("an agent principal needs a non-empty agent id")
    return Principal("agent", f"agent.{_user_part(agent_id)}", agent_id=agent_id, tenant=tenant)


def tenant(name: str) -> Principal:
    """The principal of a tenant's own clients (its user: ``tenant.<name>``)."""
    if not name.strip():
        raise ConfigError("a tenant principal needs a non-empty tenant")
    return Principal("tenant", f"tenant.{_user_part(name)}", tenant=name)


@dataclass(frozen=True, order=True)
class Grant:
    """One ALLOW ACL: a principal may do an operation on a resource (by literal name or prefix)."""

    principal: str
    resource: Resource
    name: str
    pattern: Pattern
    operation: Operation

    def describe(self) -> str:
        star = "*" if self.pattern == "prefixed" else ""
        return f"{self.principal:<28} {self.operation:<16} {self.resource:<7} {self.name}{star}"


def _grants(p: str, resource: Resource, name: str, pattern: Pattern, ops: Iterable[Operation]) -> list[Grant]:
    return [Grant(p, resource, name, pattern, op) for op in ops]


def grants_for(principal: Principal, app_id: str = "aos-gateway") -> list[Grant]:
    """The ACLs of one principal (``app_id``: the worker's Faust app id, its group and topic prefix)."""
    p = principal.kafka_principal
    out = _grants(p, "cluster", CLUSTER, "literal", ["IDEMPOTENT_WRITE"])
    if principal.kind == "worker":
        rw: list[Operation] = ["READ", "WRITE", "CREATE", "DESCRIBE", "DESCRIBE_CONFIGS"]
        out += _grants(p, "topic", TOPIC_PREFIX, "prefixed", rw)
        out += _grants(p, "topic", f"{app_id}-", "prefixed", rw)
        out += _grants(p, "group", app_id, "literal", ["READ", "DESCRIBE"])
        out += _grants(p, "group", READER_GROUP_PREFIX, "prefixed", ["READ"])
        out += _grants(p, "cluster", CLUSTER, "literal", ["DESCRIBE"])
    elif principal.kind == "ingress":
        out += _grants(p, "topic", topics.TASKS.name, "literal", ["WRITE", "DESCRIBE"])
        for t in (topics.PLANS, topics.RESULTS, topics.DEADLETTER):
            out += _grants(p, "topic", t.name, "literal", ["READ", "DESCRIBE"])
        out += _grants(p, "group", READER_GROUP_PREFIX, "prefixed", ["READ"])
    elif principal.kind == "agent":
        assert principal.agent_id is not None
        own = topics.invocation_topic(principal.agent_id)
        out += _grants(p, "topic", own, "literal", ["READ", "DESCRIBE", "CREATE"])
        out += _grants(p, "group", agent_group(principal.agent_id), "literal", ["READ"])
        for t in (topics.INVOCATION_RESULTS, topics.HEARTBEATS, topics.AGENTS):
            out += _grants(p, "topic", t.name, "literal", ["WRITE", "DESCRIBE"])
    elif principal.kind == "tenant":
        assert principal.tenant is not None
        for t in (topics.TASKS, topics.FEEDBACK):
            out += _grants(p, "topic", t.name, "literal", ["WRITE", "DESCRIBE"])
        out += _grants(p, "topic", tenant_topic_prefix(principal.tenant), "prefixed", ["READ", "DESCRIBE", "CREATE"])
        out += _grants(p, "group", tenant_group_prefix(principal.tenant), "prefixed", ["READ"])
    else:  # pragma: no cover - Literal
        raise ConfigError(f"unknown principal kind {principal.kind!r}")
    return sorted(set(out))


def matrix(principals: Sequence[Principal], app_id: str = "aos-gateway") -> list[Grant]:
    """Every grant of every principal, sorted."""
    return sorted({g for p in principals for g in grants_for(p, app_id)})


# -- applying them to a broker -------------------------------------------------------------------


def _ck() -> Any:
    """confluent_kafka.admin, whose ACL and SCRAM classes its type stubs do not export."""
    import confluent_kafka.admin

    return confluent_kafka.admin


def acl_binding(g: Grant) -> Any:
    """The grant as confluent-kafka's ``AclBinding`` (an ALLOW from any host)."""
    ck = _ck()
    restype = {"topic": ck.ResourceType.TOPIC, "group": ck.ResourceType.GROUP, "cluster": ck.ResourceType.BROKER}
    pattern = ck.ResourcePatternType.PREFIXED if g.pattern == "prefixed" else ck.ResourcePatternType.LITERAL
    return ck.AclBinding(
        restype[g.resource], g.name, pattern, g.principal, "*", ck.AclOperation[g.operation], ck.AclPermissionType.ALLOW
    )


def _filter(principal: str | None, permission: str) -> Any:
    ck = _ck()
    return ck.AclBindingFilter(
        ck.ResourceType.ANY,
        None,
        ck.ResourcePatternType.ANY,
        principal,
        None,
        ck.AclOperation.ANY,
        ck.AclPermissionType[permission],
    )


def _kafka_error(what: str, exc: BaseException) -> KafkaError:
    err = exc.args[0] if exc.args else exc
    name = getattr(err, "name", lambda: type(exc).__name__)()
    text = getattr(err, "str", lambda: str(err))() or str(exc) or "no answer"
    return KafkaError(f"{what}: {name}: {text} (is the broker up, and are these an admin's credentials?)")


def upsert_users(admin: AdminClient, passwords: dict[str, str], timeout_s: float = 30.0) -> list[str]:
    """Create or update SCRAM-SHA-512 users (``{user: password}``); returns the users set.

    Raises:
        KafkaError: The broker refused (not a super user, SCRAM not enabled); never shows a password.
    """
    if not passwords:
        return []
    ck = _ck()
    info = ck.ScramCredentialInfo(ck.ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS)
    alterations = [ck.UserScramCredentialUpsertion(u, info, pw.encode()) for u, pw in sorted(passwords.items())]
    done: list[str] = []
    for user, fut in admin.alter_user_scram_credentials(alterations, request_timeout=timeout_s).items():
        try:
            fut.result(timeout=timeout_s)
        except Exception as exc:
            raise _kafka_error(f"cannot set the SCRAM credentials of {user!r}", exc) from None
        done.append(user)
    return sorted(done)


def apply_grants(admin: AdminClient, grants: Sequence[Grant], timeout_s: float = 30.0) -> int:
    """Create the ACLs (existing ones are left as they are); returns how many were asked for.

    Raises:
        KafkaError: The broker refused one (no authorizer, not a super user).
    """
    if not grants:
        return 0
    bindings = [acl_binding(g) for g in grants]
    for binding, fut in admin.create_acls(bindings, request_timeout=timeout_s).items():
        try:
            fut.result(timeout=timeout_s)
        except Exception as exc:
            raise _kafka_error(f"cannot create ACL {binding}", exc) from None
    return len(bindings)


def revoke(admin: AdminClient, principal: Principal, timeout_s: float = 30.0) -> int:
    """Delete every ACL of a principal (its user stays); returns how many were deleted."""
    flt = _filter(principal.kafka_principal, "ANY")
    n = 0
    for _, fut in admin.delete_acls([flt], request_timeout=timeout_s).items():
        try:
            n += len(fut.result(timeout=timeout_s))
        except Exception as exc:
            raise _kafka_error(f"cannot delete the ACLs of {principal.user!r}", exc) from None
    return n


def current_grants(admin: AdminClient, timeout_s: float = 30.0) -> list[Grant]:
    """The ALLOW ACLs the broker holds, as grants (others are left out)."""
    flt = _filter(None, "ALLOW")
    try:
        bindings = admin.describe_acls(flt, request_timeout=timeout_s).result(timeout=timeout_s)
    except Exception as exc:
        raise _kafka_error("cannot list ACLs", exc) from None
    kinds: dict[str, Resource] = {"TOPIC": "topic", "GROUP": "group", "BROKER": "cluster"}
    out: list[Grant] = []
    for b in bindings:
        kind = kinds.get(b.restype.name)
        if kind is None or b.resource_pattern_type.name not in ("LITERAL", "PREFIXED"):
            continue
        pattern: Pattern = "prefixed" if b.resource_pattern_type.name == "PREFIXED" else "literal"
        out.append(Grant(b.principal, kind, b.name, pattern, cast(Operation, b.operation.name)))
    return sorted(out)
