"""The ``aos`` command line.

Errors are one line on stderr and a non-zero exit: 2 for a bad argument, 1 for a failure. A
command that finds a bad argument after parsing (an empty tenant, a folder that does not exist)
raises ``argparse.ArgumentError(None, message)``: it is reported as argparse reports its own.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from aos_gateway import __version__
from aos_gateway.cli import argtypes
from aos_gateway.errors import AosError, ConfigError, MediaError, MissingExtraError

Handler = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="aos", description="AOS Gateway: route tasks to AI agents over Kafka.")
    parser.add_argument("--version", action="version", version=f"aos-gateway {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    dev = sub.add_parser("dev", help="the local stack (Kafka, PostgreSQL, QuestDB, Kafka Connect)")
    dsub = dev.add_subparsers(dest="action", required=True, parser_class=_Parser)
    for name, hlp in (
        ("up", "start the stack (idempotent); waits until every part is ready"),
        ("down", "stop the stack (data is kept under .aos/)"),
        ("status", "each part, its address and health"),
        ("prepare", "download and install what the stack needs, start nothing"),
    ):
        p = dsub.add_parser(name, help=hlp)
        p.add_argument("--json", action="store_true")
        p.set_defaults(handler=_cmd_dev)

    tp = sub.add_parser("topics", help="the topic catalog")
    tsub = tp.add_subparsers(dest="action", required=True, parser_class=_Parser)
    tsub.add_parser("create", help="create missing topics (idempotent)").set_defaults(handler=_cmd_topics)
    tsub.add_parser("list", help="the catalog and which topics exist").set_defaults(handler=_cmd_topics)

    ag = sub.add_parser("agents", help="the agent registry")
    asub = ag.add_subparsers(dest="action", required=True, parser_class=_Parser)
    reg = asub.add_parser("register", help="register agent cards from a JSON-lines file")
    reg.add_argument("file", type=argtypes.existing_file)
    reg.add_argument(
        "--tenant", type=argtypes.tenant, default=None, help="owner of the cards (default: the file's, else public)"
    )
    reg.add_argument("--wait", action="store_true", help="wait until the registry has stored every card")
    reg.add_argument("--timeout", type=argtypes.positive_float, default=60.0)
    reg.set_defaults(handler=_cmd_agents)
    ls = asub.add_parser("list", help="the registered agents (from the registry topic)")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=_cmd_agents)
    dr = asub.add_parser("deregister", help="remove agents (tombstones on the registry topic)")
    dr.add_argument("agent_ids", nargs="+")
    dr.set_defaults(handler=_cmd_agents)
    hi = asub.add_parser("history", help="every stored version of an agent's card (PostgreSQL)")
    hi.add_argument("agent")
    hi.add_argument("--json", action="store_true")
    hi.set_defaults(handler=_cmd_agents)
    ar = asub.add_parser("run", help="serve agents written with the SDK (MODULE:ATTRIBUTE) until Ctrl-C")
    ar.add_argument("target", metavar="MODULE:AGENT", help="e.g. aos_gateway.agents.reference:all_agents")
    ar.add_argument("--keep-registered", action="store_true", help="do not deregister the cards on exit")
    ar.add_argument(
        "--detach",
        action="store_true",
        help="run in the background (log and pid under the stack home; stopped by `aos dev down` or `aos agents stop`)",
    )
    st = asub.add_parser("stop", help="stop agents started with `aos agents run --detach`")
    st.set_defaults(handler=_cmd_agents_run)
    ar.set_defaults(handler=_cmd_agents_run)

    sb = sub.add_parser("submit", help="submit a task: text, an image and/or an audio clip")
    sb.add_argument("--text", default=None)
    sb.add_argument(
        "--image",
        default=None,
        metavar="FILE|URL",
        help="an image: a file (inline when small, else by reference) or an http(s):// URL the worker fetches",
    )
    sb.add_argument(
        "--audio", default=None, metavar="FILE|URL", help="a speech clip (WAV, FLAC, OGG, MP3): a file or a URL"
    )
    sb.add_argument("--tenant", type=argtypes.tenant, default=None, help="the task's tenant (default: AOS_TENANT)")
    sb.add_argument("--require", action="append", default=[], metavar="CAPABILITY")
    # the same limits as the HTTP ingress (aos_gateway/ingress/tasks.py TaskIn): a task the worker would refuse
    sb.add_argument("--max-cost", type=argtypes.non_negative_float, default=None)
    sb.add_argument("--max-latency-ms", type=argtypes.int_between(0, 2**31 - 1, "latency in ms"), default=None)
    sb.add_argument("--top-k", type=argtypes.int_between(1, 100, "top-k"), default=None, help="candidates (1..100)")
    sb.add_argument("--wait", action="store_true", help="wait for the plan and print it")
    sb.add_argument("--result", action="store_true", help="also wait for the execution's final result (aos.results.v1)")
    sb.add_argument("--timeout", type=argtypes.positive_float, default=30.0)
    sb.add_argument("--json", action="store_true")
    sb.set_defaults(handler=_cmd_submit)

    rs = sub.add_parser("results", help="plans (or, with --executions, execution results) on the result topics")
    rs.add_argument("--executions", action="store_true", help="final execution results from aos.results.v1")
    rs.add_argument("--follow", action="store_true", help="keep printing new plans")
    rs.add_argument("--from-beginning", action="store_true")
    rs.add_argument("--task", metavar="ID", default=None, help="only this task (its id or the id's first characters)")
    rs.add_argument("--tenant", type=argtypes.tenant, default=None, help="only this tenant's")
    rs.add_argument(
        "--status",
        default=None,
        help="only this status: PLANNED, NO_MATCH, REJECTED (with --executions: SUCCEEDED, PARTIAL, FAILED)",
    )
    rs.add_argument(
        "--last", type=argtypes.positive_int, default=None, metavar="N", help="only the newest N (not with --follow)"
    )
    rs.add_argument("--json", action="store_true")
    rs.set_defaults(handler=_cmd_results)

    wk = sub.add_parser("worker", help="run the Faust worker (all stages)")
    wk.add_argument("-l", "--loglevel", default="warn", choices=["crit", "error", "warn", "info", "debug"])
    how = wk.add_mutually_exclusive_group()
    how.add_argument(
        "--detach", action="store_true", help="run in the background (log in <stack.home>/worker.log); idempotent"
    )
    how.add_argument("--stop", action="store_true", help="stop a detached worker")
    how.add_argument("--status", action="store_true", help="whether a detached worker runs (exit 1 if not)")
    wk.set_defaults(handler=_cmd_worker)

    dl = sub.add_parser("deadletter", help="events that a stage could not process")
    dsub2 = dl.add_subparsers(dest="action", required=True, parser_class=_Parser)
    dls = dsub2.add_parser("list")
    dls.add_argument("--stage", default=None)
    dls.add_argument("--limit", type=argtypes.non_negative_int, default=50, help="show the last N (default 50; 0: all)")
    dls.add_argument("--json", action="store_true")
    dls.set_defaults(handler=_cmd_deadletter)
    dlr = dsub2.add_parser("replay", help="send dead-lettered events back to their source topic")
    dlr.add_argument("ids", nargs="*", help="dead-letter ids (default: all, with --all)")
    dlr.add_argument("--stage", default=None)
    dlr.add_argument("--all", action="store_true")
    dlr.set_defaults(handler=_cmd_deadletter)

    bn = sub.add_parser("bench", help="benchmarks")
    bsub = bn.add_subparsers(dest="action", required=True, parser_class=_Parser)
    bp = bsub.add_parser("pipeline", help="open-loop load through the real pipeline")
    bp.add_argument("--rate", type=argtypes.positive_float, default=50.0, help="tasks per second")
    bp.add_argument("--duration", type=argtypes.positive_float, default=30.0, help="seconds of load")
    bp.add_argument(
        "--drain", type=argtypes.positive_float, default=30.0, help="give up after this many seconds without a new plan"
    )
    bp.add_argument("--json", action="store_true")
    bp.set_defaults(handler=_cmd_bench)
    be = bsub.add_parser("encoder", help="raw text-encoder throughput (the pipeline's ceiling)")
    be.add_argument("--n", type=argtypes.positive_int, default=512)
    be.add_argument("--json", action="store_true")
    be.set_defaults(handler=_cmd_bench)
    bi = bsub.add_parser("index", help="capability index backends: build time, memory, latency, recall@10")
    bi.add_argument("--n", type=argtypes.positive_int, default=100_000, help="synthetic agents (384 dims)")
    bi.add_argument(
        "--queries", type=argtypes.positive_int, default=500, help="filtered queries, searched one at a time"
    )
    bi.add_argument(
        "--seed", type=argtypes.non_negative_int, default=0, help="seed of the agents (the queries use seed + 1)"
    )
    bi.add_argument(
        "--per-cluster",
        type=argtypes.positive_int,
        default=100,
        help="agents around each centre (similar cards); default 100",
    )
    bi.add_argument(
        "--query-seed",
        type=argtypes.non_negative_int,
        default=None,
        help="seed of the queries alone (a query set not tuned on)",
    )
    bi.add_argument(
        "--data",
        choices=["flat", "graded"],
        default="flat",
        help="agent vectors: flat (independent clusters; default) or graded (clusters within domains within areas)",
    )
    bi.add_argument(
        "--backend", action="append", choices=["exact", "qdrant"], default=None, help="repeat for more (default: both)"
    )
    bi.add_argument("--json", action="store_true")
    bi.set_defaults(handler=_cmd_bench_index)
    bq = bsub.add_parser("perception", help="each modality through the perceive stage and the bare model")
    bq.add_argument(
        "--modality", action="append", choices=["text", "image", "audio"], default=None, help="repeat (default: all)"
    )
    bq.add_argument("--n", type=argtypes.positive_int, default=512, help="texts (images: n/8, at least 64)")
    bq.add_argument("--audio-n", type=argtypes.positive_int, default=24, help="speech clips (espeak-ng)")
    bq.add_argument(
        "--audio-backend",
        action="append",
        choices=["faster-whisper", "openai-whisper"],
        default=None,
        help="repeat (default: both, side by side)",
    )
    bq.add_argument("--json", action="store_true")
    bq.set_defaults(handler=_cmd_bench_perception)

    bw = bsub.add_parser(
        "network", help="network generator: GA vs exhaustive search, planning latency, two-agent tasks"
    )
    bw.add_argument(
        "--instances", type=argtypes.positive_int, default=30, help="random instances per size (n = 10, 25, 50)"
    )
    bw.add_argument(
        "--data",
        type=argtypes.existing_dir,
        default=None,
        help="a MetaTool-form folder (agents, train, multi_dev, dev .jsonl) for the two-agent tasks",
    )
    bw.add_argument(
        "--dev-limit", type=argtypes.non_negative_int, default=1000, help="one-agent dev tasks to check (0: none)"
    )
    bw.add_argument("--seed", type=int, default=0)
    bw.add_argument("--json", action="store_true")
    bw.set_defaults(handler=_cmd_bench_network)

    bl = bsub.add_parser(
        "learning",
        help="the live gateway's learning curve: dev top-1 after 0, 1k, 5k, 10k experiences (simulators); "
        "resets the learned state: needs --yes",
        description="Registers ~200 simulator agents and replaces the live gateway's learned state while it runs; "
        "at the end (or on an error, or Ctrl-C) it deregisters them, deletes the topics it created and resets "
        "the learned state again: what was learned before the run is not restored. Needs --yes.",
    )
    bl.add_argument(
        "--data",
        type=argtypes.existing_dir,
        default=None,
        help="MetaTool-form folder (default: ../shared/datasets/metatool)",
    )
    bl.add_argument(
        "--checkpoints",
        type=argtypes.ascending_counts,
        default=[0, 1000, 5000, 10000],
        help="experiences at which to measure, ascending (default: 0,1000,5000,10000)",
    )
    bl.add_argument("--dev-limit", type=argtypes.positive_int, default=500, help="dev tasks per measurement")
    bl.add_argument("--rate", type=argtypes.positive_float, default=30.0, help="training tasks per second")
    bl.add_argument(
        "--skill", type=argtypes.probability, default=0.95, help="a simulator's success rate on its own tasks"
    )
    bl.add_argument("--noise", type=argtypes.probability, default=0.05, help="its success rate on other tasks")
    bl.add_argument("--seed", type=int, default=0)
    bl.add_argument("--json", action="store_true")
    bl.add_argument(
        "--yes",
        action="store_true",
        help="required: the run replaces the learned state (reset, not restored, at the end) "
        "and registers simulator agents while it runs",
    )
    bl.set_defaults(handler=_cmd_bench_learning)

    bg = bsub.add_parser("ingest", help="experience records/s into each store, through the running worker")
    bg.add_argument("--n", type=argtypes.positive_int, default=20_000)
    bg.add_argument("--json", action="store_true")
    bg.set_defaults(handler=_cmd_bench_ingest)

    bk = bsub.add_parser(
        "sink",
        help="lag from a result on its topic to its row in PostgreSQL (Kafka Connect); writes synthetic results "
        "(tenant bench-sink-*) to aos.results.v1",
    )
    bk.add_argument("--n", type=argtypes.positive_int, default=1000)
    bk.add_argument("--rate", type=argtypes.positive_float, default=50.0, help="results per second")
    bk.add_argument("--json", action="store_true")
    bk.set_defaults(handler=_cmd_bench_sink)

    ev = sub.add_parser("eval", help="offline evaluations")
    esub = ev.add_subparsers(dest="action", required=True, parser_class=_Parser)
    em = esub.add_parser(
        "matching",
        help="routing accuracy: zero-shot, with card prototypes adapted to the training tasks (labels unused), "
        "and after learning from the labelled tasks",
    )
    em.add_argument("--agents", type=argtypes.existing_file, required=True, help="agent cards (agents.jsonl form)")
    em.add_argument("--train", type=argtypes.existing_file, required=True, help="past tasks with the right agent")
    em.add_argument("--test", type=argtypes.existing_file, required=True, help="tasks to measure on")
    em.add_argument(
        "--feedback",
        choices=["gold", "bandit"],
        default="gold",
        help="what is learned from: the right agent (gold), or only whether the chosen agent was right (bandit)",
    )
    em.add_argument(
        "--fallback",
        action="store_true",
        help="with --feedback bandit: a failed task is tried once more on its planned fallback agent (as plans do)",
    )
    em.add_argument(
        "--limit", type=argtypes.positive_int, default=None, help="use only the first N train and test tasks"
    )
    em.add_argument("--json", action="store_true")
    em.set_defaults(handler=_cmd_eval)

    ln = sub.add_parser("learn", help="learn from experience and publish the learned state")
    lsub = ln.add_subparsers(dest="action", required=True, parser_class=_Parser)
    lm = lsub.add_parser(
        "matching",
        help="learn the matcher's state from a labelled file or the experience history; publish it to aos.weights.v1",
    )
    lm.add_argument("--agents", type=argtypes.existing_file, default=None, help="agent cards (agents.jsonl form)")
    lm.add_argument(
        "--train",
        type=argtypes.existing_file,
        default=None,
        help="past tasks with the right agent (with --feedback none: tasks, their 'gold' unused and optional)",
    )
    lm.add_argument(
        "--feedback",
        choices=["gold", "bandit", "none"],
        default="gold",
        help="gold: the right agent is known; bandit: only whether the chosen one was right; none: no outcome, "
        "the card prototypes are adapted to the tasks",
    )
    lm.add_argument(
        "--fallback",
        action="store_true",
        help="with --feedback bandit: a failed task is tried once more on its planned fallback agent (as plans do)",
    )
    lm.add_argument("--from-experience", action="store_true", help="replay aos.experience.v1 instead of a file")
    lm.add_argument("--out", type=argtypes.new_file, default=None, help="also write the state to this file")
    lm.add_argument("--no-publish", action="store_true", help="do not send it to aos.weights.v1")
    lm.add_argument("--json", action="store_true")
    lm.set_defaults(handler=_cmd_learn)
    lq = lsub.add_parser(
        "network",
        help="learn the network quality predictor (reliability per agent and task cluster, edge synergy) from "
        "aos.experience.v1; publish it to aos.weights.v1",
    )
    lq.add_argument(
        "--clusters", type=argtypes.positive_int, default=16, help="task clusters (k-means over task vectors)"
    )
    lq.add_argument("--out", type=argtypes.new_file, default=None, help="also write the model to this file")
    lq.add_argument("--no-publish", action="store_true")
    lq.add_argument("--json", action="store_true")
    lq.set_defaults(handler=_cmd_learn_network)

    from aos_gateway.cli import experience_cmds

    experience_cmds.add_parser(sub, _cmd_experience, _Parser)
    from aos_gateway.cli import serve_cmds

    serve_cmds.add_parser(sub, serve_cmds.run, _Parser, bench=bsub)
    from aos_gateway.cli import connect_cmds

    connect_cmds.add_parser(sub, _cmd_connect, _Parser)
    from aos_gateway.cli import dashboard_cmds

    dashboard_cmds.add_parser(sub, _cmd_dashboard)

    dm = sub.add_parser("demo", help="register the MetaTool agents, submit sample tasks, print plans")
    dm.add_argument("--agents", type=argtypes.existing_file, default=None)
    dm.add_argument("--timeout", type=argtypes.positive_float, default=120.0)
    dm.set_defaults(handler=_cmd_demo)
    from aos_gateway.cli import models_cmds

    models_cmds.add_parser(sub, _cmd_models)
    from aos_gateway.cli import security_cmds

    security_cmds.add_parser(sub, _Parser)
    from aos_gateway.cli import settings_cmds

    settings_cmds.add_parser(sub)
    _record_progs(parser)
    return parser


def _record_progs(parser: argparse.ArgumentParser) -> None:
    """Each subcommand records its name (``aos submit``), so an argument left over after parsing is
    reported by the command it was given to."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                child.set_defaults(_prog=child.prog)
                _record_progs(child)


