"""The live capture runtime (``engine run``): WebSocket connections on trio, journal first, then the pipeline.

Owns: connections (one task each, streams sharded over them), subscribing
through a control-message rate limiter, keep-alive and liveness checks,
reconnect with backoff, gap-free rotation, REST depth snapshots, the journal
writer's clock (tick + fsync in a worker thread), and a status object a
display can render.  Must not: interpret market data (that is the codec's and
the reducers' job, via :class:`engine.pipeline.Pipeline`) or make decisions a
replay could not reproduce from the journal.

THE RULE, in :meth:`Capture._read`: every inbound frame is appended to the
journal *first* (``recv_ns = time.time_ns()`` right after the receive), then
fed to the pipeline with the seq the journal returned.  Every other thing that
shapes state is journaled the same way before the pipeline sees it: outbound
control messages (``dir=out``), connection open/close/error (``dir=local``),
REST responses (``kind=rest``, ``code`` = HTTP status).

::

    Capture.run ── nursery ─┬─ _ticker          (writer.tick every 10 ms, fsync in a thread)
                            ├─ _status_loop     (frames/s once a second)
                            ├─ _shard × N ── nursery ─┬─ _conn_task (conn k)   ← reconnect loop lives in _shard
                            │                         └─ _conn_task (conn k+1) ← during a gap-free rotation
                            └─ _fetch_snapshot  (one per symbol in flight, on SnapshotRequest)

    _conn_task ── nursery ─┬─ trio-websocket's reader   (we own the TCP/TLS stream under it)
                           └─ _session ─┬─ _read     (journal → pipeline)
                                        ├─ _helpers ─┬─ _subscribe (SUBSCRIBE chunks through the limiter)
                                        │            ├─ _pinger   (own pings under fail_after: stall)
                                        │            ├─ _watchdog (no data for N s: stale)
                                        │            └─ _rotation (lifetime / serverShutdown hand-over)
                                        └─ _closer   (clean close: our close frame, read to the peer's)

Closing without loss (stop, rotation): the helpers are cancelled, our close
frame goes out, and ``_read`` keeps journaling until the server's close frame
arrives (bounded by ``disconnect_timeout_s``), so every frame the server sent
before it saw our close is journaled.  trio-websocket's own ``aclose()`` would
drop those (it closes its queue first); see :func:`_send_close`.

Errors (:class:`CaptureError` and subclasses) end one connection: they are
journaled as a local ``error`` frame, counted in ``status.errors`` by kind,
logged, and the shard reconnects (exponential backoff, full jitter, capped,
reset after a stable period).  None of them stops the capture.

Rotation without a gap: when a connection nears its lifetime or the server
announces ``serverShutdown``, the shard opens the successor *first*; the old
connection keeps reading (and journaling) until the successor has received
its first frame, then closes with 1000.  The overlap is journaled from both
connections (replay sees both; reducers ignore depth they already have).
"""

from __future__ import annotations

import contextlib
import logging
import random
import ssl
import struct
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import attrs
import orjson
import trio
import trio_websocket
from trio_websocket import ConnectionClosed as WsClosed
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection

from engine.events import ServerShutdown
from engine.journal.schema import Dir, Kind
from engine.journal.writer import JournalWriter
from engine.outputs import SnapshotRequest

__all__ = [
    "LiveConfig",
    "Capture",
    "CaptureStatus",
    "CaptureError",
    "ConnectFailed",
    "CaptureTimeout",
    "StaleConnection",
    "StalledConnection",
    "InvalidData",
    "ServerClosed",
    "Backoff",
    "ControlLimiter",
    "WeightBudget",
    "shard_streams",
    "depth_weight",
]

log = logging.getLogger("engine.live.runtime")

time_ns = time.time_ns


# =============================================================== errors


class CaptureError(Exception):
    """Something ended one connection or one REST request; the capture goes on.

    ``kind`` is the key under which it is counted in :attr:`CaptureStatus.errors`.
    """

    kind = "error"


class ConnectFailed(CaptureError):
    """The TCP/TLS connect or the WebSocket handshake failed (refused, DNS, TLS, HTTP 4xx/5xx)."""

    kind = "connect_failed"


class CaptureTimeout(CaptureError):
    """Something we waited for did not come in time (base of stale and stalled)."""

    kind = "timeout"


class StaleConnection(CaptureTimeout):
    """No data frame for ``stale_after_s`` although the socket is alive (heartbeats do not count).

    Differs from :class:`StalledConnection`: the peer may still answer pings
    (e.g. Binance futures' old ``/stream`` path, which handshakes and then sends nothing).
    """

    kind = "stale"


class StalledConnection(CaptureTimeout):
    """Our own ping went unanswered within ``ping_timeout_s``: the peer (or the path) is dead."""

    kind = "stalled"


class InvalidData(CaptureError):
    """The peer broke the WebSocket protocol (bad UTF-8, oversized frame, bad framing).

    Bad *content* in a well-formed frame is not this: it is journaled and becomes
    a DecodeError event in the pipeline.
    """

    kind = "invalid_data"


class ServerClosed(CaptureError):
    """The server closed the connection (``code``/``reason``; 1006 = dropped without a close frame)."""

    kind = "server_close"

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"server closed: code={code} reason={reason!r}")
        self.code = code
        self.reason = reason


# =============================================================== configuration


from engine.ratelimit import control_limit  # noqa: E402 - the published limits live with the limiter


