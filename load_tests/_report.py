"""What kafka_load.py and http_load.py share: task texts, percentiles, the JSON report and the plot.

Standard library only (matplotlib is imported when a plot is drawn: ``pip install 'aos-gateway[load]'``).
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

INSTALL_HINT = "matplotlib is not installed: run `pip install 'aos-gateway[load]'` (or pass --no-plot)"

_TEMPLATES = (
    "What's the weather in city number {i} tomorrow?",
    "Find the latest news about company {i}.",
    "Write an SQL query listing the customers with id above {i}.",
    "What is {i} * 7?",
    "Convert {i} US dollars to euros.",
    "Summarise the report numbered {i} in three sentences.",
    "Translate 'good morning number {i}' into French.",
    "Show me flights to city {i} next week and convert the list into a PDF file.",
)


PENDING = "pending"  # sent, not answered yet when the run was interrupted


@dataclass
class Sample:
    """One task: when it was sent (seconds from the start), and how it ended."""

    sent_s: float
    latency_ms: float | None  # None: no answer (missing) or refused
    outcome: str  # e.g. PLANNED, NO_MATCH, SUCCEEDED, FAILED, dead_letter, missing, "POST 503"


def bad_argument(prog: str, message: str) -> NoReturn:
    """A bad argument: one line on stderr and exit status 2, before any load is sent."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def check_out(prog: str, out: Path, option: str = "--out") -> None:
    """``out`` must be a folder that exists or can be created, and one a file can be written to:
    checked before the load, so a long run never ends unable to write its report."""
    try:
        if out.exists() and not out.is_dir():
            bad_argument(prog, f"{option} {out}: not a folder")
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        bad_argument(prog, f"{option} {out}: cannot write there ({exc.strerror or exc})")


def read_texts(path: Path) -> list[str]:
    """The texts of a file (one per line, or JSON lines with "text"); ValueError, one line, when it
    cannot be read or holds none."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    base: list[str] = []
    for no, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{no}: not a JSON object ({exc.msg})") from None
            line = str(obj.get("text", "") if isinstance(obj, dict) else "").strip()
        if line:
            base.append(line)
    if not base:
        raise ValueError(f"{path}: no texts")
    return base


def check_texts(prog: str, path: Path | None, option: str = "--texts") -> None:
    """``--texts``: a readable file holding at least one text; checked before the load."""
    if path is None:
        return
    try:
        read_texts(path)
    except ValueError as exc:
        bad_argument(prog, f"{option} {exc}")


def texts(path: Path | None, n: int) -> list[str]:
    """``n`` task texts: from a file (one per line, or JSON lines with "text"), cycled, each made unique
    by a suffix (the perceive stage caches encodings by text); or unique synthetic ones."""
    if path is None:
        return [_TEMPLATES[i % len(_TEMPLATES)].format(i=i) for i in range(n)]
    try:
        base = read_texts(path)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    return [base[i % len(base)] + ("" if i < len(base) else f" (#{i // len(base)})") for i in range(n)]


def percentiles(values: Iterable[float]) -> dict[str, float | None]:
    """p50/p95/p99/mean/max (linear interpolation, like numpy's default); None when empty."""
    xs = sorted(values)
    if not xs:
        return {"p50": None, "p95": None, "p99": None, "mean": None, "max": None}

    def pct(q: float) -> float:
        k = (len(xs) - 1) * q / 100
        lo, hi = math.floor(k), math.ceil(k)
        return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)

    out: dict[str, float | None] = {f"p{q}": round(pct(q), 1) for q in (50, 95, 99)}
    out["mean"] = round(sum(xs) / len(xs), 1)
    out["max"] = round(xs[-1], 1)
    return out


