"""Capture orchestration (``engine run``'s engine): the journal first, then the pipeline, then the actions.

Owns :class:`Capture`: the one journal-then-feed function (:meth:`Capture.journal`),
what hangs off each fold (recording the outputs, telling listeners, answering
the outputs that ask for I/O through a dispatch table, then the after-fold
hooks: checkpointing on the cadence), the journal writer's clock (tick, fsync in a worker thread), the
status loop and the order of the end.  Must not: talk to sockets (that is
:mod:`engine.live.connection` and :mod:`engine.live.rest`), interpret market
data (codecs and reducers, via :class:`engine.pipeline.Pipeline`) or make a
decision a replay could not reproduce from the journal.

THE RULE, in :meth:`Capture.journal`: every frame is appended to the journal
*first* (inbound data with ``recv_ns`` taken right after the receive), then fed
to the pipeline with the seq the journal returned.  Everything that shapes
state goes through it: inbound frames, outbound control messages
(``dir=out``), connection open/close/error (``dir=local``), REST responses
(``kind=rest``, ``code`` = HTTP status), the capture's own markers.

Actions are outputs of the fold (:mod:`engine.outputs`): ``SnapshotRequest`` →
what the codec says (:meth:`engine.codecs.base.Codec.resync` for ``purpose="sync"``:
a REST fetch or a resubscribe on the connection carrying the symbol's book;
``purpose="verify"``: a REST fetch if the codec has a snapshot URL, else nothing),
``RotateRequest`` → a gap-free rotation of the connection that
delivered the frame.  A :class:`~engine.events.SubscriptionError` the codec
decodes (a refused subscribe) is counted in ``status.errors["subscription"]``.  Their answers come back as journaled frames, so replay
sees exactly what live saw.

::

    Capture.run ── nursery (keeper) ─┬─ _checkpoint_writer  (worker thread; outlives the capture scope)
                                     └─ cancel_scope ── nursery ─┬─ _stopper
                                                                 ├─ _ticker       (writer.tick, fsync in a thread)
                                                                 ├─ _status_loop  (frames/s once a second)
                                                                 ├─ Connections.run (engine.live.connection)
                                                                 └─ SnapshotFetcher fetches (engine.live.rest)

The end, whatever stopped it (:meth:`Capture.stop`, the cancel scope, a bug):
connections closed → "capture stop" marker journaled and folded → queued
checkpoints written → final checkpoint → journal and outputs sealed.

The disk: when a journal write fails (:class:`engine.journal.writer.JournalWriteError`:
disk full, I/O error) the capture stops reading at once, journals and folds
nothing more (the rule holds: nothing is folded that is not journaled), writes
no final checkpoint and leaves the open segment as a ``.partial`` for
``engine journal recover``; ``status.stopped_by`` says ``journal_write_failed``.
Before that, free space is checked once a second (``os.statvfs``, in the
ticker, never per frame): below ``LiveConfig.min_free_bytes`` the capture stops
cleanly (``stopped_by = "low_disk"``) while there is still room to seal.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import trio

from engine.codecs.base import RestResync, Resubscribe
from engine.events import SubscriptionError
from engine.journal.schema import STOP_MARKER, Dir, Kind
from engine.journal.writer import JournalWriteError, JournalWriter
from engine.live.config import LiveConfig
from engine.live.connection import Connections
from engine.live.errors import CaptureError
from engine.live.rest import SnapshotFetcher
from engine.live.status import CaptureStatus
from engine.outputs import RotateRequest, SnapshotRequest

__all__ = ["Capture"]

log = logging.getLogger("engine.live.capture")

time_ns = time.time_ns


class _NullPipeline:
    """Journal-only capture (no codec/reducers): the runtime does not depend on them."""

    class counters:  # noqa: N801 - mimics Pipeline.counters
        decode_errors = 0

    def feed(self, *args: Any) -> list[tuple[int, Any]]:
        return []


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
            write is logged and counted (``errors["checkpoint"]``), never fatal.  The
            final state is checkpointed at the end (unless a checkpoint already holds it).
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
        self.on_status = on_status
        self.status = CaptureStatus()
        if reducers is None:
            self.pipeline: Any = _NullPipeline()
        else:
            from engine.pipeline import Pipeline

            self.pipeline = Pipeline(codec, reducers, listeners=[self._watch_events])
        self.links = Connections(
            config, codec, self.status, rng or random.Random(), self.journal, self._record_error
        )
        self.rest = SnapshotFetcher(config, codec, self.status, self.journal, self._record_error)
        #: output type → the action answering it, called with (conn of the frame, output)
        self.actions: dict[type, Callable[[int, Any], None]] = {
            SnapshotRequest: self._snapshot_request,
            RotateRequest: self._rotate,
        }
        #: called after every frame's fold and actions (the checkpoint cadence)
        self._after_fold: list[Callable[[], None]] = []
        if checkpointer is not None:
            self._after_fold.append(self._maybe_checkpoint)
        self.streams = self.links.streams
        self.shards = self.links.shards
        #: the first journal write failure (nothing is journaled or folded after it)
        self.write_error: JournalWriteError | None = None
        self.cancel_scope = trio.CancelScope()
        self._stop_requested: trio.Event | None = None
        #: prepared checkpoints on their way to the writer thread (room for one)
        self._ckpt_send: trio.MemorySendChannel[Any] | None = None
        self._resyncs = 0

    @property
    def conns(self) -> dict[int, Any]:
        """The open connections by journal ``conn`` id."""
        return self.links.conns

    # ------------------------------------------------------------------ public

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> CaptureStatus:
        """Capture until :meth:`stop` (or cancellation); then flush and seal the journal.

        Returns the final status (``stopped_by`` says why it ended).  Never
        raises for exchange, network or disk trouble; an unexpected bug
        propagates after the journal is sealed.
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
                    self.rest.attach(None)
                    try:
                        self._refresh_status()
                        why = f" ({st.stopped_by})" if st.stopped_by else ""
                        self._marker(
                            f"{STOP_MARKER}: {st.frames_in} frames in, {st.reconnects} reconnects{why}"
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
                async with trio.open_nursery() as n:
                    self.rest.attach(n, http)
                    self._stop_requested = trio.Event()
                    n.start_soon(self._stopper)
                    n.start_soon(self._ticker)
                    n.start_soon(self._status_loop)
                    n.start_soon(self.links.run)
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
        self.links.stopping = True
        self._stop_requested.set()

    async def _stopper(self) -> None:
        assert self._stop_requested is not None
        await self._stop_requested.wait()
        await self.links.stop()
        self.cancel_scope.cancel()

    # ------------------------------------------------------------------ journal, then fold

    def journal(
        self,
        conn: int,
        dir: str,
        kind: str,
        source: str,
        payload: bytes,
        code: int | None = None,
        recv_ns: int | None = None,
    ) -> int:
        """Append one frame, then feed it to the pipeline; act on what the fold produced.

        ``recv_ns``: the receive time (default: now).  Returns the frame's seq.
        """
        if self.write_error is not None:
            return 0
        if recv_ns is None:
            recv_ns = time_ns()
        try:
            seq = self.writer.append(recv_ns, conn, dir, kind, source, payload, code)
        except JournalWriteError as exc:
            self._write_failed(exc)
            return 0
        outs = self.pipeline.feed(seq, recv_ns, conn, dir, kind, source, payload, code)
        if outs:
            self._on_outputs(conn, recv_ns, outs)
        for hook in self._after_fold:
            hook()
        return seq

    def _on_outputs(self, conn: int, recv_ns: int, outs: list[tuple[int, Any]]) -> None:
        """Record, tell the listeners, count, then answer the actions (which may journal more)."""
        if self.recorder is not None:
            try:
                self.recorder.record(recv_ns, outs)
            except JournalWriteError as exc:
                self._write_failed(exc)
        for listener in self.output_listeners:
            try:
                listener(outs)
            except Exception:
                log.exception("output listener %r failed (skipped)", listener)
        counts = self.status.outputs
        actions = self.actions
        for _, o in outs:
            counts[o.__class__.__name__] += 1
        for _, o in outs:
            act = actions.get(o.__class__)
            if act is not None:
                act(conn, o)

    def _write_failed(self, exc: JournalWriteError) -> None:
        """A journal write failed: stop reading now; nothing more is journaled or folded."""
        if self.write_error is not None:
            return
        self.write_error = exc
        st = self.status
        st.stopped_by = "journal_write_failed"
        st.errors["journal_write"] += 1
        st.last_error = st.stop_detail = str(exc)
        log.error("%s: stopping the capture (the open segment is left for `engine journal recover`)",
                  exc)  # fmt: skip
        self.links.stopping = True
        self.rest.attach(None)
        self.cancel_scope.cancel()

    def _snapshot_request(self, conn: int, req: SnapshotRequest) -> None:
        """A book wants a snapshot: resync as the codec says, verify by REST (if the venue has it)."""
        if req.purpose != "sync":
            self.rest.request(conn, req)
            return
        cfg = self.config
        self._resyncs += 1
        plan = self.codec.resync(
            req.symbol, self.streams, cfg.rest_url, cfg.snapshot_limit, 10**9 + self._resyncs
        )
        if isinstance(plan, RestResync):
            self.rest.fetch(req.symbol, plan.url)
        elif isinstance(plan, Resubscribe):
            if self.links.resubscribe(plan):
                self.status.resubscribes += 1

    def _watch_events(self, seq: int, events: Sequence[Any]) -> None:
        for ev in events:
            if ev.__class__ is SubscriptionError:
                self.status.errors["subscription"] += 1
                self.status.last_error = f"subscription refused ({ev.code}): {ev.msg}"
                log.warning("%s", self.status.last_error)

    def _rotate(self, conn: int, req: RotateRequest) -> None:
        self.links.rotate(conn, req.reason)

    def _marker(self, text: str) -> None:
        self.journal(0, Dir.LOCAL, Kind.MARKER, "engine", text.encode())

    def _record_error(self, conn: int, source: str, exc: CaptureError, where: str) -> None:
        msg = f"{exc.kind} in {where}: {exc}"
        self.journal(conn, Dir.LOCAL, Kind.ERROR, source, msg.encode())
        self.status.errors[exc.kind] += 1
        self.status.last_error = msg
        log.warning("conn %d %s", conn, msg)

    # ------------------------------------------------------------------ checkpoints

    def _maybe_checkpoint(self) -> None:
        """When the cadence is due: take a checkpoint now, queue it for the writer thread (or skip)."""
        assert self.checkpointer is not None
        if not self.checkpointer.due(self.pipeline):
            return
        pending = self.checkpointer.prepare(self.pipeline)
        if self._ckpt_send is None:  # no writer task (not running): write it here
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
        """Checkpoint the final state unless a checkpoint already holds it (or the journal lacks it)."""
        if self.checkpointer is not None and self.write_error is None:
            try:
                self.checkpointer.finish(self.pipeline)
            except OSError as exc:
                self._checkpoint_failed(exc)

    def _checkpoint_failed(self, exc: OSError) -> None:
        self.status.errors["checkpoint"] += 1
        self.status.last_error = f"checkpoint write failed: {exc}"
        log.warning("checkpoint write failed: %s", exc)

    # ------------------------------------------------------------------ writer clock, status

    async def _ticker(self) -> None:
        """Age flushes every ``tick_s``; fsync every ``fsync_interval_s`` on a worker thread; free space once a second."""
        w = self.writer
        tick = self.config.tick_s
        fsync_every = self.config.fsync_interval_s
        last_fsync = last_disk = trio.current_time()
        self._check_free_space()
        try:
            while True:
                await trio.sleep(tick)
                now = trio.current_time()
                if now - last_fsync >= fsync_every:
                    last_fsync = now
                    await trio.to_thread.run_sync(w.fsync)
                w.tick()  # age flush; its own fsync is not due right after ours
                if self.recorder is not None:
                    self.recorder.tick()
                if now - last_disk >= 1.0:
                    last_disk = now
                    self._check_free_space()
        except JournalWriteError as exc:
            self._write_failed(exc)

    def _check_free_space(self) -> None:
        """Below ``min_free_bytes`` free on the journal's filesystem: stop cleanly while sealing still fits."""
        need = self.config.min_free_bytes
        if not need or self.status.stopped_by:
            return
        try:
            vfs = os.statvfs(self.writer.path)
        except OSError:
            return
        free = vfs.f_bavail * vfs.f_frsize
        if free < need:
            self.status.stopped_by = "low_disk"
            self.status.last_error = self.status.stop_detail = (
                f"{free / 2**20:.1f} MiB free on the journal's filesystem, below the "
                f"{need / 2**20:.0f} MiB minimum: stopping"
            )
            log.error("%s", self.status.last_error)
            self.stop()

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
        st.connections_open = self.links.open_count()

    # ------------------------------------------------------------------ the end

    def _finish(self) -> None:
        """The final checkpoint, then seal the journal and the outputs (sync: runs under cancellation)."""
        try:
            self._final_checkpoint()  # normally done by the writer task already: a no-op then
        finally:
            for sink in (self.writer, self.recorder):
                if sink is None:
                    continue
                try:
                    sink.close()  # after a write failure: no-op (the partial stays as it is)
                except JournalWriteError as exc:
                    self._write_failed(exc)
            self._refresh_status()