def _settings() -> Any:
    from aos_gateway.settings import get_settings

    return get_settings()


def _cmd_dev(args: argparse.Namespace) -> int:
    from aos_gateway.devstack import LocalStack

    stack = LocalStack(_settings())
    if args.action == "prepare":
        stack.prepare(_progress)
        return 0
    if args.action == "up":
        parts = stack.up(_progress)
        if stack.with_connect:  # the dashboards' sinks, so the stack is useful as it comes up
            from aos_gateway.cli import connect_cmds

            connect_cmds.apply(_settings(), None, stack.start_timeout_s, _progress)
            parts = stack.status()
    elif args.action == "down":
        from aos_gateway.cli import worker_proc

        worker_proc.stop(_settings(), _progress, name="agents")
        worker_proc.stop(_settings(), _progress)
        stack.down(_progress)
        parts = stack.status()
    else:
        parts = stack.status()
    if args.json:
        print(json.dumps([p.__dict__ for p in parts], indent=2))
    else:
        for p in parts:
            state = "healthy" if p.healthy else ("running" if p.running else "stopped")
            print(f"{p.name:<10} {p.address:<22} {state:<8} {p.detail}")
    if args.action in ("up", "status"):  # status: 1 when a part is stopped or unhealthy (a connector or task FAILED)
        return 0 if all(p.healthy for p in parts) else 1
    return 0


