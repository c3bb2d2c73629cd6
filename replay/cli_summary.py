"""The ``engine replay`` summary as text: :func:`render_summary`, and the lines ``engine book`` shares.

Owns the words and layout of a summary (one block per symbol: trades,
candles, the book's sync state and health, alerts, output counts) and the
line of the instants ``--from``/``--to`` resolved to.  Takes the plain dict
:func:`engine.replay.replay.summarize` builds (the same one ``--json``
prints), so text and JSON never disagree on a figure.

Must not: fold, read journals or parse options (that is
:mod:`engine.replay.cli`), or compute a figure itself: it only lays out what
the summary holds.
"""

from __future__ import annotations

import json
from typing import Any

from engine.timefmt import format_ms, format_ns

__all__ = [
    "render_summary",
    "window_text",
    "trade_lines",
    "candle_lines",
    "health_lines",
    "sync_text",
]


def _pair(level: list[str] | None) -> str:
    return "-" if not level else f"{level[0]} × {level[1]}"


def render_summary(s: dict[str, Any]) -> str:
    """The replay summary as text, one block per symbol."""
    lines = [
        f"journal   {s['journal']}  exchange={s.get('exchange')}",
        f"frames    {s['frames']}  events {s['events']}  decode errors {s['decode_errors']}"
        f"  outputs {s['outputs']}  (last seq {s['last_seq']}"
        + (f", at {format_ns(s['last_recv_ns'])})" if s["frames"] else ")"),
    ]
    window = window_text(s.get("from_ns"), s.get("to_ns"))
    if window:
        lines.append("window    " + window)
    ck = s.get("checkpoint")
    if ck:
        lines.append(
            f"restored  checkpoint at seq {ck['last_seq']}, then folded {s['frames_folded']} frames"
        )
    if s.get("out"):
        lines.append(f"wrote     {s['out']['outputs']} outputs to {s['out']['file']}")
    if s.get("other_outputs"):
        lines.append("other     " + _counts(s["other_outputs"]))
    for sym, d in s["symbols"].items():
        lines.append("")
        lines.append(sym)
        lines.extend("  " + x for x in _symbol_lines(d))
    return "\n".join(lines)


def window_text(from_ns: int | None, to_ns: int | None) -> str:
    """The instants ``--from``/``--to`` resolved to, as ISO text and epoch ns."""
    ends = [(name, ns) for name, ns in (("from", from_ns), ("to", to_ns)) if ns is not None]
    return "  ".join(f"{name} {format_ns(ns)} (epoch ns {ns})" for name, ns in ends)


def _counts(d: dict[str, int]) -> str:
    return "  ".join(f"{k}={v}" for k, v in d.items()) or "-"


def _symbol_lines(d: dict[str, Any]) -> list[str]:
    out = trade_lines(d.get("trades")) + candle_lines(d.get("candles"))
    b = d.get("book")
    if b is not None:
        out.append(f"sync     {sync_text(b)}")
        if "last_id" in b:  # published: primed or synced
            out.append(
                f"book     bid {_pair(b['best_bid'])}  ask {_pair(b['best_ask'])}  spread"
                f" {b['spread']}  mid {b['mid']}  imbalance (top {b['depth']}) {b['imbalance']}"
                f"  levels {b['bid_levels']}/{b['ask_levels']}  update id {b['last_id']}"
            )
        else:
            out.append("book     none")
        out.extend(health_lines(b))
    alerts = d["alerts"]
    out.append(f"alerts   {alerts['count']}")
    for a in alerts["latest"]:
        out.append(f"         {json.dumps(a, sort_keys=True)}")
    out.append("outputs  " + _counts(d["outputs"]))
    return out


def sync_text(b: dict[str, Any]) -> str:
    """A book summary's sync state in words (a primed book is published but not yet synced)."""
    if b["state"] == "primed":
        return "primed (the snapshot is the book; no diff has chained onto it yet)"
    return str(b["state"])


def health_lines(b: dict[str, Any]) -> list[str]:
    if "gaps" not in b:
        return []
    return [
        f"health   gaps {b['gaps']}  resyncs {b['resyncs']}  drift {b['drift']}"
        f"  syncs {b['syncs']}  crossed {b['crossed']}  diffs applied {b['diffs_applied']}"
        f"  checksums verified {b['checksums_verified']} (mismatches {b['checksum_mismatches']})"
    ]


def trade_lines(t: dict[str, Any] | None) -> list[str]:
    if not t:
        return ["trades   -"]
    out = [
        f"trades   last {t['last_price']}  vwap {t['vwap']}  volume {t['volume']}"
        f" (buy {t['buy_volume']} / sell {t['sell_volume']})  count {t['count']}"
    ]
    for w in t["windows"]:
        out.append(f"         {w['window_s']}s window: vwap {w['vwap']}  volume {w['volume']}")
    return out


def _ohlcv(c: dict[str, Any]) -> str:
    start = format_ms(c["start_ms"])[:19]
    return f"{start} O {c['open']} H {c['high']} L {c['low']} C {c['close']} V {c['volume']}"


def candle_lines(candles: list[dict[str, Any]] | None) -> list[str]:
    out = []
    for c in candles or []:
        lc = c.get("last_closed")
        if lc:
            ma = [f"sma{p} {v}" for p, v in lc["sma"].items()]
            ma += [f"ema{p} {v}" for p, v in lc["ema"].items()]
            line = f"candle   {c['interval']} closed {_ohlcv(lc)}"
            out.append("  ".join([line, *ma]))
        oc = c.get("open_candle")
        if oc:
            out.append(f"candle   {c['interval']} open   {_ohlcv(oc)}")
    return out
