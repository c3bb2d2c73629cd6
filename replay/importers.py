"""Import other tools' raw captures into ordinary wiretape journals (``engine import ...``).

Owns the cryptofeed raw-capture and Tardis line formats and their mapping onto
journal frames; the journal files themselves are the writer's business.  Must
not decode payloads (the codecs do that on replay) or invent times: every frame
keeps the receive time the capture recorded, converted to integer ns exactly
from its decimal text (by :mod:`engine.timefmt`), and the capture's order.

cryptofeed (``<EXCHANGE>.ws.<conn>.<n>`` / ``<EXCHANGE>.http.<conn>.<n>``)::

    <url> <-> <ts>              connection opened     → kind=open,  dir=local, source=url
    <url> <- <ts>: <text>       message sent          → kind=text,  dir=out
    <ts>: <frame>               frame received        → kind=text,  dir=in, source=connection url
    <url> -> <ts>: <body>       REST response body    → kind=rest,  dir=in, code=200, conn=0

cryptofeed records neither HTTP status (only successful bodies are written, so
we journal 200) nor closes: a second ``<->`` in one file means a reconnect, so
the previous connection gets a close frame (code None = dropped) at the new
open's time.  Files are merged by receive time, keeping each file's own order
(a k-way merge, ties go to the file given first), so the REST snapshot lands
between the diffs it was fetched among.

Tardis (one message per line): ``<ISO-8601 UTC time> <raw JSON>``; an empty
line marks a disconnect (close frame, then an open before the next message).
Tardis writes the REST snapshot it fetched at each (re)connect into the stream
as a message of its own, ``{"stream":"<sym>@depthSnapshot","generated":true,
"data":{<the REST body>}}``: it becomes what a capture journals for a REST
snapshot, a ``rest`` frame (code 200) whose source is the venue's depth URL
for that symbol and whose payload is the body, so books sync on replay as they
do for our own captures.  That is the one payload an importer looks into.

The venue (``--exchange``) is one of the codecs' names
(:data:`engine.codecs.registry.CODECS`), checked before anything is written;
cryptofeed's file prefix names it when it is not given.  A failed import
leaves nothing behind (no half-made journal directory).

Bad lines never stop an import: they are counted and their line numbers reported.
"""

from __future__ import annotations

import heapq
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
import click
import orjson

from engine.cli import DataFailure, UsageFailure, guard_output
from engine.codecs.registry import CODECS, get_codec
from engine.events import IMPORT_ENDED
from engine.journal.schema import Dir, Frame, Kind
from engine.journal.writer import JournalWriter
from engine.timefmt import parse_epoch_s, parse_iso

__all__ = [
    "ImportReport",
    "read_cryptofeed",
    "import_cryptofeed",
    "read_tardis",
    "import_tardis",
    "import_group",
]

#: cryptofeed file-name prefix → our exchange name (a codec's name).
EXCHANGES = {
    "BINANCE": "binance",
    "BINANCE_FUTURES": "binance-futures",
    "BINANCE_US": "binance-us",
    "BINANCE_TR": "binance-tr",
    "BINANCE_DELIVERY": "binance-delivery",
    "KRAKEN": "kraken-v1",
    "BYBIT": "bybit-legacy",  # cryptofeed's Bybit recordings (2021) are the pre-v5 protocol
    "OKX": "okx",
    "COINBASE": "coinbase",
}


def check_exchange(exchange: str) -> str:
    """``exchange`` if a codec replays it; else ValueError listing the venues."""
    if exchange not in CODECS:
        raise ValueError(
            f"unknown exchange {exchange!r}: no codec replays it; choose one of:"
            f" {', '.join(sorted(CODECS))}"
        )
    return exchange


_MAX_REPORTED_LINES = 50


def _frame(
    recv_ns: int,
    conn: int,
    dir: str,
    kind: str,
    source: str,
    payload: bytes,
    code: int | None = None,
) -> Frame:
    """A frame to journal; ``seq`` is 0 here because the writer assigns it."""
    return Frame(0, recv_ns, conn, dir, kind, source, payload, code)