def _cmd_topics(args: argparse.Namespace) -> int:
    from aos_gateway.streams.kafka import ensure_topics, partition_counts
    from aos_gateway.topics import ALL

    s = _settings()
    if args.action == "create":
        created = ensure_topics(s.kafka, partitions=s.worker.topic_partitions)
        print(f"created {len(created)} topics" + (": " + ", ".join(created) if created else " (all existed)"))
        return 0
    have = partition_counts(s.kafka)
    for t in ALL:
        want = t.partitions_for(s.worker.topic_partitions)
        if t.name not in have:
            mark = f"missing ({want} p)"
        elif have[t.name] == want:
            mark = f"exists ({have[t.name]} p)"
        else:  # made before, or by hand: `aos topics create` does not change an existing topic
            mark = f"exists ({have[t.name]} p, catalog {want})"
        kind = "compacted" if t.compacted else f"retention {t.retention_ms // 86_400_000 if t.retention_ms else '-'}d"
        print(f"{t.name:<26} {mark:<22} {t.record:<34} {kind:<14} {t.doc}")
    return 0


def _cmd_agents(args: argparse.Namespace) -> int:
    from aos_gateway.cli import registry_cmds

    return registry_cmds.run(args, _settings(), _progress)


def _cmd_connect(args: argparse.Namespace) -> int:
    from aos_gateway.cli import connect_cmds

    return connect_cmds.run(args, _settings(), _progress)


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from aos_gateway.cli import dashboard_cmds

    return dashboard_cmds.run(args, _settings(), _progress)


