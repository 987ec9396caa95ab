"""``aos settings``: every setting, the value in force, its default and what it does."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from aos_gateway import settings_doc


def add_parser(sub: Any) -> None:
    st = sub.add_parser(
        "settings",
        help="every setting: its AOS_ variable, the value in force (secrets hidden), default and meaning",
    )
    st.add_argument(
        "pattern", nargs="?", default=None, help="only settings whose variable or section.key contains this (any case)"
    )
    st.add_argument("--changed", action="store_true", help="only settings set away from their default")
    out = st.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true")
    out.add_argument("--markdown", action="store_true", help="the reference of every setting (docs/settings.md)")
    st.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from aos_gateway.settings import get_settings

    if args.markdown:
        if args.pattern or args.changed:
            raise argparse.ArgumentError(None, "--markdown prints every setting's default: no PATTERN or --changed")
        print(settings_doc.markdown(), end="")
        return 0
    picked = settings_doc.select(settings_doc.rows(get_settings()), args.pattern, args.changed)
    if not picked and args.pattern:
        if args.changed and settings_doc.select(settings_doc.rows(), args.pattern):
            print(f"no setting matching {args.pattern!r} is set away from its default", file=sys.stderr)
            return 0
        raise argparse.ArgumentError(None, f"no setting matches {args.pattern!r} (`aos settings` lists them all)")
    if args.json:
        print(settings_doc.as_json(picked))
    elif picked:
        print(settings_doc.as_text(picked))
    else:
        print("every setting has its default", file=sys.stderr)
    return 0
