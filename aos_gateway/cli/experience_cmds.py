"""``aos experience mine | replay | reset``: learn from the experience history, or forget it."""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aos_gateway.settings import Settings

_REL = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 7 * 86_400_000}


def parse_time(text: str, now_ms: int | None = None) -> int:
    """Epoch ms from ``2026-11-27T10:00:00Z``, ``2026-11-27``, epoch ms, or an age like ``6h``/``7d``."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    t = text.strip()
    m = _REL.match(t)
    if m:
        return now - int(float(m.group(1)) * _UNIT_MS[m.group(2)])
    if t.isdigit():
        return int(t)
    try:
        dt = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {text!r} (use ISO 8601 like 2026-11-27T10:00Z, epoch ms, or an age like 6h or 7d)"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def add_parser(sub: Any, handler: Callable[[argparse.Namespace], int], parser_class: Any) -> None:
    ex = sub.add_parser("experience", help="learn from the experience history (mine, replay) or forget it (reset)")
    esub = ex.add_subparsers(dest="action", required=True, parser_class=parser_class)
    mi = esub.add_parser("mine", help="clusters, association rules and anomalies from the history")
    mi.add_argument("--since", type=parse_time, default=None, metavar="TIME", help="only evidence from TIME on")
    mi.add_argument("--publish", action="store_true", help="also publish the learned states to aos.weights.v1")
    mi.add_argument("--json", action="store_true")
    rp = esub.add_parser("replay", help="rebuild every learned state from aos.experience.v1 alone, and publish it")
    rp.add_argument("--from", dest="since", type=parse_time, default=None, metavar="TIME")
    rp.add_argument("--no-publish", action="store_true", help="only print what would be published")
    rp.add_argument("--json", action="store_true")
    rs = esub.add_parser("reset", help="forget what was learned: evidence before now is ignored from here on")
    rs.add_argument("--reason", default="", help="recorded with the reset marker")
    rs.add_argument("--yes", action="store_true", help="required: this clears the learned states")
    rs.add_argument("--json", action="store_true")
    for p in (mi, rp, rs):
        p.set_defaults(handler=handler)


def run(args: argparse.Namespace, settings: Settings, progress: Callable[[str], None]) -> int:
    from aos_gateway.streams import learner

    t0 = time.monotonic()
    if args.action == "reset":
        return _reset(args, settings, progress)
    flag = "--since" if args.action == "mine" else "--from"
    learned = learner.learn_from_history(settings, args.since, progress, flag)
    publish = args.publish if args.action == "mine" else not args.no_publish
    versions = learner.publish(settings, learned) if publish else {}
    report: dict[str, Any] = {
        **learned.summary(),
        "mining": learned.report.to_dict(),
        "published": versions,
        "seconds": round(time.monotonic() - t0, 1),
    }
    if args.json:
        print(json.dumps(report))
        return 0
    print(learned.report.summary())
    print(
        f"matcher: {report['memories']} memories over {report['agents']} agents; "
        f"network quality: {report['quality_agents']} agents"
    )
    for name, fp in report["fingerprints"].items():
        print(f"  {name}: sha256 {fp[:16]}")
    print("published " + ", ".join(f"{k} v{v}" for k, v in versions.items()) if versions else "not published")
    return 0


def _reset(args: argparse.Namespace, settings: Settings, progress: Callable[[str], None]) -> int:
    from aos_gateway.experience.learning import iso_ms
    from aos_gateway.streams.learner import reset

    if not args.yes:  # a usage error (exit 2): the command is refused as given
        raise argparse.ArgumentError(None, "reset clears every learned state: add --yes to do it")
    now, versions = reset(settings, args.reason)
    progress("experience: learned states cleared; evidence before now is ignored by future learning")
    print(json.dumps({"reset_at": now, "published": versions}) if args.json else f"reset at {iso_ms(now)}: {versions}")
    return 0