def _cmd_experience(args: argparse.Namespace) -> int:
    from aos_gateway.cli import experience_cmds

    return experience_cmds.run(args, _settings(), _progress)


def _cmd_agents_run(args: argparse.Namespace) -> int:
    from aos_gateway.cli import agents_cmds

    return agents_cmds.run(args, _settings(), _progress)


def _cmd_submit(args: argparse.Namespace) -> int:
    from aos_gateway.client import GatewayClient

    s = _settings()
    if not (args.text or args.image or args.audio):
        print("aos submit: error: give --text, --image or --audio (or several)", file=sys.stderr)
        raise SystemExit(2)
    if args.text is not None and not args.text.strip() and not (args.image or args.audio):
        # the perceive stage would dead-letter it ("empty task"): say so here, as for an empty --text
        return _usage_error("aos submit", "--text is blank; give the task's words (or --image / --audio)")
    media: dict[str, Any] = {}
    for kind in ("image", "audio"):
        path = getattr(args, kind)
        if path and path.lower().startswith(("http://", "https://")):
            media[kind] = url_media_part(kind, path)  # the perceive stage fetches it (size and time capped)
        elif path:
            try:
                media[kind] = checked_media_part(kind, Path(path), s)
            except MediaError as exc:
                msg = str(exc).removeprefix(f"{kind}: ").removeprefix("media: ")
                return _usage_error("aos submit", f"--{kind} {path}: {msg}")
    wait = args.wait or args.result
    with GatewayClient(s) as client:
        if args.result:
            client.listen(executions=True)
        tid = client.submit(
            args.text,
            **media,
            listen=wait,
            tenant=args.tenant or s.tenant,
            required_capabilities=args.require,
            max_cost=args.max_cost,
            max_latency_ms=args.max_latency_ms,
            top_k=args.top_k,
        )
        client.flush()
        if not wait:
            print(json.dumps({"task_id": tid}) if args.json else tid)
            return 0
        plan = client.wait(tid, args.timeout)
        if not args.result:
            print(json.dumps(plan, indent=2, default=_jsonable) if args.json else format_plan(plan))
            return 0 if plan["status"] == "PLANNED" else 3
        print(format_plan(plan), file=sys.stderr if args.json else sys.stdout, flush=True)
        result = client.wait_execution(tid, args.timeout)
    print(
        json.dumps({"plan": plan, "result": result}, indent=2, default=_jsonable)
        if args.json
        else format_result(result)
    )
    return 0 if result["status"] == "SUCCEEDED" else 3


