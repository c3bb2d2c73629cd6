"""The optional C fast path (engine/_depthscan.c) never changes what a frame decodes to.

Differential: the Binance codecs' events with the C path equal their events with it
switched off (``engine.codecs.binance.scan_depth = None``, the codec's own switch) on
every real depth frame, on mutated real frames and on generated well-formed ones; and
the scanner itself never crashes and answers None outside its grammar.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import num
from engine.codecs import binance
from engine.codecs.binance import BinanceFutures, BinanceSpot
from engine.events import BookSnapshot, DecodeError, DepthDiff
from engine.journal.reader import JournalReader

_ds = pytest.importorskip("engine._depthscan")
scan = _ds.scan_depth

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "journals"
SPOT, FUT = BinanceSpot(), BinanceFutures()


def _depth_frames(name):
    return [
        (f.seq, f.recv_ns, f.kind, f.source, f.payload)
        for f in JournalReader(FIX / name).frames()
        if f.dir == "in" and f.kind == "text" and b'"depthUpdate"' in f.payload
    ]


REAL = [(SPOT, *f) for f in _depth_frames("binance-spot")] + [
    (FUT, *f) for f in _depth_frames("binance-futures")
]


@contextlib.contextmanager
def _python_only():
    saved = binance.scan_depth
    binance.scan_depth = None
    try:
        yield
    finally:
        binance.scan_depth = saved


def same(codec, seq, recv_ns, kind, source, payload):
    """The codec's events with the C path; asserts they equal the pure-Python ones."""
    assert binance.scan_depth is scan
    got = codec.decode(seq, recv_ns, kind, source, payload)
    with _python_only():
        want = codec.decode(seq, recv_ns, kind, source, payload)
    assert got == want, payload[:300]
    assert [type(e) for e in got] == [type(e) for e in want]
    return got


def test_every_real_depth_frame_takes_the_c_path_and_agrees():
    assert len({id(c) for c, *_ in REAL}) == 2 and len(REAL) > 500
    for codec, seq, recv_ns, kind, source, payload in REAL:
        answered = []
        real_scan = binance.scan_depth

        def counting(*args, _real=real_scan, _answered=answered):
            r = _real(*args)
            _answered.append(r is not None)
            return r

        binance.scan_depth = counting
        try:
            got = codec.decode(seq, recv_ns, kind, source, payload)
        finally:
            binance.scan_depth = real_scan
        assert answered == [True], "decode() did not take the C path"
        (ev,) = same(codec, seq, recv_ns, kind, source, payload)
        assert got == [ev] and isinstance(ev, DepthDiff)
        # the same frame on a raw /ws/<stream> connection
        data = orjson.dumps(orjson.loads(payload)["data"])
        raw = f"wss://x/ws/{ev.symbol.lower()}@depth@100ms"
        assert same(codec, seq, recv_ns, kind, raw, data) == [ev]
        # partial depth: futures sends diff-shaped snapshots, spot never sends a depthUpdate
        (snap,) = same(codec, seq, recv_ns, kind, f"wss://x/ws/{ev.symbol.lower()}@depth5", data)
        assert isinstance(snap, BookSnapshot if codec.futures else DecodeError)


# ---------------------------------------------------------------- mutated real frames

frames = st.sampled_from(REAL)


@given(frames, st.data())
def test_byte_flips_deletions_and_truncation_agree(frame, data):
    codec, seq, recv_ns, kind, source, payload = frame
    b = bytearray(payload)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(b) - 1))
        op = data.draw(st.sampled_from(["flip", "delete", "insert", "truncate"]))
        if op == "flip":
            b[i] = data.draw(st.integers(0, 255))
        elif op == "delete":
            del b[i]
        elif op == "insert":
            b[i:i] = data.draw(st.sampled_from([b" ", b"\\", b"-", b"0", b"9" * 20, b"e5", b'"']))
        else:
            del b[i:]
        if not b:
            b = bytearray(b"{")
    same(codec, seq, recv_ns, kind, source, bytes(b))


_SWAPS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=False),
    st.sampled_from(
        ["-1", "1e9", "0.123456789", "1.000000000", "١٢", " 1", "+1", "", ".", "9" * 30,
         "0." + "1" * 18, "0." + "1" * 19, "1." + "0" * 19, "9" * 20 + "." + "9" * 18, "9" * 21]
    ),
    st.lists(st.text("0123456789.", max_size=12), max_size=3),
)


