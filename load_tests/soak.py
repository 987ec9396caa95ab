"""Soak: the whole pipeline at a steady rate for a long time, with memory and consumer lag sampled.

    python load_tests/soak.py --rate 8 --duration 1800 [--data ../shared/datasets/metatool] [--out DIR]

Run it from the checkout (settings read ``.aos/`` there), with the local stack and a worker up
(``aos dev up``, ``aos worker --detach``). The soak starts one simulator agent per MetaTool agent
(as ``aos bench learning`` does: same ids and cards, 20 ms median latency, 95% success on the tasks
labelled with them — the training tasks and the dev tasks it sends — and 5% on others), so every
plan is dispatched to a running agent, executed, answered, recorded as experience, stored and
projected to the sink topics: the whole pipeline, with outcomes that follow the routing. Then
:mod:`kafka_load`'s open loop sends MetaTool dev tasks (each text made unique) at ``--rate`` and
waits for each task's final result (``--until result``).

Meanwhile, every ``--sample-every`` seconds, a sampler thread reads

- the resident memory (``VmRSS``) of the worker, the simulator agents' process and the broker;
- the worker's consumer lag: for the Faust group (``AOS_WORKER__APP_ID``), the committed offsets
  from Kafka's admin API against the partitions' high watermarks (not the worker's own gauge, which
  a stalled worker would stop updating), summed over the partitions it reads.

Verdicts, each printed with its figures: PASS, FAIL, or *not measured* when the run was too short
to tell (the exit status is 3 when one fails; a verdict not measured is no failure, and no pass):

- *throughput held*: every task answered, and every whole minute after the first answers
  ≥ 95% of the rate (a task lost fails it at any length; the minutes need a run of 2 minutes);
- *p95 steady*: the median of the last five minutes' p95 ≤ 1.5 × the median of minutes 2–6
  (needs 6 whole minutes after the first, a run of 7 minutes; below 11 the two groups overlap);
- *memory flat*: each process's RSS grows ≤ ``--rss-slope`` MB per 10 min over the second half
  (a least-squares slope; the first half includes warm-up and caches filling; needs 3 samples in it);
- *lag bounded*: the summed lag never exceeds ``--max-lag`` records and ends below it.

Writes ``<out>/soak-<time>.json`` (summary, per-minute windows, every sample; the tasks are in
kafka_load's own report next to it) and a ``.png`` (p50/p95 per minute, RSS, lag) unless
``--no-plot``. ``--out`` is checked before anything starts. Ctrl-C (or a TERM) stops the load and
still writes what was measured until then, as ``soak-partial-<time>.json`` marked ``"partial": true``
(exit status 128 + the signal's number).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import _report
import kafka_load
from _report import Sample


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="soak.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=8.0, help="tasks per second (default 8)")
    p.add_argument("--duration", type=float, default=1800.0, help="seconds of load (default 1800 = 30 min)")
    p.add_argument("--drain", type=float, default=60.0, help="give up this long after the last answer (default 60)")
    p.add_argument("--data", type=Path, default=None, help="MetaTool folder (default ../shared/datasets/metatool)")
    p.add_argument("--sample-every", type=float, default=10.0, help="seconds between RSS/lag samples (default 10)")
    p.add_argument("--rss-slope", type=float, default=20.0, help="memory-flat limit, MB per 10 min (default 20)")
    p.add_argument("--max-lag", type=int, default=0, help="lag-bounded limit in records (default 30 s of tasks)")
    p.add_argument("--tenant", default="soak", help="the tasks' tenant (default soak)")
    p.add_argument("--out", type=Path, default=Path("."), help="folder for the reports and plots (default .)")
    p.add_argument("--no-plot", action="store_true", help="write the JSON reports only (no matplotlib needed)")
    args = p.parse_args(argv)
    if args.rate <= 0 or args.duration < 60 or args.drain <= 0 or args.sample_every <= 0:
        p.error("--rate, --drain and --sample-every must be > 0 and --duration >= 60")
    if args.data is None:
        args.data = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "metatool"
    missing = [f for f in ("agents.jsonl", "train.jsonl", "dev.jsonl") if not (args.data / f).is_file()]
    if missing:
        p.error(f"{args.data}: missing {', '.join(missing)} (pass --data)")
    _report.check_out(p.prog, args.out)
    return args


def learning_passes(host: str, port: int, tries: int = 3, timeout: float = 10.0) -> dict[str, dict[str, float]] | None:
    """The worker's learning passes so far, from its /metrics: {kind: {"count", "seconds"}}; None when
    the endpoint cannot be read in ``tries`` attempts (metrics off, port 0, worker gone)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    if port == 0:
        return None
    text = None
    for attempt in range(tries):  # a busy worker (start-up, a backlog) may answer late
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=timeout) as resp:
                text = resp.read().decode("utf-8")
            break
        except OSError:
            if attempt + 1 < tries:
                time.sleep(1.0)
    if text is None:
        return None
    out: dict[str, dict[str, float]] = {}
    for fam in text_string_to_metric_families(text):
        if fam.name != "aos_learning_pass_seconds":
            continue
        for smp in fam.samples:
            kind = smp.labels.get("kind", "")
            if smp.name.endswith("_count"):
                out.setdefault(kind, {"count": 0.0, "seconds": 0.0})["count"] = smp.value
            elif smp.name.endswith("_sum"):
                out.setdefault(kind, {"count": 0.0, "seconds": 0.0})["seconds"] = smp.value
    return out


