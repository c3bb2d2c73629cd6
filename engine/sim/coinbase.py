"""The Coinbase dialects of the simulator: what the Exchange feed's and Advanced Trade's wires look like.

Owns, for ``coinbase`` (Exchange feed) and ``coinbase-advanced`` (Advanced
Trade): the WebSocket route (the bare host: every stream is subscribed by
message), the replies to client messages — subscribe / unsubscribe with the
``subscriptions`` ack listing every subscription of the connection, errors in
Coinbase's ``{"type":"error","message","reason"}`` shape, and after a book
subscribe the product's in-stream ``snapshot`` — and the shapes a ``garbage``
fault sends.  There is no REST route (Coinbase books come from the stream;
every REST path is a 404) and no maintenance notice.  The market frames
themselves are :mod:`engine.sim.coinbase_frames`'.

What the faults become here, by Coinbase's own rules: ``gap`` (one withheld
book update) is *undetectable* on the Exchange feed (level2 has no sequence
and no checksum: the book silently differs until the next snapshot) and a
``sequence_num`` gap on Advanced Trade (resync by resubscribing); ``drift``
edits the next in-stream snapshot (nothing verifies it: no REST snapshot);
``drop``/``close``/``stall`` are transport faults (the client reconnects and
resubscribes: fresh snapshots); ``garbage`` are decode errors.

Pure functions and classes: no I/O, no clock, no market state (the Advanced
dialect numbers its replies with the connection's own
:class:`~engine.sim.coinbase_frames.ConnectionNumbers`, as its market frames are).
"""

from __future__ import annotations

import json
import random
from collections.abc import Container
from typing import Any

from engine.codecs.coinbase import CoinbaseExchange
from engine.codecs.coinbase_advanced import CoinbaseAdvanced
from engine.sim import dialect
from engine.sim.coinbase_frames import CoinbaseAdvancedFrames, CoinbaseFrames, ConnectionNumbers
from engine.sim.frames import FrameEncoder

__all__ = ["CoinbaseDialect", "CoinbaseAdvancedDialect"]

#: levels a side of an in-stream snapshot (Coinbase sends the whole book; the model keeps ~300)
SNAPSHOT_LEVELS = 1000


def _requested(req: dict[str, Any]) -> list[str] | str:
    """The streams an Exchange subscribe names (``channels`` as names or objects, with the
    top-level ``product_ids``), or an error text."""
    top = req.get("product_ids", [])
    chans = req.get("channels")
    if not isinstance(chans, list) or not chans:
        return "channels must be a non-empty list"
    out: list[str] = []
    for c in chans:
        if isinstance(c, str):
            name, products = c, top
        elif isinstance(c, dict) and isinstance(c.get("name"), str):
            name, products = c["name"], c.get("product_ids", top)
        else:
            return f"bad channel {c!r:.60}"
        if not isinstance(products, list) or not all(isinstance(p, str) for p in products):
            return f"product_ids of {name} must be a list of strings"
        out += [f"{name}:{p}" for p in products]
    return out