@given(frames, st.data())
def test_field_type_swaps_agree(frame, data):
    codec, seq, recv_ns, kind, source, payload = frame
    obj = orjson.loads(payload)
    d = obj["data"]
    for _ in range(data.draw(st.integers(1, 3))):
        key = data.draw(st.sampled_from(sorted(d)))
        levels = d[key] if key in ("b", "a") and isinstance(d[key], list) else []
        levels = [lv for lv in levels if isinstance(lv, list) and lv]
        if levels and data.draw(st.booleans()):
            level = data.draw(st.sampled_from(levels))
            level[data.draw(st.integers(0, len(level) - 1))] = data.draw(_SWAPS)
        elif data.draw(st.booleans()):
            del d[key]
            if not d:
                break
        else:
            d[key] = data.draw(_SWAPS)
    same(codec, seq, recv_ns, kind, source, json.dumps(obj, separators=(",", ":")).encode())


# ---------------------------------------------------------------- generated well-formed frames

DECIMAL = st.tuples(
    st.text("0123456789", min_size=0, max_size=22),
    st.sampled_from([".", "", "."]),
    st.text("0123456789", max_size=10) | st.text("0123456789", min_size=9, max_size=20),
).map("".join)
LEVELS = st.lists(st.tuples(DECIMAL, DECIMAL), max_size=40)
ID = st.integers(0, 10**19) | st.integers(0, 2**63 - 1) | st.integers(0, 1000)
SYMBOL = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1, max_size=12) | st.text(
    max_size=6
)


def _frame(e, E, T, s, U, u, pu, b, a, stream):
    parts = [f'"e":{json.dumps(e)}', f'"E":{E}']
    if T is not None:
        parts.append(f'"T":{T}')
    parts += [f'"s":{json.dumps(s)}', f'"U":{U}', f'"u":{u}']
    if pu is not None:
        parts.append(f'"pu":{pu}')
    parts += [
        f'"b":{json.dumps(b, separators=(",", ":"))}',
        f'"a":{json.dumps(a, separators=(",", ":"))}',
    ]
    body = "{" + ",".join(parts) + "}"
    if stream is not None:
        body = f'{{"stream":{json.dumps(stream)},"data":{body}}}'
    return body.encode()


@given(
    st.sampled_from([SPOT, FUT]),
    st.sampled_from(["depthUpdate", "depthUpdate", "depthUpdat", "trade"]),
    ID,
    st.none() | ID,
    SYMBOL,
    ID,
    ID,
    st.none() | ID | st.just(-1),
    LEVELS,
    LEVELS,
    st.sampled_from(["bnbbtc@depth@100ms", "bnbbtc@depth", "bnbbtc@depth5@100ms", None]),
)
def test_generated_depth_frames_agree(codec, e, E, T, s, U, u, pu, b, a, stream):
    payload = _frame(e, E, T, s, min(U, u), max(U, u), pu, b, a, stream)
    source = "wss://x/stream" if stream else "wss://x/ws/bnbbtc@depth@100ms"
    evs = same(codec, 7, 8, "text", source, payload)
    if (
        e == "depthUpdate"
        and stream != "bnbbtc@depth5@100ms"
        and (pu is not None or not codec.futures)
        and max(E, T or 0, U, u, pu or 0) < 2**63
        and s.isascii()
        and s.isprintable()
        and '"' not in s
        and "\\" not in s
        and all(_plain(x) for lv in b + a for x in lv)
    ):
        assert isinstance(evs[0], DepthDiff), evs
        # the scanner declines (None) ids from 10**18, numbers of more than 38 digits and
        # more than 18 decimals (even zeros, which the Python path accepts)
        big = max(E, T or 0, U, u, pu or 0) >= 10**18 or any(
            len(x.replace(".", "")) > 38 or len(x.partition(".")[2]) > num.SCALE
            for lv in b + a
            for x in lv
        )
        assert scan(payload, 7, 8, codec.futures) == evs[0] or pu == -1 or big


def _plain(x: str) -> bool:
    """A decimal string the engine's parser reads exactly as a value ≤ num.MAX."""
    try:
        return num.parse(x) <= num.MAX
    except num.PrecisionError:
        return False


# ---------------------------------------------------------------- the scanner on its own

GOOD = (
    b'{"stream":"bnbbtc@depth@100ms","data":{"e":"depthUpdate","E":1,"T":2,"s":"BNBBTC",'
    b'"U":3,"u":4,"pu":2,"b":[["1.5","2"]],"a":[]}}'
)


def test_a_well_formed_frame_is_scanned():
    ev = scan(GOOD, 10, 20, True)
    assert ev == DepthDiff(10, 20, "BNBBTC", 3, 4, 2, 1, 2, [(num.parse("1.5"), 2 * num.ONE)], [])


