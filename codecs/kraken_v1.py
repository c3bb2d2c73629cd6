"""Kraken WebSocket v1 (``wss://ws.kraken.com``, the recorded protocol): frames ↔ typed events.

Owns both directions of the v1 dialect: *decoding* a journaled frame into
events (``book-N`` snapshots ``"as"``/``"bs"`` and updates ``"a"``/``"b"``
with their ``"c"`` checksum, ``trade``, ``ticker``, ``subscriptionStatus``,
``heartbeat``/``systemStatus``/``pong``) and *encoding* the same events back
into the frames Kraken sends (for the simulator, the replay server and the
round-trip tests), plus the subscribe / unsubscribe / ping messages a client
sends.  Must not: do I/O, read the clock, keep state between frames, or raise
on exchange input (a frame it cannot read is one DecodeError naming the field).

Decisions worth knowing:

* **Ids.**  v1 has no update ids: every book message gets the journal ``seq``
  as its id (``first_id == last_id == seq``), the order the Kraken sync rule
  (:class:`engine.book_sync.KrakenRule`) needs; a lost message is found only
  by the checksum.  A snapshot's ``depth`` is the channel's (``book-1000``),
  its precision the decimals its strings are printed with (Kraken prints
  every price of a pair with the pair's decimals, every volume with 8).
* **Levels** are ``[price, volume, time]`` or ``[price, volume, time, "r"]``
  (a republished level, applied like any other).  The checksum sits in the
  last dict of a message (one that carries both ``"a"`` and ``"b"`` has two
  dicts).  ``exch_ms`` is the newest level time.
* **Trades** have no id in v1: ``trade_id`` is ``seq * 10000 + i`` for the
  ``i``-th trade of the frame (unique and ordered, the same live and in
  replay); ``side`` ``"b"``/``"s"`` is the taker's (the aggressor).
* **Ticker** ``{"a": [price, whole lots, lot volume], "b": …, "c": [price,
  lot volume], "v"/"p"/"t"/"l"/"h"/"o": [today, last 24 hours]}`` becomes,
  as on v2, two events.  A BookTicker (best bid/ask, their lot volumes) whose
  ``update_id`` is its ``seq``: Kraken's book ids are journal seqs too (of
  other frames), so the book reducer holds it until the next book message and
  counts it uncomparable — never compared with a book at another moment, never
  a false mismatch — while the quote checks and the ``book_ticker`` table get
  the venue's own top (OKX, Bybit and Coinbase emit none: their books carry the
  venue's ids, and their tickers no id of that kind).  And, when the frame
  carries 24 h figures, a :class:`~engine.events.Ticker24h` of the *last 24
  hours* slot of each pair: ``c`` → ``last_price``/``last_qty``, ``v[1]`` →
  ``volume``, ``p[1]`` → ``vwap``, ``t[1]`` → ``count``, ``l[1]``/``h[1]``/
  ``o[1]`` → ``low_price``/``high_price``/``open_price``, ``b``/``a`` → best
  bid/ask with their lot volumes.  Not sent, so None: ``exch_ms`` (v1 tickers
  carry no time), ``quote_volume``, ``price_change``, times, trade ids.  The
  "today" slots are not kept (the one ticker model is a rolling day); the
  whole-lot volumes are not either (the lot volume says it exactly).
* **Unknown but well-formed messages are errors** (counted), as for Binance.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import orjson

from engine.codecs.base import KeepAlive, SyncRule
from engine.codecs.kraken_book import (
    DEPTHS,
    Bad,
    KrakenCodec,
    by_channel,
    epoch_s_ms,
    max_decimals,
    ms_epoch_s,
    number,
)
from engine.codecs.ticker_wire import decode_ticker
from engine.events import (
    BUY,
    SELL,
    BookSnapshot,
    BookTicker,
    DepthDiff,
    Heartbeat,
    Side,
    SubscriptionAck,
    SubscriptionError,
    Ticker24h,
    Trade,
)
from engine.num import ONE, render

__all__ = [
    "KrakenV1",
    "TRADE_IDS_PER_FRAME",
    "encode_snapshot",
    "encode_update",
    "encode_trades",
    "encode_ticker",
    "encode_status",
]

#: trade ids are ``seq * TRADE_IDS_PER_FRAME + i``; a frame with more trades is refused
TRADE_IDS_PER_FRAME = 10_000
#: v1 channel names as the codec's ``streams`` take them (book depth: :attr:`KrakenV1.depth`)
CHANNELS = ("book", "trade", "ticker")

_HEARTBEATS = {"heartbeat": "heartbeat", "pong": "pong"}
#: a trade's side letter (the taker's) → the aggressor side
_SIDES: dict[object, Side] = {"b": BUY, "s": SELL}
#: Ticker24h field → its slot in a v1 ticker, ``(key, index)`` (module docstring)
_TICKER = {
    "bid_price": ("b", 0), "bid_qty": ("b", 2), "ask_price": ("a", 0), "ask_qty": ("a", 2),
    "last_price": ("c", 0), "last_qty": ("c", 1), "volume": ("v", 1), "vwap": ("p", 1),
    "low_price": ("l", 1), "high_price": ("h", 1), "open_price": ("o", 1),
}  # fmt: skip
#: the same slots as the flat keys :func:`engine.codecs.ticker_wire.decode_ticker` reads
_FLAT = {f: f"{k}[{i}]" for f, (k, i) in _TICKER.items()}
#: a ticker's arrays and their lengths: best bid/offer, then the 24 h figures ([today, 24 h])
_BBO_KEYS = {"b": 3, "a": 3}
_DAY_KEYS = {"c": 2, "v": 2, "p": 2, "t": 2, "l": 2, "h": 2, "o": 2}


class KrakenV1(KrakenCodec):
    """The Kraken v1 codec (exchange name ``kraken-v1``)."""

    name = "kraken-v1"
    sync_rule = SyncRule.KRAKEN
    ws_base = "wss://ws.kraken.com"
    channels = CHANNELS
    #: the book depth this codec subscribes to (cryptofeed recorded ``book-1000``)
    depth = 1000
    keepalive: KeepAlive | None = KeepAlive(b'{"event":"ping"}', 20.0)

    def __init__(self, name: str | None = None) -> None:
        if name is not None:
            self.name = name
        self._json = msgspec.json.Decoder()

    # ..................................................................... decode

    def _message(self, seq: int, recv_ns: int, msg: Any) -> list[Any]:
        if isinstance(msg, list):
            return self._channel(seq, recv_ns, msg)
        if isinstance(msg, dict):
            return self._event(seq, recv_ns, msg)
        raise Bad(f"expected a JSON array or object, got {type(msg).__name__}")

    def _event(self, seq: int, recv_ns: int, msg: dict[str, Any]) -> list[Any]:
        ev = msg.get("event")
        if not isinstance(ev, str):
            keys = ",".join(sorted(str(k)[:20] for k in msg)[:10])
            raise Bad(f"unknown message (no 'event'; keys {keys})")
        beat = _HEARTBEATS.get(ev)
        if beat is not None:
            return [Heartbeat(seq, recv_ns, beat, None)]
        if ev == "systemStatus":
            return []
        rid = msg.get("reqid")
        if rid is not None and (isinstance(rid, bool) or not isinstance(rid, int | str)):
            raise Bad(f"{ev}: 'reqid' must be an int or a string, got {rid!r:.40}")
        if ev == "subscriptionStatus":
            status = msg.get("status")
            if status == "error":
                return [SubscriptionError(seq, recv_ns, rid, 0, str(msg.get("errorMessage", "")))]
            if status in ("subscribed", "unsubscribed"):
                sub = msg.get("subscription")
                name = sub.get("name") if isinstance(sub, dict) else None
                pair = msg.get("pair")
                if not isinstance(name, str) or not isinstance(pair, str):
                    raise Bad("subscriptionStatus: needs subscription.name and pair")
                return [SubscriptionAck(seq, recv_ns, rid, [f"{name}:{pair}"])]
            raise Bad(f"subscriptionStatus: unknown status {status!r:.40}")
        if ev == "error":
            return [SubscriptionError(seq, recv_ns, rid, 0, str(msg.get("errorMessage", "")))]
        raise Bad(f"unknown event {ev[:40]!r}")

    def _channel(self, seq: int, recv_ns: int, msg: list[Any]) -> list[Any]:
        if len(msg) < 4:
            raise Bad(f"channel message: expected [id, data..., name, pair], got {len(msg)} items")
        name, pair = msg[-2], msg[-1]
        if not isinstance(name, str) or not isinstance(pair, str):
            raise Bad("channel message: the last two items must be the channel name and pair")
        data = msg[1:-2]
        if name.startswith("book-"):
            depth_s = name[5:]
            if not (depth_s.isascii() and depth_s.isdigit() and len(depth_s) < 6):
                raise Bad(f"book channel {name[:20]!r}: no depth")
            return [self._book(seq, recv_ns, pair, int(depth_s), data)]
        if name == "trade":
            if len(data) != 1 or not isinstance(data[0], list):
                raise Bad("trade: expected one array of trades")
            return self._trades(seq, recv_ns, pair, data[0])
        if name == "ticker":
            if len(data) != 1 or not isinstance(data[0], dict):
                raise Bad("ticker: expected one object")
            return self._ticker(seq, recv_ns, pair, data[0])
        raise Bad(f"unknown channel {name[:40]!r}")

    def _book(self, seq: int, recv_ns: int, pair: str, depth: int, data: list[Any]) -> Any:
        bids: list[tuple[int, int]] = []
        asks: list[tuple[int, int]] = []
        times: list[str] = []
        check: Any = None
        snapshot = False
        texts: tuple[list[str], list[str]] = ([], [])
        for part in data:
            if not isinstance(part, dict):
                raise Bad(f"book {pair[:20]}: expected objects, got {type(part).__name__}")
            for key, val in part.items():
                if key == "c":
                    check = val
                    continue
                if key in ("a", "as"):
                    out = asks
                elif key in ("b", "bs"):
                    out = bids
                else:
                    raise Bad(f"book {pair[:20]}: unknown key {str(key)[:20]!r}")
                if len(key) == 2:
                    snapshot = True
                _levels(val, out, times, texts, f"book {pair[:20]} {key}")
        if check is not None and snapshot:
            raise Bad(f"book {pair[:20]}: a snapshot carries no checksum")
        exch_ms = epoch_s_ms(max(times), f"book {pair[:20]} time") if times else None
        if snapshot:
            return BookSnapshot(
                seq,
                recv_ns,
                pair,
                seq,
                bids,
                asks,
                depth,
                "stream",
                exch_ms,
                None,
                None,
                max_decimals(texts[0]),
                max_decimals(texts[1]),
            )
        checksum = None
        if check is not None:
            if not (isinstance(check, str) and check.isascii() and check.isdigit()):
                raise Bad(
                    f"book {pair[:20]}: checksum 'c' must be a digit string, got {check!r:.30}"
                )
            checksum = int(check)
            if checksum >= 1 << 32:
                raise Bad(f"book {pair[:20]}: checksum {check[:20]} exceeds 32 bits")
        if not bids and not asks:
            raise Bad(f"book {pair[:20]}: an update without levels")
        return DepthDiff(seq, recv_ns, pair, seq, seq, None, exch_ms, None, bids, asks, checksum)

    def _trades(self, seq: int, recv_ns: int, pair: str, rows: list[Any]) -> list[Any]:
        if len(rows) > TRADE_IDS_PER_FRAME:
            raise Bad(f"trade {pair[:20]}: {len(rows)} trades in one frame (ids would repeat)")
        out: list[Any] = []
        base = seq * TRADE_IDS_PER_FRAME
        for i, row in enumerate(rows):
            where = f"trade {pair[:20]} #{i}"
            if not isinstance(row, list) or len(row) < 4:
                raise Bad(f"{where}: expected [price, volume, time, side, ...]")
            side = _SIDES.get(row[3])
            if side is None:
                raise Bad(f"{where}: side must be 'b' or 's', got {row[3]!r:.20}")
            ms = epoch_s_ms(row[2], f"{where} time")
            tid = base + i
            out.append(
                Trade(
                    seq,
                    recv_ns,
                    pair,
                    tid,
                    number(row[0], f"{where} price"),
                    number(row[1], f"{where} volume"),
                    side,
                    ms,
                    ms,
                    tid,
                    tid,
                )
            )
        return out

    def _ticker(self, seq: int, recv_ns: int, pair: str, t: dict[str, Any]) -> list[Any]:
        where = f"ticker {pair[:20]}"
        flat: dict[str, Any] = {}
        day = False
        for keys in (_BBO_KEYS, _DAY_KEYS):
            for key, n in keys.items():
                v = t.get(key)
                if v is None and keys is _DAY_KEYS:
                    continue
                if not (isinstance(v, list) and len(v) == n):
                    shape = (
                        "[price, whole lots, lot volume]" if n == 3 else "[today, last 24 hours]"
                    )
                    raise Bad(f"{where}: {key!r} must be {shape}")
                day = day or keys is _DAY_KEYS
                flat.update((f"{key}[{i}]", x) for i, x in enumerate(v))
        bbo = BookTicker(
            seq,
            recv_ns,
            pair,
            seq,
            number(flat["b[0]"], f"{where} b price"),
            number(flat["b[2]"], f"{where} b volume"),
            number(flat["a[0]"], f"{where} a price"),
            number(flat["a[2]"], f"{where} a volume"),
        )
        if not day:
            return [bbo]
        count = flat.get("t[1]")
        if count is not None and (type(count) is not int or not 0 <= count < 1 << 63):
            raise Bad(f"{where}: 't' (trades) must be whole numbers, got {count!r:.30}")
        return [bbo, decode_ticker(seq, recv_ns, pair, None, flat, _FLAT, where, count=count)]

    # ..................................................................... outbound

    def subscribe_messages(
        self, streams: Sequence[str], request_id: int, method: str = "subscribe"
    ) -> list[bytes]:
        """One message per channel (v1 subscribes one channel at a time), ids from ``request_id``."""
        out: list[bytes] = []
        for i, (ch, pairs) in enumerate(by_channel(streams, self.channels).items()):
            sub: dict[str, Any] = {"name": ch}
            if ch == "book":
                sub["depth"] = self.depth
            out.append(
                orjson.dumps(
                    {"event": method, "pair": pairs, "subscription": sub, "reqid": request_id + i}
                )
            )
        return out


def _levels(
    raw: Any,
    out: list[tuple[int, int]],
    times: list[str],
    texts: tuple[list[str], list[str]],
    where: str,
) -> None:
    if not isinstance(raw, list):
        raise Bad(f"{where}: expected an array of levels")
    for lv in raw:
        if not isinstance(lv, list) or not 3 <= len(lv) <= 4 or (len(lv) == 4 and lv[3] != "r"):
            raise Bad(f"{where}: a level is [price, volume, time] or [price, volume, time, 'r']")
        p, q, t = lv[0], lv[1], lv[2]
        out.append((number(p, f"{where} price"), number(q, f"{where} volume")))
        if not isinstance(t, str):
            raise Bad(f"{where}: level time must be a string")
        times.append(t)
        texts[0].append(p)
        texts[1].append(q)


# --------------------------------------------------------------------------- encode (sim, server, tests)


def _rows(levels: Sequence[tuple[int, int]], pd: int, qd: int, ts: str) -> list[list[str]]:
    return [[render(p, pd), render(q, qd), ts] for p, q in levels]


def _ts(exch_ms: int | None) -> str:
    return ms_epoch_s(exch_ms if exch_ms is not None else 0)


def encode_snapshot(ev: BookSnapshot, channel_id: int) -> bytes:
    """The v1 frame of a book snapshot (``depth``, ``price_decimals``/``qty_decimals`` required)."""
    pd, qd, ts = ev.price_decimals, ev.qty_decimals, _ts(ev.exch_ms)
    if ev.depth is None or ((pd is None or qd is None) and (ev.bids or ev.asks)):
        raise ValueError("a Kraken snapshot needs its depth, and its precision if it has levels")
    pd, qd = pd or 0, qd or 0
    body = {"as": _rows(ev.asks, pd, qd, ts), "bs": _rows(ev.bids, pd, qd, ts)}
    return orjson.dumps([channel_id, body, f"book-{ev.depth}", ev.symbol])


def encode_update(ev: DepthDiff, channel_id: int, depth: int, pd: int, qd: int) -> bytes:
    """The v1 frame of a book update: ``"a"`` then ``"b"`` dicts, the checksum in the last one."""
    ts = _ts(ev.exch_ms)
    parts: list[dict[str, Any]] = []
    if ev.asks:
        parts.append({"a": _rows(ev.asks, pd, qd, ts)})
    if ev.bids:
        parts.append({"b": _rows(ev.bids, pd, qd, ts)})
    if not parts:
        raise ValueError("a Kraken update carries at least one level")
    if ev.checksum is not None:
        parts[-1]["c"] = str(ev.checksum)
    return orjson.dumps([channel_id, *parts, f"book-{depth}", ev.symbol])


def encode_trades(trades: Sequence[Trade], channel_id: int, pd: int, qd: int) -> bytes:
    """The v1 frame of one symbol's trades (market orders, no misc)."""
    if not trades:
        raise ValueError("a trade frame carries at least one trade")
    rows = [
        [
            render(t.price, pd),
            render(t.qty, qd),
            _ts(t.exch_ms),
            "b" if t.side == BUY else "s",
            "m",
            "",
        ]
        for t in trades
    ]
    return orjson.dumps([channel_id, rows, "trade", trades[0].symbol])