def url_media_part(kind: str, url: str) -> Any:
    """A media part by reference to an http(s) URL (a review: the URL was read as a path and came
    back "not found: https:/example.com/x.png"). The worker fetches and checks it."""
    import mimetypes
    from urllib.parse import urlsplit

    from aos_gateway.contracts.records import MediaPart

    parts = urlsplit(url)
    if not parts.netloc:
        raise argparse.ArgumentError(None, f"--{kind} {url}: not a URL (no host)")
    mime = mimetypes.guess_type(parts.path)[0] or ""
    if not mime.startswith(f"{kind}/"):
        mime = f"{kind}/*"  # unknown from the name: the perceive stage decodes what it gets
    return MediaPart(mime_type=mime, data=None, uri=url, size_bytes=0, sha256=None)


def checked_media_part(kind: str, path: Path, s: Any) -> Any:
    """The media part for a file given to ``aos submit --image/--audio``, checked as the perceive stage
    will check it (readable, not empty, an image that decodes or audio that ffmpeg reads), so a bad
    file is refused here rather than dead-lettered by the worker.

    Raises:
        MediaError: the file cannot be used. When this machine cannot decode it (no pillow, no
            ffmpeg), only the file itself is checked and the worker decides.
    """
    from aos_gateway.perception.media import media_part_from_file

    part = media_part_from_file(path, None, s.media)
    try:
        data = part["data"] if part["data"] is not None else path.read_bytes()
    except OSError as exc:
        raise MediaError(f"{kind}: cannot read {path}: {exc}") from exc
    try:
        if kind == "image":
            from aos_gateway.perception.image import decode_image

            decode_image(data, s.vision.max_pixels)
        else:
            from aos_gateway.perception.audio import decode_audio

            decode_audio(data, max_duration_s=s.audio.max_duration_s, silence_dbfs=s.audio.silence_dbfs)
    except (MissingExtraError, ConfigError):
        pass  # no decoder here: the perceive stage checks it
    return part


