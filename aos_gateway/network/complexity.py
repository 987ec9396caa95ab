"""Complexity analysis: how many sub-capabilities a task needs, and which may run in parallel.

A task's text is split into **clauses** at sentence ends and at coordinating words ("and",
"also", "then", "as well as", ...). Each clause is matched on its own (the matcher), and a clause
whose best agent differs from the others' becomes a **role** of the network (:func:`find_roles`).
The whole task's ranking adds a role too when its runner-up is nearly as likely as its best agent
(a two-capability task that does not split into clauses: "a list of discounted houses").

With a learned state, roles come from short **token windows** of the text instead
(:func:`window_roles`): a window whose most likely agent beats the whole task's best agent there by
a margin adds that agent (measured on MetaTool's two-agent tasks: docs/benchmarks.md).

A clause that uses what an earlier one produced ("... and convert *it* into a PDF", "then ...",
"based on ...") depends on the previous role: the two run in sequence. Other roles are
independent and may run in parallel.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from aos_gateway.contracts.records import Candidate

_SEPARATORS = (
    r"(?<=[.?!;])\s+"  # sentence ends
    # a match starts at a comma or at the first space of a run, never inside a run: the same matches as
    # ",?\s+(?:...)", without trying every start in a run of spaces (quadratic: 8,000 spaces took seconds)
    r"|(?:,|(?<![\s,]))"
    r"\s+(?:and\s+then|and\s+also|as\s+well\s+as|along\s+with|additionally,?|also,?|then|and|but|plus)\s+"
)
_SPLIT = re.compile(_SEPARATORS, re.IGNORECASE)
_SEQUENTIAL_START = re.compile(
    r"^\s*(?:then|and then|after that|afterwards|based on|using|with (?:it|them|that|those))\b", re.I
)
_LEADING = re.compile(r"^(?:and\s+then|and\s+also|additionally|also|plus|then|and|but)\b,?\s*", re.I)
_ANAPHORA = re.compile(
    r"\b(?:it|them|those|these|the (?:results?|findings|data|information|list|report|answer|output))\b", re.I
)


@dataclass(frozen=True)
class Clause:
    text: str
    depends_on_previous: bool = False  # uses what the previous clause produced
    start: int = 0  # where it is in the task text: text[start:end] (joined fragments span both)
    end: int = 0


_TRIM = " \t\r\n,;:\"'“”"


def _trim(text: str, a: int, b: int) -> tuple[int, int]:
    while a < b and text[a] in _TRIM:
        a += 1
    while b > a and text[b - 1] in _TRIM:
        b -= 1
    return a, b


def split_clauses(text: str, min_words: int = 3, max_clauses: int = 6) -> list[Clause]:
    """The task's clauses, in order, with their character spans in ``text``.

    The whole text is one clause when it does not split. A fragment shorter than ``min_words``
    words is joined to the clause before it; beyond ``max_clauses`` the rest joins the last one.
    """
    a0, b0 = _trim(text, 0, len(text))
    if a0 >= b0:
        return []
    pieces: list[tuple[int, int, bool]] = []  # (start, end, follows a "then")
    pos, seq = a0, False
    for m in _SPLIT.finditer(text, a0, b0):
        pieces.append((pos, m.start(), seq))
        seq = m.group(0).strip().lower().startswith(("then", "and then"))
        pos = m.end()
    pieces.append((pos, b0, seq))
    clauses: list[Clause] = []
    pending: int | None = None
    for a, b, seq_before in pieces:
        a, b = _trim(text, a, b)
        lead = _LEADING.match(text[a:b]) if clauses else None  # "Also, suggest ..." after a sentence end
        if lead:
            seq_before = seq_before or "then" in lead.group(0).lower()
            a, b = _trim(text, a + lead.end(), b)
        if a >= b:
            continue
        if pending is not None:  # a short first fragment leads into this one
            a, pending = pending, None
        frag = text[a:b]
        if len(frag.split()) < min_words:
            if clauses:
                prev = clauses[-1]
                clauses[-1] = Clause(text[prev.start : b], prev.depends_on_previous, prev.start, b)
            else:
                pending = a
            continue
        dep = bool(clauses) and (seq_before or bool(_SEQUENTIAL_START.match(frag)) or _refers_back(frag))
        clauses.append(Clause(frag, dep, a, b))
    if len(clauses) > max_clauses:
        head, tail = clauses[: max_clauses - 1], clauses[max_clauses - 1 :]
        clauses = [*head, Clause(text[tail[0].start : b0], tail[0].depends_on_previous, tail[0].start, b0)]
    if not clauses:
        return [Clause(text[a0:b0], False, a0, b0)]
    return clauses


def _refers_back(clause: str) -> bool:
    """A pronoun or "the results" among the clause's first words: it uses an earlier output."""
    head = " ".join(clause.split()[:6])
    return bool(_ANAPHORA.search(head)) and not head.lower().startswith(("is it", "will it", "does it", "can it"))


@dataclass(frozen=True)
class RoleSpec:
    role_id: str
    text: str
    candidates: list[Candidate]
    depends_on: list[str]


