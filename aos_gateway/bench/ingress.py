"""``aos bench ingress``: the latency the HTTP ingress adds over the Kafka client, on the live pipeline.

The same kind of tasks go through both paths, interleaved at one open-loop rate so both see the
same worker load: through :class:`~aos_gateway.client.GatewayClient` (produce, then the plan from
``aos.plans.v1``) and through a real ``aos serve`` subprocess (``POST /v1/tasks``, then
``GET /v1/tasks/{id}?wait=...``, over one keep-alive connection pool). End to end is timed by
this process for each task. Every text is unique (the perceive stage caches encodings by text),
and a few tasks per path warm up first, uncounted.

``added_ms`` compares the end-to-end percentiles; ``added_transport_ms`` compares each task's
end to end minus its time inside the pipeline (the plan's ``planned - submitted``, stamped where
the task was made: by the client, or by the ingress), which takes the pipeline's own variance
out of the comparison and leaves what each path spends getting the task in and the plan out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from aos_gateway.client import GatewayClient
from aos_gateway.errors import AosError
from aos_gateway.settings import Settings

TARGET_P50_MS = 5.0
WARMUP = 5
_TEMPLATES = (
    "What's the weather in city number {i} tomorrow?",
    "Find the latest news about company {i}.",
    "Write an SQL query listing the customers with id above {i}.",
    "Translate 'good morning number {i}' into French.",
    "Convert {i} US dollars to euros.",
    "Summarise the report numbered {i} in three sentences.",
)


def _text(i: int, run: str) -> str:
    return _TEMPLATES[i % len(_TEMPLATES)].format(i=i) + f" (ref {run}-{i})"


def _pct(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "mean": None, "max": None}
    arr = np.asarray(values)
    out: dict[str, float | None] = {f"p{q}": round(float(np.percentile(arr, q)), 2) for q in (50, 95, 99)}
    out["mean"] = round(float(arr.mean()), 2)
    out["max"] = round(float(arr.max()), 2)
    return out


def _diff(a: dict[str, float | None], b: dict[str, float | None]) -> dict[str, float | None]:
    return {
        k: (round(a[k] - b[k], 2) if a.get(k) is not None and b.get(k) is not None else None)  # type: ignore[operator]
        for k in ("p50", "p95", "p99")
    }


def _pipeline_ms(plan: dict[str, Any]) -> float | None:
    t = plan.get("timings") or {}
    if "planned" in t and "submitted" in t:
        return float(t["planned"] - t["submitted"])
    return None


class _Server:
    """``aos serve`` in a subprocess on a free loopback port, with one API key of its own."""

    def __init__(self, settings: Settings, progress: Callable[[str], None]) -> None:
        self.key = uuid.uuid4().hex
        self._log = Path(tempfile.mkstemp(prefix="aos-bench-ingress-", suffix=".log")[1])
        env = {**os.environ, "AOS_INGRESS__API_KEYS": json.dumps({self.key: settings.tenant})}
        with self._log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "aos_gateway.cli.main", "serve", "--host", "127.0.0.1", "--port", "0"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while True:
            text = self._log.read_text(errors="replace")
            if "aos serve: http://" in text:
                self.url = text.split("aos serve: ", 1)[1].split(" ", 1)[0]
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise AosError(f"aos serve did not start: {text.strip()[-500:] or 'no output'}")
            time.sleep(0.1)
        progress(f"ingress at {self.url}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.unlink(missing_ok=True)


def run(settings: Settings, n: int, rate: float, timeout: float, progress: Callable[[str], None]) -> dict[str, Any]:
    """Send ``n`` tasks through each path at ``rate`` tasks/s in all; the report's figures are in ms."""
    import httpx

    server = _Server(settings, progress)
    samples: dict[str, list[dict[str, float]]] = {"kafka": [], "http": []}
    errors: dict[str, list[str]] = {"kafka": [], "http": []}
    lock = threading.Lock()
    run_id = uuid.uuid4().hex[:6]
    try:
        headers = {"Authorization": f"Bearer {server.key}"}
        limits = httpx.Limits(max_connections=128, max_keepalive_connections=128)
        with (
            GatewayClient(settings) as client,
            httpx.Client(base_url=server.url, headers=headers, timeout=timeout + 10, limits=limits) as http,
        ):
            client.listen()

            def via_kafka(text: str) -> dict[str, float]:
                t0 = time.perf_counter()
                tid = client.submit(text)
                plan = client.wait(tid, timeout)
                e2e = (time.perf_counter() - t0) * 1000
                return {"e2e": e2e, "pipeline": _pipeline_ms(dict(plan)) or float("nan")}

            def via_http(text: str) -> dict[str, float]:
                t0 = time.perf_counter()
                r = http.post("/v1/tasks", json={"text": text})
                if r.status_code != 202:
                    raise AosError(f"POST {r.status_code}: {r.text[:200]}")
                post = (time.perf_counter() - t0) * 1000
                g = http.get(f"/v1/tasks/{r.json()['task_id']}", params={"wait": timeout})
                body = g.json()
                if g.status_code != 200 or body.get("plan") is None:
                    raise AosError(f"GET {g.status_code}: no plan within {timeout:g}s ({body.get('status')})")
                e2e = (time.perf_counter() - t0) * 1000
                return {"e2e": e2e, "post": post, "pipeline": _pipeline_ms(body["plan"]) or float("nan")}

            paths = {"kafka": via_kafka, "http": via_http}
            progress(f"warm-up: {WARMUP} tasks per path")
            for i in range(WARMUP):
                for name, fn in paths.items():
                    fn(_text(10_000_000 + i, f"{run_id}{name}"))

            def one(name: str, text: str) -> None:
                try:
                    got = paths[name](text)
                except Exception as exc:  # counted and reported, the run goes on
                    with lock:
                        errors[name].append(f"{type(exc).__name__}: {exc}")
                    return
                with lock:
                    samples[name].append(got)

            progress(f"{n} tasks per path at {rate:g} tasks/s (interleaved)")
            futures: list[Future[None]] = []
            with ThreadPoolExecutor(max_workers=max(8, min(256, int(rate * 4) + 8))) as pool:
                t0 = time.perf_counter()
                for i in range(2 * n):
                    delay = t0 + i / rate - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                    name = "kafka" if i % 2 == 0 else "http"
                    futures.append(pool.submit(one, name, _text(i, run_id)))
                for f in futures:
                    f.result()
    finally:
        server.close()
    report: dict[str, Any] = {"n": n, "rate": rate, "target_p50_added_ms": TARGET_P50_MS}
    for name in ("kafka", "http"):
        got = samples[name]
        transport = [s["e2e"] - s["pipeline"] for s in got if s["pipeline"] == s["pipeline"]]
        report[name] = {
            "ok": len(got),
            "errors": len(errors[name]),
            "first_error": errors[name][0] if errors[name] else None,
            "e2e_ms": _pct([s["e2e"] for s in got]),
            "transport_ms": _pct(transport),
        }
        if name == "http":
            report[name]["post_ms"] = _pct([s["post"] for s in got])
    report["added_ms"] = _diff(report["http"]["e2e_ms"], report["kafka"]["e2e_ms"])
    report["added_transport_ms"] = _diff(report["http"]["transport_ms"], report["kafka"]["transport_ms"])
    return report


