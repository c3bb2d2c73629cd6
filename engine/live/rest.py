"""REST depth snapshots: fetch what the fold asked for, within the weight budget, and journal the answer.

Owns :class:`SnapshotFetcher` (answers :class:`engine.outputs.SnapshotRequest`
outputs: one fetch per symbol in flight, retries, 418/429 back-off) and
:func:`depth_weight` (Binance's published request weights).  Every response,
whatever its HTTP status, is journaled as a ``rest`` frame through the
capture's journal-then-feed function, so the book reducer (live and in replay)
decides what it means; a failed request is journaled as a local error.
Must not: parse or judge the snapshot (that is the codec's and the book
reducer's job) or keep its own rate rule (the budget is
:class:`engine.live.throttle.WeightBudget`, the one sliding-window reducer).
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from engine.journal.schema import Dir, Kind
from engine.live.config import LiveConfig
from engine.live.connection import Journal, RecordError
from engine.live.errors import CaptureError, CaptureTimeout, ConnectFailed
from engine.live.status import CaptureStatus
from engine.live.throttle import WeightBudget
from engine.outputs import SnapshotRequest

__all__ = ["SnapshotFetcher", "depth_weight"]

log = logging.getLogger("engine.live.rest")


def depth_weight(exchange: str, limit: int) -> int:
    """Request weight of a REST depth snapshot (Binance's published tables)."""
    if exchange == "binance-futures":
        return 2 if limit <= 50 else 5 if limit <= 100 else 10 if limit <= 500 else 20
    return 5 if limit <= 100 else 25 if limit <= 500 else 50 if limit <= 1000 else 250


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

    def attach(self, nursery: trio.Nursery | None, http: Any = None) -> None:
        """Fetch in ``nursery`` with the ``http`` client (httpx.AsyncClient); None: stop taking requests."""
        self._nursery, self._http = nursery, http

    def request(self, conn: int, req: SnapshotRequest) -> None:
        """Answer a SnapshotRequest output (ignored while one for the symbol is in flight)."""
        symbol = req.symbol
        if symbol in self._inflight or self._nursery is None or not self.config.rest_url:
            return
        self._inflight.add(symbol)
        self._nursery.start_soon(self._fetch, symbol)

    async def _fetch(self, symbol: str) -> None:
        """GET the depth snapshot; journal the response (any status) or the failure."""
        cfg = self.config
        url = self.codec.snapshot_url(cfg.rest_url, symbol, cfg.snapshot_limit)
        delay = 0.25
        try:
            for attempt in range(1, cfg.rest_retries + 1):
                await self.budget.acquire(depth_weight(cfg.exchange, cfg.snapshot_limit))
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