def summarize(
    scenario: str,
    samples: Sequence[Sample],
    *,
    rate: float,
    duration: float,
    send_span_s: float,
    ok: set[str],
    success: set[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The report: counts by outcome, achieved rates, latency of the answered tasks.

    ``ok``: the outcomes that answer a task (a plan's or a result's status); ``success``: those of
    them that count as ``ok`` in the report (PLANNED, SUCCEEDED; default: every answer). A task sent
    but still unanswered when the run was interrupted is ``pending``: neither missing nor an error."""
    success = ok if success is None else success & ok
    outcomes: dict[str, int] = {}
    for s in samples:
        outcomes[s.outcome] = outcomes.get(s.outcome, 0) + 1
    answered = [s for s in samples if s.outcome in ok and s.latency_ms is not None]
    last = max((s.sent_s + (s.latency_ms or 0) / 1000 for s in answered), default=0.0)
    missing, pending = outcomes.get("missing", 0), outcomes.get(PENDING, 0)
    return {
        "scenario": scenario,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "target_rate_per_s": rate,
        "duration_s": duration,
        "sent": len(samples),
        "send_rate_per_s": round(len(samples) / send_span_s, 2) if send_span_s > 0 else None,
        "answered": len(answered),
        "answered_by_status": {o: n for o, n in sorted(outcomes.items()) if o in ok},
        "ok": sum(n for o, n in outcomes.items() if o in success),
        "ok_means": sorted(success),
        "missing": missing,
        "pending": pending,
        "errors": len(samples) - len(answered) - missing - pending,
        "outcomes": dict(sorted(outcomes.items())),
        "throughput_per_s": round(len(answered) / last, 2) if last > 0 else None,
        "latency_ms": percentiles(s.latency_ms for s in answered if s.latency_ms is not None),
        **(extra or {}),
        "samples": [
            [round(s.sent_s, 4), None if s.latency_ms is None else round(s.latency_ms, 2), s.outcome] for s in samples
        ],
    }


def require_matplotlib() -> None:
    """Fail before any load is sent, not after, when the plot cannot be drawn."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise SystemExit(INSTALL_HINT) from None


def write(report: dict[str, Any], out: Path, stem: str, plot: bool) -> list[Path]:
    """``<out>/<stem>.json`` and, with ``plot``, ``<out>/<stem>.png``; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{stem}.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    written = [path]
    if plot:
        written.append(draw(report, out / f"{stem}.png"))
    return written


def save(prog: str, report: dict[str, Any], out: Path, stem: str, plot: bool) -> tuple[list[Path], bool]:
    """:func:`write`, and when ``out`` has become unwritable since it was checked (removed, disk
    full), the same into the temporary folder rather than losing the measurements: (paths, saved
    where asked)."""
    try:
        return write(report, out, stem, plot), True
    except OSError as exc:
        tmp = Path(tempfile.gettempdir())
        print(f"{prog}: error: cannot write to {out} ({exc.strerror or exc}); writing to {tmp}", file=sys.stderr)
        return write(report, tmp, stem, plot), False


def draw(report: dict[str, Any], path: Path) -> Path:
    """Latency over time (each task, and p50/p95 per second) above a latency histogram."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit(INSTALL_HINT) from None
    rows = report["samples"]
    done = [(t, lat) for t, lat, _ in rows if lat is not None]
    lost = [t for t, lat, _ in rows if lat is None]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), height_ratios=(3, 2))
    if done:
        top.scatter([t for t, _ in done], [lat for _, lat in done], s=6, alpha=0.5, label="task")
        per_s: dict[int, list[float]] = {}
        for t, lat in done:
            per_s.setdefault(int(t), []).append(lat)
        secs = sorted(per_s)
        for q, style in ((50, "-"), (95, "--")):
            top.plot(
                [s + 0.5 for s in secs],
                [percentiles(per_s[s])[f"p{q}"] for s in secs],
                style,
                color="black",
                label=f"p{q} per second",
            )
        bottom.hist([lat for _, lat in done], bins=min(60, max(10, len(done) // 10)))
    if lost:
        ymax = max((lat for _, lat in done), default=1.0)
        top.scatter(lost, [ymax] * len(lost), marker="x", color="red", label="no answer / error")
    lat = report["latency_ms"]
    top.set_title(
        f"{report['scenario']}: {report['sent']} sent at {report['target_rate_per_s']:g}/s, "
        f"{answered_text(report)}, {report['missing']} missing, {report['errors']} errors; "
        f"p50 {lat['p50']} ms, p95 {lat['p95']} ms, p99 {lat['p99']} ms",
        fontsize=9,
    )
    top.set_xlabel("sent at (s)")
    top.set_ylabel("latency (ms)")
    top.legend(fontsize=8, loc="upper left")
    bottom.set_xlabel("latency (ms)")
    bottom.set_ylabel("tasks")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def answered_text(report: dict[str, Any]) -> str:
    """ "answered 40 (SUCCEEDED 11, FAILED 29)": the answers by status, never one "ok" that hides failures."""
    by = report.get("answered_by_status") or {}
    return f"answered {report['answered']}" + (f" ({', '.join(f'{o} {n}' for o, n in by.items())})" if by else "")


def print_summary(report: dict[str, Any], paths: Sequence[Path]) -> None:
    lat = report["latency_ms"]
    pending = f", pending {report['pending']} (interrupted)" if report.get("pending") else ""
    print(
        f"{report['scenario']}: sent {report['sent']} ({report['send_rate_per_s']}/s), {answered_text(report)}, "
        f"missing {report['missing']}{pending}, errors {report['errors']}; "
        f"throughput {report['throughput_per_s']}/s; latency ms p50 {lat['p50']} p95 {lat['p95']} p99 {lat['p99']} "
        f"max {lat['max']}"
    )
    print(f"outcomes: {report['outcomes']}")
    for key in ("post_ms", "first_error"):
        if report.get(key):
            print(f"{key}: {report[key]}")
    for p in paths:
        print(f"wrote {p}", file=sys.stderr)