@attrs.frozen
class LiveConfig:
    """What to capture and every timing knob of the runtime (seconds unless named otherwise).

    Defaults are for real exchanges; tests shrink the intervals.
    """

    exchange: str = "sim"
    symbols: tuple[str, ...] = ("btcusdt", "ethusdt")
    channels: tuple[str, ...] = ("trade", "depth", "bookTicker", "ticker", "kline_1m")
    #: WebSocket base URL (``ws://127.0.0.1:PORT``, ``wss://stream.binance.com:9443``).
    ws_url: str = ""
    #: REST base URL for depth snapshots.
    rest_url: str = ""
    #: Streams per connection (Binance allows 1024); more streams ⇒ more connections.
    max_streams_per_conn: int = attrs.field(default=1024, validator=attrs.validators.ge(1))
    #: Streams beyond what fits a URL of this length are subscribed with SUBSCRIBE messages.
    max_url_len: int = 4000
    #: Streams per SUBSCRIBE message.
    subscribe_chunk: int = attrs.field(default=200, validator=attrs.validators.ge(1))
    #: Our control messages per second per connection (None: the exchange's limit minus one,
    #: leaving room for the automatic pong to a server ping).
    control_per_s: int | None = None
    ping_interval_s: float = 20.0
    ping_timeout_s: float = 10.0
    stale_after_s: float = 30.0
    connect_timeout_s: float = 10.0
    #: trio-websocket waits 60 s for a close handshake by default: far too long for a reconnect.
    disconnect_timeout_s: float = 2.0
    #: Bounded frame size (trio-websocket closes with 1009 above it).
    max_message_bytes: int = 4 << 20
    #: trio-websocket's internal queue (bounded memory: this × max_message_bytes worst case).
    message_queue: int = 64
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    #: A connection that lived this long resets the backoff.
    stable_after_s: float = 60.0
    #: Rotate (gap-free) this long after opening; Binance closes at 24 h.
    lifetime_s: float = 23.5 * 3600
    #: How long the old connection waits for its successor's first frame.
    handoff_timeout_s: float = 10.0
    snapshot_limit: int = 1000
    rest_timeout_s: float = 10.0
    rest_retries: int = 3
    #: REST request weight we allow ourselves per minute (Binance spot allows 6000).
    rest_weight_per_min: int = 1200
    verify_tls: bool = True
    tick_s: float = 0.010
    fsync_interval_s: float = 1.0

    def control_rate(self) -> int:
        if self.control_per_s is not None:
            return max(1, self.control_per_s)
        return max(1, control_limit(self.exchange) - 1)


# =============================================================== small policies (pure-ish)


class Backoff:
    """Exponential backoff with full jitter: ``uniform(0, min(cap, base·2^attempt))``.

    Randomness is fine here (the I/O shell, not a reducer); the generator is
    injected so tests can pin it.
    """

    def __init__(self, base: float, cap: float, rng: random.Random) -> None:
        self.base, self.cap, self.rng = base, cap, rng
        self.attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        return self.rng.uniform(0.0, ceiling)

    def reset(self) -> None:
        self.attempt = 0


class ControlLimiter:
    """At most ``rate`` control messages in any sliding ``window`` on one connection; waits when full.

    The I/O shell around :class:`engine.ratelimit.RateLimiter` (the pure
    sliding-window-log reducer): this class only supplies the time and does
    the sleeping.  Concurrent senders (SUBSCRIBE chunks, our pings) are served
    FIFO.  The window is widened by ``margin`` because the server measures it
    with its own clock on arrival, and network jitter can squeeze two sends
    that left exactly one window apart.
    """

    def __init__(
        self,
        rate: int,
        window: float = 1.0,
        clock: Callable[[], float] | None = None,
        margin: float = 0.05,
    ) -> None:
        from engine.ratelimit import RateLimiter

        self._reducer = RateLimiter(
            limit=rate, window_ns=int((window + margin) * 1e9), max_queue=1 << 30
        )
        self._state = self._reducer.initial()
        self._clock = clock or trio.current_time
        self._next_id = 0
        self._released: set[int] = set()
        self._wake_at: float | None = None

    def _now_ns(self) -> int:
        return int(self._clock() * 1e9)

    def _apply(self, outs: Sequence[Any]) -> None:
        from engine.outputs import SendRequest
        from engine.ratelimit import NextRelease

        self._wake_at = None
        for o in outs:
            if o.__class__ is SendRequest:
                self._released.add(o.seq)
            elif o.__class__ is NextRelease:
                self._wake_at = o.at_ns / 1e9

    async def acquire(self) -> None:
        """Return when this sender may send now (the send is counted as of now)."""
        from engine.ratelimit import Request, Tick

        my = self._next_id
        self._next_id += 1
        self._state, outs = self._reducer.step(self._state, Request(self._now_ns(), 0, b"", my))
        self._apply(outs)
        while my not in self._released:
            await trio.sleep_until(self._wake_at if self._wake_at is not None else self._clock())
            self._state, outs = self._reducer.step(self._state, Tick(self._now_ns()))
            self._apply(outs)
        self._released.discard(my)


class WeightBudget:
    """REST request weight per sliding minute (Binance bans IPs that ignore 429s)."""

    def __init__(self, per_minute: int, clock: Callable[[], float] | None = None) -> None:
        self.per_minute = per_minute
        self._used: deque[tuple[float, int]] = deque()
        self._clock = clock or trio.current_time

    def used(self) -> int:
        now = self._clock()
        q = self._used
        while q and q[0][0] <= now - 60.0:
            q.popleft()
        return sum(w for _, w in q)

    async def acquire(self, weight: int) -> None:
        weight = min(weight, self.per_minute)
        while self.used() + weight > self.per_minute:  # noqa: ASYNC110 - time-based
            await trio.sleep(max(0.05, self._used[0][0] + 60.0 - self._clock()))
        self._used.append((self._clock(), weight))