@attrs.define
class ImportReport:
    """What an import did: frames written, bad lines (count and where), the journal's metadata."""

    frames: int = 0
    bad: int = 0
    bad_lines: list[str] = attrs.field(factory=list)
    metadata: dict[str, object] = attrs.field(factory=dict)

    def note_bad(self, file: str, lineno: int, why: str) -> None:
        self.bad += 1
        if len(self.bad_lines) < _MAX_REPORTED_LINES:
            self.bad_lines.append(f"{file}:{lineno}: {why}")


# --------------------------------------------------------------------------- cryptofeed


def _capture_prefix(path: Path) -> str:
    """``BINANCE_FUTURES.ws.1.0`` → ``BINANCE_FUTURES``."""
    return path.name.split(".", 1)[0]


def read_cryptofeed(path: Path, report: ImportReport, conn_ids: Iterator[int]) -> Iterator[Frame]:
    """The records of one cryptofeed file, in file order (bad lines go to ``report``)."""
    conn = 0
    url: str | None = None
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.rstrip(b"\r\n")
            if not line.strip():
                continue
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                report.note_bad(path.name, lineno, "not UTF-8")
                continue
            try:
                head, sep, body = text.partition(": ")
                if " <-> " in head and not sep:
                    new_url, _, ts = head.rpartition(" <-> ")
                    t = parse_epoch_s(ts)
                    if url is not None:
                        yield _frame(
                            t,
                            conn,
                            Dir.LOCAL,
                            Kind.CLOSE,
                            url,
                            b"reconnected (implied by the capture)",
                        )
                    url, conn = new_url, next(conn_ids)
                    yield _frame(t, conn, Dir.LOCAL, Kind.OPEN, url, b"")
                elif not sep:
                    raise ValueError("no ': ' separator")
                elif " -> " in head:
                    rest_url, _, ts = head.rpartition(" -> ")
                    yield _frame(
                        parse_epoch_s(ts), 0, Dir.IN, Kind.REST, rest_url, body.encode(), 200
                    )
                elif " <- " in head:
                    out_url, _, ts = head.rpartition(" <- ")
                    out_conn = conn if out_url == url else 0
                    yield _frame(
                        parse_epoch_s(ts), out_conn, Dir.OUT, Kind.TEXT, out_url, body.encode()
                    )
                else:
                    t = parse_epoch_s(head)
                    if url is None:
                        raise ValueError("frame before any connection line")
                    yield _frame(t, conn, Dir.IN, Kind.TEXT, url, body.encode())
            except ValueError as exc:
                report.note_bad(path.name, lineno, str(exc))


def _symbols(records: Iterable[Frame]) -> list[str]:
    """Symbols named by stream URLs (``streams=btcusdt@...``, ``/ws/btcusdt@...``) and REST ``symbol=``."""
    found: set[str] = set()
    for r in records:
        if r.kind not in (Kind.OPEN, Kind.REST):
            continue
        u = urlsplit(r.source)
        q = parse_qs(u.query)
        for s in q.get("symbol", []):
            found.add(s.upper())
        names = [n for v in q.get("streams", []) for n in v.split("/")]
        if "/ws/" in u.path:
            names.append(u.path.rsplit("/ws/", 1)[1])
        for n in names:
            sym, at, _ = n.partition("@")
            if at and sym:
                found.add(sym.upper())
    return sorted(found)


#: Wraps the frames being written (a progress bar); identity when None.
Progress = Callable[[Sequence[Frame]], Iterable[Frame]] | None


def _write(
    out: Path,
    records: Sequence[Frame],
    metadata: dict[str, object],
    report: ImportReport,
    progress: Progress = None,
) -> None:
    """Write the journal; on any failure, or when nothing was imported, remove what was made."""
    existed = out.exists()
    try:
        with JournalWriter.create(out, metadata=metadata) as w:
            for r in records if progress is None else progress(records):
                w.append(r.recv_ns, r.conn, r.dir, r.kind, r.source, r.payload, r.code)
                report.frames += 1
        if report.frames == 0:
            first = f"; the first: {report.bad_lines[0]}" if report.bad_lines else ""
            raise ValueError(f"no frame could be imported ({report.bad} bad lines{first})")
    except BaseException:
        if not existed:
            shutil.rmtree(out, ignore_errors=True)
        elif out.is_dir():  # an empty directory we were given: empty again
            for child in out.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        raise
    report.metadata = metadata


