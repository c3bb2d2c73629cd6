"""Many journals at once: a catalog (a folder of journals, a capture set) replayed, checked, exported.

Owns what a command does with several journals: choosing the members a
window and a symbol list concern (:func:`select`), replaying them as slices
on one Dask client (:func:`replay_catalog`; a long journal is cut at its
checkpoints by :mod:`engine.replay.parallel`), ``--check`` per member
(:func:`check_catalog`), and exporting them all into **one** hive-partitioned
Parquet dataset (:func:`export_catalog`), plus :class:`JournalSet`, what
``engine.open`` returns for a set or a catalog.  Finding the members is
:func:`engine.journal.captureset.journals_in`.  Must not: fold, decode or
write tables itself (:class:`~engine.replay.replay.Replay`,
:func:`~engine.replay.export.export_journal`), print or parse command lines.

One dataset from many journals
    Each member is exported by a worker, exactly as ``engine export`` exports
    it alone, into a hidden staging folder; the files are then moved into
    the one layout ``OUT/table=<name>/symbol=<S>/date=<D>/`` under names
    that carry the member (``part-<member>-<k>.parquet``), so one call of
    pyarrow.dataset, Polars, DuckDB or Spark reads every member, and the
    file name tells which journal a row came from (DuckDB ``filename=true``,
    Polars ``include_file_paths=``, pyarrow ``__filename``).  ``export.json``
    lists the members and what each wrote.  Nothing appears under ``OUT``
    before every member is done.
"""

from __future__ import annotations

import contextvars
import functools
import json
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs

from engine import __version__
from engine.journal.captureset import journals_in
from engine.journal.location import RemotePath, Where, as_path
from engine.replay.parallel import Merged, Plan, Progress, merge, plan_slices, run_slices

__all__ = [
    "Member",
    "select",
    "journal_for",
    "replay_catalog",
    "check_catalog",
    "export_catalog",
    "CatalogExport",
    "JournalSet",
    "member_tag",
    "member_name",
    "share_store_settings",
]


@attrs.frozen
class Member:
    """A journal of a catalog: where (a directory or a URI), its name in the catalog, venue, symbols."""

    path: Path | RemotePath
    name: str
    exchange: str | None
    symbols: tuple[str, ...]


def member_tag(name: str) -> str:
    """A member's name as a file-name piece: ``binance/2026-11-01`` → ``binance_2026-11-01``."""
    return re.sub(r"[^A-Za-z0-9.=-]+", "_", name).strip("_") or "journal"


def member_name(p: Path | RemotePath, base: Path | RemotePath) -> str:
    """``p``'s name in the catalog at ``base``: its path below it (``binance/2026-11-01``)."""
    if p == base:
        return p.name
    if isinstance(p, RemotePath) and isinstance(base, RemotePath):
        return p.key[len(base.key) + 1 :]
    if isinstance(p, Path) and isinstance(base, Path):
        return str(p.relative_to(base))
    return str(p)


def select(
    root: Where,
    *,
    start_ns: int | None = None,
    end_ns: int | None = None,
    symbols: Iterable[str] | None = None,
) -> tuple[list[Member], list[tuple[Member, str]]]:
    """The members a window and symbols concern, and the others with why they are left out.

    Raises:
        ValueError: no journal under ``root``; a symbol no member holds (listing
            the catalog's); a window that misses every member.
    """
    base = as_path(root)
    paths = journals_in(base)
    if not paths:
        raise ValueError(f"{base}: no journal there (nor any journal in its folders)")
    every: list[tuple[Member, Any]] = []
    for p, j in zip(paths, _open_all(paths), strict=True):
        every.append((Member(p, member_name(p, base), j.exchange, tuple(j.symbols)), j))
    known = sorted({s for m, _ in every for s in m.symbols})
    wanted = None if symbols is None else frozenset(s.upper() for s in symbols)
    if wanted is not None and wanted - set(known):
        raise ValueError(
            f"unknown symbol {', '.join(sorted(wanted - set(known)))} in {base};"
            f" its journals' symbols: {', '.join(known) or 'none'}"
        )
    chosen, left = [], []
    for m, j in every:
        if wanted is not None and not wanted & set(m.symbols):
            left.append((m, "none of the symbols asked for"))
            continue
        try:
            j.resolve_window(start_ns, end_ns)
        except ValueError:
            left.append((m, "outside the window"))
            continue
        if j.span is None:
            left.append((m, "empty"))
            continue
        chosen.append(m)
    if not chosen:
        raise ValueError(
            f"{base}: no journal in the window and symbols asked for"
            + "".join(f"; {m.name}: {why}" for m, why in left)
        )
    return chosen, left


def journal_for(root: Where, symbol: str, at_ns: int) -> Path | RemotePath:
    """The member of a set or catalog that holds ``symbol`` at ``at_ns`` (``engine book SET``).

    Raises:
        ValueError: no member holds the symbol (listing the symbols), or none at that time.
    """
    sym = symbol.strip().upper()
    chosen, _ = select(root, symbols=[sym])
    for m in chosen:
        j = _journal(m.path)
        if j.span is not None and at_ns in j.span:
            return m.path
    if len(chosen) == 1:
        return chosen[0].path  # its own rule says how the time misses it
    raise ValueError(f"no journal of {root} holds {sym} at that time; those holding it: "
                     + ", ".join(m.name for m in chosen))  # fmt: skip


