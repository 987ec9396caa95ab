"""Ours vs semantic-router, side by side, on the same split, the same encoder and the same machine.

    .venv/bin/python load_tests/peer_compare.py [--limit N] [--json]

Runs ``aos eval matching ... --json`` (the main venv's ``aos``), then
``load_tests/peer_semantic_router.py`` with the peer venv's python (``scripts/peer-venv``), one
after the other so they never share the CPU, and prints both reports with the accuracy
difference and the latency ratio peer/ours. Each child's peak RSS is the kernel's figure for
that process (``wait4``), so both are measured alike. Standard library only: it imports neither
``aos_gateway`` nor semantic-router.

``aos`` is an editable install, so by default "ours" is the work tree as it is (uncommitted edits
included; the report says whether ``aos_gateway/`` was dirty). ``--ours-ref REF`` measures a
commit instead: ``git archive REF`` into a temporary directory, run there by the same venv's python.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets" / "metatool"
PEER_SCRIPT = ROOT / "load_tests" / "peer_semantic_router.py"
NA = "n/a"


@dataclass
class Run:
    """One child process: its command, its JSON report and what the driver measured around it."""

    cmd: list[str]
    report: dict[str, Any] = field(default_factory=dict)
    wall_s: float = math.nan
    peak_rss_mb: float = math.nan
    load_before: tuple[float, float, float] = (math.nan, math.nan, math.nan)
    load_after: tuple[float, float, float] = (math.nan, math.nan, math.nan)


def last_json_object(stdout: str) -> dict[str, Any]:
    """The report: the last stdout line that is a JSON object (progress goes to stderr)."""
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            obj = json.loads(line)
            if isinstance(obj, dict):
                return obj
    raise ValueError("no JSON report on stdout")


def _num(x: Any) -> float:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else math.nan


def ratios(ours: Mapping[str, Any], peer: Mapping[str, Any]) -> dict[str, float]:
    """Accuracy differences in points (ours − peer) and latency ratios peer / ours; nan when a side lacks it."""
    out: dict[str, float] = {}
    for key in ("top1", "r5", "mrr"):
        scale = 1.0 if key == "mrr" else 100.0
        out[f"{key}_diff"] = round((_num(ours.get(key)) - _num(peer.get(key))) * scale, 2)
    for key in ("p50_ms", "p95_ms", "p99_ms"):
        o, p = _num(ours.get(key)), _num(peer.get(key))
        out[f"{key}_ratio"] = round(p / o, 2) if o > 0 else math.nan
    return out


def _fmt(key: str, value: Any) -> str:
    x = _num(value)
    if math.isnan(x):
        return NA
    if key in ("top1", "r5"):
        return f"{x * 100:.1f}%"
    if key == "mrr":
        return f"{x:.3f}"
    if key.endswith("_ms"):
        return f"{x:.1f} ms"
    if key.endswith("_s"):
        return f"{x:.1f} s"
    if key.endswith("_mb"):
        return f"{x:.0f} MB"
    return f"{x:g}"


ROWS = (
    ("top-1", "top1"),
    ("R@5", "r5"),
    ("MRR", "mrr"),
    ("p50 per task", "p50_ms"),
    ("p95 per task", "p95_ms"),
    ("p99 per task", "p99_ms"),
    ("index build", "build_s"),
    ("no answer (None)", "nones"),
    ("peak RSS (process)", "peak_rss_mb"),
    ("wall time (process)", "wall_s"),
)


def table(columns: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    """A plain-text table: one row per metric, one column per system; ``n/a`` where a report lacks it."""
    head = ["", *(name for name, _ in columns)]
    body = [[label, *(_fmt(key, col.get(key)) for _, col in columns)] for label, key in ROWS]
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    lines = []
    for r in [head, *body]:
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def summary(ours: Mapping[str, Any], peer: Mapping[str, Any], label: str) -> str:
    """The comparison in two lines: accuracy difference in points and latency ratio peer/ours."""
    r = ratios(ours, peer)

    def pts(k: str) -> str:
        return NA if math.isnan(r[k]) else f"{r[k]:+.1f} pts"

    def times(k: str) -> str:
        return NA if math.isnan(r[k]) else f"{r[k]:.2f}x"

    return (
        f"{label} − peer: top-1 {pts('top1_diff')}, R@5 {pts('r5_diff')}, MRR {r['mrr_diff']:+.3f}\n"
        f"latency peer / {label}: p95 {times('p95_ms_ratio')}"
        + (f", p50 {times('p50_ms_ratio')}" if not math.isnan(r["p50_ms_ratio"]) else "")
    )


def columns(ours: Run, peer: Run) -> list[tuple[str, dict[str, Any]]]:
    """Our two modes and the peer; the driver's own wall time and RSS per process."""
    proc_o = {"wall_s": ours.wall_s, "peak_rss_mb": ours.peak_rss_mb}
    proc_p = {"wall_s": peer.wall_s, "peak_rss_mb": peer.peak_rss_mb}
    return [
        ("ours learned", {**ours.report.get("learned", {}), **proc_o}),
        ("ours zero-shot", {**ours.report.get("zero_shot", {}), **proc_o}),
        (f"semantic-router {peer.report.get('version', '')}".strip(), {**peer.report, **proc_p}),
    ]


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout.strip()


