"""REST depth snapshots: fetch what the fold asked for, within the weight budget, and journal the answer.

Owns :class:`SnapshotFetcher` (answers :class:`engine.outputs.SnapshotRequest`
outputs by REST: one fetch per symbol in flight, retries, 418/429 back-off;
each request weighs what the codec's ``snapshot_weight`` says).  Every response,
whatever its HTTP status, is journaled as a ``rest`` frame through the
capture's journal-then-feed function, so the book reducer (live and in replay)
decides what it means; a failed request is journaled as a local error.

Hostile answers cannot hurt the capture: a body is read in chunks and
abandoned past ``LiveConfig.max_rest_bytes`` (a :class:`ResponseTooLarge`
error is journaled instead of the body, and counted); a 418/429 pauses *every*
REST request (the limit is per IP) for its ``Retry-After`` (:func:`retry_after_s`:
delay-seconds or an HTTP-date; anything else is the default back-off; capped).
Must not: parse or judge the snapshot (that is the codec's and the book
reducer's job) or keep its own rate rule (the budget is
:class:`engine.live.throttle.WeightBudget`, the one sliding-window reducer).
"""

from __future__ import annotations

import logging
import math
import re
import time
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

import trio

from engine.journal.schema import Dir, Kind
from engine.live.config import LiveConfig
from engine.live.connection import Journal, RecordError
from engine.live.errors import CaptureError, CaptureTimeout, ConnectFailed, ResponseTooLarge
from engine.live.status import CaptureStatus
from engine.live.throttle import WeightBudget
from engine.outputs import SnapshotRequest

__all__ = ["SnapshotFetcher", "retry_after_s"]

log = logging.getLogger("engine.live.rest")


_DELAY_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def retry_after_s(
    value: str | None, *, now: float | None = None, default: float = 60.0, cap: float = 300.0
) -> float:
    """Seconds to wait for a ``Retry-After`` header (RFC 9110 §10.2.3), within ``[0, cap]``.

    Delay-seconds (``120``; a decimal fraction is accepted) or an HTTP-date in any
    of its three forms (IMF-fixdate, RFC 850, asctime; measured from ``now``,
    default the wall clock; a past date is 0).  Absent, negative, ``nan``, text:
    ``default``.
    """
    v = (value or "").strip()
    if _DELAY_SECONDS.fullmatch(v):
        wait = float(v)
    else:
        try:
            when = parsedate_to_datetime(v)
        except (TypeError, ValueError, IndexError, OverflowError):
            wait = default
        else:
            if when.tzinfo is None:  # asctime carries no zone: HTTP dates are UTC
                when = when.replace(tzinfo=UTC)
            wait = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(wait):
        wait = cap if wait > 0 else default
    return min(max(wait, 0.0), cap)


class SnapshotFetcher:
    """Fetches the depth snapshots the book reducer asks for, while :meth:`attach`-ed to a nursery.

    Args:
        config: REST base URL, snapshot depth, timeouts, retries, weight budget.
        codec: builds the snapshot URL.
        status: REST request/response counters.
        journal: the capture's journal-then-feed function (responses go through it).
        record_error: journals and counts a failed request.
    """

    def __init__(
        self,
        config: LiveConfig,
        codec: Any,
        status: CaptureStatus,
        journal: Journal,
        record_error: RecordError,
    ) -> None:
        self.config = config
        self.codec = codec
        self.status = status
        self._journal = journal
        self._record_error = record_error
        self.budget = WeightBudget(config.rest_weight_per_min)
        self._inflight: set[str] = set()
        self._nursery: trio.Nursery | None = None
        self._http: Any = None
        #: trio time before which no request goes out (a 418/429's Retry-After)
        self._resume_at = 0.0

    def attach(self, nursery: trio.Nursery | None, http: Any = None) -> None:
        """Fetch in ``nursery`` with the ``http`` client (httpx.AsyncClient); None: stop taking requests."""
        self._nursery, self._http = nursery, http

    def request(self, conn: int, req: SnapshotRequest) -> None:
        """Answer a SnapshotRequest output by REST (ignored while one for the symbol is in flight,
        and when the codec has no snapshot URL)."""
        url = self.codec.snapshot_url(self.config.rest_url, req.symbol, self.config.snapshot_limit)
        if url:
            self.fetch(req.symbol, url)

    def fetch(self, symbol: str, url: str) -> None:
        """GET ``url`` for ``symbol``'s book (ignored while one for the symbol is in flight)."""
        if symbol in self._inflight or self._nursery is None or not self.config.rest_url:
            return
        self._inflight.add(symbol)
        self._nursery.start_soon(self._fetch, symbol, url)

    async def _fetch(self, symbol: str, url: str) -> None:
        """GET the depth snapshot; journal the response (any status) or the failure."""
        cfg = self.config
        delay = 0.25
        try:
            for attempt in range(1, cfg.rest_retries + 1):
                await self._paused()
                await self.budget.acquire(self.codec.snapshot_weight(cfg.snapshot_limit))
                self.status.rest_requests += 1
                try:
                    with trio.fail_after(cfg.rest_timeout_s):
                        status, retry_after, body = await self._get(url)
                except Exception as exc:  # noqa: BLE001 - httpx/anyio raise many kinds
                    err: CaptureError = (
                        exc
                        if isinstance(exc, CaptureError)
                        else CaptureTimeout(f"REST timed out after {cfg.rest_timeout_s} s")
                        if isinstance(exc, trio.TooSlowError)
                        else ConnectFailed(f"REST {type(exc).__name__}: {exc}")
                    )
                    self._record_error(0, url, err, f"snapshot {symbol} attempt {attempt}")
                    await trio.sleep(delay)
                    delay *= 2
                    continue
                self.status.rest_responses += 1
                self._journal(0, Dir.IN, Kind.REST, url, body, status)
                if status not in (418, 429):
                    return
                # rate limited (429) or banned (418): every request waits, then this one retries
                wait = retry_after_s(
                    retry_after, default=cfg.rest_backoff_s, cap=cfg.rest_backoff_cap_s
                )
                log.warning("REST %s: HTTP %d, pausing REST for %.1f s", url, status, wait)
                self._resume_at = max(self._resume_at, trio.current_time() + wait)
        finally:
            self._inflight.discard(symbol)

    async def _paused(self) -> None:
        """Wait out the REST pause, also when a 418/429 extends it while we wait."""
        while trio.current_time() < self._resume_at:  # noqa: ASYNC110 - a deadline that moves
            await trio.sleep_until(self._resume_at)
        await trio.lowlevel.checkpoint()

    async def _get(self, url: str) -> tuple[int, str | None, bytes]:
        """(HTTP status, Retry-After, body), the body read in chunks up to ``max_rest_bytes``."""
        cap = self.config.max_rest_bytes
        async with self._http.stream("GET", url) as resp:
            length = resp.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > cap:
                raise ResponseTooLarge(
                    f"REST body of {length} bytes announced, over the {cap}-byte cap: not read"
                )
            chunks: list[bytes] = []
            size = 0
            async for chunk in resp.aiter_bytes():
                size += len(chunk)
                if size > cap:
                    chunks.clear()  # the traceback keeps this frame alive until the next attempt
                    raise ResponseTooLarge(
                        f"REST body over the {cap}-byte cap: abandoned after {size} bytes"
                    )
                chunks.append(chunk)
            return resp.status_code, resp.headers.get("Retry-After"), b"".join(chunks)
