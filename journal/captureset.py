"""Capture sets: the shards of one sharded capture (``engine run --processes N``) under one directory.

Owns the set manifest ``captureset.json`` (what it holds, writing it
atomically, reading and checking it) and resolving a set, or any folder of
journals (a *catalog*: ``venue/date/`` trees, capture sets inside), into its
member journals.  Every command that reads a set goes through
:func:`members` / :func:`journals_in`, the one place that knows the layout.
Must not: read frames, replay or capture (the members are ordinary journals,
read by :mod:`engine.journal.reader` like any other).

Layout::

    SET/captureset.json      {"format": 1, "kind": "wiretape capture set",
                              "exchange": "sim", "created_ns": ...,
                              "members": [{"name": "shard-0", "journal": "shard-0",
                                           "symbols": ["BTCUSDT", ...]}, ...]}
    SET/shard-0/             an ordinary journal (journal.json, seg-*, outputs/, checkpoints/)
    SET/shard-1/ ...

A member's symbols are the ones its shard captured; every symbol is in
exactly one member.  ``journal`` is relative to the set directory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs

from engine.journal.schema import MANIFEST

__all__ = [
    "SET_MANIFEST",
    "Member",
    "CaptureSet",
    "NotACaptureSet",
    "is_journal",
    "is_captureset",
    "holds_journals",
    "write_set",
    "read_set",
    "members",
    "journals_in",
]

SET_MANIFEST = "captureset.json"
FORMAT = 1
KIND = "wiretape capture set"


class NotACaptureSet(ValueError):
    """The directory holds no capture set manifest, or a damaged one."""


@attrs.frozen
class Member:
    name: str
    journal: str
    symbols: tuple[str, ...]


@attrs.frozen
class CaptureSet:
    path: Path
    exchange: str
    created_ns: int | None
    members: tuple[Member, ...]

    def journal_dir(self, m: Member) -> Path:
        return self.path / m.journal

    def member_for(self, symbol: str) -> Member:
        """The member that captured ``symbol`` (upper-cased); KeyError listing the set's symbols."""
        sym = symbol.upper()
        for m in self.members:
            if sym in m.symbols:
                return m
        known = ", ".join(s for m in self.members for s in m.symbols)
        raise KeyError(f"unknown symbol {sym} in the capture set {self.path}; its symbols: {known}")

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "kind": KIND,
            "exchange": self.exchange,
            "created_ns": self.created_ns,
            "members": [
                {"name": m.name, "journal": m.journal, "symbols": list(m.symbols)}
                for m in self.members
            ],
        }


def is_journal(path: str | os.PathLike[str]) -> bool:
    """Does ``path`` look like one journal (its manifest, or segments)?"""
    p = Path(path)
    return (p / MANIFEST).is_file() or any(p.glob("seg-*.arrows*"))


def holds_journals(path: Any) -> bool:
    """Is ``path`` a local capture set or catalog: not a journal, but journals in its folders?

    A journal in object storage (:mod:`engine.journal.location`) is always one journal here:
    sets and catalogs are local folders."""
    from engine.journal.location import is_remote

    if is_remote(path) or not isinstance(path, str | os.PathLike):
        return False
    return not is_journal(path) and bool(journals_in(path))


def is_captureset(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / SET_MANIFEST).is_file()


def write_set(
    path: str | os.PathLike[str],
    exchange: str,
    shards: Sequence[Iterable[str]],
    created_ns: int | None = None,
) -> CaptureSet:
    """Write ``captureset.json`` for shards ``shard-0 ..`` with these symbols (atomic rename)."""
    root = Path(path)
    members = tuple(
        Member(f"shard-{i}", f"shard-{i}", tuple(s.upper() for s in syms))
        for i, syms in enumerate(shards)
    )
    cs = CaptureSet(root, exchange, created_ns, members)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / (SET_MANIFEST + ".tmp")
    tmp.write_text(json.dumps(cs.to_json(), indent=2) + "\n")
    os.replace(tmp, root / SET_MANIFEST)
    return cs


def read_set(path: str | os.PathLike[str]) -> CaptureSet:
    """The capture set at ``path``.

    Raises:
        NotACaptureSet: no manifest, or one that is not a format-1 capture set.
    """
    root = Path(path)
    f = root / SET_MANIFEST
    try:
        doc = json.loads(f.read_text())
    except FileNotFoundError:
        raise NotACaptureSet(f"{root}: no {SET_MANIFEST}") from None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise NotACaptureSet(f"{f}: unreadable ({exc})") from None
    try:
        if doc.get("kind") != KIND or doc.get("format") != FORMAT:
            raise ValueError(f"not a format-{FORMAT} {KIND}")
        members = tuple(
            Member(str(m["name"]), str(m["journal"]), tuple(map(str, m["symbols"])))
            for m in doc["members"]
        )
        for m in members:
            if Path(m.journal).is_absolute() or ".." in Path(m.journal).parts:
                raise ValueError(f"member {m.name}: journal {m.journal!r} is outside the set")
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise NotACaptureSet(f"{f}: damaged set manifest ({exc})") from None
    return CaptureSet(root, str(doc.get("exchange")), doc.get("created_ns"), members)


def members(path: str | os.PathLike[str]) -> list[Path]:
    """The member journals of the capture set at ``path``, in shard order."""
    cs = read_set(path)
    return [cs.journal_dir(m) for m in cs.members]


def journals_in(path: str | os.PathLike[str]) -> list[Path]:
    """Every journal at or under ``path``: itself, a set's members, or a catalog's tree, sorted.

    A catalog is any folder of journals (``venue/date/``, capture sets
    inside).  The search does not descend into a journal (its ``outputs/`` is
    a journal of its own) nor into hidden directories (an export's staging).
    """
    root = Path(path)
    if is_journal(root):
        return [root]
    if is_captureset(root):
        return members(root)
    found: list[Path] = []
    try:
        entries = sorted(e for e in root.iterdir() if e.is_dir() and not e.name.startswith("."))
    except OSError:
        return []
    for e in entries:
        found.extend(journals_in(e))
    return found
