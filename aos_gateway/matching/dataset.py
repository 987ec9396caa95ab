"""Labelled tasks in the MetaTool JSON-lines form: ``{"task_id", "text", "gold": [agent_id, ...]}``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from aos_gateway.errors import ValidationError


@dataclass(frozen=True)
class Example:
    task_id: str
    text: str
    gold: tuple[str, ...]


def read_examples(path: Path, limit: int | None = None, labelled: bool = True) -> list[Example]:
    """Examples from a file; a bad line raises with its line number, a file without any task raises
    too. ``labelled=False``: ``gold`` may be left out (unlabelled tasks: empty ``gold``)."""
    out: list[Example] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise ValidationError("not a JSON object")
                if "text" not in obj:
                    raise ValidationError('no "text" (the task, a non-empty string)')
                if labelled and "gold" not in obj:
                    raise ValidationError('no "gold" (a list of agent ids)')
                text = obj["text"]
                gold = obj["gold"] if labelled else obj.get("gold") or []  # unlabelled: absent or null
                if not isinstance(text, str) or not text.strip():
                    raise ValidationError("'text' must be a non-empty string")
                if not isinstance(gold, list) or not all(isinstance(g, str) for g in gold) or (labelled and not gold):
                    raise ValidationError(f"'gold' must be a {'non-empty ' if labelled else ''}list of agent ids")
                out.append(Example(str(obj.get("task_id", f"line-{lineno}")), text, tuple(gold)))
            except (json.JSONDecodeError, ValidationError) as exc:
                raise ValidationError(f"{path}:{lineno}: {exc}") from exc
            if limit is not None and len(out) >= limit:
                break
    if not out:
        raise ValidationError(f"no tasks in {path}")
    return out