def depth_weight(exchange: str, limit: int) -> int:
    """Request weight of a REST depth snapshot (Binance's published tables)."""
    if exchange == "binance-futures":
        return 2 if limit <= 50 else 5 if limit <= 100 else 10 if limit <= 500 else 20
    return 5 if limit <= 100 else 25 if limit <= 500 else 50 if limit <= 1000 else 250


def shard_streams(codec: Any, streams: Sequence[str], per_conn: int) -> list[list[str]]:
    """Split streams into connection shards: by URL path first (futures), then ``per_conn`` each."""
    by_path = getattr(codec, "streams_by_path", None)
    groups = list(by_path(streams).values()) if by_path is not None else [list(streams)]
    return [g[i : i + per_conn] for g in groups for i in range(0, len(g), per_conn)]


# =============================================================== status


@attrs.define
class CaptureStatus:
    """Counters a display renders (read it any time; the runtime updates it in place)."""

    started_mono: float = 0.0
    frames_in: int = 0
    bytes_in: int = 0
    frames_out: int = 0
    frames_per_s: float = 0.0
    connections_open: int = 0
    connects: int = 0
    reconnects: int = 0
    rotations: int = 0
    rest_requests: int = 0
    rest_responses: int = 0
    errors: Counter[str] = attrs.Factory(Counter)
    outputs: Counter[str] = attrs.Factory(Counter)
    journal_bytes: int = 0
    journal_frames: int = 0
    decode_errors: int = 0
    checkpoints_skipped: int = 0
    last_error: str = ""

    def line(self) -> str:
        """One human line: what a terminal status bar or a periodic log shows."""
        errs = sum(self.errors.values())
        return (
            f"{self.frames_per_s:8.0f} frames/s  {self.frames_in} frames  "
            f"conns {self.connections_open}  reconnects {self.reconnects}  "
            f"journal {self.journal_bytes / 1e6:.1f} MB  decode errors {self.decode_errors}  "
            f"errors {errs}"
        )

    def summary(self) -> dict[str, Any]:
        d = attrs.asdict(self)
        d["errors"] = dict(self.errors)
        d["outputs"] = dict(self.outputs)
        return d


# =============================================================== one connection


@attrs.define(eq=False)
class _Conn:
    """The runtime's state of one WebSocket connection (one journal ``conn`` id)."""

    id: int
    shard: int
    url: str
    streams: list[str]
    url_streams: int
    ws: Any = None
    opened_at: float = 0.0
    frames: int = 0
    scope: trio.CancelScope | None = None
    error: CaptureError | None = None
    rotating: bool = False
    #: set once the first frame arrived (a predecessor may close then)
    ready: trio.Event = attrs.Factory(trio.Event)
    #: set by the successor when it is ready: close now
    release: trio.Event = attrs.Factory(trio.Event)
    #: set when rotation starts or the connection ended: the shard loop acts
    signal: trio.Event = attrs.Factory(trio.Event)
    #: set when rotation starts (the session's rotation task waits on it)
    rotate: trio.Event = attrs.Factory(trio.Event)
    limiter: Any = None
    done: bool = False
    #: the TCP (or TLS) stream under ``ws``: ours to close, whatever trio-websocket did
    stream: Any = None
    #: the session's nursery and the cancel scope of its helper tasks (all but the reader)
    session: trio.Nursery | None = None
    helpers: trio.CancelScope | None = None
    #: why we are closing it cleanly (our close frame sent, still reading until the peer's)
    closing: str | None = None
    #: set when the reader saw the peer's close after ours: nothing it sent is lost
    read_done: trio.Event = attrs.Factory(trio.Event)


class _ShutdownWatch:
    """Codec wrapper: passes events through, and tells the runtime about ``serverShutdown``.

    The pipeline returns outputs, not events; this is the one event the I/O
    shell itself must act on (by rotating the connection).
    """

    def __init__(self, codec: Any, on_shutdown: Callable[[], None]) -> None:
        self._codec = codec
        self._on_shutdown = on_shutdown
        self.name = codec.name
        self.sync_rule = codec.sync_rule

    def decode(self, seq: int, recv_ns: int, kind: str, source: str, payload: bytes) -> Any:
        events = self._codec.decode(seq, recv_ns, kind, source, payload)
        for ev in events:
            if ev.__class__ is ServerShutdown:
                self._on_shutdown()
        return events

    def __getattr__(self, name: str) -> Any:
        return getattr(self._codec, name)


class _NullPipeline:
    """Journal-only capture (no codec/reducers): the runtime does not depend on them."""

    class counters:  # noqa: N801 - mimics Pipeline.counters
        decode_errors = 0

    def feed(self, *args: Any) -> list[tuple[int, Any]]:
        return []


# =============================================================== the capture