def _jsonable(o: Any) -> Any:
    return o.hex() if isinstance(o, bytes) else str(o)


def format_result(res: Any) -> str:
    """An execution result as a few readable lines."""
    took = res["finished_at"] - res["started_at"]
    lines = [f"task {res['task_id']}: {res['status']} in {took} ms" + (f" ({res['reason']})" if res["reason"] else "")]
    for st in res["steps"]:
        fb = ", on its fallback" if st["fallback_used"] else ""
        out = f": {st['output'][:200]!r}" if st["output"] else (f": {st['error']}" if st["error"] else "")
        if st["output"] and st["error"]:  # answered on its fallback: the planned agent's error too
            out += f" ({st['error']})"
        who = f"by {st['agent_id']} (" if st["agent_id"] else "(no agent ran, "
        lines.append(f"  {st['step_id']} {st['status']} {who}{st['attempts']} attempts{fb}){out}")
    if res["output"]:
        lines.append(f"  output: {res['output'][:500]}")
    return "\n".join(lines)


def format_plan(plan: Any) -> str:
    """A plan as a few readable lines."""
    head = f"task {plan['task_id']}: {plan['status']}"
    if plan["reason"]:
        head += f" ({plan['reason']})"
    lines = [head]
    if plan.get("transcript"):
        lines.append(f"  heard: {plan['transcript']!r}")
    for note in plan.get("notes", []):
        lines.append(f"  note: {note}")
    if plan.get("predicted_quality") is not None:
        lines.append(
            f"  {plan['planner']}: predicted quality {plan['predicted_quality']:.3f}, "
            f"estimated {plan['estimated_duration_ms']} ms"
        )
    for st in plan["steps"]:
        fb = f", fallback {st['fallback_agent_id']}" if st["fallback_agent_id"] else ""
        after = f", after {'+'.join(st['depends_on'])}" if st["depends_on"] else ""
        role = f" for {st['role']!r}" if st.get("role") else ""
        what = f"{st['agent_name']}{role} (score {st['score']:.3f}{after}{fb})"
        lines.append(f"  stage {st['stage']} {st['step_id']}: {what}")
    t = plan["timings"]
    if "submitted" in t and "planned" in t:
        lines.append(f"  planned in {t['planned'] - t['submitted']} ms")
    return "\n".join(lines)


def _cmd_results(args: argparse.Namespace) -> int:
    from aos_gateway.cli.results_filter import ResultFilter, select
    from aos_gateway.client import ResultReader, follow_results
    from aos_gateway.contracts.records import EXECUTION_RESULT
    from aos_gateway.topics import PLANS, RESULTS

    wanted = ResultFilter.from_args(args)
    if args.follow and args.last:
        raise argparse.ArgumentError(None, "--last N prints the newest N of what is there: not with --follow")
    s = _settings()
    fmt = format_result if args.executions else format_plan
    if args.follow:
        for plan in follow_results(s, from_beginning=args.from_beginning, executions=args.executions):
            if wanted.keeps(plan):
                print(json.dumps(plan, default=_jsonable) if args.json else fmt(plan), flush=True)
        return 0
    if args.executions:
        reader = ResultReader(s, RESULTS.name, from_beginning=True, record=EXECUTION_RESULT)
    else:
        reader = ResultReader(s, PLANS.name, from_beginning=True)
    try:
        plans = reader.next_batch(3.0)
        while True:
            more = reader.next_batch(1.0)
            if not more:
                break
            plans.extend(more)
    finally:
        reader.close()
    shown = select(plans, wanted)
    for plan in shown:
        print(json.dumps(plan, default=_jsonable) if args.json else fmt(plan))
    if not shown and (plans or not args.json):
        what = "execution results" if args.executions else "plans"
        _progress(
            f"results: none of the {len(plans)} {what} on the topic matches" if plans else f"results: no {what} yet"
        )
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    from aos_gateway.cli import worker_proc

    s = _settings()
    if args.status:
        pid = worker_proc.running_pid(s, "worker")
        log = worker_proc.log_file(s, "worker")
        print(f"worker: running (pid {pid}; log {log})" if pid else f"worker: not running in the background ({log})")
        return 0 if pid else 1
    if args.stop:
        if worker_proc.running_pid(s, "worker") is None:
            _progress("worker: none running in the background")
        worker_proc.stop(s, _progress)
        return 0
    if args.detach:
        worker_proc.start_detached(s, args.loglevel, _progress)
        return 0
    os.execvp(sys.executable, worker_proc.worker_argv(args.loglevel))


