"""The codec interface every exchange module implements (sans-I/O, like h11): what a venue tells the runtime.

A codec turns journaled frames into typed events (:mod:`engine.events`) and
builds the bytes/URLs the runtime must send.  It never does I/O, never reads
the clock and never raises on bad input: a frame it cannot decode becomes a
:class:`engine.events.DecodeError` event.

``decode`` is a pure function of the frame (codecs keep no state between
frames), so replaying from any checkpoint decodes exactly as live did.

What the live runtime (:mod:`engine.live.connection`, :mod:`engine.live.rest`)
asks a codec, and nothing else (no ``if venue == ...`` outside the codecs):

* **Connections** (:attr:`Codec.limits`, a :class:`ConnLimits`): whether streams
  go in the URL (Binance's combined streams; the rest are subscribed) or only
  by subscribe messages after connecting (Kraken, OKX, Coinbase, Bybit); how
  many streams one subscribe request may carry; how many one connection may
  carry; the venue's published control-message rate per connection (the live
  limiter keeps one less: room for a pong).  :meth:`Codec.streams_by_path`
  groups streams that need different URL paths (one connection each).
* **Subscribing**: :meth:`Codec.subscribe` / :meth:`Codec.unsubscribe` return the
  message(s) to send for at most ``limits.max_per_subscribe`` streams (a venue
  whose request names one channel returns one message per channel); their
  replies decode to :class:`~engine.events.SubscriptionAck` /
  :class:`~engine.events.SubscriptionError` (counted, visible in the status).
* **Keep-alive** (:attr:`Codec.keepalive`): an application-level ping
  (:class:`KeepAlive`: bytes + interval) or None (WebSocket pings only, Binance);
  its answers decode to :class:`~engine.events.Heartbeat`, never a DecodeError.
* **Resync** (:meth:`Codec.resync`): how the runtime answers a
  ``SnapshotRequest(purpose="sync")`` for a symbol: :class:`RestResync` (GET the
  URL; the body is journaled as a ``rest`` frame) or :class:`Resubscribe`
  (unsubscribe then subscribe the symbol's book stream(s) on the connection that
  carries them, every message journaled; the venue's in-stream snapshot follows).
* **Verify** (:meth:`Codec.snapshot_url`): a ``SnapshotRequest(purpose="verify")``
  is answered only by REST; a venue without a REST snapshot returns None and the
  request is not answered (its checksums or sequence numbers vouch for every
  update instead; a resubscribe would be a resync, not a verification).
* **Symbols**: :meth:`Codec.normalized` gives ``"BASE-QUOTE"`` for the venue's
  spelling (:func:`split_quote` for venues that glue them, like Binance).

:class:`VenueDefaults` gives a codec the defaults (one URL path, no keep-alive,
REST resync through ``snapshot_url``, quote-suffix normalization).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TypeAlias, runtime_checkable

import attrs

from engine.events import EXCERPT_BYTES, DecodeError

__all__ = [
    "decode_error",
    "internal_reason",
    "Codec",
    "ConnLimits",
    "KeepAlive",
    "RestResync",
    "Resubscribe",
    "Resync",
    "SyncRule",
    "VenueDefaults",
    "QUOTES",
    "split_quote",
]


class SyncRule:
    """How a codec's diff-depth stream chains onto a snapshot (see shared protocols)."""

    #: Binance spot: drop u <= lastUpdateId; first has U <= lid+1 <= u; then U == prev u + 1.
    BINANCE_SPOT = "binance-spot"
    #: Binance USD-M: drop u < lastUpdateId; first has U <= lid <= u; then pu == prev u.
    BINANCE_FUTURES = "binance-futures"
    #: Kraken (v1, v2): no update ids (the journal seq orders messages); the book is truncated
    #: to the subscribed depth after every message and its CRC32 checksum verified.
    KRAKEN = "kraken"
    #: Bybit v5: an in-stream snapshot resets the book; then each delta's u == prev u + 1.
    BYBIT = "bybit"
    #: Bybit's legacy realtime protocol: snapshot resets; cross_seq only increases (no gap test).
    BYBIT_LEGACY = "bybit-legacy"
    #: OKX v5 books: prevSeqId == prev seqId (first: drop seqId <= id, prevSeqId <= id); CRC32.
    OKX = "okx"
    #: Coinbase (Exchange level2, Advanced Trade l2_data): in-stream snapshots reset the book;
    #: ids only rise (Exchange: the frame's journal seq; Advanced: sequence_num), so an update
    #: older than the snapshot is stale and every later one applies (no gap is visible here).
    COINBASE = "coinbase"


@attrs.frozen
class ConnLimits:
    """How a venue's streams map onto connections, and its control-message rate.

    ``streams_in_url``: True: as many streams as fit ``LiveConfig.max_url_len``
    go in the URL (:meth:`Codec.ws_url`), the rest are subscribed; False: the
    URL carries none, every stream is subscribed after connecting.
    """

    streams_in_url: bool
    #: streams (args) one subscribe request may carry
    max_per_subscribe: int = attrs.field(validator=attrs.validators.ge(1))
    #: streams one connection may carry (more streams ⇒ more connections)
    max_per_conn: int = attrs.field(validator=attrs.validators.ge(1))
    #: client messages the venue allows per ``control_window_s`` per connection (pings count)
    control_per_window: int = attrs.field(validator=attrs.validators.ge(1))
    control_window_s: float = 1.0


@attrs.frozen
class KeepAlive:
    """An application-level ping: send ``payload`` (a text frame) every ``interval_s`` seconds."""

    payload: bytes
    interval_s: float


@attrs.frozen
class RestResync:
    """Resync by REST: GET ``url``; the response is journaled as a ``rest`` frame and decoded."""

    url: str


