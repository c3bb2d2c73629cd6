"""The codec interface every exchange module implements (sans-I/O, like h11).

A codec turns journaled frames into typed events (:mod:`engine.events`) and
builds the bytes/URLs the runtime must send.  It never does I/O, never reads
the clock and never raises on bad input: a frame it cannot decode becomes a
:class:`engine.events.DecodeError` event.

``decode`` is a pure function of the frame (codecs keep no state between
frames), so replaying from any checkpoint decodes exactly as live did.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

__all__ = ["Codec", "SyncRule"]


class SyncRule:
    """How a codec's diff-depth stream chains onto a snapshot (see shared protocols)."""

    #: Binance spot: drop u <= lastUpdateId; first has U <= lid+1 <= u; then U == prev u + 1.
    BINANCE_SPOT = "binance-spot"
    #: Binance USD-M: drop u < lastUpdateId; first has U <= lid <= u; then pu == prev u.
    BINANCE_FUTURES = "binance-futures"
    #: Coinbase (Exchange level2, Advanced Trade l2_data): in-stream snapshots reset the book;
    #: ids only rise (Exchange: the frame's journal seq; Advanced: sequence_num), so an update
    #: older than the snapshot is stale and every later one applies (no gap is visible here).
    COINBASE = "coinbase"


@runtime_checkable
class Codec(Protocol):
    #: Exchange name as used on the command line: "binance", "binance-futures", "sim".
    name: str
    #: The depth sync rule (a SyncRule constant).
    sync_rule: str

    def decode(
        self, seq: int, recv_ns: int, kind: str, source: str, payload: bytes
    ) -> Sequence[Any]:
        """Events of one journaled inbound frame (text frame or REST response).

        Never raises; undecodable input yields a single DecodeError.
        """
        ...

    def ws_url(self, base_url: str, streams: Sequence[str]) -> str:
        """The WebSocket URL of a combined-stream connection for ``streams``."""
        ...

    def subscribe(self, streams: Sequence[str], request_id: int) -> bytes: ...

    def unsubscribe(self, streams: Sequence[str], request_id: int) -> bytes: ...

    def streams(self, symbols: Sequence[str], channels: Sequence[str]) -> list[str]:
        """Stream names for symbols × channels ("btcusdt@depth@100ms" ...)."""
        ...

    def snapshot_url(self, rest_base: str, symbol: str, limit: int) -> str:
        """The REST depth snapshot URL for ``symbol``."""
        ...