def _cmd_deadletter(args: argparse.Namespace) -> int:
    from aos_gateway.cli import deadletter_cmds

    return deadletter_cmds.run(args, _settings())


def _cmd_bench(args: argparse.Namespace) -> int:
    from aos_gateway.bench import pipeline as bench

    if args.action == "encoder":
        report = bench.encoder_ceiling(_settings(), args.n, progress=_progress)
    else:
        report = bench.run(_settings(), args.rate, args.duration, args.drain, _progress)
    print(json.dumps(report, indent=2) if args.json else bench.format_report(report))
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from aos_gateway.cli import models_cmds

    return models_cmds.run(args, _settings(), _progress)


def _cmd_bench_perception(args: argparse.Namespace) -> int:
    from aos_gateway.bench import perception as bench

    report = bench.run(
        _settings(),
        args.modality or list(bench.MODALITIES),
        args.n,
        _progress,
        args.audio_backend or ["faster-whisper", "openai-whisper"],
        args.audio_n,
    )
    print(json.dumps(report, indent=2) if args.json else bench.format_report(report))
    return 0


def _cmd_bench_index(args: argparse.Namespace) -> int:
    from aos_gateway.bench import index as bench

    report = bench.run(
        _settings(),
        args.n,
        args.queries,
        args.backend or list(bench.BACKENDS),
        _progress,
        seed=args.seed,
        query_seed=args.query_seed,
        per_cluster=args.per_cluster,
        data=args.data,
    )
    print(json.dumps(report, indent=2) if args.json else bench.format_report(report))
    return 0


def _cmd_bench_network(args: argparse.Namespace) -> int:
    from aos_gateway.bench import network as bench
    from aos_gateway.network.planner import planner_settings_from

    if args.data is not None:
        missing = [f for f in bench.DATA_FILES if not (args.data / f).is_file()]
        if missing:
            raise AosError(f"{args.data} lacks {', '.join(missing)}")
    report = bench.run(
        planner_settings_from(_settings().planning), args.instances, args.data, args.dev_limit, args.seed, _progress
    )
    print(json.dumps(report, indent=2) if args.json else bench.format_report(report))
    return 0


def _cmd_bench_learning(args: argparse.Namespace) -> int:
    from aos_gateway.bench import learning as bench
    from aos_gateway.cli.demo import default_agents_file

    if not args.yes:  # a usage error (exit 2), before anything is started
        raise argparse.ArgumentError(
            None,
            "the bench replaces the gateway's learned state (reset again at the end, not restored) and registers "
            "~200 simulator agents while it runs: add --yes to do it",
        )
    data = args.data
    if data is None:
        found = default_agents_file()
        if found is None:
            raise AosError("no MetaTool data found: pass --data DIR")
        data = found.parent
    missing = [f for f in ("agents.jsonl", "train.jsonl", "dev.jsonl") if not (data / f).is_file()]
    if missing:
        raise AosError(f"{data} lacks {', '.join(missing)}")
    report = bench.run(
        _settings(), data, args.checkpoints, args.dev_limit, args.rate, args.skill, args.noise, args.seed, _progress
    )
    print(json.dumps(report, indent=2) if args.json else bench.format_report(report))
    return 0 if not report["cleanup"]["left"] else 1


def _cmd_bench_ingest(args: argparse.Namespace) -> int:
    from aos_gateway.bench import learning as bench

    r = bench.ingest(_settings(), args.n, _progress)
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        rates = ", ".join(f"{k} {v}/s ({r['seconds'][k]} s)" for k, v in r["per_s"].items())
        print(f"{r['records']} experience records (produced in {r['produce_s']} s): {rates}")
        if r["incomplete"]:
            print(f"incomplete after 600 s: {', '.join(r['incomplete'])}")
    return 0 if not r["incomplete"] else 1


def _cmd_bench_sink(args: argparse.Namespace) -> int:
    from aos_gateway.bench import sink as bench

    r = bench.run(_settings(), args.n, args.rate, _progress)
    print(json.dumps(r, indent=2) if args.json else bench.format_report(r))
    return 0 if not r["missing"] else 1


def _cmd_eval(args: argparse.Namespace) -> int:
    from aos_gateway.matching.cards import read_card_file
    from aos_gateway.matching.dataset import read_examples
    from aos_gateway.matching.evaluate import evaluate
    from aos_gateway.perception.text import TextEncoder

    if _fallback_misused(args, "aos eval matching"):
        return 2
    s = _settings()
    p = s.perception
    cards = read_card_file(args.agents, strict=False)  # a dataset's extra columns are not an error
    report = evaluate(
        cards,
        read_examples(args.train, args.limit),
        read_examples(args.test, args.limit),
        # no cache: each path (zero-shot, learned) pays for its own encoding of a task
        TextEncoder(p.text_model, p.device, 0, p.torch_threads),
        args.feedback,
        _progress,
        fallback=args.fallback,
    )
    if args.json:
        print(json.dumps(report))
        return 0
    if "bandit_success_rate" in report:
        print(
            f"bandit: {report['bandit_trials']} tries, {report['bandit_success_rate']:.4f} of them right, "
            f"{report['bandit_solved_rate']:.4f} of the tasks solved while learning"
            + (" (with fallback tries)" if report["bandit_fallback"] else "")
        )
    for name in ("zero_shot", "unsupervised", "learned"):
        r = report[name]
        print(f"{name:<12} top1 {r['top1']:.4f}  R@5 {r['r5']:.4f}  MRR {r['mrr']:.4f}  p95 {r['p95_ms']} ms/query")
    return 0


