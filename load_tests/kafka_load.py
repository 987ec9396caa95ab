"""Load on the Kafka path: tasks produced to aos.tasks.v1 at a fixed rate, answers read back.

    python load_tests/kafka_load.py --rate 50 --duration 60 [--until result] [--out DIR] [--no-plot]

Open loop: a task is produced every 1/rate seconds whatever the answers do, so a slow pipeline
cannot slow the load down and hide its own latency. Every task is a TaskRequest made as
``aos submit`` makes it, produced with confluent-kafka; one consumer (the HTTP ingress's own,
:class:`aos_gateway.ingress.kafka.KafkaRecordFeed`) reads aos.plans.v1, aos.results.v1 and
aos.deadletter.v1 from their end, so latency is produce -> the plan (or, with ``--until result``,
the execution's final result) seen by this process. A task with no answer within ``--drain``
seconds of the last one is *missing*; a refused produce or a dead letter is an *error*. ``ok`` in
the report counts the tasks that got what they asked for (PLANNED; with ``--until result``,
SUCCEEDED); every answer is listed by status. Ctrl-C stops the load and still writes the report of
the tasks sent so far, marked ``"interrupted": true`` (the ones not answered yet are *pending*).

Settings come from the environment as for every ``aos`` command (``AOS_KAFKA__BOOTSTRAP_SERVERS``
or ``--bootstrap``). Writes ``<out>/kafka_load-<time>.json`` (summary and every task) and a
``.png`` (latency over time, histogram; needs ``pip install 'aos-gateway[load]'``).
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Any

import _report
from _report import Sample


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="kafka_load.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=10.0, help="tasks per second (default 10)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of load (default 20)")
    p.add_argument("--drain", type=float, default=30.0, help="give up this long after the last answer (default 30)")
    p.add_argument("--until", choices=["plan", "result"], default="plan", help="what answers a task (default plan)")
    p.add_argument("--texts", type=Path, default=None, help="task texts: one per line, or JSON lines with 'text'")
    p.add_argument("--warmup", type=int, default=5, help="tasks sent and answered before the clock starts (default 5)")
    p.add_argument("--tenant", default=None, help="the tasks' tenant (default AOS_TENANT, 'default')")
    p.add_argument("--bootstrap", default=None, help="Kafka bootstrap servers (default AOS_KAFKA__BOOTSTRAP_SERVERS)")
    p.add_argument("--out", type=Path, default=Path("."), help="folder for the report and plot (default .)")
    p.add_argument("--no-plot", action="store_true", help="write the JSON report only (no matplotlib needed)")
    args = p.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0 or args.drain <= 0 or args.warmup < 0:
        p.error("--rate, --duration and --drain must be > 0 (and --warmup >= 0)")
    _report.check_texts(p.prog, args.texts)
    _report.check_out(p.prog, args.out)
    return args


ANSWERS = {"plan": {"PLANNED", "NO_MATCH", "REJECTED"}, "result": {"SUCCEEDED", "PARTIAL", "FAILED"}}
SUCCESS = {"plan": {"PLANNED"}, "result": {"SUCCEEDED"}}


def run(
    settings: Any,
    rate: float,
    duration: float,
    drain: float,
    until: str,
    texts: list[str],
    tenant: str,
    warmup: int = 5,
) -> dict[str, Any]:
    from aos_gateway import topics
    from aos_gateway.client import new_task
    from aos_gateway.contracts.records import TASK_REQUEST
    from aos_gateway.contracts.wire import codec_for
    from aos_gateway.ingress.kafka import KafkaRecordFeed
    from aos_gateway.streams.kafka import make_producer

    n = len(texts)
    sent: dict[str, tuple[int, float]] = {}  # task id -> (index, perf time sent)
    answers: dict[str, tuple[float, str]] = {}  # task id -> (perf time answered, outcome)
    errors: dict[str, str] = {}
    lock = threading.Lock()

    def deliver(batch: list[tuple[str, dict[str, Any]]]) -> None:
        now = time.perf_counter()
        with lock:
            for kind, rec in batch:
                tid = rec.get("task_id")
                if tid not in sent or tid in answers:
                    continue
                if kind == "dead_letter":
                    answers[tid] = (now, "dead_letter")
                elif kind == until:
                    answers[tid] = (now, str(rec["status"]))

    feed = KafkaRecordFeed(settings)  # from the topics' current end: before the first task is sent
    feed.start(deliver)  # type: ignore[arg-type]
    try:  # the feed is closed on the way out whatever stops the start-up (a Ctrl-C in the warm-up too)
        producer = make_producer(settings.kafka)
        codec = codec_for(TASK_REQUEST, topics.TASKS.name, settings.schema_registry)

        def on_delivery(err: Any, msg: Any) -> None:
            if err is not None:
                errors[msg.key().decode()] = f"produce: {err}"

        if warmup:  # the producer's start-up and the worker's first batches, answered before the clock starts
            warm = [new_task(f"warm-up {i}: what is {i} + 1?", tenant=tenant) for i in range(warmup)]
            with lock:
                sent.update({w["task_id"]: (-1, time.perf_counter()) for w in warm})
            for w in warm:
                producer.produce(topics.TASKS.name, key=w["task_id"].encode(), value=codec.encode(w))
            producer.flush(30)
            deadline = time.monotonic() + drain
            while time.monotonic() < deadline and any(w["task_id"] not in answers for w in warm):
                time.sleep(0.05)
            with lock:
                for w in warm:
                    sent.pop(w["task_id"], None)
                    answers.pop(w["task_id"], None)
    except BaseException:
        feed.close()
        raise
    t0 = time.perf_counter()
    last_report = t0
    send_span = 0.0
    interrupted = False
    try:
        for i, text in enumerate(texts):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            task = new_task(text, tenant=tenant)
            with lock:
                sent[task["task_id"]] = (i, time.perf_counter())
            try:
                producer.produce(
                    topics.TASKS.name, key=task["task_id"].encode(), value=codec.encode(task), on_delivery=on_delivery
                )
            except BufferError as exc:
                errors[task["task_id"]] = f"produce: {exc}"
            producer.poll(0)
            if time.perf_counter() - last_report >= 5:
                last_report = time.perf_counter()
                print(f"  {last_report - t0:5.1f}s: sent {i + 1}/{n}, answered {len(answers)}", file=sys.stderr)
        send_span = time.perf_counter() - t0
        producer.flush(30)
        last_count, last_change = -1, time.perf_counter()
        while True:
            done = len(answers) + len(errors)
            if done >= n or time.perf_counter() - last_change > drain:
                break
            if done != last_count:
                last_count, last_change = done, time.perf_counter()
            time.sleep(0.2)
    except KeyboardInterrupt:  # Ctrl-C (or a soak's TERM): the report of what was sent so far
        interrupted = True
        send_span = send_span or time.perf_counter() - t0
        print(f"  interrupted after {time.perf_counter() - t0:.1f}s: reporting the tasks sent so far", file=sys.stderr)
    finally:
        feed.close()
    with lock:
        rows = sorted(sent.items(), key=lambda kv: kv[1][0])
        got_answers = dict(answers)
    return report(rows, got_answers, errors, t0, until, rate, duration, send_span, interrupted, settings, feed.errors)


def report(
    rows: list[tuple[str, tuple[int, float]]],
    answers: dict[str, tuple[float, str]],
    errors: dict[str, str],
    t0: float,
    until: str,
    rate: float,
    duration: float,
    send_span: float,
    interrupted: bool,
    settings: Any,
    undecodable: int,
) -> dict[str, Any]:
    """The summary of the tasks sent: answered (latency, status), refused, missing or, when the run was
    interrupted, pending."""
    samples: list[Sample] = []
    for tid, (_i, at) in rows:
        if tid in answers:
            got, outcome = answers[tid]
            samples.append(Sample(at - t0, (got - at) * 1000, outcome))
        elif tid in errors:
            samples.append(Sample(at - t0, None, "produce_error"))
        else:
            samples.append(Sample(at - t0, None, _report.PENDING if interrupted else "missing"))
    return _report.summarize(
        f"kafka_load (until {until})",
        samples,
        rate=rate,
        duration=duration,
        send_span_s=send_span,
        ok=ANSWERS[until],
        success=SUCCESS[until],
        extra={
            "interrupted": interrupted,
            "bootstrap": settings.kafka.bootstrap_servers,
            "first_error": next(iter(errors.values()), None),
            "undecodable_records": undecodable,
        },
    )


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    if not args.no_plot:
        _report.require_matplotlib()
    from aos_gateway.errors import AosError
    from aos_gateway.settings import Settings

    settings = Settings()
    if args.bootstrap:
        settings = settings.model_copy(
            update={"kafka": settings.kafka.model_copy(update={"bootstrap_servers": args.bootstrap})}
        )
    texts = _report.texts(args.texts, max(1, round(args.rate * args.duration)))
    print(f"kafka_load: {len(texts)} tasks at {args.rate:g}/s to {settings.kafka.bootstrap_servers}", file=sys.stderr)
    try:
        result = run(
            settings,
            args.rate,
            args.duration,
            args.drain,
            args.until,
            texts,
            args.tenant or settings.tenant,
            args.warmup,
        )
    except AosError as exc:
        print(f"kafka_load: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # before the clock started (the warm-up): nothing measured
        print("kafka_load: interrupted before the load started; no report", file=sys.stderr)
        return 130
    stem = time.strftime("kafka_load-%Y%m%d-%H%M%S")
    paths, where_asked = _report.save("kafka_load", result, args.out, stem, not args.no_plot)
    _report.print_summary(result, paths)
    if result["interrupted"]:
        print("kafka_load: interrupted: the report covers the tasks sent until then", file=sys.stderr)
        return 130
    if not where_asked:
        return 1
    return 0 if result["missing"] == 0 and result["errors"] == 0 else 3


if __name__ == "__main__":
    raise SystemExit(main())
