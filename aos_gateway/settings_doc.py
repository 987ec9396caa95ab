"""Every setting as a row: its environment variable, default, current value and description.

Read from the :class:`~aos_gateway.settings.Settings` model itself, so the reference cannot drift
from the code: ``aos settings`` prints it (with the values in force), and ``docs/settings.md`` is
its Markdown form (``aos settings --markdown``; a test checks the file is current).
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import asdict, dataclass
from enum import Enum
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from aos_gateway.settings import Settings

PREFIX = "AOS_"
HIDDEN = "**********"


@dataclass(frozen=True)
class SettingRow:
    """One setting."""

    env: str  # e.g. AOS_KAFKA__BOOTSTRAP_SERVERS
    section: str  # "kafka"; "" for a top-level setting
    key: str
    type: str  # e.g. "int >= 1", "str | None", "one of off, scram"
    default: str  # as the environment would spell it; secrets hidden
    value: str  # in force in the settings given; secrets hidden
    changed: bool  # value differs from the default
    secret: bool
    description: str


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is not None:
        inner = ", ".join(_type_name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    if annotation is type(None):
        return "None"
    if isinstance(annotation, type):
        return "secret" if issubclass(annotation, SecretStr) else annotation.__name__
    return str(annotation)


def _bounds(info: FieldInfo) -> str:
    words = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
    parts = []
    for meta in info.metadata:
        for attr, word in words.items():
            bound = getattr(meta, attr, None)
            if bound is not None:
                parts.append(f"{word} {bound}")
    return ", ".join(parts)


def _is_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    return any(_is_secret(a) for a in typing.get_args(annotation))


def spell(value: Any) -> str:
    """A value as one would write it in the environment (JSON for lists and maps)."""
    if value is None:
        return ""
    if isinstance(value, SecretStr):
        return HIDDEN if value.get_secret_value() else ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, (BaseModel, list, tuple, dict)):
        return json.dumps(_plain(value), sort_keys=True)
    return str(value)


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _row(env: str, section: str, key: str, info: FieldInfo, current: Any) -> SettingRow:
    secret = _is_secret(info.annotation)
    default = info.get_default(call_default_factory=True)
    kind = _type_name(info.annotation)
    bounds = _bounds(info)
    return SettingRow(
        env=env,
        section=section,
        key=key,
        type=f"{kind} ({bounds})" if bounds else kind,
        default=spell(default),
        value=spell(current),
        changed=_plain(current) != _plain(default),  # SecretStr compares its secret values
        secret=secret,
        description=" ".join((info.description or "").split()),
    )


def rows(settings: Settings | None = None) -> list[SettingRow]:
    """Every setting in model order; values from ``settings`` (defaults when None)."""
    if settings is None:
        return list(_default_rows())
    return _rows(settings)


@cache
def _default_rows() -> tuple[SettingRow, ...]:
    """The rows of the defaults: the model's alone, read once (any `aos` command checks the
    environment's names against them)."""
    return tuple(_rows(Settings.model_construct()))


@cache
def _sections() -> tuple[str, ...]:
    """The sections' names in capitals, longest first."""
    return tuple(sorted({r.section.upper() for r in _default_rows() if r.section}, key=len, reverse=True))


def _rows(current: Settings) -> list[SettingRow]:
    out: list[SettingRow] = []
    for name, info in Settings.model_fields.items():
        kind = info.annotation
        value = getattr(current, name)
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            for key, sub in kind.model_fields.items():
                env = f"{PREFIX}{name}__{key}".upper()
                out.append(_row(env, name, key, sub, getattr(value, key)))
        else:
            out.append(_row(f"{PREFIX}{name}".upper(), "", name, info, value))
    return out


def select(all_rows: list[SettingRow], pattern: str | None = None, changed_only: bool = False) -> list[SettingRow]:
    """The rows whose variable, section or key contains ``pattern`` (any case), optionally only changed ones."""
    want = (pattern or "").lower().removeprefix(PREFIX.lower())
    picked = []
    for r in all_rows:
        if changed_only and not r.changed:
            continue
        if want and want not in r.env.lower() and want not in f"{r.section}.{r.key}".lower():
            continue
        picked.append(r)
    return picked


def section_docs() -> dict[str, str]:
    """Each section's one-line description (its class docstring's first line)."""
    docs: dict[str, str] = {}
    for name, info in Settings.model_fields.items():
        kind = info.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel) and kind.__doc__:
            docs[name] = kind.__doc__.strip().splitlines()[0]
    return docs


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;").replace("\n", " ")