def _cmd_learn_network(args: argparse.Namespace) -> int:
    from aos_gateway.cli import learn_cmds

    return learn_cmds.run_network(args, _settings(), _progress)


def _usage_error(prog: str, msg: str) -> int:
    """A usage error found after parsing: one line as argparse's, exit status 2."""
    print(f"{prog}: error: {msg} (see `{prog} --help`)", file=sys.stderr)
    return 2


def _fallback_misused(args: argparse.Namespace, prog: str) -> bool:
    """--fallback without bandit feedback from a labelled file: a usage error, one line as argparse's."""
    if args.fallback and (args.feedback != "bandit" or getattr(args, "from_experience", False)):
        _usage_error(prog, "--fallback needs --feedback bandit and a labelled --train file")
        return True
    return False


def _cmd_learn(args: argparse.Namespace) -> int:
    from aos_gateway.cli import learn_cmds

    if _fallback_misused(args, "aos learn matching"):
        return 2
    if args.from_experience and args.feedback != "gold":
        # the history's outcomes say what they say: a feedback mode applies to a --train file only
        return _usage_error("aos learn matching", "--feedback applies to a --train file, not --from-experience")
    return learn_cmds.run(args, _settings(), _progress)


def _cmd_demo(args: argparse.Namespace) -> int:
    from aos_gateway.cli import demo

    return demo.run(_settings(), args.agents, args.timeout, _progress)


def settings_error_lines(exc: BaseException) -> list[str]:
    """A pydantic error raised while reading the settings from the environment, one line per bad
    field (``bad setting AOS_MATCHING__TOP_K: ...``); empty for any other exception."""
    from pydantic import ValidationError as PydanticError
    from pydantic_settings import SettingsError

    if isinstance(exc, SettingsError):  # a value that is not JSON where JSON is expected
        from aos_gateway.settings_doc import json_problems

        return json_problems(os.environ) or [f"bad setting: {exc}"]
    if not isinstance(exc, PydanticError) or exc.title != "Settings":
        return []
    lines = []
    for err in exc.errors():
        name = "AOS_" + "__".join(str(part) for part in err["loc"]).upper() if err["loc"] else "AOS_*"
        value = err.get("input")
        got = f" (got {value!r})" if isinstance(value, str | int | float) else ""
        lines.append(f"bad setting {name}: {err['msg'].removeprefix('Value error, ')}{got}")
    return lines


def _warn_unknown_settings() -> None:
    """A misspelt ``AOS_SECTION__KEY`` is ignored by the settings: say so, once per command."""
    from aos_gateway.settings_doc import suggestion, unknown_variables

    for name in unknown_variables(os.environ):
        close = suggestion(name)
        hint = f"did you mean {close}?" if close else "`aos settings` lists them"
        print(f"aos: warning: {name} names no setting and is ignored ({hint})", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=os.environ.get("AOS_LOG_LEVEL", "WARNING"), format="%(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    given = list(sys.argv[1:] if argv is None else argv)
    if given and given[0].startswith("-") and given[0] not in ("-h", "--help", "--version"):
        parser.error(f"unrecognized option {given[0]} (options go after the command)")
    args, extras = parser.parse_known_args(argv)
    if extras:
        prog = getattr(args, "_prog", parser.prog)
        parser.exit(2, f"{prog}: error: unrecognized arguments: {' '.join(extras)} (see `{prog} --help`)\n")
    handler: Handler = args.handler
    _warn_unknown_settings()
    try:
        return handler(args)
    except argparse.ArgumentError as exc:  # a bad argument found by the command itself: as argparse's, exit 2
        prog = getattr(args, "_prog", parser.prog)
        print(f"{prog}: error: {exc} (see `{prog} --help`)", file=sys.stderr)
        return 2
    except AosError as exc:
        print(f"aos: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except OSError as exc:  # a file the command could not use: name it, no exception class
        if os.environ.get("AOS_DEBUG"):
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"aos: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # last resort: one line, with a hint for a full report
        if os.environ.get("AOS_DEBUG"):
            raise
        bad = settings_error_lines(exc)
        if bad:
            for line in bad:
                print(f"aos: error: {line}", file=sys.stderr)
            return 1
        print(f"aos: unexpected error: {type(exc).__name__}: {exc} (set AOS_DEBUG=1 for a traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
