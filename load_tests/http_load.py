"""Load on the HTTP ingress (``aos serve``): POST /v1/tasks at a fixed rate, then long-poll each answer.

    python load_tests/http_load.py --url http://127.0.0.1:8080 --api-key KEY --rate 50 --duration 60

Open loop and asynchronous (httpx): a task is POSTed every 1/rate seconds whatever the answers
do; each one then long-polls ``GET /v1/tasks/{id}?wait=...`` until its plan (or, with
``--until result``, the execution's final result) is there. Latency is POST sent -> answer
received, as a client sees it; ``post_ms`` is the 202 alone (the ingress answers once Kafka has
the task). No answer within ``--timeout`` seconds: *missing*; a refused POST or GET (4xx/5xx,
a connection error) or a dead-lettered task: an *error*, by kind in ``outcomes``. ``ok`` in the
report counts the tasks that got what they asked for (PLANNED; with ``--until result``, SUCCEEDED);
every answer is listed by status. The ingress is probed (``GET /healthz``) before the load: an
unreachable URL is one error line and exit status 1.

One process drives a few hundred requests per second; for more, run several side by side
(their reports add up). Writes ``<out>/http_load-<time>.json`` and a ``.png`` (latency over
time, histogram; needs ``pip install 'aos-gateway[load]'``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import _report
from _report import Sample

ANSWERS = {"plan": {"PLANNED", "NO_MATCH", "REJECTED"}, "result": {"SUCCEEDED", "PARTIAL", "FAILED"}}
SUCCESS = {"plan": {"PLANNED"}, "result": {"SUCCEEDED"}}


class Unreachable(Exception):
    """The ingress does not answer at all (refused, unknown host, timed out): no load can be measured."""

    def __init__(self, url: str, cause: BaseException) -> None:
        super().__init__(f"cannot reach {url} ({type(cause).__name__}: {cause}): is `aos serve` running?")


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="http_load.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8080", help="the ingress (default http://127.0.0.1:8080)")
    p.add_argument(
        "--api-key",
        default=os.environ.get("AOS_LOAD_API_KEY"),
        help="API key (default $AOS_LOAD_API_KEY; none: no key)",
    )
    p.add_argument("--rate", type=float, default=10.0, help="tasks per second (default 10)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of load (default 20)")
    p.add_argument("--until", choices=["plan", "result"], default="plan", help="what answers a task (default plan)")
    p.add_argument("--timeout", type=float, default=60.0, help="a task with no answer after this long is missing")
    p.add_argument("--texts", type=Path, default=None, help="task texts: one per line, or JSON lines with 'text'")
    p.add_argument("--warmup", type=int, default=5, help="tasks sent and answered before the clock starts (default 5)")
    p.add_argument("--max-connections", type=int, default=256, help="HTTP connections at most (default 256)")
    p.add_argument("--out", type=Path, default=Path("."), help="folder for the report and plot (default .)")
    p.add_argument("--no-plot", action="store_true", help="write the JSON report only (no matplotlib needed)")
    args = p.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0 or args.timeout <= 0 or args.max_connections <= 0 or args.warmup < 0:
        p.error("--rate, --duration, --timeout and --max-connections must be > 0 (and --warmup >= 0)")
    url = urlsplit(args.url)
    if url.scheme not in ("http", "https") or not url.netloc:
        _report.bad_argument(p.prog, f"--url {args.url}: not an http:// or https:// URL")
    _report.check_texts(p.prog, args.texts)
    _report.check_out(p.prog, args.out)
    return args


async def run(
    url: str,
    api_key: str | None,
    rate: float,
    duration: float,
    until: str,
    timeout: float,
    texts: list[str],
    max_connections: int = 256,
    transport: Any = None,
    warmup: int = 0,
) -> dict[str, Any]:
    """The load; ``transport`` lets tests drive an app in-process (httpx.ASGITransport)."""
    import httpx

    n = len(texts)
    samples: list[Sample | None] = [None] * n
    post_ms: list[float] = []
    first_error: list[str] = []
    headers = {"X-API-Key": api_key} if api_key else {}
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)

    def failed(i: int, sent_s: float, outcome: str, detail: str) -> None:
        samples[i] = Sample(sent_s, None, outcome)
        if not first_error:
            first_error.append(f"{outcome}: {detail[:300]}")

    async with httpx.AsyncClient(
        base_url=url, headers=headers, timeout=timeout + 30, limits=limits, transport=transport
    ) as client:

        async def one(i: int, sent_s: float) -> None:
            t = time.perf_counter()
            try:
                r = await client.post("/v1/tasks", json={"text": texts[i]})
            except httpx.HTTPError as exc:
                return failed(i, sent_s, f"POST {type(exc).__name__}", str(exc))
            if r.status_code != 202:
                return failed(i, sent_s, f"POST {r.status_code}", r.text)
            post_ms.append((time.perf_counter() - t) * 1000)
            tid = r.json()["task_id"]
            deadline = t + timeout
            while True:
                left = deadline - time.perf_counter()
                try:
                    g = await client.get(
                        f"/v1/tasks/{tid}", params={"wait": round(max(left, 0.001), 3), "until": until}
                    )
                except httpx.HTTPError as exc:
                    return failed(i, sent_s, f"GET {type(exc).__name__}", str(exc))
                if g.status_code != 200:
                    return failed(i, sent_s, f"GET {g.status_code}", g.text)
                body = g.json()
                record = body.get(until)
                if record is not None:
                    samples[i] = Sample(sent_s, (time.perf_counter() - t) * 1000, str(record["status"]))
                    return
                if body.get("status") == "failed":
                    return failed(i, sent_s, "dead_letter", str(body.get("error")))
                if time.perf_counter() >= deadline:
                    samples[i] = Sample(sent_s, None, "missing")
                    return

        try:  # any answer (even 404 or 503) is a server there; none at all stops here, before the load
            await client.get("/healthz", timeout=10.0)
        except httpx.TransportError as exc:
            raise Unreachable(url, exc) from None
        if warmup:  # connections, and the worker's first batches, before the clock starts
            for i in range(warmup):
                try:
                    r = await client.post("/v1/tasks", json={"text": f"warm-up {i}: what is {i} + 1?"})
                    if r.status_code == 202:
                        await client.get(f"/v1/tasks/{r.json()['task_id']}", params={"wait": timeout, "until": until})
                except httpx.TransportError as exc:
                    raise Unreachable(url, exc) from None
        t0 = time.perf_counter()
        last_report = t0
        pending: list[asyncio.Task[None]] = []
        for i in range(n):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            pending.append(asyncio.create_task(one(i, time.perf_counter() - t0)))
            if time.perf_counter() - last_report >= 5:
                last_report = time.perf_counter()
                answered = sum(1 for s in samples if s is not None)
                print(f"  {last_report - t0:5.1f}s: sent {i + 1}/{n}, finished {answered}", file=sys.stderr)
        send_span = time.perf_counter() - t0
        await asyncio.gather(*pending)
    done = [s if s is not None else Sample(0.0, None, "missing") for s in samples]
    return _report.summarize(
        f"http_load (until {until})",
        done,
        rate=rate,
        duration=duration,
        send_span_s=send_span,
        ok=ANSWERS[until],
        success=SUCCESS[until],
        extra={
            "url": url,
            "post_ms": _report.percentiles(post_ms),
            "first_error": first_error[0] if first_error else None,
        },
    )


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    if not args.no_plot:
        _report.require_matplotlib()
    try:
        import httpx
    except ImportError:
        raise SystemExit("httpx is not installed: run `pip install httpx` (it comes with aos-gateway)") from None
    texts = _report.texts(args.texts, max(1, round(args.rate * args.duration)))
    print(f"http_load: {len(texts)} tasks at {args.rate:g}/s to {args.url}", file=sys.stderr)
    try:
        report = asyncio.run(
            run(
                args.url,
                args.api_key,
                args.rate,
                args.duration,
                args.until,
                args.timeout,
                texts,
                args.max_connections,
                warmup=args.warmup,
            )
        )
    except Unreachable as exc:
        print(f"http_load: error: {exc}", file=sys.stderr)
        return 1
    except httpx.HTTPError as exc:  # whatever the per-task handling did not expect: one line, no traceback
        print(f"http_load: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("http_load: interrupted; no report", file=sys.stderr)
        return 130
    paths, where_asked = _report.save(
        "http_load", report, args.out, time.strftime("http_load-%Y%m%d-%H%M%S"), not args.no_plot
    )
    _report.print_summary(report, paths)
    if not where_asked:
        return 1
    return 0 if report["missing"] == 0 and report["errors"] == 0 else 3


if __name__ == "__main__":
    raise SystemExit(main())
