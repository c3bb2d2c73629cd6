"""What a live capture captures and every timing knob of the runtime (:class:`LiveConfig`).

Owns the configuration only: defaults are for real exchanges (tests shrink the
intervals); ``engine run`` builds one from its flags.  Must not: hold
behaviour beyond deriving a value from its fields.
"""

from __future__ import annotations

import attrs

__all__ = ["LiveConfig"]


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
    #: Streams per connection (never more than the codec's ``limits.max_per_conn``); more
    #: streams ⇒ more connections.
    max_streams_per_conn: int = attrs.field(default=1024, validator=attrs.validators.ge(1))
    #: Streams beyond what fits a URL of this length are subscribed with SUBSCRIBE messages.
    max_url_len: int = 4000
    #: Streams per subscribe message (never more than the codec's ``limits.max_per_subscribe``).
    subscribe_chunk: int = attrs.field(default=200, validator=attrs.validators.ge(1))
    #: Our control messages per codec ``limits.control_window_s`` per connection (None: the
    #: venue's published limit minus one, leaving room for the automatic pong to a server ping).
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
    #: Largest REST body read (in chunks); a longer one is abandoned and journaled as an error.
    max_rest_bytes: int = attrs.field(default=64 << 20, validator=attrs.validators.ge(1))
    #: After a 418/429, every REST request waits for its Retry-After (this when unusable),
    #: never longer than the cap.
    rest_backoff_s: float = 60.0
    rest_backoff_cap_s: float = 300.0
    #: REST request weight we allow ourselves per minute (Binance spot allows 6000).
    rest_weight_per_min: int = 1200
    verify_tls: bool = True
    tick_s: float = 0.010
    #: Stop cleanly when the journal's filesystem has less than this free (checked once a
    #: second; 0: never).  Sealing needs room: compaction rewrites the open segment.
    min_free_bytes: int = attrs.field(default=256 << 20, validator=attrs.validators.ge(0))
    fsync_interval_s: float = 1.0