def _journal(path: Path | RemotePath) -> Any:
    from engine.replay.api import Journal

    return Journal(path)


#: Members of a catalog in object storage opened at once: each costs a few requests' latency.
OPENERS = 8


def _opened(path: Path | RemotePath) -> Any:
    j = _journal(path)
    _ = j.span  # its first and last frames: read here, beside the other members'
    return j


def _open_all(paths: list[Path | RemotePath]) -> list[Any]:
    """Every member opened (manifest, span), in order; those in object storage side by side.

    Opening is waiting on the store (a handful of small requests a member), so
    threads overlap it; each runs in a copy of this context (the endpoint of
    ``--s3-endpoint``, the bytes counted by ``counting_reads``).  The first
    member, in order, that fails raises.
    """
    if len(paths) < 2 or not any(isinstance(p, RemotePath) for p in paths):
        return [_opened(p) for p in paths]
    with ThreadPoolExecutor(max_workers=min(OPENERS, len(paths))) as pool:
        futures = [pool.submit(contextvars.copy_context().run, _opened, p) for p in paths]
        return [f.result() for f in futures]


# =============================================================== the workers' store settings


def share_store_settings(client: Any) -> None:
    """Give ``client``'s workers the store settings in effect here (nothing when there are none).

    ``--s3-endpoint`` lives in this process only (a context variable); a worker
    of a local cluster inherits the environment it was started with, one of an
    existing cluster has its own.  A worker plugin, registered before any task
    under one name (registering again replaces it), puts the settings into
    every worker's environment, one that joins later included, so the workers
    read ``s3://`` URIs from the same endpoint as this process.
    """
    from engine.journal.location import worker_settings

    env = worker_settings()
    if client is not None and env:
        client.register_plugin(_store_settings_plugin()(env), name="wiretape-store-settings")


@functools.cache
def _store_settings_plugin() -> type:
    from distributed.diagnostics.plugin import WorkerPlugin

    class StoreSettings(WorkerPlugin):  # type: ignore[misc]
        def __init__(self, env: dict[str, str]) -> None:
            self.env = env

        def setup(self, worker: Any) -> None:
            os.environ.update(self.env)

    return StoreSettings


# =============================================================== replay and check


