"""``aos bench learning``'s cleanup on a real broker: simulator cards deregistered (a prior card put
back), the topics the run created deleted. The learned-state reset is left to the unit tests: learned
states are global to the session's stack, and a reset here (empty states published) changed what
test_execution's live learner had to publish."""

from __future__ import annotations

import uuid

from aos_gateway import topics
from aos_gateway.bench import learning
from aos_gateway.cli import registry_cmds
from aos_gateway.contracts.records import AGENT_CARD
from aos_gateway.contracts.wire import RecordCodec, codec_for
from aos_gateway.matching.cards import card_from_json
from aos_gateway.settings import Settings
from aos_gateway.streams.kafka import ensure_topics, existing_topics


def test_the_cleanup_undoes_the_run_on_a_real_broker(settings: Settings) -> None:
    tag = uuid.uuid4().hex[:8]
    real, sims = f"it-real-{tag}", [f"it-sim-{tag}-{i}" for i in range(3)]
    codec = codec_for(AGENT_CARD, topics.AGENTS.name, settings.schema_registry)
    prior = card_from_json({"agent_id": real, "description": "a real calculator"}, now_ms=1)
    registry_cmds._produce(settings, [(real, codec.encode(prior))])
    ensure_topics(settings.kafka, [topics.invocation_spec(real)])

    try:
        _run_and_undo(settings, codec, real, sims)
    finally:  # the session's registry is shared: leave no card of this test behind to steer other tests
        registry_cmds._produce(settings, [(a, None) for a in [real, *sims]])


def _run_and_undo(settings: Settings, codec: RecordCodec, real: str, sims: list[str]) -> None:
    changes = learning.snapshot(settings, [*sims, real])
    # the run: simulator cards (one replacing the real agent's), their topics, the bench's topic
    cards = [card_from_json({"agent_id": a, "description": f"simulator {a}"}, now_ms=2) for a in [*sims, real]]
    registry_cmds._produce(settings, [(c["agent_id"], codec.encode(c)) for c in cards])
    ensure_topics(settings.kafka, [*(topics.invocation_spec(a) for a in [*sims, real]), learning.EVAL_TOPIC])
    said: list[str] = []

    out = learning.undo(settings, changes, said.append)

    assert out["left"] == [], said
    now = registry_cmds.current_cards(settings)
    assert not any(a in now for a in sims) and now[real]["description"] == "a real calculator"
    have = existing_topics(settings.kafka)
    assert topics.invocation_topic(real) in have and topics.AGENTS.name in have
    assert not any(topics.invocation_topic(a) in have for a in sims) and learning.EVAL_TOPIC.name not in have
    assert out["learned_state_reset"] is False  # the run never replaced it here
