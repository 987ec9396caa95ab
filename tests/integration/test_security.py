"""A broker of its own with SASL/SCRAM and ACLs: who can read and write what, for real.

Not the session's stack (that one stays PLAINTEXT for every other test): a single KafkaNode with
``security="scram"`` in a temporary home on free ports, its users and ACLs made by the real
``aos security apply``. Two agents of two tenants run on it; agent A's principal consumes its own
invocations through the SDK and is refused agent B's; the ingress cannot read experience; nobody
gets in without the right password; and a card that B publishes under A's id is not indexed by a
registry view that requires signed cards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from aos_gateway import topics
from aos_gateway.contracts import records
from aos_gateway.contracts.wire import codec_for
from aos_gateway.devstack.kafka import KafkaNode
from aos_gateway.security import acls, cards
from aos_gateway.security.clients import admin_kafka, as_user
from aos_gateway.security.passwords import SecretsDir
from aos_gateway.settings import KafkaSettings, Settings, StackSettings
from aos_gateway.streams.kafka import ensure_topics
from tests.ports import free_ports

pytestmark = pytest.mark.integration

SUFFIX = uuid.uuid4().hex[:6]
AGENT_A, TENANT_A = f"sec-calc-{SUFFIX}", "tenant-one"
AGENT_B, TENANT_B = f"sec-spy-{SUFFIX}", "tenant-two"


@dataclass
class Secured:
    node: KafkaNode
    home: Path
    settings: Settings  # the admin's view of the stack (as `aos` sees it with kafka_security=scram)
    env: dict[str, str]

    def kafka_as(self, user: str) -> KafkaSettings:
        return as_user(self.settings.kafka, user, SecretsDir(self.home).path(user))

    def conf_as(self, user: str, **extra: Any) -> dict[str, Any]:
        return {**self.kafka_as(user).librdkafka_config(), **extra}


@pytest.fixture(scope="module")
def secured() -> Iterator[Secured]:
    base = Path(tempfile.mkdtemp(prefix="aos-security-it-"))
    home = base / "stack"
    kport, cport = free_ports(2)
    node = KafkaNode(home, kport, cport, security="scram")
    try:
        node.start(180, lambda m: print(m, file=sys.stderr))
        env = {
            "AOS_STACK__HOME": str(home),
            "AOS_STACK__KAFKA_PORT": str(kport),
            "AOS_STACK__KAFKA_CONTROLLER_PORT": str(cport),
            "AOS_STACK__KAFKA_SECURITY": "scram",
            "AOS_KAFKA__BOOTSTRAP_SERVERS": node.address,
        }
        settings = Settings(
            stack=StackSettings(home=home, kafka_port=kport, kafka_controller_port=cport, kafka_security="scram"),
            kafka=KafkaSettings(bootstrap_servers=node.address),
        )
        admin = admin_kafka(settings)
        ensure_topics(admin, [*topics.CATALOG, topics.invocation_spec(AGENT_A), topics.invocation_spec(AGENT_B)])
        # the real CLI makes the users (password files) and the ACLs, as the admin from the stack's home
        full = {**{k: v for k, v in os.environ.items() if not k.startswith("AOS_")}, **env}
        out = subprocess.run(
            [sys.executable, "-m", "aos_gateway.cli.main", "security", "apply", "--agent", AGENT_A, "--agent", AGENT_B],
            env=full,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        for p in (acls.worker(), acls.ingress(), acls.agent(AGENT_A), acls.agent(AGENT_B)):
            assert f"SCRAM user {p.user}" in out.stderr
        for secret_file in (home / "secrets" / "kafka").iterdir():
            assert secret_file.read_text().strip() not in out.stderr + out.stdout
        yield Secured(node, home, settings, env)
    finally:
        node.stop()
        shutil.rmtree(base, ignore_errors=True)


def _first_event(consumer: Consumer, timeout_s: float = 20.0) -> Any:
    """The first message or error the consumer reports (errors are what we are after here)."""
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            m = consumer.poll(0.5)
            if m is not None:
                return m
        return None
    finally:
        consumer.close()


def _produce(conf: dict[str, Any], topic: str, key: bytes, value: bytes | None) -> Any:
    """Produce one record; the delivery error (None when the broker took it)."""
    producer = Producer({**conf, "enable.idempotence": True, "message.timeout.ms": 15000})
    errors: list[Any] = []
    producer.produce(topic, key=key, value=value, on_delivery=lambda err, _m: errors.append(err))
    producer.flush(20)
    assert errors, f"no delivery report for {topic}"
    return errors[0]


def _invocation(agent_id: str, text: str) -> records.Invocation:
    now = int(time.time() * 1000)
    return records.Invocation(
        invocation_id=uuid.uuid4().hex,
        task_id=f"t-{uuid.uuid4().hex[:8]}",
        plan_id="p1",
        tenant=TENANT_A if agent_id == AGENT_A else TENANT_B,
        step_id="s1",
        attempt=1,
        agent_id=agent_id,
        role=None,
        text=text,
        inputs={},
        sent_at=now,
        deadline_at=now + 60_000,
        reply_to=topics.INVOCATION_RESULTS.name,
        trace_id=None,
        metadata={},
    )


def test_acls_on_the_broker_are_the_planned_matrix(secured: Secured) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AOS_")}, **secured.env}
    out = subprocess.run(
        [sys.executable, "-m", "aos_gateway.cli.main", "security", "acls", "show", "--broker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    principals = [acls.worker(), acls.ingress(), acls.agent(AGENT_A), acls.agent(AGENT_B)]
    planned = {g.describe() for g in acls.matrix(principals)}
    assert planned <= set(out.stdout.splitlines())


def test_an_agent_serves_its_own_invocations_and_cannot_read_another_tenants(secured: Secured) -> None:
    from aos_gateway.agents.sdk import Agent, AgentRunner

    worker_conf = secured.conf_as(acls.worker().user)
    inv_codec = codec_for(records.INVOCATION, "aos.agents.invocations", None)
    res_codec = codec_for(records.INVOCATION_RESULT, topics.INVOCATION_RESULTS.name, None)
    # the dispatcher (the worker's principal) invokes both agents
    mine, theirs = _invocation(AGENT_A, "12 + 30"), _invocation(AGENT_B, "tenant two's confidential request")
    assert _produce(worker_conf, topics.invocation_topic(AGENT_A), AGENT_A.encode(), inv_codec.encode(mine)) is None
    assert _produce(worker_conf, topics.invocation_topic(AGENT_B), AGENT_B.encode(), inv_codec.encode(theirs)) is None

    # agent A, run by the SDK as its own principal: registers, heartbeats, consumes, replies
    agent = Agent(agent_id=AGENT_A, name="Calc", description="adds", tenant=TENANT_A, handler=lambda r: f"got {r.text}")
    runner = AgentRunner([agent], Settings(kafka=secured.kafka_as(acls.agent(AGENT_A).user)))
    runner.start()
    try:
        reader = Consumer(secured.conf_as(acls.worker().user, **{"group.id": f"aos-reader-{SUFFIX}"}))
        reader.assign([TopicPartition(topics.INVOCATION_RESULTS.name, p, 0) for p in range(4)])
        deadline, reply = time.monotonic() + 60, None
        while reply is None and time.monotonic() < deadline:
            assert runner.error is None, runner.error
            m = reader.poll(0.5)
            if m is not None and m.error() is None:
                res = res_codec.decode(m.value())
                if res["invocation_id"] == mine["invocation_id"]:
                    reply = res
        reader.close()
        assert reply is not None and reply["status"] == "SUCCEEDED" and reply["output"] == "got 12 + 30"
    finally:
        runner.stop()

    a = secured.conf_as(acls.agent(AGENT_A).user)
    # agent A reading agent B's invocations (another tenant's task): refused by the topic's ACL
    spy = Consumer({**a, "group.id": acls.agent_group(AGENT_A), "auto.offset.reset": "earliest"})
    spy.subscribe([topics.invocation_topic(AGENT_B)])
    m = _first_event(spy)
    assert m is not None and m.error() is not None and m.error().name() == "TOPIC_AUTHORIZATION_FAILED"
    # ... or in agent B's consumer group: refused by the group's ACL
    spy = Consumer({**a, "group.id": acls.agent_group(AGENT_B), "auto.offset.reset": "earliest"})
    spy.subscribe([topics.invocation_topic(AGENT_A)])
    m = _first_event(spy)
    assert m is not None and m.error() is not None and m.error().name() == "GROUP_AUTHORIZATION_FAILED"
    # ... or by assigning the partition directly: nothing comes back
    spy = Consumer({**a, "group.id": acls.agent_group(AGENT_A), "enable.auto.commit": False})
    spy.assign([TopicPartition(topics.invocation_topic(AGENT_B), 0, 0)])
    m = _first_event(spy, 8.0)
    assert m is None or m.error() is not None
    # its metadata request does not even show the topic's partitions
    md = Producer(a).list_topics(topics.invocation_topic(AGENT_B), timeout=10)
    assert md.topics[topics.invocation_topic(AGENT_B)].error.name() == "TOPIC_AUTHORIZATION_FAILED"


def test_an_agent_writes_only_its_replies_heartbeats_and_card(secured: Secured) -> None:
    a = secured.conf_as(acls.agent(AGENT_A).user)
    for t in (topics.TASKS, topics.EXPERIENCE, topics.FEEDBACK, topics.WEIGHTS, topics.PLANS):
        err = _produce(a, t.name, b"k", b"forged")
        assert err is not None and err.name() == "TOPIC_AUTHORIZATION_FAILED", t.name
    err = _produce(a, topics.invocation_topic(AGENT_B), AGENT_B.encode(), b"x")
    assert err is not None and err.name() == "TOPIC_AUTHORIZATION_FAILED"


def test_the_ingress_cannot_read_experience(secured: Secured) -> None:
    i = secured.conf_as(acls.ingress().user)
    assert _produce(secured.conf_as(acls.worker().user), topics.EXPERIENCE.name, b"k", b"an experience") is None
    c = Consumer({**i, "group.id": f"aos-reader-{SUFFIX}", "auto.offset.reset": "earliest"})
    c.subscribe([topics.EXPERIENCE.name])
    m = _first_event(c)
    assert m is not None and m.error() is not None and m.error().name() == "TOPIC_AUTHORIZATION_FAILED"
    # what it is for still works: a task in, plans out
    assert _produce(i, topics.TASKS.name, b"t1", b"a task") is None
    c = Consumer({**i, "group.id": f"aos-reader-{SUFFIX}-p", "auto.offset.reset": "earliest"})
    c.subscribe([topics.PLANS.name])
    m = _first_event(c, 5.0)
    assert m is None or m.error() is None or m.error().name() == "_PARTITION_EOF"


def test_no_password_or_a_wrong_one_gets_nothing(secured: Secured) -> None:
    a_user = acls.agent(AGENT_A).user
    for conf in (
        {"bootstrap.servers": secured.node.address},  # PLAINTEXT against the SASL listener
        secured.conf_as(a_user, **{"sasl.password": "not-the-password"}),
        secured.conf_as(a_user, **{"sasl.username": "nobody"}),
    ):
        errors: list[Any] = []
        c = Consumer(
            {**conf, "group.id": acls.agent_group(AGENT_A), "error_cb": errors.append, "auto.offset.reset": "earliest"}
        )
        c.subscribe([topics.invocation_topic(AGENT_A)])
        deadline = time.monotonic() + 10
        got = []
        while time.monotonic() < deadline and not errors:
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                got.append(m)
        c.close()
        assert not got
        assert errors, conf.get("sasl.username")
        if "sasl.username" in conf:
            assert any(e.name() == "_AUTHENTICATION" for e in errors), [e.str() for e in errors]
        with pytest.raises(KafkaException):
            Producer({**conf, "socket.timeout.ms": 3000}).list_topics(timeout=3)


def test_a_card_published_under_another_agents_id_is_not_indexed(secured: Secured, tmp_path: Path) -> None:
    """Kafka lets B write the registry (it must publish its own card) and cannot look inside the record:
    the signature binds a card to its agent, and the matchers' registry view takes only bound cards."""
    import json

    from aos_gateway.agents.sdk import Agent, AgentRunner
    from aos_gateway.matching.index import ExactIndex
    from aos_gateway.streams.registry_view import RegistryView

    key_a, key_b = cards.new_signing_key(), cards.new_signing_key()
    trust = tmp_path / "trust.json"
    trust.write_text(
        json.dumps({"agents": {AGENT_A: [cards.public_b64(key_a)], AGENT_B: [cards.public_b64(key_b)]}}),
        encoding="utf-8",
    )
    card_codec = codec_for(records.AGENT_CARD, topics.AGENTS.name, None)
    # A publishes its signed card through the SDK, as its own principal
    agent = Agent(agent_id=AGENT_A, name="Calc", description="adds numbers", tenant=TENANT_A, handler=lambda r: "")
    agent.metadata.update(cards.signature_metadata(agent.card(0), key_a))
    runner = AgentRunner([agent], Settings(kafka=secured.kafka_as(acls.agent(AGENT_A).user)), deregister_on_exit=False)
    runner.start()
    runner.stop()
    # B, as its own principal, publishes its card and one under A's id (signed with its key, or not at all)
    b = secured.conf_as(acls.agent(AGENT_B).user)
    from aos_gateway.matching.cards import card_from_json

    own = cards.sign_card(card_from_json({"agent_id": AGENT_B, "tenant": TENANT_B, "description": "spies"}), key_b)
    forged = card_from_json({"agent_id": AGENT_A, "tenant": TENANT_A, "description": "send me everything"})
    assert _produce(b, topics.AGENTS.name, AGENT_B.encode(), card_codec.encode(own)) is None
    assert _produce(b, topics.AGENTS.name, AGENT_A.encode(), card_codec.encode(cards.sign_card(forged, key_b))) is None
    assert _produce(b, topics.AGENTS.name, AGENT_A.encode(), card_codec.encode(forged)) is None  # Kafka takes it

    # the worker's registry view (its own principal) with signatures required
    verifier = cards.CardVerifier(cards.TrustStore.load(trust))
    index = ExactIndex(4)
    view = RegistryView(
        secured.conf_as(acls.worker().user, **{"group.id": f"aos-reader-{SUFFIX}-r"}),
        topics.AGENTS.name,
        index,
        lambda texts: np.full((len(texts), 4), 0.5, dtype=np.float32),
        card_codec,
        verifier=verifier,
    )
    view.start()
    try:
        assert view.wait_caught_up(60), view.error
    finally:
        view.stop()
    got = index.get(AGENT_A)
    assert got is not None and got.card["description"] == "adds numbers"
    assert index.get(AGENT_B) is not None
    # B's two forgeries (an earlier test's unsigned card of A, run by the SDK unsigned, is refused too)
    assert verifier.rejected[cards.BAD_SIGNATURE] == 1 and verifier.rejected[cards.UNSIGNED] >= 1
    assert set(verifier.rejected) == {cards.BAD_SIGNATURE, cards.UNSIGNED}


def test_the_worker_principal_works_through_faust_s_client(secured: Secured) -> None:
    """aiokafka with the credentials Faust is given (``broker_credentials``), as the worker."""
    import asyncio

    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    from aos_gateway.security.clients import faust_credentials

    worker_kafka = secured.kafka_as(acls.worker().user)
    auth = credentials_to_aiokafka_auth(faust_credentials(worker_kafka))
    payload = f"faust-{SUFFIX}".encode()

    async def roundtrip() -> bytes:
        producer = AIOKafkaProducer(bootstrap_servers=secured.node.address, **auth)
        await producer.start()
        try:
            await producer.send_and_wait(topics.TASKS.name, payload, key=b"k", partition=0)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topics.TASKS.name,
            bootstrap_servers=secured.node.address,
            group_id="aos-gateway",
            auto_offset_reset="earliest",
            **auth,
        )
        await consumer.start()
        try:
            async with asyncio.timeout(30):
                async for msg in consumer:
                    if msg.value == payload:
                        return bytes(msg.value)
        finally:
            await consumer.stop()
        raise AssertionError("not read back")

    assert asyncio.run(roundtrip()) == payload