class Capture:
    """One capture: connections, journal, pipeline and REST, in one trio nursery.

    Args:
        config: what to capture and the timing knobs.
        writer: the journal (this object ticks it and closes/seals it on exit).
        codec: the exchange codec (stream names, URLs, subscribe bytes, decoding).
        reducers: reducer configurations for the pipeline; ``None`` journals only.
        recorder: optional :class:`engine.journal.recorder.OutputRecorder` (closed on exit).
        checkpointer: optional :class:`engine.replay.checkpoints.CheckpointWriter`, asked
            after every fed frame.  When its cadence is due the state is taken at once
            (``prepare``: a plain-data snapshot, in the read loop) and written by a worker
            thread (``store``: encoding, compression, fsync), so frame reading never waits
            for the disk.  One write at a time: a checkpoint due while the previous one is
            still being written is skipped (``status.checkpoints_skipped``); a failed
            write is logged and counted (``errors["checkpoint"]``), never fatal.
        rng: randomness for backoff jitter (inject a seeded one in tests).
        on_status: called once a second with the status (for displays/logs).
    """

    def __init__(
        self,
        config: LiveConfig,
        writer: JournalWriter,
        codec: Any,
        reducers: Sequence[Any] | None = None,
        *,
        recorder: Any = None,
        checkpointer: Any = None,
        rng: random.Random | None = None,
        on_status: Callable[[CaptureStatus], None] | None = None,
    ) -> None:
        if not config.ws_url:
            raise ValueError("LiveConfig.ws_url is empty: pass the exchange's WebSocket base URL")
        self.config = config
        self.writer = writer
        self.codec = codec
        self.recorder = recorder
        self.checkpointer = checkpointer
        #: called with each frame's outputs, after the recorder (displays, alerting);
        #: a listener that raises is logged and skipped, never stops the capture
        self.output_listeners: list[Callable[[list[tuple[int, Any]]], None]] = []
        self.rng = rng or random.Random()
        self.on_status = on_status
        self.status = CaptureStatus()
        self._feeding: _Conn | None = None
        self._shutdowns: list[_Conn] = []
        if reducers is None:
            self.pipeline: Any = _NullPipeline()
        else:
            from engine.pipeline import Pipeline

            self.pipeline = Pipeline(_ShutdownWatch(codec, self._on_server_shutdown), reducers)
        self.streams = codec.streams(list(config.symbols), list(config.channels))
        self.shards = shard_streams(codec, self.streams, config.max_streams_per_conn)
        self.conns: dict[int, _Conn] = {}
        self._next_conn = 1
        self._inflight: set[str] = set()
        self._rest_budget = WeightBudget(config.rest_weight_per_min)
        self._nursery: trio.Nursery | None = None
        self._ssl = ssl.create_default_context()
        if not config.verify_tls:
            self._ssl.check_hostname = False
            self._ssl.verify_mode = ssl.CERT_NONE
        self._http: Any = None
        self._fsync_errors = 0
        self.cancel_scope = trio.CancelScope()
        self._stopping = False
        self._stop_requested: trio.Event | None = None
        self._all_closed: trio.Event | None = None
        #: prepared checkpoints on their way to the writer thread (room for one)
        self._ckpt_send: trio.MemorySendChannel[Any] | None = None

    # ------------------------------------------------------------------ public

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> CaptureStatus:
        """Capture until :meth:`stop` (or cancellation); then flush and seal the journal.

        Returns the final status.  Never raises for exchange or network
        trouble; an unexpected bug propagates after the journal is sealed.

        The end, in this order (whatever stopped the capture): the connections
        close, the "capture stop" marker is journaled and folded, the checkpoint
        writer finishes what is queued, the final state is checkpointed (unless a
        checkpoint already holds it), then the journal and the outputs are sealed.
        """

        st = self.status
        st.started_mono = trio.current_time()
        send: trio.MemorySendChannel[Any] | None = None
        try:
            # The checkpoint writer lives outside the capture's cancel scope: the final
            # "capture stop" marker is folded (and may make a checkpoint due) after the
            # connections are gone, and the writer must still be there to take it.
            async with trio.open_nursery() as keeper:
                if self.checkpointer is not None:
                    send, recv = trio.open_memory_channel[Any](1)
                    self._ckpt_send = send
                    keeper.start_soon(self._checkpoint_writer, recv)
                try:
                    self._marker(
                        f"capture start: {len(self.streams)} streams on {len(self.shards)} connections"
                    )
                    await self._capture(task_status)
                finally:
                    self._nursery = None
                    try:
                        self._refresh_status()
                        self._marker(
                            f"capture stop: {st.frames_in} frames in, {st.reconnects} reconnects"
                        )
                    finally:
                        if send is not None:  # the writer drains what is queued, then ends
                            send.close()
                        self._ckpt_send = None
        finally:
            self._finish()
        return st

    async def _capture(self, task_status: Any) -> None:
        import httpx

        with self.cancel_scope:
            async with httpx.AsyncClient(
                verify=self.config.verify_tls,
                timeout=self.config.rest_timeout_s,
                follow_redirects=False,
            ) as http:
                self._http = http
                async with trio.open_nursery() as n:
                    self._nursery = n
                    self._stop_requested = trio.Event()
                    self._all_closed = trio.Event()
                    n.start_soon(self._stopper)
                    n.start_soon(self._ticker)
                    n.start_soon(self._status_loop)
                    for i, shard in enumerate(self.shards):
                        n.start_soon(self._shard, i, shard)
                    task_status.started(self)

    def stop(self) -> None:
        """Close every connection cleanly, then wind down (the journal is sealed when :meth:`run` returns).

        Each connection sends its close frame and keeps journaling until the
        server's close arrives (bounded by ``disconnect_timeout_s``): every frame
        the server sent before it saw our close is in the journal.  Call it from
        the trio thread; cancelling :attr:`cancel_scope` instead stops at once.
        """
        if self._stop_requested is None:  # not running (yet): nothing to close
            self.cancel_scope.cancel()
            return
        self._stopping = True
        self._stop_requested.set()

    async def _stopper(self) -> None:
        assert self._stop_requested is not None and self._all_closed is not None
        await self._stop_requested.wait()
        for c in list(self.conns.values()):
            self._close(c, "capture stopped")
        if self.conns:
            with trio.move_on_after(self.config.disconnect_timeout_s + 0.5):
                await self._all_closed.wait()
        self.cancel_scope.cancel()

    # ------------------------------------------------------------------ journaling helpers

    def _journal(
        self, conn: int, dir: str, kind: str, source: str, payload: bytes, code: int | None = None
    ) -> int:
        """Append one frame, then feed it to the pipeline (the rule holds for non-data frames too)."""
        recv_ns = time_ns()
        seq = self.writer.append(recv_ns, conn, dir, kind, source, payload, code)
        outs = self.pipeline.feed(seq, recv_ns, conn, dir, kind, source, payload, code)
        if outs:
            self._on_outputs(recv_ns, outs)
        if self.checkpointer is not None and self.checkpointer.due(self.pipeline):
            self._checkpoint()
        return seq

    def _checkpoint(self) -> None:
        """Take a checkpoint now and queue it for the writer thread (or skip: one at a time)."""
        assert self.checkpointer is not None
        pending = self.checkpointer.prepare(self.pipeline)
        if self._ckpt_send is None:  # not running yet: nothing to hand it to
            self._store_checkpoint(pending)
            return
        try:
            self._ckpt_send.send_nowait(pending)
        except trio.WouldBlock:
            self.status.checkpoints_skipped += 1
            log.warning("checkpoint at seq %d skipped: the previous one is still being written",
                        pending.doc["last_seq"])  # fmt: skip

    async def _checkpoint_writer(self, recv: trio.MemoryReceiveChannel[Any]) -> None:
        """Write prepared checkpoints in a worker thread until the send side closes.

        Shielded: a write is never abandoned (no torn file) and a queued
        checkpoint is never dropped; :meth:`run` closes the send side at the end,
        and the final checkpoint follows.
        """
        with trio.CancelScope(shield=True):
            async with recv:
                async for pending in recv:
                    await trio.to_thread.run_sync(self._store_checkpoint, pending)
            # the capture has ended (the stop marker is folded): the final state, off this thread
            await trio.to_thread.run_sync(self._final_checkpoint)

    def _store_checkpoint(self, pending: Any) -> None:
        assert self.checkpointer is not None
        try:
            self.checkpointer.store(pending)
        except OSError as exc:  # disk full, permissions ...: the capture goes on
            self._checkpoint_failed(exc)

    def _final_checkpoint(self) -> None:
        """Checkpoint the final state unless a checkpoint already holds it."""
        if self.checkpointer is not None:
            try:
                self.checkpointer.finish(self.pipeline)
            except OSError as exc:
                self._checkpoint_failed(exc)

    def _checkpoint_failed(self, exc: OSError) -> None:
        self.status.errors["checkpoint"] += 1
        self.status.last_error = f"checkpoint write failed: {exc}"
        log.warning("checkpoint write failed: %s", exc)

    def _marker(self, text: str) -> None:
        self._journal(0, Dir.LOCAL, Kind.MARKER, "engine", text.encode())

    def _record_error(self, conn: int, source: str, exc: CaptureError, where: str) -> None:
        msg = f"{exc.kind} in {where}: {exc}"
        self._journal(conn, Dir.LOCAL, Kind.ERROR, source, msg.encode())
        self.status.errors[exc.kind] += 1
        self.status.last_error = msg
        log.warning("conn %d %s", conn, msg)

    def _on_outputs(self, recv_ns: int, outs: list[tuple[int, Any]]) -> None:
        if self.recorder is not None:
            self.recorder.record(recv_ns, outs)
        for listener in self.output_listeners:
            try:
                listener(outs)
            except Exception:
                log.exception("output listener %r failed (skipped)", listener)
        counts = self.status.outputs
        for _, o in outs:
            counts[o.__class__.__name__] += 1
            if o.__class__ is SnapshotRequest:
                self._request_snapshot(o.symbol, o.purpose, o.reason)

    def _on_server_shutdown(self) -> None:
        # Called from inside pipeline.feed: only note it.  Journaling the rotation
        # marker here would fold it into the pipeline *before* the rest of the
        # shutdown frame's fold finished — replay would differ.
        if self._feeding is not None:
            self._shutdowns.append(self._feeding)

    def _after_feed(self) -> None:
        while self._shutdowns:
            c = self._shutdowns.pop(0)
            if not c.rotating and not c.done:
                log.info("conn %d: serverShutdown notice, rotating", c.id)
                self._start_rotation(c, "serverShutdown")

    # ------------------------------------------------------------------ writer clock

    async def _ticker(self) -> None:
        """Age flushes every ``tick_s``; fsync every ``fsync_interval_s`` on a worker thread."""
        w = self.writer
        tick = self.config.tick_s
        fsync_every = self.config.fsync_interval_s
        last_fsync = trio.current_time()
        while True:
            await trio.sleep(tick)
            now = trio.current_time()
            if now - last_fsync >= fsync_every:
                last_fsync = now
                await trio.to_thread.run_sync(self._fsync_quietly)
            w.tick()  # age flush; its own fsync is not due right after ours
            if self.recorder is not None:
                self.recorder.tick()

    def _fsync_quietly(self) -> None:
        try:
            self.writer.fsync()
        except OSError:  # the segment was sealed (and fsynced) meanwhile by the trio thread
            self._fsync_errors += 1

    async def _status_loop(self) -> None:
        st = self.status
        last_frames, last_t = st.frames_in, trio.current_time()
        while True:
            await trio.sleep(1.0)
            now = trio.current_time()
            st.frames_per_s = (st.frames_in - last_frames) / max(1e-9, now - last_t)
            last_frames, last_t = st.frames_in, now
            self._refresh_status()
            if self.on_status is not None:
                self.on_status(st)

    def _refresh_status(self) -> None:
        st = self.status
        st.journal_bytes = self.writer.bytes_written
        st.journal_frames = self.writer.next_seq - 1
        st.decode_errors = self.pipeline.counters.decode_errors
        st.connections_open = sum(1 for c in self.conns.values() if c.ws is not None)

    # ------------------------------------------------------------------ shards and reconnects

    def _new_conn(self, shard: int, streams: list[str]) -> _Conn:
        cfg = self.config
        # as many streams in the URL as fit; the rest are SUBSCRIBEd
        k = len(streams)
        url = self.codec.ws_url(cfg.ws_url, streams)
        while len(url) > cfg.max_url_len and k > 1:
            k = max(1, k // 2)
            url = self.codec.ws_url(cfg.ws_url, streams[:k])
        c = _Conn(self._next_conn, shard, url, streams, k)
        self._next_conn += 1
        return c

    async def _shard(self, index: int, streams: list[str]) -> None:
        """Keep one shard's streams connected: reconnect with backoff, rotate without a gap."""
        cfg = self.config
        backoff = Backoff(cfg.backoff_base_s, cfg.backoff_cap_s, self.rng)
        prev: _Conn | None = None
        first = True
        async with trio.open_nursery() as n:
            rotating = False
            while not self._stopping:
                c = self._new_conn(index, streams)
                if not first and not rotating:
                    self.status.reconnects += 1
                first = False
                n.start_soon(self._conn_task, c, prev)
                await c.signal.wait()
                if self._stopping:
                    break
                rotating = c.rotating and not c.done
                if rotating:
                    self.status.rotations += 1
                    backoff.reset()
                    prev = c
                    continue
                if prev is not None and prev.done:
                    prev = None
                if c.opened_at and trio.current_time() - c.opened_at >= cfg.stable_after_s:
                    backoff.reset()
                delay = backoff.next_delay()
                log.info("shard %d: reconnecting in %.2f s", index, delay)
                await trio.sleep(delay)

    def _start_rotation(self, c: _Conn, why: str) -> None:
        if c.rotating or c.done:
            return
        c.rotating = True
        self._marker(f"rotate conn {c.id}: {why}")
        c.rotate.set()
        c.signal.set()

    async def _open(self, c: _Conn, nursery: trio.Nursery) -> Any:
        """TCP (+TLS), then the WebSocket handshake; the stream is kept so we can always close it."""
        cfg = self.config
        parts = urlsplit(c.url)
        tls = parts.scheme == "wss"
        host = parts.hostname or ""
        port = parts.port or (443 if tls else 80)
        resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            with trio.fail_after(cfg.connect_timeout_s):
                if tls:
                    c.stream = await trio.open_ssl_over_tcp_stream(
                        host, port, ssl_context=self._ssl, https_compatible=True
                    )
                else:
                    c.stream = await trio.open_tcp_stream(host, port)
                return await trio_websocket.wrap_client_stream(
                    nursery,
                    c.stream,
                    host if port in (80, 443) else f"{host}:{port}",
                    resource,
                    message_queue_size=cfg.message_queue,
                    max_message_size=cfg.max_message_bytes,
                    receive_buffer_size=65536,
                )
        except trio.TooSlowError:
            raise ConnectFailed(f"connect timed out after {cfg.connect_timeout_s} s") from None
        except (OSError, trio.BrokenResourceError) as exc:
            raise ConnectFailed(f"{type(exc).__name__}: {exc}") from None

    async def _conn_task(self, c: _Conn, prev: _Conn | None) -> None:
        """One connection from connect to close; every ending is journaled, none raises."""
        self.conns[c.id] = c
        close_code: int | None = None
        close_reason = ""
        try:
            async with _single_errors(), trio.open_nursery() as n:
                ws = await self._open(c, n)
                c.ws = ws
                c.opened_at = trio.current_time()
                self.status.connects += 1
                info = {
                    "local": f"{ws.local.address}:{ws.local.port}",
                    "remote": f"{ws.remote.address}:{ws.remote.port}",
                    "streams": len(c.streams),
                    "shard": c.shard,
                }
                self._journal(c.id, Dir.LOCAL, Kind.OPEN, c.url, orjson.dumps(info))
                try:
                    await self._session(c, ws, prev)
                finally:
                    close_code, close_reason = await self._end_ws(c, ws)
                    n.cancel_scope.cancel()
        except CaptureError as exc:
            c.error = exc
        except trio_websocket.HandshakeError as exc:  # raised in trio-websocket's reader task
            c.error = ConnectFailed(f"handshake: {exc}")
        except Exception as exc:  # noqa: BLE001 - a bug in one connection must not stop the capture
            c.error = CaptureError(f"internal {type(exc).__name__}: {exc}")
            log.exception("conn %d: unexpected error", c.id)
        finally:
            if c.stream is not None:
                with trio.CancelScope(shield=True):
                    await trio.aclose_forcefully(c.stream)
            # journal the ending (sync from here: works under cancellation too)
            if c.error is not None and not isinstance(c.error, ServerClosed):
                self._record_error(c.id, c.url, c.error, "connect" if c.ws is None else "session")
            elif isinstance(c.error, ServerClosed):
                self.status.errors[c.error.kind] += 1
                self.status.last_error = str(c.error)
                log.warning("conn %d %s", c.id, c.error)
            if c.ws is not None:
                self._journal(c.id, Dir.LOCAL, Kind.CLOSE, c.url, close_reason.encode(), close_code)
            c.ws = None
            c.done = True
            c.signal.set()
            self.conns.pop(c.id, None)
            if self._stopping and not self.conns and self._all_closed is not None:
                self._all_closed.set()

    async def _end_ws(self, c: _Conn, ws: Any) -> tuple[int | None, str]:
        """Finish the WebSocket after the session; returns the (code, reason) to journal.

        A clean close already happened in :meth:`_closer`.  A stalled peer gets no
        close handshake (it would not answer): 1006, as for any abort.  Other
        errors get a bounded close handshake (never trio-websocket's 60 s).
        """
        err = c.error
        if err is None:
            return 1000, c.closing or ("rotated" if c.rotating else "capture stopped")
        if isinstance(err, ServerClosed):
            return err.code, err.reason
        if isinstance(err, StalledConnection):
            return 1006, err.kind
        with trio.move_on_after(self.config.disconnect_timeout_s) as cs:
            cs.shield = True
            try:
                await ws.aclose(1000, err.kind)
            except Exception:  # noqa: BLE001 - closing a broken socket may fail any way
                pass
        return 1000, err.kind

    def _close(self, c: _Conn, reason: str) -> None:
        """Begin a clean close of ``c``: stop its helpers, send our close frame, keep journaling."""
        if c.closing is not None or c.done or c.ws is None or c.session is None:
            return
        c.closing = reason
        if c.helpers is not None:
            c.helpers.cancel()
        c.session.start_soon(self._closer, c, c.ws)

    async def _closer(self, c: _Conn, ws: Any) -> None:
        """Send the close frame; the reader journals until the peer's close (bounded), then end."""
        with trio.move_on_after(self.config.disconnect_timeout_s):
            try:
                await _send_close(ws, 1000, c.closing or "")
            except WsClosed:
                pass  # closed meanwhile: the reader ends by itself
            await c.read_done.wait()
        assert c.scope is not None
        c.scope.cancel()

    async def _session(self, c: _Conn, ws: Any, prev: _Conn | None) -> None:
        """Run the reader and the helpers (subscriber, pinger, watchdog, rotation) until the end."""
        try:
            with trio.CancelScope() as scope:
                c.scope = scope
                async with trio.open_nursery() as n:
                    c.session = n
                    n.start_soon(self._guard, c, self._read, c, ws, prev)
                    n.start_soon(self._helpers, c, ws)
                    if self._stopping:
                        self._close(c, "capture stopped")
        finally:
            c.session = None

    async def _helpers(self, c: _Conn, ws: Any) -> None:
        with trio.CancelScope() as scope:
            c.helpers = scope
            async with trio.open_nursery() as n:
                if c.url_streams < len(c.streams):
                    n.start_soon(self._guard, c, self._subscribe, c, ws)
                n.start_soon(self._guard, c, self._pinger, c, ws)
                n.start_soon(self._guard, c, self._watchdog, c)
                n.start_soon(self._guard, c, self._rotation, c)

    async def _guard(self, c: _Conn, fn: Callable[..., Any], *args: Any) -> None:
        """Run one session task; a CaptureError records the connection's error and ends the session."""
        try:
            await fn(*args)
        except CaptureError as exc:
            if c.error is None:
                c.error = exc
            assert c.scope is not None
            c.scope.cancel()

    # ------------------------------------------------------------------ session tasks

    async def _read(self, c: _Conn, ws: Any, prev: _Conn | None) -> None:
        """THE hot loop: receive → recv_ns → journal → pipeline.  Nothing else comes first."""
        append = self.writer.append
        feed = self.pipeline.feed
        st = self.status
        cid, src = c.id, c.url
        text, binary, dir_in = Kind.TEXT, Kind.BINARY, Dir.IN
        get = ws.get_message
        ckpt = self.checkpointer
        try:
            msg = await get()
        except WsClosed as exc:
            self._read_closed(c, exc)
            return
        c.ready.set()
        if prev is not None:
            prev.release.set()
        while True:
            recv_ns = time_ns()
            if msg.__class__ is str:
                payload = msg.encode()
                kind = text
            else:
                payload = bytes(msg)
                kind = binary
            seq = append(recv_ns, cid, dir_in, kind, src, payload)
            c.frames += 1
            st.frames_in += 1
            st.bytes_in += len(payload)
            self._feeding = c
            outs = feed(seq, recv_ns, cid, dir_in, kind, src, payload, None)
            if outs:
                self._on_outputs(recv_ns, outs)
            if ckpt is not None and ckpt.due(self.pipeline):
                self._checkpoint()
            if self._shutdowns:
                self._after_feed()
            try:
                msg = await get()
            except WsClosed as exc:
                self._read_closed(c, exc)
                return

    def _read_closed(self, c: _Conn, exc: WsClosed) -> None:
        """The peer's close: the end of a clean close we began, or an error."""
        if c.closing is None:
            raise _closed_error(exc) from None
        c.read_done.set()

    async def _send_control(self, c: _Conn, ws: Any, limiter: ControlLimiter, data: bytes) -> None:
        await limiter.acquire()
        try:
            await ws.send_message(data.decode())
        except WsClosed as exc:
            raise _closed_error(exc) from None
        self._journal(c.id, Dir.OUT, Kind.TEXT, c.url, data)
        self.status.frames_out += 1

    async def _subscribe(self, c: _Conn, ws: Any) -> None:
        """SUBSCRIBE the streams that did not fit the URL, in chunks, through the rate limiter."""
        chunk = self.config.subscribe_chunk
        rest = c.streams[c.url_streams :]
        for i in range(0, len(rest), chunk):
            rid = c.id * 10_000 + i // chunk + 1
            await self._send_control(
                c, ws, self._limiter(c), self.codec.subscribe(rest[i : i + chunk], rid)
            )

    def _limiter(self, c: _Conn) -> ControlLimiter:
        if c.limiter is None:
            c.limiter = ControlLimiter(self.config.control_rate())
        return c.limiter

    async def _pinger(self, c: _Conn, ws: Any) -> None:
        """Own pings (through the limiter: pings count) under fail_after: a stall is detected in time."""
        cfg = self.config
        n = 0
        while True:
            await trio.sleep(cfg.ping_interval_s)
            await self._limiter(c).acquire()
            n += 1
            try:
                with trio.fail_after(cfg.ping_timeout_s):
                    await ws.ping(struct.pack("!Q", n))
            except trio.TooSlowError:
                raise StalledConnection(f"ping unanswered for {cfg.ping_timeout_s} s") from None
            except WsClosed as exc:
                raise _closed_error(exc) from None

    async def _watchdog(self, c: _Conn) -> None:
        """No data frame for ``stale_after_s`` ⇒ stale (server pings do not reach get_message)."""
        limit = self.config.stale_after_s
        step = min(1.0, limit / 4)
        seen, since = c.frames, trio.current_time()
        while True:
            await trio.sleep(step)
            now = trio.current_time()
            if c.frames != seen:
                seen, since = c.frames, now
            elif now - since >= limit:
                raise StaleConnection(f"no data for {now - since:.1f} s")

    async def _rotation(self, c: _Conn) -> None:
        """Rotate before the lifetime; after a rotation starts, close once the successor is ready."""
        cfg = self.config
        with trio.move_on_after(cfg.lifetime_s):
            await c.rotate.wait()
        if not c.rotating:
            self._start_rotation(c, f"lifetime {cfg.lifetime_s} s")
        with trio.move_on_after(cfg.handoff_timeout_s):
            await c.release.wait()
        self._close(c, "rotated")

    # ------------------------------------------------------------------ REST snapshots

    def _request_snapshot(self, symbol: str, purpose: str, reason: str) -> None:
        if symbol in self._inflight or self._nursery is None or not self.config.rest_url:
            return
        self._inflight.add(symbol)
        self._nursery.start_soon(self._fetch_snapshot, symbol, purpose, reason)

    async def _fetch_snapshot(self, symbol: str, purpose: str, reason: str) -> None:
        """GET the depth snapshot; journal the response (any status) or the failure, then feed it."""
        cfg = self.config
        url = self.codec.snapshot_url(cfg.rest_url, symbol, cfg.snapshot_limit)
        delay = 0.25
        try:
            for attempt in range(1, cfg.rest_retries + 1):
                await self._rest_budget.acquire(depth_weight(cfg.exchange, cfg.snapshot_limit))
                self.status.rest_requests += 1
                try:
                    with trio.fail_after(cfg.rest_timeout_s):
                        resp = await self._http.get(url)
                        body = await resp.aread()
                except Exception as exc:  # noqa: BLE001 - httpx/anyio raise many kinds
                    err: CaptureError = (
                        CaptureTimeout(f"REST timed out after {cfg.rest_timeout_s} s")
                        if isinstance(exc, trio.TooSlowError)
                        else ConnectFailed(f"REST {type(exc).__name__}: {exc}")
                    )
                    self._record_error(0, url, err, f"snapshot {symbol} attempt {attempt}")
                    await trio.sleep(delay)
                    delay *= 2
                    continue
                self.status.rest_responses += 1
                self._journal(0, Dir.IN, Kind.REST, url, body, resp.status_code)
                if resp.status_code in (418, 429):
                    retry = float(resp.headers.get("Retry-After", "60") or 60)
                    log.warning(
                        "REST %s: HTTP %d, backing off %.0f s", url, resp.status_code, retry
                    )
                    await trio.sleep(min(retry, 300.0))
                return
        finally:
            self._inflight.discard(symbol)

    # ------------------------------------------------------------------ the end

    def _finish(self) -> None:
        """The final checkpoint, then seal the journal and the outputs (sync: runs under cancellation)."""
        try:
            self._final_checkpoint()  # normally done by the writer task already: a no-op then
        finally:
            self.writer.close()
            if self.recorder is not None:
                self.recorder.close()
            self._refresh_status()


@contextlib.asynccontextmanager
async def _single_errors() -> Any:
    """Unwrap an exception group holding one real error (trio wraps nursery-body errors).

    ``Cancelled`` leaves next to it are dropped: the enclosing scope is
    cancelled anyway and the next checkpoint raises again.
    """
    try:
        yield
    except BaseExceptionGroup as eg:
        real = [e for e in _leaves(eg) if not isinstance(e, trio.Cancelled)]
        if len(real) == 1:
            raise real[0] from None
        raise


def _leaves(eg: BaseExceptionGroup[Any]) -> list[BaseException]:
    out: list[BaseException] = []
    for e in eg.exceptions:
        out.extend(_leaves(e) if isinstance(e, BaseExceptionGroup) else [e])
    return out


async def _send_close(ws: Any, code: int, reason: str) -> None:
    """Send our close frame and leave the connection *readable* until the peer's close arrives.

    trio-websocket's ``aclose()`` closes its message queue first: frames the
    server sent before it saw our close would be discarded, unjournaled.  RFC 6455
    lets an endpoint keep receiving after sending its close, so this sends the
    frame through the connection's own send path (the one internal we rely on;
    without it we fall back to ``aclose()`` and lose that tail).
    """
    send = getattr(ws, "_send", None)
    proto = getattr(ws, "_wsproto", None)
    if send is None or proto is None:
        await ws.aclose(code, reason)
        return
    if proto.state is ConnectionState.OPEN:
        await send(CloseConnection(code=code, reason=reason))


def _closed_error(exc: WsClosed) -> CaptureError:
    """trio-websocket's ConnectionClosed → our typed error."""
    r = exc.reason
    code = getattr(r, "code", None)
    reason = getattr(r, "reason", None) or ""
    if code in (1002, 1007, 1009):
        return InvalidData(f"protocol error, close {code}: {reason}")
    return ServerClosed(code, reason or ("dropped" if code == 1006 else ""))