def passes_between(before: dict[str, dict[str, float]] | None, after: dict[str, dict[str, float]] | None) -> Any:
    """The learning passes run between two readings, per kind: count, seconds in all, mean."""
    if before is None or after is None:
        return None
    out = {}
    for kind, a in after.items():
        b = before.get(kind, {"count": 0.0, "seconds": 0.0})
        n, sec = int(a["count"] - b["count"]), round(a["seconds"] - b["seconds"], 1)
        out[kind] = {"count": n, "seconds": sec, "mean_s": round(sec / n, 1) if n else None}
    return out


def rss_mb(pid: int | None) -> float | None:
    """A process's resident memory now, or None when it is gone."""
    from aos_gateway.devstack._proc import memory_mb

    return None if pid is None else memory_mb(pid)


class GroupLag:
    """The summed lag of a consumer group, from Kafka: high watermark − committed offset per partition."""

    def __init__(self, kafka: Any, group: str) -> None:
        from confluent_kafka import Consumer

        from aos_gateway.streams.kafka import admin, consumer_config

        self.group = group
        self._admin = admin(kafka)
        # a consumer outside the group, only to ask for watermarks
        self._probe = Consumer(consumer_config(kafka, f"{group}-soak-probe"))

    def sample(self) -> tuple[int, dict[str, int]]:
        """(total lag, lag per topic) over the group's committed partitions."""
        from confluent_kafka import ConsumerGroupTopicPartitions

        fut = self._admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(self.group)])
        res = next(iter(fut.values())).result(timeout=10)
        per_topic: dict[str, int] = {}
        for tp in res.topic_partitions:
            if tp.offset < 0:
                continue
            _low, high = self._probe.get_watermark_offsets(tp, timeout=10, cached=False)
            per_topic[tp.topic] = per_topic.get(tp.topic, 0) + max(0, high - tp.offset)
        return sum(per_topic.values()), per_topic

    def close(self) -> None:
        self._probe.close()


class Sampler(threading.Thread):
    """Samples RSS per named process and the group's lag until stopped."""

    def __init__(self, every: float, pids: dict[str, int | None], lag: GroupLag) -> None:
        super().__init__(name="soak-sampler", daemon=True)
        self.every, self.pids, self.lag = every, pids, lag
        self.samples: list[dict[str, Any]] = []
        self.errors = 0
        self._stop_event = threading.Event()
        self.t0 = time.perf_counter()

    def run(self) -> None:
        while not self._stop_event.is_set():
            row: dict[str, Any] = {"t_s": round(time.perf_counter() - self.t0, 1)}
            row.update({f"rss_{name}_mb": rss_mb(pid) for name, pid in self.pids.items()})
            try:
                row["lag"], row["lag_by_topic"] = self.lag.sample()
            except Exception as exc:  # a sample lost is reported, the soak goes on
                self.errors += 1
                row["lag"], row["lag_error"] = None, str(exc)[:200]
            self.samples.append(row)
            self._stop_event.wait(self.every)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=30)