def markdown() -> str:
    """The settings reference (defaults only, no values in force): ``docs/settings.md``."""
    lines = [
        "# Settings reference",
        "",
        "<!-- generated by `aos settings --markdown > docs/settings.md`; a test checks it is current -->",
        "",
        "Every setting is an environment variable with the `AOS_` prefix and `__` between section and",
        "key. Lists and maps are JSON (`AOS_SECURITY__REDACT_KINDS='[\"email\"]'`). A bad value stops a",
        "command with one line naming the variable. `aos settings` shows the values in force (secrets",
        "hidden); `aos settings kafka` only the matching ones; `aos settings --changed` only those set.",
        "",
    ]
    docs = section_docs()
    by_section: dict[str, list[SettingRow]] = {}
    for r in rows():
        by_section.setdefault(r.section, []).append(r)
    for section, group in by_section.items():
        title = f"`{section}`" if section else "top level"
        lines.append(f"## {title}")
        if docs.get(section):
            lines += ["", docs[section]]
        lines += ["", "| variable | type | default | what it does |", "|---|---|---|---|"]
        for r in group:
            default = f"`{_md_cell(r.default)}`" if r.default else "(none)"
            lines.append(f"| `{r.env}` | {_md_cell(r.type)} | {default} | {_md_cell(r.description)} |")
        lines.append("")
    return "\n".join(lines)


def as_json(picked: list[SettingRow]) -> str:
    return json.dumps([asdict(r) for r in picked], indent=2)


def as_text(picked: list[SettingRow], width: int = 100) -> str:
    """One block per setting: ``VAR=value`` (and the default when changed), then its description."""
    import textwrap

    out = []
    for r in picked:
        head = f"{r.env}={r.value}"
        if r.changed:
            head += f"    (set; default {r.default or '(none)'})"
        out.append(head)
        about = f"{r.description} [{r.type}]" if r.description else f"[{r.type}]"
        out.extend(textwrap.wrap(about, width=width, initial_indent="    ", subsequent_indent="    "))
    return "\n".join(out)


def env_names() -> frozenset[str]:
    """Every environment variable the settings read: each setting, and each section given whole as JSON."""
    return frozenset({r.env for r in _default_rows()} | {f"{PREFIX}{section}" for section in _sections()})


def unknown_variables(names: typing.Iterable[str], nested_only: bool = True) -> list[str]:
    """The ``AOS_`` names among ``names`` that no setting reads (any case, as pydantic-settings reads them).

    A misspelt setting (``AOS_MATCHING__TOPK``) is otherwise ignored without a word. With
    ``nested_only`` only ``AOS_SECTION__KEY`` names are judged: names without ``__`` are also the
    tools' own switches (``AOS_DEBUG``, ``AOS_LOG_LEVEL``, the test and benchmark knobs).
    """
    known = env_names()
    odd = []
    for name in names:
        upper = name.upper()
        if not upper.startswith(PREFIX) or upper in known:
            continue
        if nested_only and "__" not in upper[len(PREFIX) :] and _single_underscore(upper) is None:
            continue
        odd.append(name)
    return sorted(odd)


def _single_underscore(upper: str) -> str | None:
    """``AOS_TRACING_EXPORTER`` -> ``AOS_TRACING__EXPORTER``: a section's name with one underscore
    after it (no tool switch starts so: AOS_DEBUG, AOS_LOG_LEVEL, AOS_FAULTS_*, AOS_SINK_JDBC_*)."""
    rest = upper[len(PREFIX) :]
    for section in _sections():
        if rest.startswith(section + "_") and not rest.startswith(section + "__"):
            return f"{PREFIX}{section}__{rest[len(section) + 1 :]}"
    return None


def suggestion(name: str) -> str | None:
    """The setting a misspelt variable most likely meant, if one is close: a section's one
    underscore for two, or a key a small edit away (``AOS_MATCHING__TOPK`` -> ``AOS_MATCHING__TOP_K``)."""
    import difflib

    upper = name.upper()
    known = sorted(r.env for r in _default_rows())
    fixed = _single_underscore(upper)
    if fixed is not None and fixed in known:
        return fixed
    close = difflib.get_close_matches(fixed or upper, known, n=1, cutoff=0.85)
    return close[0] if close else None


def json_problems(environ: typing.Mapping[str, str]) -> list[str]:
    """One line per list or map setting in ``environ`` whose value is not JSON, naming the variable
    (pydantic-settings only names the section: 'error parsing value for field "media"')."""
    given = {name.upper(): value for name, value in environ.items()}
    lines = []
    for r in _default_rows():
        value = given.get(r.env)
        if value is None or not r.type.startswith(("list[", "dict[")):
            continue
        try:
            json.loads(value)
        except ValueError:
            example = '["a", "b"]' if r.type.startswith("list[") else '{"key": ...}'
            lines.append(
                f"bad setting {r.env}: a {r.type.split('[')[0]} is written as JSON, e.g. {example} (got {value!r})"
            )
    return lines