def encode_ticker(
    ev: BookTicker, channel_id: int, pd: int, qd: int, day: Ticker24h | None = None
) -> bytes:
    """The v1 ticker frame of a best bid/offer, with the 24 h figures of ``day`` if given.

    Prices at ``pd`` decimals, volumes at ``qd``; bid/ask are ``ev``'s; a
    whole-lot volume is its lot volume's integer part.  Each ``[today, last 24
    hours]`` pair carries ``day``'s figure in both slots (the one ticker model
    has a rolling day only; the decoder reads the 24 h slot); a figure ``day``
    lacks leaves its key out.

    Raises:
        ValueError: ``day`` holds one of ``c``'s price and lot volume but not the other, or
            a value needs more decimals than given.
    """
    body: dict[str, Any] = {
        "a": [render(ev.ask_price, pd), ev.ask_qty // ONE, render(ev.ask_qty, qd)],
        "b": [render(ev.bid_price, pd), ev.bid_qty // ONE, render(ev.bid_qty, qd)],
    }
    if day is not None:
        if (day.last_price is None) != (day.last_qty is None):
            raise ValueError("a v1 ticker's 'c' is [price, lot volume]: give both or neither")
        field = {key: f for f, (key, i) in _TICKER.items() if i == 1 and key != "c"}
        for key in _DAY_KEYS:
            if key == "c" and day.last_price is not None and day.last_qty is not None:
                body["c"] = [render(day.last_price, pd), render(day.last_qty, qd)]
            elif key == "t" and day.count is not None:
                body["t"] = [day.count, day.count]
            elif key in field and (v := getattr(day, field[key])) is not None:
                text = render(v, qd if key == "v" else pd)
                body[key] = [text, text]
    return orjson.dumps([channel_id, body, "ticker", ev.symbol])


def encode_status(
    channel_id: int,
    name: str,
    pair: str,
    reqid: int | None,
    depth: int | None = None,
    status: str = "subscribed",
) -> bytes:
    """A subscriptionStatus reply (``status`` "subscribed", "unsubscribed" or "error")."""
    sub: dict[str, Any] = {"name": name}
    if depth is not None:
        if depth not in DEPTHS:
            raise ValueError(f"Kraken book depth must be one of {DEPTHS}")
        sub["depth"] = depth
    msg: dict[str, Any] = {
        "event": "subscriptionStatus",
        "pair": pair,
        "status": status,
        "subscription": sub,
    }
    if status != "error":
        msg["channelID"] = channel_id
        msg["channelName"] = f"book-{depth}" if name == "book" else name
    else:
        msg["errorMessage"] = f"Currency pair not supported {pair}"
    if reqid is not None:
        msg["reqid"] = reqid
    return orjson.dumps(msg)