def find_roles(
    text: str,
    whole: Sequence[Candidate],
    clauses: Sequence[Clause],
    clause_rankings: Sequence[Sequence[Candidate]],
    runner_up_ratio: float = 0.5,
    min_clause_score: float = 0.3,
    max_roles: int = 4,
) -> list[RoleSpec]:
    """The roles of a task: its best agent, plus each clause whose own best agent is another one
    (with score at least ``min_clause_score``), plus the whole task's runner-up when its score is
    at least ``runner_up_ratio`` of the best's. Roles keep the clauses' order; a role follows the
    one before it when its clause refers back."""
    if not whole:
        return []
    specs: list[RoleSpec] = []
    tops: set[str] = set()

    def add(role_text: str, ranking: Sequence[Candidate], depends: bool) -> None:
        if len(specs) >= max_roles:
            return
        top = ranking[0]["agent_id"]
        if top in tops:
            return
        tops.add(top)
        rid = f"r{len(specs) + 1}"
        deps = [specs[-1].role_id] if depends and specs else []
        specs.append(RoleSpec(rid, role_text, list(ranking), deps))

    picks: list[tuple[int, str, Sequence[Candidate], bool]] = []  # (position, text, ranking, depends)
    for k, (cl, ranking) in enumerate(zip(clauses, clause_rankings, strict=True)):
        if ranking and ranking[0]["score"] >= min_clause_score:
            picks.append((k, cl.text, ranking, cl.depends_on_previous))
    # the whole task's best agent is always a role: at the clause that ranks it first, or first
    w0 = whole[0]["agent_id"]
    at = next((k for k, _, r, _ in picks if r[0]["agent_id"] == w0), None)
    if at is None:
        picks.insert(0, (-1, text, whole, False))
    if len(whole) > 1 and whole[1]["score"] >= runner_up_ratio * whole[0]["score"]:
        second = [c for c in whole if c["agent_id"] != w0]
        if not any(r[0]["agent_id"] == second[0]["agent_id"] for _, _, r, _ in picks):
            picks.append((len(clauses), text, second, False))
    for _, t, ranking, dep in sorted(picks, key=lambda p: p[0]):
        add(t, ranking, dep)
    return specs


def locate(text: str, clauses: Sequence[Clause]) -> list[Clause]:
    """The clauses with their character spans in ``text`` (each found after the one before; a clause
    not found keeps the span it has)."""
    out: list[Clause] = []
    pos = 0
    for c in clauses:
        at = text.find(c.text, pos) if c.text else -1
        if at < 0:
            out.append(c)
            continue
        out.append(Clause(c.text, c.depends_on_previous, at, at + len(c.text)))
        pos = at + len(c.text)
    return out


def window_roles(
    text: str,
    whole: Sequence[Candidate],
    clauses: Sequence[Clause],
    windows: Sequence[tuple[int, int]],
    dists: npt.NDArray[np.floating],
    agent_ids: Sequence[str],
    rank_window: Callable[[int], Sequence[Candidate]],
    margin: float = 0.4,
    max_roles: int = 4,
) -> list[RoleSpec]:
    """The roles of a task from its token windows (empty: one role, the whole task's ranking).

    ``dists[j]`` is the learned distribution over ``agent_ids`` of window ``j`` (character range
    ``windows[j]`` of ``text``). The whole task's best agent is a role; a window whose most likely
    agent is more likely there than that agent by at least ``margin`` adds a role, ranked by
    ``rank_window(j)`` (the window's own ranking under the task's constraints), the widest margins
    first, up to ``max_roles``. Each role serves the clause its window overlaps most (``clauses``
    with their spans; no clauses: the whole text); a role follows the one before it in the text when its
    clause refers back to an earlier one. The best agent's role is listed first (unless it follows
    another), the others in the text's order.
    """
    if not whole or len(windows) == 0 or max_roles < 2:
        return []
    pos = {a: i for i, a in enumerate(agent_ids)}
    first = whole[0]["agent_id"]
    col = pos.get(first)
    best = dists.max(axis=1)
    gaps = best - (dists[:, col] if col is not None else 0.0)
    tops = dists.argmax(axis=1)
    chosen: dict[str, tuple[int, Sequence[Candidate]]] = {}  # agent -> (window, ranking)
    for j in np.argsort(-gaps, kind="stable"):
        if gaps[j] < margin or len(chosen) + 1 >= max_roles:
            break
        if agent_ids[tops[j]] == first or agent_ids[tops[j]] in chosen:
            continue
        ranking = rank_window(int(j))
        if ranking and ranking[0]["agent_id"] != first and ranking[0]["agent_id"] not in chosen:
            chosen[ranking[0]["agent_id"]] = (int(j), ranking)
    if not chosen:
        return []
    anchor = int(np.argmax(dists[:, col])) if col is not None else 0  # where the best agent is most likely
    picks = [(anchor, whole), *chosen.values()]

    def clause_of(j: int) -> int | None:
        """The clause the window overlaps most (one across a separator: the larger part's)."""
        a, b = windows[j]
        overlap = [min(b, c.end) - max(a, c.start) for c in clauses]
        return max(range(len(clauses)), key=lambda k: overlap[k]) if clauses and max(overlap) > 0 else None

    where = [clause_of(j) for j, _ in picks]  # per pick, its clause
    # in the text's order: which role follows which (a clause that refers back uses the role before)
    placed = sorted(range(len(picks)), key=lambda i: windows[picks[i][0]][0])
    after: dict[int, int] = {}  # pick -> the pick it depends on
    for prev, cur in itertools.pairwise(placed):
        k = where[cur]
        if k is not None and k != where[prev] and clauses[k].depends_on_previous:
            after[cur] = prev
    # listed with the task's best agent first (its role leads unless it waits on another), then in order
    order = [0, *(i for i in placed if i != 0)] if 0 not in after else placed
    ids = {i: f"r{n + 1}" for n, i in enumerate(order)}
    specs: list[RoleSpec] = []
    for i in order:
        k = where[i]
        role_text = clauses[k].text if k is not None else text
        specs.append(RoleSpec(ids[i], role_text, list(picks[i][1]), [ids[after[i]]] if i in after else []))
    return specs
