"""The ACL matrix, derived from the topic catalog (no broker: the integration test has one)."""

from __future__ import annotations

from aos_gateway import topics
from aos_gateway.security import acls


def _allows(grants: list[acls.Grant], principal: acls.Principal, resource: str, name: str, op: str) -> bool:
    for g in grants:
        if g.principal != principal.kafka_principal or g.resource != resource or g.operation != op:
            continue
        if (g.pattern == "literal" and g.name == name) or (g.pattern == "prefixed" and name.startswith(g.name)):
            return True
    return False


A, B = acls.agent("calc", "t1"), acls.agent("other", "t2")
W, ING = acls.worker(), acls.ingress()
T1, T2 = acls.tenant("acme"), acls.tenant("acme.x")
ALL = acls.matrix([W, ING, A, B, T1, T2])


def test_an_agent_reads_only_its_own_invocations_in_its_own_group() -> None:
    assert _allows(ALL, A, "topic", topics.invocation_topic("calc"), "READ")
    assert not _allows(ALL, A, "topic", topics.invocation_topic("other"), "READ")
    assert _allows(ALL, A, "group", acls.agent_group("calc"), "READ")
    assert not _allows(ALL, A, "group", acls.agent_group("other"), "READ")
    for t in (topics.INVOCATION_RESULTS, topics.HEARTBEATS, topics.AGENTS):
        assert _allows(ALL, A, "topic", t.name, "WRITE")
        assert not _allows(ALL, A, "topic", t.name, "READ")
    for t in topics.CATALOG:
        if t not in (topics.INVOCATION_RESULTS, topics.HEARTBEATS, topics.AGENTS):
            assert not _allows(ALL, A, "topic", t.name, "WRITE"), t.name
            assert not _allows(ALL, A, "topic", t.name, "READ"), t.name


def test_the_ingress_writes_tasks_and_reads_results_only() -> None:
    assert _allows(ALL, ING, "topic", topics.TASKS.name, "WRITE")
    for t in (topics.PLANS, topics.RESULTS, topics.DEADLETTER):
        assert _allows(ALL, ING, "topic", t.name, "READ")
    for t in (topics.EXPERIENCE, topics.FEEDBACK, topics.AGENTS, topics.WEIGHTS, topics.TASKS):
        assert not _allows(ALL, ING, "topic", t.name, "READ"), t.name
    assert not _allows(ALL, ING, "topic", topics.invocation_topic("calc"), "READ")


def test_the_worker_runs_the_pipeline_and_its_faust_topics() -> None:
    for t in topics.ALL:
        for op in ("READ", "WRITE", "CREATE"):
            assert _allows(ALL, W, "topic", t.name, op)
    assert _allows(ALL, W, "topic", topics.invocation_topic("calc"), "WRITE")  # the dispatcher invokes
    assert _allows(ALL, W, "topic", "aos-gateway-executions-changelog", "WRITE")
    assert _allows(ALL, W, "group", "aos-gateway", "READ")
    assert not _allows(ALL, W, "group", acls.agent_group("calc"), "READ")


def test_a_tenants_prefix_never_covers_another_tenants_topics() -> None:
    own = acls.tenant_topic_prefix("acme") + "plans"
    other = acls.tenant_topic_prefix("acme.x") + "plans"
    assert own != other and not other.startswith(acls.tenant_topic_prefix("acme"))
    assert _allows(ALL, T1, "topic", own, "READ") and not _allows(ALL, T1, "topic", other, "READ")
    assert _allows(ALL, T2, "topic", other, "READ") and not _allows(ALL, T2, "topic", own, "READ")
    assert not _allows(ALL, T1, "group", acls.tenant_group_prefix("acme.x") + "g", "READ")
    assert _allows(ALL, T1, "topic", topics.TASKS.name, "WRITE")
    assert _allows(ALL, T1, "topic", topics.FEEDBACK.name, "WRITE")
    assert not _allows(ALL, T1, "topic", topics.RESULTS.name, "READ")  # every tenant's results: not for one


def test_user_names_are_safe_and_distinct() -> None:
    odd = acls.agent("weird id/with:chars")
    assert odd.user.startswith("agent.weird_id_with_chars-") and odd.user != acls.agent("weird_id_with_chars").user
    assert acls.agent("calc").user == "agent.calc" and acls.tenant("acme").user == "tenant.acme"
    assert acls.agent_group("calc") == "aos-agents-" + __import__("hashlib").sha1(b"calc").hexdigest()[:16]


def test_grants_become_confluent_bindings() -> None:
    g = acls.Grant("User:agent.calc", "topic", "aos.agents.calc.invocations", "literal", "READ")
    b = acls.acl_binding(g)
    assert b.name == g.name and b.principal == g.principal and b.host == "*"
    assert b.operation.name == "READ" and b.restype.name == "TOPIC" and b.resource_pattern_type.name == "LITERAL"
    c = acls.acl_binding(acls.Grant("User:aos-worker", "cluster", acls.CLUSTER, "literal", "IDEMPOTENT_WRITE"))
    assert c.restype.name == "BROKER" and c.name == "kafka-cluster"
    assert "agent.calc" in g.describe() and "*" in acls.Grant("User:x", "topic", "aos.", "prefixed", "READ").describe()
