"""``aos bench pipeline``: open-loop load through the real pipeline, measured end to end.

Tasks are produced at a fixed rate whatever the replies do (open loop: a slow pipeline
cannot slow the load down and hide its own latency). Latency is submit -> plan received on
the result topic, both timed by this process. Lost = submitted and never planned within the
drain: the bench keeps waiting while plans still arrive and gives up only after ``drain``
seconds without one (a backlog is slow, not lost); duplicated = more than one plan for a task
id. ``backlog_s`` is how long after the last send the last plan came.
"""

from __future__ import annotations

import json
import os
import resource
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import Consumer, TopicPartition

from aos_gateway import topics
from aos_gateway.client import new_task
from aos_gateway.contracts.records import PLAN, TASK_REQUEST
from aos_gateway.contracts.wire import codec_for
from aos_gateway.settings import Settings
from aos_gateway.streams.kafka import consumer_config, ensure_topics, make_producer, poll_batch, watermarks


def _texts() -> list[str]:
    """MetaTool's dev and train queries (realistic lengths), or a synthetic set without them."""
    for base in (Path.cwd(), *Path(__file__).resolve().parents):
        d = base.parent / "shared" / "datasets" / "metatool"
        if (d / "dev.jsonl").is_file():
            return [
                json.loads(line)["text"].strip('"')
                for name in ("dev.jsonl", "train.jsonl")
                if (d / name).is_file()
                for line in (d / name).open(encoding="utf-8")
                if line.strip()
            ]
    return [f"Please help me with request number {i} about travel, weather and news." for i in range(1000)]


def _pct(values: list[float]) -> dict[str, float]:
    if not values:
        return {
            "p50": float("nan"),
            "p95": float("nan"),
            "p99": float("nan"),
            "max": float("nan"),
            "mean": float("nan"),
        }
    arr = np.asarray(values)
    return {
        "p50": round(float(np.percentile(arr, 50)), 1),
        "p95": round(float(np.percentile(arr, 95)), 1),
        "p99": round(float(np.percentile(arr, 99)), 1),
        "max": round(float(arr.max()), 1),
        "mean": round(float(arr.mean()), 1),
    }


def _worker_rss_mb(settings: Settings) -> float | None:
    from aos_gateway.cli.worker_proc import running_pid
    from aos_gateway.devstack._proc import memory_mb

    pid = running_pid(settings)
    return None if pid is None else memory_mb(pid, "VmHWM")