@pytest.mark.parametrize(
    "price",
    [
        "9.223372036854775808",  # int64's bound once scaled: the 128-bit path
        "42000.123456789012345678",  # 18 decimals
        "0.000000000000000001",  # one unit
        "0.0000000001",  # a 1e-10 tick
        "18.446744073709551615",  # 2**64 - 1 units
        "18.446744073709551616",  # 2**64 units
        "99999999999999999999.999999999999999999",  # num.MAX: 38 digits
        "00000000000000000000000000000000000001",  # 38 digits, small value
        "170141183460469231731.687303715884105727",  # 2**127 - 1 units: beyond MAX
    ],
)
def test_values_beyond_int64_and_up_to_18_decimals(price):
    payload = GOOD.replace(b'"1.5"', b'"' + price.encode() + b'"')
    v = num.parse(price)
    ev = scan(payload, 10, 20, True)
    if v > num.MAX:
        assert ev is None
        assert isinstance(same(FUT, 10, 20, "text", "wss://x/stream", payload)[0], DecodeError)
    else:
        assert ev.bids == [(v, 2 * num.ONE)] and type(ev.bids[0][0]) is int
        assert same(FUT, 10, 20, "text", "wss://x/stream", payload) == [ev]


@pytest.mark.parametrize(
    "old,new",
    [
        (b'"E":1,', b'"E": 1,'),  # whitespace
        (b'"a":[]}}', b'"a":[]} }'),
        (b'"a":[]}}', b'"a":[]}}\n'),
        (b'"s":"BNBBTC"', b'"s":"BNB\\u0042TC"'),  # escapes
        (b'"s":"BNBBTC"', b'"s":"BNB\xc3\xa9"'),  # non-ASCII
        (b'@100ms"', b'@100ms\\""'),
        (b'"E":1,"T":2,', b'"T":2,"E":1,'),  # key order
        (b'"U":3,"u":4,', b'"u":4,"U":3,'),
        (b'"a":[]', b'"a":[],"x":1'),  # extra key
        (b'"depthUpdate"', b'"trade"'),  # other event
        (b'"1.5"', b'"-1.5"'),  # sign
        (b'"1.5"', b'"+1.5"'),
        (b'"1.5"', b'"1e5"'),  # exponent
        (b'"1.5"', b'"1.5000000000000000000"'),  # 19 decimals, even zeros
        (b'"1.5"', b'"0.0000000000000000001"'),  # 19 decimals
        (b'"1.5"', b'"' + b"0" * 39 + b'"'),  # 39 digits
        (b'"1.5"', b'"' + b"1" * 21 + b'"'),  # beyond num.MAX once scaled
        (b'"1.5"', b'""'),
        (b'"1.5"', b'"."'),
        (b'"1.5"', b'"1.2.3"'),
        (b'"1.5"', b"1.5"),  # a number, not a string
        (b'["1.5","2"]', b'["1.5","2","3"]'),
        (b'["1.5","2"]', b'["1.5"]'),
        (b'"U":3', b'"U":5'),  # U > u
        (b'"U":3', b'"U":03'),  # leading zero
        (b'"U":3', b'"U":3.0'),
        (b'"U":3', b'"U":' + b"1" * 19),  # 19 digits
        (b'"pu":2', b'"pu":-1'),
        (b'"E":1', b'"E":null'),
        (b'"a":[]}}', b'"a":[]}'),  # truncated
        (b'"a":[]}}', b'"a":[]}}}'),  # trailing garbage
    ],
)
def test_none_outside_the_grammar(old, new):
    assert GOOD.count(old) == 1
    assert scan(GOOD.replace(old, new), 1, 2, False) is None


def test_none_without_pu_when_required_and_for_non_bytes():
    no_pu = GOOD.replace(b',"pu":2', b"")
    assert scan(no_pu, 1, 2, True) is None
    assert scan(no_pu, 1, 2, False).prev_id is None
    assert scan(GOOD.decode(), 1, 2, False) is None
    assert scan(bytearray(GOOD), 1, 2, False) is None


@settings(max_examples=3000)
@given(st.binary(max_size=200), st.booleans())
def test_random_bytes_never_crash(payload, need_pu):
    assert scan(payload, 1, 2, need_pu) is None or payload.startswith(b"{")


@settings(max_examples=3000)
@given(st.sampled_from([GOOD[:n] for n in range(len(GOOD))]), st.binary(max_size=60))
def test_random_tails_never_crash(head, tail):
    ev = scan(head + tail, 1, 2, False)
    assert ev is None or isinstance(ev, DepthDiff)