def git_state(ref: str | None) -> dict[str, Any]:
    """Which code "ours" is: a commit, or the work tree and whether ``aos_gateway/`` differs from HEAD."""
    try:
        if ref is not None:
            return {"ref": ref, "commit": _git("rev-parse", "--short", ref), "dirty": False}
        dirty = bool(_git("status", "--porcelain", "--", "aos_gateway"))
        return {"ref": "work tree", "commit": _git("rev-parse", "--short", "HEAD"), "dirty": dirty}
    except (OSError, subprocess.CalledProcessError):
        return {"ref": ref or "work tree", "commit": None, "dirty": None}


def export_ref(ref: str) -> Path:
    """``aos_gateway/`` and ``schemas/`` as committed at ``ref``, in a new temporary directory."""
    tar = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", ref, "aos_gateway", "schemas"],
        capture_output=True,
        check=True,
    ).stdout
    out = Path(tempfile.mkdtemp(prefix="aos-ours-"))
    with tarfile.open(fileobj=io.BytesIO(tar)) as tf:
        tf.extractall(out, filter="data")
    return out


def jsonable(obj: Any) -> Any:
    """``obj`` with every NaN as null: strict JSON has no NaN."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, Mapping):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    return obj


def run_child(cmd: list[str], env: Mapping[str, str], cwd: Path = ROOT) -> Run:
    """Run one child to its end; stderr passes through (progress), stdout holds the report."""
    run = Run(cmd)
    run.load_before = os.getloadavg()
    print(f"$ {' '.join(cmd)}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=dict(env), cwd=cwd)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage, not all children's
    proc.returncode = os.waitstatus_to_exitcode(status)
    run.wall_s = round(time.perf_counter() - t0, 1)
    run.load_after = os.getloadavg()
    run.peak_rss_mb = round(usage.ru_maxrss / 1024, 1)
    if proc.returncode != 0:
        raise SystemExit(f"peer_compare: {cmd[0]} exited with {proc.returncode}")
    run.report = last_json_object(out)
    return run


def bad_argument(message: str) -> NoReturn:
    """A bad argument: one line on stderr and exit status 2, before either side runs."""
    print(f"peer_compare: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def check_args(args: argparse.Namespace) -> None:
    """The data files, ``--aos`` and ``--json-out``, checked before the first (minutes long) run."""
    for opt in ("agents", "train", "test"):
        path: Path = getattr(args, opt)
        if not path.is_file() or not os.access(path, os.R_OK):
            bad_argument(f"--{opt} {path}: no such readable file")
    if args.limit is not None and args.limit <= 0:
        bad_argument("--limit must be > 0")
    # with --ours-ref, the python next to --aos runs the exported code
    exe = Path(args.aos) if args.ours_ref is None else Path(args.aos).parent / "python"
    if not (exe.is_file() and os.access(exe, os.X_OK)):
        bad_argument(f"--aos {args.aos}: no such executable {exe}")
    out: Path | None = args.json_out
    if out is not None:
        folder = out.parent
        if out.is_dir():
            bad_argument(f"--json-out {out}: a folder, not a file")
        if not folder.is_dir():
            bad_argument(f"--json-out {out}: no folder {folder}")
        if not os.access(folder, os.W_OK | os.X_OK) or (out.exists() and not os.access(out, os.W_OK)):
            bad_argument(f"--json-out {out}: cannot write there")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--agents", type=Path, default=DATA / "agents.jsonl")
    ap.add_argument("--train", type=Path, default=DATA / "train.jsonl")
    ap.add_argument("--test", type=Path, default=DATA / "dev.jsonl")
    ap.add_argument("--limit", type=int, default=None, help="only the first N train and test tasks (a quick run)")
    ap.add_argument("--aos", default=str(ROOT / ".venv" / "bin" / "aos"))
    ap.add_argument("--ours-ref", default=None, help="measure this commit of ours, not the work tree (e.g. HEAD)")
    ap.add_argument("--peer-python", default=str(ROOT / ".venv-peer" / "bin" / "python"))
    ap.add_argument("--peer-arg", action="append", default=[], help="passed to the peer script (repeatable)")
    ap.add_argument("--json", action="store_true", help="print both reports and the ratios as one JSON object")
    ap.add_argument("--json-out", type=Path, default=None, help="also write that JSON object to this file")
    args = ap.parse_args(argv)
    check_args(args)
    if not Path(args.peer_python).exists():
        raise SystemExit(f"peer_compare: {args.peer_python} is missing: run scripts/peer-venv")

    data = ["--agents", str(args.agents), "--train", str(args.train), "--test", str(args.test)]
    if args.limit is not None:
        data += ["--limit", str(args.limit)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    eval_args = ["eval", "matching", *data, "--json"]
    code = git_state(args.ours_ref)
    if args.ours_ref is None:
        ours = run_child([args.aos, *eval_args], env)
    else:
        src = export_ref(args.ours_ref)
        try:  # the same venv's python, the exported code first on the path (and as cwd, so not the work tree)
            python = str(Path(args.aos).parent / "python")
            ours = run_child([python, "-m", "aos_gateway.cli.main", *eval_args], {**env, "PYTHONPATH": str(src)}, src)
        finally:
            shutil.rmtree(src, ignore_errors=True)
    peer = run_child([args.peer_python, str(PEER_SCRIPT), *data, *args.peer_arg], env)

    out: dict[str, Any] = {
        "ours": {**ours.report, "wall_s": ours.wall_s, "peak_rss_mb": ours.peak_rss_mb},
        "peer": {**peer.report, "wall_s": peer.wall_s, "peak_rss_mb_process": peer.peak_rss_mb},
        "learned_vs_peer": ratios(ours.report.get("learned", {}), peer.report),
        "zero_shot_vs_peer": ratios(ours.report.get("zero_shot", {}), peer.report),
        "loadavg": {"ours": [ours.load_before, ours.load_after], "peer": [peer.load_before, peer.load_after]},
        "ours_code": code,
        "env": {
            k: os.environ[k]
            for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "AOS_PERCEPTION__TORCH_THREADS")
            if k in os.environ
        },
        "commands": [ours.cmd, peer.cmd],
    }
    unwritten = False
    if args.json_out is not None:
        try:
            args.json_out.write_text(json.dumps(jsonable(out), allow_nan=False) + "\n", encoding="utf-8")
        except OSError as exc:  # checked before the runs, unwritable since: the report goes to stdout instead
            print(f"peer_compare: error: cannot write {args.json_out} ({exc.strerror or exc})", file=sys.stderr)
            unwritten = True
    if args.json or unwritten:
        print(json.dumps(jsonable(out), allow_nan=False))
        return 1 if unwritten else 0
    rep = peer.report
    cfg = rep.get("config", {})
    print(f"{rep.get('agents')} agents, {rep.get('train')} training tasks, {rep.get('test')} test tasks, batch 1")
    dirty = " + uncommitted edits in aos_gateway/" if code["dirty"] else ""
    print(f"ours: {code['ref']} at {code['commit']}{dirty}")
    if out["env"]:
        print("environment (both sides): " + " ".join(f"{k}={v}" for k, v in out["env"].items()))
    print(table(columns(ours, peer)))
    print()
    print(summary(ours.report.get("learned", {}), rep, "ours learned"))
    print(summary(ours.report.get("zero_shot", {}), rep, "ours zero-shot"))
    print(
        f"peer config: {cfg.get('router')} + {cfg.get('index')}, top_k={cfg.get('top_k')}, "
        f"aggregation={cfg.get('aggregation')} ({cfg.get('chosen_by')}), no threshold; "
        f"{rep.get('fewer_than_5_ranked')} tasks with < 5 ranked routes"
    )
    load = [f"{name} {r.load_before[0]:.2f}/{r.load_after[0]:.2f}" for name, r in (("ours", ours), ("peer", peer))]
    print(f"load average (1 min) before/after: {', '.join(load)} on {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