def run(
    settings: Settings, rate: float, duration: float, drain: float, progress: Callable[[str], None]
) -> dict[str, Any]:
    ensure_topics(settings.kafka, partitions=settings.worker.topic_partitions)
    codec = codec_for(TASK_REQUEST, topics.TASKS.name, settings.schema_registry)
    plan_codec = codec_for(PLAN, topics.PLANS.name, settings.schema_registry)
    texts = _texts()
    n = int(rate * duration)
    run_id = os.urandom(4).hex()
    # a random start in the texts and the index in each keep them new to the worker's content
    # cache across runs, so no cache hit flatters the figures
    offset = int.from_bytes(os.urandom(4), "little") % len(texts)

    consumer = Consumer(consumer_config(settings.kafka))
    md = consumer.list_topics(topics.PLANS.name, timeout=10)
    parts = []
    for p in sorted(md.topics[topics.PLANS.name].partitions):
        _, high = watermarks(consumer, topics.PLANS.name, p, 10)
        parts.append(TopicPartition(topics.PLANS.name, p, high))
    consumer.assign(parts)

    sent: dict[str, float] = {}
    received: dict[str, float] = {}
    counts: Counter[str] = Counter()
    stage_ms: dict[str, list[float]] = {"perceive": [], "match": [], "plan": []}
    statuses: Counter[str] = Counter()
    stop = threading.Event()

    def consume() -> None:
        while not stop.is_set():
            for m in poll_batch(consumer, 1000, 0.1):
                raw = m.value()
                if m.error() is not None or raw is None:
                    continue
                now = time.time()
                plan = plan_codec.decode(raw)
                tid = plan["task_id"]
                if not tid.startswith(run_id):
                    continue
                counts[tid] += 1
                if tid not in received:
                    received[tid] = now
                    t = plan["timings"]
                    statuses[plan["status"]] += 1
                    if {"submitted", "perceived", "matched", "planned"} <= t.keys():
                        stage_ms["perceive"].append(t["perceived"] - t["submitted"])
                        stage_ms["match"].append(t["matched"] - t["perceived"])
                        stage_ms["plan"].append(t["planned"] - t["matched"])

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    producer = make_producer(settings.kafka, **{"linger.ms": 0})
    progress(f"bench: {n} tasks at {rate:g}/s for {duration:g}s (open loop)")
    t0 = time.time()
    for i in range(n):
        target = t0 + i / rate
        delay = target - time.time()
        if delay > 0:
            time.sleep(delay)
        tid = f"{run_id}-{i:07d}"
        req = new_task(f"{texts[(offset + i) % len(texts)]} [{i}]", task_id=tid)
        ts = time.time()
        req["submitted_at"] = int(ts * 1000)
        producer.produce(topics.TASKS.name, key=tid.encode(), value=codec.encode(req))
        sent[tid] = ts
        producer.poll(0)
        if i and i % max(1, int(rate * 10)) == 0:
            progress(f"bench: {i} sent, {len(received)} planned")
    producer.flush(30)
    send_end = time.time()
    last_count, last_change = -1, time.time()
    while len(received) < n and time.time() - last_change < drain:
        if len(received) != last_count:
            last_count, last_change = len(received), time.time()
        time.sleep(0.2)
    stop.set()
    reader.join(timeout=5)
    consumer.close()

    lat = [(received[t] - sent[t]) * 1000 for t in received]
    last = max(received.values()) if received else send_end
    report = {
        "rate_target": rate,
        "duration_s": duration,
        "submitted": n,
        "planned": len(received),
        "lost": n - len(received),
        "duplicated": sum(c - 1 for c in counts.values() if c > 1),
        "statuses": dict(statuses),
        "send_rate": round(n / max(send_end - t0, 1e-9), 1),
        "throughput": round(len(received) / max(last - t0, 1e-9), 1),
        "backlog_s": round(max(0.0, last - send_end), 1),
        "latency_ms": _pct(lat),
        "stage_ms_p50": {k: _pct(v)["p50"] for k, v in stage_ms.items()},
        "stage_ms_p95": {k: _pct(v)["p95"] for k, v in stage_ms.items()},
        "worker_peak_rss_mb": _worker_rss_mb(settings),
        "bench_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    return report


def encoder_ceiling(
    settings: Settings, n: int = 512, batch: int = 32, progress: Callable[[str], None] = lambda _m: None
) -> dict[str, Any]:
    """The bare text encoder on this machine: the ceiling for the pipeline's throughput."""
    from aos_gateway.perception.text import TextEncoder

    p = settings.perception
    enc = TextEncoder(p.text_model, p.device, cache_size=0, threads=p.torch_threads)
    progress(f"encoder: loading {enc.name}")
    enc.load()
    progress(f"encoder: 64 single texts, then {n} in batches of {batch}")
    texts = [f"{t} [{i}]" for i, t in enumerate((_texts() * (n // 100 + 2))[:n])]
    enc.encode(texts[:batch])  # warm-up
    lat1 = []
    for t in texts[:64]:
        s = time.perf_counter()
        enc.encode([t])
        lat1.append((time.perf_counter() - s) * 1000)
    s = time.perf_counter()
    last = s
    for i in range(0, n, batch):
        enc.encode(texts[i : i + batch], batch_size=p.encode_batch_size)
        if time.perf_counter() - last > 5:
            last = time.perf_counter()
            progress(f"encoder: {min(i + batch, n)} of {n} texts")
    dt = time.perf_counter() - s
    return {
        "model": enc.name,
        "batch": batch,
        "encode_batch_size": p.encode_batch_size,
        "items_per_s": round(n / dt, 1),
        "batch1_latency_ms": _pct(lat1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def format_report(r: dict[str, Any]) -> str:
    if "items_per_s" in r:
        lat = r["batch1_latency_ms"]
        return (
            f"encoder {r['model']}: {r['items_per_s']} items/s at batch {r['batch']}; "
            f"batch 1 p50 {lat['p50']} ms p95 {lat['p95']} ms; peak RSS {r['peak_rss_mb']} MB"
        )
    lat = r["latency_ms"]
    lines = [
        f"submitted {r['submitted']} at {r['send_rate']}/s (target {r['rate_target']:g}/s for {r['duration_s']:g}s)",
        f"planned {r['planned']}  lost {r['lost']}  duplicated {r['duplicated']}  statuses {r['statuses']}",
        f"throughput {r['throughput']} plans/s (last plan {r['backlog_s']} s after the last send)",
        f"end-to-end latency ms: p50 {lat['p50']}  p95 {lat['p95']}  p99 {lat['p99']}  max {lat['max']}",
        f"stage p50 ms {r['stage_ms_p50']}  p95 ms {r['stage_ms_p95']}",
        f"worker peak RSS {r['worker_peak_rss_mb']} MB",
    ]
    return "\n".join(lines)