def import_cryptofeed(
    files: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    exchange: str | None = None,
    progress: Progress = None,
) -> ImportReport:
    """Convert the cryptofeed files of one capture into a journal at ``out``.

    ``exchange``: the venue (a codec name); None: from the files' prefix.

    Raises:
        ValueError: the files belong to different exchanges (import them separately),
            or the venue is unknown (nothing is written).
    """
    paths = [Path(f) for f in files]
    prefixes = sorted({_capture_prefix(p) for p in paths})
    if len(prefixes) != 1:
        raise ValueError(f"files of different captures {prefixes}: import each exchange separately")
    if exchange is None:
        exchange = EXCHANGES.get(prefixes[0])
        if exchange is None:
            raise ValueError(
                f"cannot tell the venue of {prefixes[0]!r} files; give --exchange, one of:"
                f" {', '.join(sorted(CODECS))}"
            )
    check_exchange(exchange)
    report = ImportReport()
    counter = iter(range(1, 1 << 31))
    # Parse each file fully first (connection ids in file order), then k-way merge by time.
    per_file = [list(read_cryptofeed(p, report, counter)) for p in paths]
    merged = list(heapq.merge(*per_file, key=lambda r: r.recv_ns))
    metadata: dict[str, object] = {
        "exchange": exchange,
        "symbols": _symbols(merged),
        "source_files": [p.name for p in paths],
        "importer": "cryptofeed",
    }
    _write(Path(out), merged, metadata, report, progress)
    return report


# --------------------------------------------------------------------------- tardis


def read_tardis(
    path: Path,
    source: str,
    report: ImportReport,
    conn_ids: Iterator[int],
    snapshot_url: Callable[[str, int], str] | None = None,
) -> Iterator[Frame]:
    """Records of one Tardis file: open before the first message, close+open around empty lines.

    ``snapshot_url(symbol, levels)``: the REST source a ``depthSnapshot`` message is
    journaled under (None: journaled as the text it is).
    """
    conn = 0
    last_ns: int | None = None
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.rstrip(b"\r\n")
            if not line.strip():
                if conn and last_ns is not None:
                    yield _frame(
                        last_ns,
                        conn,
                        Dir.LOCAL,
                        Kind.CLOSE,
                        source,
                        b"disconnect (tardis empty line)",
                    )
                conn = 0
                continue
            ts, sep, body = line.partition(b" ")
            try:
                if not sep or not body:
                    raise ValueError("expected '<ISO time> <message>'")
                t = parse_iso(ts.decode("ascii"))
                rest = _snapshot(body, snapshot_url) if snapshot_url is not None else None
            except (ValueError, UnicodeDecodeError) as exc:
                report.note_bad(path.name, lineno, str(exc))
                continue
            if not conn:
                conn = next(conn_ids)
                yield _frame(t, conn, Dir.LOCAL, Kind.OPEN, source, b"")
            last_ns = t
            if rest is not None:
                yield _frame(t, 0, Dir.IN, Kind.REST, rest[0], rest[1], 200)
            else:
                yield _frame(t, conn, Dir.IN, Kind.TEXT, source, body)
    if conn and last_ns is not None:
        yield _frame(last_ns, conn, Dir.LOCAL, Kind.CLOSE, source, IMPORT_ENDED.encode())


_SNAPSHOT = re.compile(rb'^\{"stream":"([A-Za-z0-9_]+)@depthSnapshot"')


def _snapshot(body: bytes, snapshot_url: Callable[[str, int], str]) -> tuple[str, bytes] | None:
    """(REST source, REST body) of a Tardis ``depthSnapshot`` message; None for any other.

    Raises:
        ValueError: a depthSnapshot message without its ``data`` object.
    """
    m = _SNAPSHOT.match(body)
    if m is None or b'"generated":true' not in body:
        return None
    try:
        data = orjson.loads(body).get("data")
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"depthSnapshot: invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("depthSnapshot: no 'data' object")
    levels = max(len(data.get("bids") or ()), len(data.get("asks") or ()), 1)
    return snapshot_url(m.group(1).decode().upper(), levels), orjson.dumps(data)