def windows(samples: list[Sample], width_s: float = 60.0) -> list[dict[str, Any]]:
    """Per minute of the run: tasks sent, results received (by arrival time: the throughput), and
    the p50/p95 latency of the tasks sent in it."""
    if not samples:
        return []
    n_win = int(max(s.sent_s for s in samples) // width_s) + 1
    arrived = [0] * n_win
    for s in samples:
        if s.latency_ms is not None:
            w = int((s.sent_s + s.latency_ms / 1000) // width_s)
            if w < n_win:
                arrived[w] += 1
    out = []
    for w in range(n_win):
        inside = [s for s in samples if w * width_s <= s.sent_s < (w + 1) * width_s]
        pct = _report.percentiles(s.latency_ms for s in inside if s.latency_ms is not None)
        out.append(
            {
                "minute": w + 1,
                "sent": len(inside),
                "answered": arrived[w],
                "per_s": round(arrived[w] / width_s, 2),
                "p50_ms": pct["p50"],
                "p95_ms": pct["p95"],
            }
        )
    return out


def slope_per_10min(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MB) points, in MB per 10 minutes."""
    if len(points) < 3:
        return None
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    den = sum((t - mx) ** 2 for t, _ in points)
    if den == 0:
        return None
    return round(sum((t - mx) * (v - my) for t, v in points) / den * 600, 2)


def _median(xs: list[float]) -> float | None:
    xs = sorted(xs)
    if not xs:
        return None
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else (xs[m - 1] + xs[m]) / 2


THROUGHPUT_MINUTES = 2  # a whole minute after the first
P95_FULL_MINUTES = 6  # whole minutes after the first: the first five and the last five then differ


def _not_measured(why: str) -> str:
    return f"not measured ({why})"


def verdicts(
    load: dict[str, Any],
    wins: list[dict[str, Any]],
    samples: list[dict[str, Any]],
    rate: float,
    rss_limit: float,
    max_lag: int,
) -> dict[str, dict[str, Any]]:
    """The four verdicts; each ``ok`` is True (PASS), False (FAIL) or None: not measured, the run too
    short (or a figure never sampled) to tell, with a ``note`` saying what it needs."""
    full = [w for w in wins[1:] if w["sent"] >= 0.9 * rate * 60]  # whole minutes after the first
    slow = [w for w in full if w["answered"] < 0.95 * rate * 60]
    p95s = [w["p95_ms"] for w in full if w["p95_ms"] is not None]
    early, late = _median(p95s[:5]), _median(p95s[-5:])
    half = samples[len(samples) // 2 :]
    slopes: dict[str, float | None] = {}
    for key in [k for k in (samples[0] if samples else {}) if k.startswith("rss_")]:
        slopes[key] = slope_per_10min([(s["t_s"], s[key]) for s in half if s.get(key) is not None])
    lags = [s["lag"] for s in samples if s.get("lag") is not None]

    lost = load["missing"] + load["errors"]
    throughput: dict[str, Any] = {
        "ok": False if lost or slow else (True if full else None),
        "answered": load["answered"],
        "sent": load["sent"],
        "minutes_below_95pct": [w["minute"] for w in slow],
        "min_per_s": min((w["per_s"] for w in full), default=None),
    }
    if throughput["ok"] is None:
        throughput["note"] = _not_measured(f"needs a run of at least {THROUGHPUT_MINUTES} minutes")

    steady: dict[str, Any] = {
        "ok": None,
        "p95_first_minutes_ms": early,
        "p95_last_minutes_ms": late,
        "ratio": round(late / early, 2) if early and late else None,
    }
    if len(p95s) < P95_FULL_MINUTES or early is None or late is None:
        steady["note"] = _not_measured(f"needs a run of at least {P95_FULL_MINUTES + 1} minutes")
    else:
        steady["ok"] = late <= 1.5 * early

    measured = {k: v for k, v in slopes.items() if v is not None}
    memory: dict[str, Any] = {
        "ok": None,
        "slope_mb_per_10min_second_half": slopes,
        "limit_mb_per_10min": rss_limit,
    }
    if any(v > rss_limit for v in measured.values()):
        memory["ok"] = False
    elif measured and len(measured) == len(slopes):
        memory["ok"] = True
    unmeasured = [k for k, v in slopes.items() if v is None]
    if not slopes or unmeasured:
        what = f" of {', '.join(unmeasured)}" if unmeasured else ""
        memory["note"] = _not_measured(
            f"RSS{what}: needs 3 samples over the second half of the run; a longer run or a smaller --sample-every"
        )

    lag: dict[str, Any] = {
        "ok": None if not lags else max(lags) <= max_lag and lags[-1] <= max_lag,
        "max": max(lags, default=None),
        "last": lags[-1] if lags else None,
        "p95": _report.percentiles(lags)["p95"],
        "limit": max_lag,
    }
    if not lags:
        lag["note"] = _not_measured("no lag sample could be read")
    return {"throughput_held": throughput, "p95_steady": steady, "memory_flat": memory, "lag_bounded": lag}


def label(ok: bool | None) -> str:
    return "PASS" if ok is True else "FAIL" if ok is False else "NOT MEASURED"


def exit_status(report: dict[str, Any]) -> int:
    """3 when a verdict fails; 0 otherwise (a verdict not measured is no failure, and is said so)."""
    return 3 if any(v["ok"] is False for v in report["verdicts"].values()) else 0


def _pids(settings: Any) -> dict[str, int | None]:
    from aos_gateway.cli import worker_proc
    from aos_gateway.devstack.stack import LocalStack

    return {"worker": worker_proc.running_pid(settings), "broker": LocalStack(settings).kafka.running_pid()}


def draw(report: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wins, samples = report["windows"], report["samples"]
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(10, 10), sharex=True)
    ax1.plot([w["minute"] * 60 for w in wins], [w["p50_ms"] for w in wins], label="p50")
    ax1.plot([w["minute"] * 60 for w in wins], [w["p95_ms"] for w in wins], label="p95")
    ax1.set_ylabel("submit → result (ms)")
    ax1.legend()
    ax1.set_title(f"soak: {report['rate']:g} tasks/s for {report['duration_s']:g} s")
    for key in [k for k in (samples[0] if samples else {}) if k.startswith("rss_")]:
        ax2.plot([s["t_s"] for s in samples], [s[key] for s in samples], label=key[4:-3])
    ax2.set_ylabel("RSS (MB)")
    ax2.legend()
    ax3.plot([s["t_s"] for s in samples], [s.get("lag") for s in samples])
    ax3.set_ylabel("worker group lag (records)")
    ax3.set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    if not args.no_plot:
        _report.require_matplotlib()
    from aos_gateway.bench.learning import simulator_agents, simulator_spec
    from aos_gateway.errors import AosError
    from aos_gateway.matching.dataset import read_examples
    from aos_gateway.settings import Settings

    def say(msg: str) -> None:
        print(f"soak: {msg}", file=sys.stderr)

    # a TERM (or an INT, which a shell's background job ignores) stops the soak through the same
    # clean-up as its end: the simulator agents do not outlive it, and what was measured is written
    stopped: list[int] = []
    finishing: list[bool] = []  # the load is over: a signal no longer interrupts the clean-up and the report

    def _stop(signum: int, _frame: Any) -> None:
        if stopped or finishing:  # let the clean-up (the agents stopped) and the report finish
            say("stopping: the simulator agents are being stopped and the report written")
            return
        stopped.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    settings = Settings()
    pids = _pids(settings)
    if pids["worker"] is None:
        print("soak: no worker is running: `aos dev up` and `aos worker --detach` first", file=sys.stderr)
        return 2
    max_lag = args.max_lag or int(args.rate * 30)
    train = read_examples(args.data / "train.jsonl")
    spec = simulator_spec(args.data / "agents.jsonl", train, skill=0.95, noise=0.05, seed=0)
    texts = _report.texts(args.data / "dev.jsonl", max(1, round(args.rate * args.duration)))
    # the agents know the sent tasks' gold too (as they know train's): an agent succeeds (95%) on
    # the tasks of its own kind, so outcomes follow routing; without this every dev task was
    # unknown to them and failed 95% of the time (the runs before 2026-11-29)
    dev_gold = [e.gold[0] for e in read_examples(args.data / "dev.jsonl")]
    spec["labels"].update({t: dev_gold[i % len(dev_gold)] for i, t in enumerate(texts)})

    load: dict[str, Any] | None = None
    passes: Any = None
    sampler: Sampler | None = None
    try:
        with simulator_agents(settings, spec, "soak-agents.log", 32, False, 60.0, say) as sim:
            pids["agents"] = sim.pid
            lag = GroupLag(settings.kafka, settings.worker.app_id)
            sampler = Sampler(args.sample_every, pids, lag)
            sampler.start()
            passes_before = None
            try:
                passes_before = learning_passes(settings.metrics.host, settings.metrics.port)
                say(f"{len(texts)} tasks at {args.rate:g}/s ({args.duration:g} s), until result")
                # a signal in the load ends it there: the report of the tasks sent so far comes back
                load = kafka_load.run(settings, args.rate, args.duration, args.drain, "result", texts, args.tenant)
                if load.get("interrupted") and not stopped:
                    stopped.append(signal.SIGINT)
            finally:
                finishing.append(True)
                sampler.stop()
                lag.close()
                tries = 1 if stopped else 3  # stopping: one quick read, not 30 s of retries
                after = learning_passes(settings.metrics.host, settings.metrics.port, tries=tries)
                passes = passes_between(passes_before, after)
    except AosError as exc:
        say(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        if not stopped:
            stopped.append(signal.SIGINT)
    if load is None or sampler is None:
        say(f"stopped by signal {stopped[0] if stopped else '?'} before the load started; no report")
        return 128 + (stopped[0] if stopped else signal.SIGINT)
    report = build_report(args, load, sampler.samples, sampler.errors, passes, max_lag, stopped[0] if stopped else None)
    stem = time.strftime("soak-partial-%Y%m%d-%H%M%S" if stopped else "soak-%Y%m%d-%H%M%S")
    paths, where_asked = write_reports(report, load, args.out, stem, not args.no_plot)
    print_summary(report, paths)
    if stopped:
        return 128 + stopped[0]
    return exit_status(report) if where_asked else 1


def build_report(
    args: argparse.Namespace,
    load: dict[str, Any],
    samples: list[dict[str, Any]],
    sample_errors: int,
    passes: Any,
    max_lag: int,
    stopped_by: int | None,
) -> dict[str, Any]:
    """The soak's report; ``stopped_by`` (a signal's number): a partial one, of what was measured until then."""
    wins = windows([Sample(*row) for row in load["samples"]])
    report: dict[str, Any] = {
        "partial": stopped_by is not None,
        "rate": args.rate,
        "duration_s": args.duration,
    }
    if stopped_by is not None:
        sent = load["samples"]
        report["stopped_by_signal"] = stopped_by
        report["stopped_after_s"] = round(sent[-1][0], 1) if sent else 0.0
    report.update(
        {
            "load": {k: v for k, v in load.items() if k != "samples"},
            "verdicts": verdicts(load, wins, samples, args.rate, args.rss_slope, max_lag),
            "windows": wins,
            "samples": samples,
            "sample_errors": sample_errors,
            "learning_passes": passes,
        }
    )
    return report


def write_reports(
    report: dict[str, Any], load: dict[str, Any], out: Path, stem: str, plot: bool
) -> tuple[list[Path], bool]:
    """The tasks' report, the soak's and its plot into ``out`` (checked before the soak); if it cannot
    be written to any more, into the temporary folder: (paths, written where asked)."""
    tasks_stem = stem.replace("soak", "soak-tasks", 1)
    try:
        out.mkdir(parents=True, exist_ok=True)
        return _write_all(report, load, out, stem, tasks_stem, plot), True
    except OSError as exc:
        tmp = Path(tempfile.gettempdir())
        print(f"soak: error: cannot write to {out} ({exc.strerror or exc}); writing to {tmp}", file=sys.stderr)
        return _write_all(report, load, tmp, stem, tasks_stem, plot), False


def _write_all(
    report: dict[str, Any], load: dict[str, Any], out: Path, stem: str, tasks_stem: str, plot: bool
) -> list[Path]:
    paths = _report.write(load, out, tasks_stem, False)
    path = out / f"{stem}.json"
    path.write_text(json.dumps(report, indent=1), encoding="utf-8")
    paths.append(path)
    if plot:
        paths.append(draw(report, out / f"{stem}.png"))
    return paths


def print_summary(report: dict[str, Any], paths: list[Path]) -> None:
    load, v = report["load"], report["verdicts"]
    lat = load["latency_ms"]
    if report.get("partial"):
        print(
            f"soak: PARTIAL: stopped by signal {report['stopped_by_signal']} after {report['stopped_after_s']} s of "
            f"{report['duration_s']:g}; everything below covers only what was measured until then"
        )
    pending = f", {load['pending']} pending (interrupted)" if load.get("pending") else ""
    print(
        f"soak: {load['sent']} sent, {_report.answered_text(load)}, {load['missing']} missing{pending}, "
        f"{load['errors']} errors; throughput {load['throughput_per_s']}/s; "
        f"latency ms p50 {lat['p50']} p95 {lat['p95']} p99 {lat['p99']}"
    )
    for name, d in v.items():
        figures = ", ".join(f"{k} {val}" for k, val in d.items() if k not in ("ok", "note"))
        note = f"{d['note']}; " if d.get("note") else ""
        print(f"  {label(d['ok'])} {name}: {note}{figures}")
    passes = report.get("learning_passes")
    if passes is None:
        print("  learning passes: unknown (the worker's /metrics could not be read)")
    else:
        told = ", ".join(f"{k} {v['count']} ({v['seconds']} s)" for k, v in sorted(passes.items())) or "none"
        print(f"  learning passes during the run: {told}")
    print(f"  minutes: {len(report['windows'])}, samples: {len(report['samples'])} ({report['sample_errors']} lost)")
    for p in paths:
        print(f"  wrote {p}")


if __name__ == "__main__":
    raise SystemExit(main())