def replay_catalog(
    members: list[Member],
    *,
    client: Any = None,
    workers: int = 1,
    start_ns: int | None = None,
    end_ns: int | None = None,
    symbols: frozenset[str] | None = None,
    collect: bool = False,
    on_done: Progress | None = None,
) -> list[tuple[Member, Plan, Merged]]:
    """Replay every member (sliced at checkpoints so that ~2 tasks per worker exist), in order."""
    share_store_settings(client)
    per = max(1, -(-2 * max(1, workers) // len(members)))
    plans = [plan_slices(str(m.path), tasks=per, start_ns=start_ns, end_ns=end_ns) for m in members]
    slices = [s for p in plans for s in p.slices]
    results = run_slices(
        slices, client, on_done, start_ns=start_ns, end_ns=end_ns, symbols=symbols,
        collect=collect,
    )  # fmt: skip
    out = []
    for m, p in zip(members, plans, strict=True):
        mine = [r for r in results if r.journal == p.journal]
        out.append((m, p, merge(mine)))
    return out


def _check_one(path: str) -> Any:
    from engine.replay.check import check_report

    return check_report(path)


def check_catalog(
    members: list[Member], *, client: Any = None, on_done: Progress | None = None
) -> Iterator[tuple[Member, Any]]:
    """``--check`` each member (a :class:`~engine.replay.check.CheckReport` each), in order."""
    if client is None:
        for i, m in enumerate(members):
            rep = _check_one(str(m.path))
            if on_done is not None:
                on_done(i + 1, len(members), 0)
            yield m, rep
        return
    share_store_settings(client)
    futures = [client.submit(_check_one, str(m.path), pure=False) for m in members]
    from distributed import as_completed

    done = 0
    for _ in as_completed(futures):
        done += 1
        if on_done is not None:
            on_done(done, len(members), 0)
    for m, f in zip(members, futures, strict=True):
        yield m, f.result()


# =============================================================== one export of many journals


@attrs.define
class CatalogExport:
    out_dir: str
    members: list[dict[str, Any]]
    rows: dict[str, int]
    frames: int

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


def _export_one(journal: str, stage: str, options: dict[str, Any]) -> Any:
    from engine.replay.export import export_journal

    return export_journal(journal, stage, **options)


def export_catalog(
    members: list[Member],
    out_dir: str | os.PathLike[str],
    *,
    client: Any = None,
    replace: bool = False,
    on_done: Progress | None = None,
    **options: Any,
) -> CatalogExport:
    """Export every member (``options``: :func:`~engine.replay.export.export_journal`'s) into one dataset.

    Raises as :func:`~engine.replay.export.export_journal` does (an ``out_dir``
    inside a member or not empty without ``replace``); the first member's
    failure fails the export and leaves ``out_dir`` as it was.
    """
    from engine.replay.export import _place, staged  # the one rule for OUT

    out = Path(out_dir)
    for m in members:
        _place(m.path, out, replace)
    tags: list[str] = []
    for m in members:
        t = member_tag(m.name)
        tags.append(t if t not in tags else f"{t}-{len(tags)}")
    with staged(out) as stage:
        jobs = [(str(m.path), str(stage / f".member-{i}"), options) for i, m in enumerate(members)]
        results = _run(jobs, client, on_done)
        rows: dict[str, int] = {}
        listed = []
        for m, tag, (_, mstage, _), res in zip(members, tags, jobs, results, strict=True):
            _adopt(Path(mstage), stage, tag)
            for name, n in res.rows.items():
                rows[name] = rows.get(name, 0) + n
            listed.append({"journal": str(m.path), "name": m.name, "tag": tag,
                           "exchange": m.exchange, **res.to_json()})  # fmt: skip
        result = CatalogExport(str(out), listed, rows, sum(r.frames for r in results))
        manifest = {
            "engine_version": __version__,
            "catalog": True,
            "layout": "hive: table=<name>/symbol=<symbol>/date=<UTC day>/part-<member>-<k>.parquet",
            **result.to_json(),
        }
        (stage / "export.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return result


def _run(
    jobs: list[tuple[str, str, dict[str, Any]]], client: Any, on_done: Progress | None
) -> list[Any]:
    if client is None:
        out = []
        for args in jobs:
            out.append(_export_one(*args))
            if on_done is not None:
                on_done(len(out), len(jobs), sum(r.frames for r in out))
        return out
    from distributed import as_completed

    share_store_settings(client)
    futures = [client.submit(_export_one, *args, pure=False) for args in jobs]
    done, frames = 0, 0
    try:
        for f in as_completed(futures):
            done += 1
            frames += f.result().frames
            if on_done is not None:
                on_done(done, len(jobs), frames)
    except BaseException:
        client.cancel(futures)
        raise
    return [f.result() for f in futures]


def _adopt(member_out: Path, stage: Path, tag: str) -> None:
    """Move a member's export files into the catalog's layout, renamed ``part-<tag>-<k>``."""
    for f in sorted(member_out.glob("table=*/symbol=*/date=*/part-*.parquet")):
        rel = f.relative_to(member_out)
        dest = stage / rel.parent / f"part-{tag}-{f.name[len('part-') :]}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(f, dest)
    shutil.rmtree(member_out)


# =============================================================== the Python API of a set


class JournalSet:
    """``engine.open`` of a capture set or a catalog: its member journals, by name and by symbol.

    ``j.members`` maps each member's name to its :class:`~engine.replay.api.Journal`;
    ``j.journal(symbol)`` is the member holding a symbol, and ``j.book_at``
    asks it.  ``j.replay(...)`` / ``j.table(...)`` go through the members in
    order (outputs of one member, then the next: they are separate journals).
    """

    def __init__(self, path: Where) -> None:
        from engine.replay.api import Journal

        self.path = as_path(path)
        paths = journals_in(self.path)
        if not paths:
            raise ValueError(f"{self.path}: no journal there (nor any journal in its folders)")
        self.members = {member_name(p, self.path): Journal(p) for p in paths}

    def __repr__(self) -> str:
        return f"JournalSet({str(self.path)!r}, members={list(self.members)})"

    @property
    def symbols(self) -> list[str]:
        return sorted({s for j in self.members.values() for s in j.symbols})

    def journal(self, symbol: str) -> Any:
        """The member journal that holds ``symbol`` (ValueError listing the set's symbols)."""
        sym = symbol.upper()
        for j in self.members.values():
            if sym in j.symbols:
                return j
        raise ValueError(
            f"unknown symbol {sym} in {self.path}; its symbols: {', '.join(self.symbols)}"
        )

    def book_at(self, symbol: str, t: Any, *, depth: int = 10) -> Any:
        return self.journal(symbol).book_at(symbol, t, depth=depth)

    def replay(self, start: Any = None, end: Any = None, *, symbols: Any = None,
               **kw: Any) -> Iterator[Any]:  # fmt: skip
        """Each member's ``replay`` in turn; ``symbols=`` asks only the members holding them."""
        if isinstance(symbols, str):
            symbols = symbols.split(",")
        wanted = None if symbols is None else {s.strip().upper() for s in symbols}
        for j in self.members.values():
            mine = None if wanted is None else sorted(wanted & set(j.symbols))
            if mine is None or mine:
                yield from j.replay(start, end, symbols=mine, **kw)

    def table(self, name: str, *args: Any, **kw: Any) -> Any:
        import pyarrow as pa

        return pa.concat_tables(j.table(name, *args, **kw) for j in self.members.values())

    def close(self) -> None:
        for j in self.members.values():
            j.close()

    def __enter__(self) -> JournalSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