def import_tardis(
    files: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    exchange: str = "binance",
    source: str | None = None,
    progress: Progress = None,
) -> ImportReport:
    """Convert Tardis one-message-per-line files (in the order given) into a journal at ``out``.

    Raises:
        ValueError: an unknown venue (nothing is written), or nothing to import.
    """
    codec: Any = get_codec(check_exchange(exchange))
    src = source or f"tardis://{exchange}"

    def snapshot_url(symbol: str, levels: int) -> str:
        return str(codec.snapshot_url(codec.rest_base, symbol, levels))

    report = ImportReport()
    counter = iter(range(1, 1 << 31))
    records = [r for f in files for r in read_tardis(Path(f), src, report, counter, snapshot_url)]
    found: set[str] = set()
    for r in records:
        m = re.match(rb'\{"stream":"([a-z0-9_]+)@', r.payload)
        if m:
            found.add(m.group(1).decode().upper())
    metadata: dict[str, object] = {
        "exchange": exchange,
        "symbols": sorted(found | set(_symbols(records))),
        "source_files": [Path(f).name for f in files],
        "importer": "tardis",
    }
    _write(Path(out), records, metadata, report, progress)
    return report


# --------------------------------------------------------------------------- CLI


def _finish(report: ImportReport, out: str) -> None:
    click.echo(f"wrote {report.frames} frames to {out}  (exchange {report.metadata['exchange']})")
    _bad_lines(report)


def _bad_lines(report: ImportReport) -> None:
    if report.bad:
        click.echo(f"{report.bad} bad line(s) skipped:", err=True)
        for s in report.bad_lines:
            click.echo(f"  {s}", err=True)
        if report.bad > len(report.bad_lines):
            click.echo(f"  ... and {report.bad - len(report.bad_lines)} more", err=True)


def _run(do: Callable[[], ImportReport], out: str) -> None:
    """Check ``--out``, import, report; a failure is one line and leaves nothing behind."""
    guard_output(Path(out), force=False, forceable=False)
    try:
        report = do()
    except ValueError as exc:
        raise DataFailure(str(exc)) from None
    except OSError as exc:
        raise DataFailure(f"cannot write the journal {out}: {exc.strerror or exc}") from None
    _finish(report, out)


def _bar(records: Sequence[Frame]) -> Iterable[Frame]:
    """A progress bar on stderr when it is a terminal; quiet otherwise."""
    if not sys.stderr.isatty():
        return records
    from rich.console import Console
    from rich.progress import track

    return track(
        records,
        description="import",
        console=Console(stderr=True),
        transient=True,
        total=len(records),
    )


_EXCHANGE_HELP = "the venue (its codec replays the journal): " + ", ".join(sorted(CODECS))


def _exchange_checked(exchange: str | None) -> str | None:
    if exchange is not None:
        try:
            check_exchange(exchange)
        except ValueError as exc:
            raise UsageFailure(str(exc)) from None
    return exchange


@click.group("import")
def import_group() -> None:
    """Convert other tools' raw captures into wiretape journals."""


@import_group.command("cryptofeed")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--out", required=True, type=click.Path(file_okay=False), help="new journal directory"
)
@click.option("--exchange", default=None, help=_EXCHANGE_HELP + " [default: from the file names]")
def cryptofeed_cmd(files: tuple[str, ...], out: str, exchange: str | None) -> None:
    """Import cryptofeed raw captures (the .ws and .http files of one capture)."""
    exchange = _exchange_checked(exchange)
    _run(lambda: import_cryptofeed(files, out, exchange, _bar), out)


@import_group.command("tardis")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--out", required=True, type=click.Path(file_okay=False), help="new journal directory"
)
@click.option("--exchange", default="binance", show_default=True, help=_EXCHANGE_HELP)
@click.option(
    "--source", default=None, help="connection URL to journal (default tardis://<exchange>)"
)
def tardis_cmd(files: tuple[str, ...], out: str, exchange: str, source: str | None) -> None:
    """Import Tardis one-message-per-line files (ISO time, a space, the raw JSON)."""
    _exchange_checked(exchange)
    _run(lambda: import_tardis(files, out, exchange, source, _bar), out)
