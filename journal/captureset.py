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

In object storage (``s3://BUCKET/PREFIX``, ``gs://…``) the layout is the same
(``engine journal push`` of a set, ``engine run --processes N --upload``).
A set or catalog there is found by **one** recursive listing of the prefix
(:func:`engine.journal.location.list_tree`): a journal is a "directory"
holding the same marker as on disk (``journal.json`` or ``seg-*.arrows``
objects), a set one holding ``captureset.json`` (the only object read);
no other object is read to find the members.
"""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs

from engine.journal.location import LocationError, RemotePath, Where, as_path, list_tree
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
#: What marks a directory as a journal: its manifest, or (before the first seal) segments.
SEGMENT_GLOB = "seg-*.arrows*"
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
    path: Path | RemotePath
    exchange: str
    created_ns: int | None
    members: tuple[Member, ...]

    def journal_dir(self, m: Member) -> Path | RemotePath:
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


def _marks_journal(names: Iterable[str]) -> bool:
    return any(n == MANIFEST or fnmatch.fnmatchcase(n, SEGMENT_GLOB) for n in names)


def is_journal(path: Where) -> bool:
    """Does ``path`` look like one journal (its manifest, or segments)?  A URI: one or two requests."""
    p = as_path(path)
    if isinstance(p, RemotePath):
        return (p / MANIFEST).is_file() or _marks_journal(e.name for e in p.iterdir())
    return (p / MANIFEST).is_file() or any(p.glob(SEGMENT_GLOB))


def holds_journals(path: Any) -> bool:
    """Is ``path`` a capture set or catalog (a folder or a prefix): not a journal, but journals in it?

    A prefix in object storage that holds something and is not one journal
    is taken for a catalog: deciding costs a request and a listing of its
    first level, not of its tree (:func:`journals_in` lists that once, and a
    catalog without journals is then refused as such).  A location the store
    refuses, an empty prefix or a bad URI is not one: the caller opens it as
    one journal, whose reader says what is wrong in its words.
    """
    if not isinstance(path, str | os.PathLike | RemotePath):
        return False
    try:
        root = as_path(path)
        if isinstance(root, RemotePath):
            if (root / MANIFEST).is_file():
                return False
            names = [e.name for e in root.iterdir()]
            return bool(names) and not _marks_journal(names)
        return not is_journal(root) and bool(journals_in(root))
    except LocationError:
        return False


def is_captureset(path: Where) -> bool:
    return (as_path(path) / SET_MANIFEST).is_file()


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


def read_set(path: Where) -> CaptureSet:
    """The capture set at ``path`` (a directory or a URI).

    Raises:
        NotACaptureSet: no manifest, or one that is not a format-1 capture set.
        LocationError: the store refused (access denied, unreachable).
    """
    root = as_path(path)
    f = root / SET_MANIFEST
    try:
        if isinstance(f, RemotePath) and not f.is_file():
            raise FileNotFoundError(str(f))
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


def members(path: Where) -> list[Path | RemotePath]:
    """The member journals of the capture set at ``path``, in shard order."""
    cs = read_set(path)
    return [cs.journal_dir(m) for m in cs.members]


def journals_in(path: Where) -> list[Path | RemotePath]:
    """Every journal at or under ``path``: itself, a set's members, or a catalog's tree, sorted.

    A catalog is any folder of journals (``venue/date/``, capture sets
    inside).  The search does not descend into a journal (its ``outputs/`` is
    a journal of its own) nor into hidden directories (an export's staging).
    A prefix in object storage is listed once (:class:`_Listed`) and walked
    by the same rule.

    Raises:
        LocationError: the store refused the listing (a local folder that cannot
            be read holds no journals).
    """
    root = as_path(path)
    if isinstance(root, RemotePath):
        return _walk(root, _Listed(root))
    return _walk(root, _Local())


class _Local:
    """The walk's view of a local folder tree."""

    def is_journal(self, d: Any) -> bool:
        return is_journal(d)

    def is_captureset(self, d: Any) -> bool:
        return is_captureset(d)

    def subdirs(self, d: Any) -> list[Any]:
        try:
            return sorted(e for e in d.iterdir() if e.is_dir() and not e.name.startswith("."))
        except OSError:
            return []


class _Listed:
    """The walk's view of a prefix, from one recursive listing: "directories" are key prefixes."""

    def __init__(self, root: RemotePath) -> None:
        self.root = root
        self.files: dict[str, set[str]] = {}
        self.dirs: dict[str, set[str]] = {}
        for obj in list_tree(root):
            parent, _, name = obj.key.rpartition("/")
            self.files.setdefault(parent, set()).add(name)
            while parent != root.key and parent.startswith(root.key + "/"):
                up, _, sub = parent.rpartition("/")
                self.dirs.setdefault(up, set()).add(sub)
                parent = up

    def is_journal(self, d: RemotePath) -> bool:
        return _marks_journal(self.files.get(d.key, ()))

    def is_captureset(self, d: RemotePath) -> bool:
        return SET_MANIFEST in self.files.get(d.key, ())

    def subdirs(self, d: RemotePath) -> list[RemotePath]:
        return [d / n for n in sorted(self.dirs.get(d.key, ())) if not n.startswith(".")]


def _walk(d: Any, view: _Local | _Listed) -> list[Any]:
    if view.is_journal(d):
        return [d]
    if view.is_captureset(d):
        return members(d)
    found: list[Any] = []
    for e in view.subdirs(d):
        found.extend(_walk(e, view))
    return found