def format_report(r: dict[str, Any]) -> str:
    def row(label: str, p: dict[str, Any]) -> str:
        return f"  {label:<22} p50 {p['p50']!s:>8}  p95 {p['p95']!s:>8}  p99 {p['p99']!s:>8}  (ms)"

    lines = [f"{r['n']} tasks per path at {r['rate']:g} tasks/s"]
    for name, label in (("kafka", "GatewayClient (Kafka)"), ("http", "HTTP ingress")):
        p = r[name]
        err = f", {p['errors']} errors (first: {p['first_error']})" if p["errors"] else ""
        lines.append(f"{label}: {p['ok']} plans{err}")
        lines.append(row("end to end", p["e2e_ms"]))
        lines.append(row("outside the pipeline", p["transport_ms"]))
        if "post_ms" in p:
            lines.append(row("POST (202)", p["post_ms"]))
    # differences of percentiles (the paths carry different tasks): below 0 where HTTP's was the lower
    lines.append(row("HTTP - Kafka, e2e", r["added_ms"]))
    lines.append(row("HTTP - Kafka, outside", r["added_transport_ms"]))
    lines.append("  (each row: HTTP's percentile minus Kafka's; negative where HTTP's was lower, run-to-run noise)")
    added = r["added_transport_ms"]["p50"]
    if added is not None:
        verdict = "within" if added <= r["target_p50_added_ms"] else "over"
        lines.append(
            f"  p50 added outside the pipeline: {added} ms, {verdict} the {r['target_p50_added_ms']:g} ms target"
        )
    return "\n".join(lines)
