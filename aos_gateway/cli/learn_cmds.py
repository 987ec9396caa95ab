"""``aos learn matching``: learn the matcher's state and publish it to ``aos.weights.v1``.

Two sources: a labelled file (``--train``: tasks with the right agent, MetaTool form; gold or
bandit feedback as in ``aos eval matching``), or the experience history (``--from-experience``:
``aos.experience.v1`` replayed from the beginning). Running matchers hot-reload the result.
``--feedback none`` learns from tasks alone, before any outcome: the agents' card prototypes are
adapted to them (:mod:`aos_gateway.matching.adapt`) and the matchers rank by those.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aos_gateway import topics
from aos_gateway.contracts.records import WEIGHTS, ExperienceRecord, Weights
from aos_gateway.contracts.wire import codec_for
from aos_gateway.errors import KafkaError, ValidationError
from aos_gateway.experience.feedback import join_feedback
from aos_gateway.matching import weights
from aos_gateway.matching.learned import LearnedState
from aos_gateway.settings import Settings
from aos_gateway.streams.kafka import admin, ensure_topics, make_producer


def learn_from_file(
    settings: Settings,
    agents: Path,
    train: Path,
    feedback: str,
    progress: Callable[[str], None],
    fallback: bool = False,
) -> tuple[LearnedState, dict[str, Any]]:
    from threadpoolctl import threadpool_limits

    from aos_gateway.matching.cards import card_text, read_card_file
    from aos_gateway.matching.dataset import read_examples
    from aos_gateway.matching.evaluate import learn
    from aos_gateway.perception.text import TextEncoder

    p = settings.perception
    cards = read_card_file(agents, strict=False)
    examples = read_examples(train, labelled=feedback != "none")
    encoder = TextEncoder(p.text_model, p.device, 0, p.torch_threads)
    progress(f"learn: encoding {len(cards)} cards and {len(examples)} tasks with {encoder.name}")
    agent_vecs = encoder.encode([card_text(c) for c in cards])
    train_vecs = encoder.encode([e.text for e in examples], batch_size=64)
    progress("learn: adapting the card prototypes" if feedback == "none" else f"learn: fitting ({feedback} feedback)")
    with threadpool_limits(1, user_api="blas"):
        ids = [c["agent_id"] for c in cards]
        state, info = learn(feedback, ids, agent_vecs, examples, train_vecs, progress, fallback=fallback)
    state.metadata |= {"model": encoder.name, "source": str(train), "feedback": feedback}
    return state, {**info, "tasks": len(examples)}


def replay_experience(settings: Settings, progress: Callable[[str], None]) -> tuple[list[ExperienceRecord], int]:
    """Every record of aos.experience.v1 with users' feedback joined in by task id, and how many
    could not be decoded."""
    from aos_gateway.streams.learner import replay

    records, bad = replay(settings, progress, timeout=120, label="learn")
    return join_feedback(records), bad


def learn_from_experience(settings: Settings, progress: Callable[[str], None]) -> tuple[LearnedState, dict[str, Any]]:
    from aos_gateway.cli.registry_cmds import current_cards
    from aos_gateway.matching.experience import learn_from_memories, memories

    records, bad = replay_experience(settings, progress)
    mems, skipped = memories(records)
    if not mems:
        raise ValidationError(
            f"{topics.EXPERIENCE.name} holds no usable experience ({len(records)} records, skipped {skipped})"
        )
    agent_ids = sorted(current_cards(settings))
    progress(f"learn: {len(mems)} memories from {len(records)} records; fitting")
    state = learn_from_memories(mems, agent_ids)
    state.metadata |= {"source": topics.EXPERIENCE.name}
    return state, {"records": len(records), "undecodable": bad, "skipped": skipped, "memories": len(mems)}


def publish(settings: Settings, state: LearnedState) -> int:
    """Send the state as a new version (epoch ms); returns the version."""
    state.version = int(time.time() * 1000)
    return publish_record(settings, weights.to_record(state, state.version))


def publish_record(settings: Settings, record: Weights) -> int:
    """Send one learned-state record to aos.weights.v1 (keyed by its name); returns its version."""
    ensure_topics(settings.kafka, [topics.WEIGHTS])
    _allow_large_records(settings)
    value = codec_for(WEIGHTS, topics.WEIGHTS.name, settings.schema_registry).encode(record)
    producer = make_producer(settings.kafka, **{"message.max.bytes": weights.MAX_RECORD_BYTES + 1024 * 1024})
    errors: list[str] = []
    producer.produce(
        topics.WEIGHTS.name,
        key=record["name"].encode(),
        value=value,
        on_delivery=lambda err, _m: errors.append(str(err)) if err is not None else None,
    )
    if producer.flush(settings.kafka.request_timeout_s * 3):
        raise KafkaError("the weights record was not delivered in time; is Kafka up? (`aos dev status`)")
    if errors:
        raise KafkaError(f"publishing the weights failed: {errors[0]}")
    return record["version"]


def _allow_large_records(settings: Settings) -> None:
    """Topics made before the size setting existed get it now (idempotent)."""
    from confluent_kafka.admin import (  # type: ignore[attr-defined]
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
    )

    res = ConfigResource(
        ConfigResource.Type.TOPIC,
        topics.WEIGHTS.name,
        incremental_configs=[
            ConfigEntry(
                "max.message.bytes",
                topics.WEIGHTS.configs()["max.message.bytes"],
                incremental_operation=AlterConfigOpType.SET,
            )
        ],
    )
    client = admin(settings.kafka)  # held until the futures resolve: a collected client cancels them
    for fut in client.incremental_alter_configs([res]).values():
        try:
            fut.result(timeout=30)
        except Exception as exc:
            raise KafkaError(f"cannot set max.message.bytes on {topics.WEIGHTS.name}: {exc}") from exc


def run(args: argparse.Namespace, settings: Settings, progress: Callable[[str], None]) -> int:
    t0 = time.monotonic()
    if args.from_experience:
        state, info = learn_from_experience(settings, progress)
    else:
        if args.agents is None or args.train is None:
            raise ValidationError("give --agents and --train (a labelled file), or --from-experience")
        state, info = learn_from_file(settings, args.agents, args.train, args.feedback, progress, args.fallback)
    payload = state.to_bytes()
    if args.out:
        Path(args.out).write_bytes(payload)
    version = None if args.no_publish else publish(settings, state)
    report = {
        **info,
        "agents": len(state.agent_ids),
        "memories": int(state.memory.shape[0]),
        "successes": state.successes,
        "classifier": state.coef is not None,
        "prototypes": state.prototypes is not None,
        "bytes": len(payload),
    }
    if state.prototypes is not None and not state.memory.shape[0]:
        summary = f"adapted the card prototypes to {info.get('tasks', 0)} unlabelled tasks"
    else:
        summary = f"learned from {report['memories']} memories ({report['successes']} successes)"
    return _report(args, report, version, t0, f"{summary} over {report['agents']} agents, {len(payload) / 1e6:.1f} MB")


def _report(args: argparse.Namespace, report: dict[str, Any], version: int | None, t0: float, summary: str) -> int:
    """Print what was learned and where it went: one JSON object, or one line."""
    report |= {
        "version": version,
        "topic": None if version is None else topics.WEIGHTS.name,
        "seconds": round(time.monotonic() - t0, 1),
    }
    if args.json:
        print(json.dumps(report))
    else:
        where = f"published v{version} to {topics.WEIGHTS.name}" if version else "not published"
        print(f"{summary}; {where}")
    return 0


def run_network(args: argparse.Namespace, settings: Settings, progress: Callable[[str], None]) -> int:
    """``aos learn network``: the network quality predictor from the experience history."""
    from aos_gateway.network import quality

    t0 = time.monotonic()
    records, bad = replay_experience(settings, progress)
    model = quality.learn_quality(records, clusters=args.clusters)
    if not model.agent_ids and not model.pairs:
        raise ValidationError(
            f"{topics.EXPERIENCE.name} holds no step or execution outcome to learn from ({len(records)} records)"
        )
    model.version = int(time.time() * 1000)
    if args.out:
        Path(args.out).write_bytes(model.to_bytes())
    version = None if args.no_publish else publish_record(settings, quality.to_record(model, model.version))
    report: dict[str, Any] = {
        "records": len(records),
        "undecodable": bad,
        "agents": len(model.agent_ids),
        "clusters": int(model.centroids.shape[0]),
        "steps": int(model.trials.sum()),
        "pairs": len(model.pairs),
    }
    return _report(
        args,
        report,
        version,
        t0,
        f"network quality from {report['steps']} step outcomes of {report['agents']} agents in "
        f"{report['clusters']} task clusters and {report['pairs']} agent pairs",
    )