class CoinbaseDialect:
    """The Exchange feed's :class:`engine.sim.dialect.Dialect` (module docstring)."""

    name = "coinbase"
    #: the replay server serves a Coinbase journal by recorded connection (frames name no stream)
    replays_by_stream = False
    #: channels a client may subscribe that the model produces no frames for
    quiet_channels: frozenset[str] = frozenset({"heartbeat"})
    book_channels: frozenset[str] = frozenset({"level2", "level2_batch"})

    def encoder(self) -> FrameEncoder:
        return CoinbaseFrames()

    def ws_route(self, path: str, query: str) -> tuple[bool, list[str]] | None:
        return (False, []) if path in ("", "/") else None

    @staticmethod
    def wrap(stream: str, payload: bytes) -> bytes:
        return payload

    def control_reply(self, conn: Any, text: str | None, host: dialect.DialectHost) -> list[bytes]:
        try:
            req = json.loads(text) if text is not None else None
        except ValueError:
            req = None
        if not isinstance(req, dict):
            return [self._error("Malformed JSON", "expected a JSON object in a text frame")]
        op = req.get("type")
        if op not in ("subscribe", "unsubscribe"):
            return [self._error("Failed to subscribe", f"unknown type {op!r:.40}")]
        streams = self._streams(req)
        if isinstance(streams, str):
            return [self._error(f"Failed to {op}", streams)]
        bad = [s for s in streams if not self._valid(s, host.valid_streams)]
        if bad:
            return [self._error(f"Failed to {op}", f"{bad[0]} is not a valid product")]
        if op == "unsubscribe":
            for s in streams:
                conn.unsubscribe(s)
            return [self._ack(list(conn.subs), host)]
        new = [s for s in dict.fromkeys(streams) if s not in conn.subs]
        if len(conn.subs) + len(new) > host.max_streams:
            return [self._error("Failed to subscribe", f"at most {host.max_streams} subscriptions")]
        for s in new:
            conn.subscribe(s)
        out = [self._ack(list(conn.subs), host)]
        for s in new:
            ch, _, symbol = s.partition(":")
            if ch in self.book_channels:
                out.append(host.snapshot(symbol, SNAPSHOT_LEVELS, host.book(symbol)))
        return out

    def _valid(self, stream: str, valid: Container[str]) -> bool:
        ch, _, product = stream.partition(":")
        if ch in self.quiet_channels:
            return any(f"{c}:{product}" in valid for c in self.book_channels)
        return stream in valid

    @staticmethod
    def _streams(req: dict[str, Any]) -> list[str] | str:
        return _requested(req)

    def _ack(self, streams: list[str], host: dialect.DialectHost) -> bytes:
        return CoinbaseExchange.encode_subscriptions(streams)

    def _error(self, message: str, reason: str) -> bytes:
        return CoinbaseExchange.encode_error(message, reason)

    # ................................................................ no REST, no notices

    def rest_route(self, path: str) -> str | None:
        return None

    def depth_request(
        self, path: str, query: dict[str, str], known: Container[str]
    ) -> tuple[str, int]:
        raise dialect.RestError(404, self.error_body("NotFound"))

    def rest_answer(self, route: str, host: dialect.DialectHost) -> tuple[int, bytes]:
        return 404, self.error_body("NotFound")

    @staticmethod
    def error_body(msg: str) -> bytes:
        return json.dumps({"message": msg}, separators=(",", ":")).encode()

    def server_shutdown(self, ms: int) -> bytes | None:
        return None

    def garbage(
        self, rng: random.Random, stream: str, ms: int, combined: bool
    ) -> list[tuple[str, bytes, int]]:
        """Binary junk, a truncated match, an l2update with wrong types, non-JSON text."""
        product = stream.partition(":")[2] or "BTC-USD"
        good = self._good(product, ms)
        wrong = (
            f'{{"type":"l2update","product_id":"{product}","changes":[["buy",1.5,null]],'
            f'"time":{ms}}}'
        )
        return [
            ("binary", bytes(rng.randrange(256) for _ in range(rng.randrange(8, 64))), 0x2),
            ("truncated", good[: rng.randrange(5, len(good) - 2)], 0x1),
            ("types", wrong.encode(), 0x1),
            ("notjson", "".join(rng.choice("abc{}[]:,\"' xyz") for _ in range(40)).encode(), 0x1),
        ]

    def _good(self, product: str, ms: int) -> bytes:
        return CoinbaseExchange.encode_heartbeat(product, 1, 1, ms)

    def diff_stream(self, symbol: str) -> str:
        return f"level2_batch:{symbol}"


class CoinbaseAdvancedDialect(CoinbaseDialect):
    """Advanced Trade: one channel per subscribe; every message numbered per connection."""

    name = "coinbase-advanced"
    quiet_channels = frozenset({"heartbeats"})
    book_channels = frozenset({"level2"})

    def encoder(self) -> FrameEncoder:
        return CoinbaseAdvancedFrames()

    @staticmethod
    def connection_numbers() -> ConnectionNumbers:
        """A new connection's ``sequence_num`` (the server stamps its market frames with it)."""
        return ConnectionNumbers()

    def control_reply(self, conn: Any, text: str | None, host: dialect.DialectHost) -> list[bytes]:
        out = super().control_reply(conn, text, host)
        numbered = getattr(conn, "numbered", None)  # the replies take the connection's numbers
        return out if numbered is None else [numbered(f) for f in out]

    def _valid(self, stream: str, valid: Container[str]) -> bool:
        if stream.partition(":")[0] in self.quiet_channels:
            return True
        return stream in valid

    @staticmethod
    def _streams(req: dict[str, Any]) -> list[str] | str:
        ch = req.get("channel")
        products = req.get("product_ids", [])
        if not isinstance(ch, str) or not ch:
            return "channel must be a string"
        if not isinstance(products, list) or not all(isinstance(p, str) for p in products):
            return "product_ids must be a list of strings"
        if ch == "heartbeats":
            return [ch]
        if not products:
            return f"{ch} needs product_ids"
        return [f"{ch}:{p}" for p in products]

    def _ack(self, streams: list[str], host: dialect.DialectHost) -> bytes:
        # the ack lists every subscription (heartbeats bare); numbered in control_reply
        return CoinbaseAdvanced.encode_subscriptions(streams, 0, host.sim_now())

    def _error(self, message: str, reason: str) -> bytes:
        return CoinbaseAdvanced.encode_error(f"{message}: {reason}")

    def _good(self, product: str, ms: int) -> bytes:
        return CoinbaseAdvanced.encode_heartbeat(0, 1, ms)

    def diff_stream(self, symbol: str) -> str:
        return f"level2:{symbol}"