@attrs.frozen
class Resubscribe:
    """Resync by resubscribing ``streams`` on the connection carrying them: send
    ``unsubscribe`` then ``subscribe`` (each journaled); the venue sends a fresh
    snapshot in-stream."""

    streams: tuple[str, ...]
    unsubscribe: tuple[bytes, ...]
    subscribe: tuple[bytes, ...]


Resync: TypeAlias = RestResync | Resubscribe


@runtime_checkable
class Codec(Protocol):
    #: Exchange name as used on the command line: "binance", "binance-futures", "sim".
    name: str
    #: The depth sync rule (a SyncRule constant, or a venue's rule name in engine.book_sync.RULES).
    sync_rule: str
    #: Default endpoints (``engine run --exchange NAME`` without ``--url``).
    ws_base: str
    rest_base: str
    limits: ConnLimits
    keepalive: KeepAlive | None
    #: the channels ``engine run`` captures when ``--channels`` is not given (names the codec's
    #: :meth:`streams` knows: "trade", "depth", "bookTicker", "ticker" ...)
    default_channels: tuple[str, ...]

    def decode(
        self, seq: int, recv_ns: int, kind: str, source: str, payload: bytes
    ) -> Sequence[Any]:
        """Events of one journaled inbound frame (text frame or REST response).

        Never raises; undecodable input yields a single DecodeError.
        """
        ...

    def streams(self, symbols: Sequence[str], channels: Sequence[str]) -> list[str]:
        """Stream names for symbols × channels ("btcusdt@depth@100ms", "book.BTC/USD" ...).

        Raises ValueError for an unknown channel (the message lists the valid ones).
        """
        ...

    def streams_by_path(self, streams: Sequence[str]) -> dict[str, list[str]]:
        """Groups of streams that need their own connections (by URL path), order kept."""
        ...

    def ws_url(self, base_url: str, streams: Sequence[str]) -> str:
        """The WebSocket URL of a connection for ``streams`` (ignored unless ``streams_in_url``)."""
        ...

    def subscribe(self, streams: Sequence[str], request_id: int) -> list[bytes]:
        """The message(s) subscribing ``streams`` (at most ``limits.max_per_subscribe``)."""
        ...

    def unsubscribe(self, streams: Sequence[str], request_id: int) -> list[bytes]: ...

    def snapshot_url(self, rest_base: str, symbol: str, limit: int) -> str | None:
        """The REST depth snapshot URL for ``symbol`` (None: the venue has none)."""
        ...

    def snapshot_weight(self, limit: int) -> int:
        """The REST weight of a snapshot of ``limit`` levels (the live weight budget counts it)."""
        ...

    def resync(
        self, symbol: str, streams: Sequence[str], rest_base: str, limit: int, request_id: int
    ) -> Resync | None:
        """How to get a fresh book for ``symbol`` (``streams``: every stream of the capture)."""
        ...

    def normalized(self, symbol: str) -> str:
        """The venue's symbol as ``"BASE-QUOTE"`` (the venue's own spelling is kept elsewhere)."""
        ...


#: Quote assets recognised at the end of a glued symbol, longest first (``BTCUSDT`` → BTC-USDT).
QUOTES: tuple[str, ...] = tuple(
    sorted(
        (
            "USDT", "USDC", "FDUSD", "TUSD", "BUSD", "USD", "EUR", "GBP", "TRY", "BRL", "JPY",
            "AUD", "BTC", "ETH", "BNB", "DAI", "USDE", "PLN", "RON", "ZAR", "UAH", "MXN", "ARS",
        ),
        key=len,
        reverse=True,
    )
)  # fmt: skip


def split_quote(symbol: str, quotes: Sequence[str] = QUOTES) -> str:
    """``"BTCUSDT"`` → ``"BTC-USDT"`` by the longest known quote suffix; unknown: the symbol as is.

    A suffix table is enough for the common quotes; a venue that lists its
    instruments (Binance ``exchangeInfo``) is exact, this is its offline stand-in.
    """
    s = symbol.upper()
    for q in quotes:
        if len(s) > len(q) and s.endswith(q):
            return f"{s[: -len(q)]}-{q}"
    return s


class VenueDefaults:
    """Defaults of the optional parts of :class:`Codec` (override what the venue does differently)."""

    keepalive: KeepAlive | None = None

    def streams_by_path(self, streams: Sequence[str]) -> dict[str, list[str]]:
        return {"": list(streams)} if streams else {}

    def snapshot_url(self, rest_base: str, symbol: str, limit: int) -> str | None:
        return None

    def snapshot_weight(self, limit: int) -> int:
        return 1

    def resync(
        self, symbol: str, streams: Sequence[str], rest_base: str, limit: int, request_id: int
    ) -> Resync | None:
        """REST when the venue has a snapshot URL, else None (the venue must override)."""
        url = self.snapshot_url(rest_base, symbol, limit)
        return RestResync(url) if url else None

    def normalized(self, symbol: str) -> str:
        return split_quote(symbol)


def decode_error(seq: int, recv_ns: int, source: str, reason: str, payload: Any) -> DecodeError:
    """The one shape of a frame a codec cannot read: a DecodeError with the reason (at most
    500 characters) and the payload's first EXCERPT_BYTES (the frame itself stays in the journal)."""
    excerpt = bytes(payload[:EXCERPT_BYTES]) if isinstance(payload, bytes | bytearray) else b""
    return DecodeError(seq, recv_ns, source, reason[:500], excerpt)


def internal_reason(exc: BaseException) -> str:
    """The DecodeError reason for a bug met while decoding (a codec never raises: it is an event)."""
    return f"internal error {type(exc).__name__}: {exc}"
