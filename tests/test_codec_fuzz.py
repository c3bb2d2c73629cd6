"""Fuzzing: mutated real Binance frames never make a codec raise; bad ones become DecodeErrors."""

from __future__ import annotations

import re
from decimal import Context, Decimal, localcontext
from pathlib import Path

import msgspec
import orjson
from hypothesis import example, given
from hypothesis import strategies as st

from engine import num
from engine.codecs.binance import BinanceFutures, BinanceSpot
from engine.events import EXCERPT_BYTES, DecodeError
from engine.journal.reader import JournalReader

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "journals"


def _frames(name):
    out = []
    seen = set()
    for f in JournalReader(FIX / name).frames():
        if f.dir == "in" and f.kind in ("text", "rest"):
            key = (f.kind, f.payload[:40])  # a few of each shape, not all 1500 frames
            if key not in seen or len(out) < 60:
                seen.add(key)
                out.append((f.kind, f.source, f.payload))
    return out


REAL = [(BinanceSpot(), *x) for x in _frames("binance-spot")] + [
    (BinanceFutures(), *x) for x in _frames("binance-futures")
]
frames = st.sampled_from(REAL)

WEIRD = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63, max_value=2**70),
    st.integers(max_value=-1),
    st.floats(allow_nan=False),
    st.text(max_size=30),
    st.sampled_from(
        ["-1", "1e9", "0.123456789", "١٢", " 1", "1_0", "+1", "", ".", "1.2.3", "9" * 40]
    ),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def check(codec, kind, source, payload):
    evs = codec.decode(1, 2, kind, source, payload)
    assert isinstance(evs, list) and len(evs) >= 1
    for e in evs:
        assert (e.seq, e.recv_ns) == (1, 2)
        if isinstance(e, DecodeError):
            assert e.reason and len(e.excerpt) <= EXCERPT_BYTES
            assert not e.reason.startswith("internal error"), e.reason
    return evs


@given(frames, st.data())
def test_byte_flips(frame, data):
    codec, kind, source, payload = frame
    b = bytearray(payload)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(b) - 1))
        b[i] = data.draw(st.integers(0, 255))
    check(codec, kind, source, bytes(b))


@given(frames, st.data())
def test_truncation(frame, data):
    codec, kind, source, payload = frame
    n = data.draw(st.integers(0, len(payload) - 1))
    (e,) = check(codec, kind, source, payload[:n])
    assert isinstance(e, DecodeError)


def _paths(obj, prefix=()):
    """Every (path) into nested dicts/lists of a decoded frame."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, (*prefix, i))


def _set(obj, path, value, delete=False):
    for k in path[:-1]:
        obj = obj[k]
    if delete:
        del obj[path[-1]]
    else:
        obj[path[-1]] = value


@given(frames, st.data())
def test_field_deletion_and_type_swaps(frame, data):
    codec, kind, source, payload = frame
    obj = orjson.loads(payload)
    paths = [p for p in _paths(obj) if p]
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths))
        try:
            if data.draw(st.booleans()):
                _set(obj, path, None, delete=True)
            else:
                _set(obj, path, data.draw(WEIRD))
        except (KeyError, IndexError, TypeError):
            pass  # an earlier mutation removed or replaced the parent
        paths = [p for p in _paths(obj) if p] or [("x",)]
    try:
        mutated = orjson.dumps(obj)
    except TypeError:  # orjson refuses ints beyond 64 bits: spell them out ourselves
        mutated = repr(obj).replace("'", '"').replace("None", "null").encode()
    check(codec, kind, source, mutated)


@given(st.binary(max_size=300), st.sampled_from(["text", "rest", "binary", "open"]))
def test_random_bytes(payload, kind):
    for codec in (BinanceSpot(), BinanceFutures()):
        check(codec, kind, "https://api.binance.com/api/v3/depth?symbol=X&limit=5", payload)


def test_required_field_deletion_is_an_error():
    """Deleting any required field of a real depth frame gives a DecodeError naming it."""
    codec = BinanceFutures()
    kind, source, payload = next(
        (k, s, p) for c, k, s, p in REAL if isinstance(c, BinanceFutures) and b"depthUpdate" in p
    )
    obj = orjson.loads(payload)
    for field in ("E", "s", "U", "u", "pu", "b", "a"):
        data = {k: v for k, v in obj["data"].items() if k != field}
        (e,) = check(codec, kind, source, orjson.dumps({**obj, "data": data}))
        assert isinstance(e, DecodeError) and f"'{field}'" in e.reason.replace("`", "'"), e.reason


# Raw (unescaped) text for a level string: a decimal number with a piece of junk in three places
# (signs, separators, spaces, control characters, quotes, escapes, non-ASCII digits, any ASCII).
_JUNK = st.sampled_from(
    ["", "", "-", "+", "_", " ", "\t", "\\u0031", "\\", '"', "١", "\xa0", "\x85", "e"]
) | st.characters(max_codepoint=0x7F)
LEVEL_TEXT = st.tuples(
    _JUNK,
    st.text("0123456789", min_size=1, max_size=3),
    _JUNK,
    st.sampled_from([".", ""]),
    st.text("0123456789", max_size=9),
    _JUNK,
).map("".join)


def _level_frame(price: str, qty: str) -> bytes:
    return (
        b'{"stream":"bnbbtc@depth@100ms","data":{"e":"depthUpdate","E":1,"s":"BNBBTC",'
        b'"U":1,"u":2,"pu":0,"b":[["' + price.encode() + b'","' + qty.encode() + b'"]],"a":[]}}'
    )


def _agrees_with_num_parse(codec, price: str, qty: str) -> None:
    """The codec's levels equal engine.num.parse of what the JSON really holds, or it's an error."""
    payload = _level_frame(price, qty)
    (ev,) = check(codec, "text", "wss://x/stream", payload)
    try:  # what the JSON really holds (quotes and escapes in the text change it)
        levels = msgspec.json.decode(payload)["data"]["b"]
    except (msgspec.DecodeError, KeyError, TypeError):
        assert isinstance(ev, DecodeError)
        return
    if len(levels) != 1 or len(levels[0]) != 2 or not all(isinstance(x, str) for x in levels[0]):
        return  # a different shape: the other tests cover those
    try:
        want = [(num.parse(levels[0][0]), num.parse(levels[0][1]))]
    except num.PrecisionError:
        want = None
    if want is None or not all(0 <= v <= num.MAX for v in want[0]):
        assert isinstance(ev, DecodeError), (levels, ev)
    else:
        assert ev.bids == want, (levels, ev)


def test_level_numbers_are_exact_with_any_character_anywhere():
    """Every ASCII character (and non-ASCII digits/spaces) at every place of a price or qty:
    the codec's levels are what engine.num.parse reads from the JSON string, or an error."""
    chars = [chr(i) for i in range(128)] + ["١", "\xa0", "\x85", "\u2003", "\\u0031"]
    chars += ["\\u0020", "\\u002d", "\\t", "\\u0661"]  # escapes of a space, "-", a tab, "١"
    for codec in (BinanceSpot(), BinanceFutures()):
        for c in chars:
            for text in (c + "12.5", "1" + c + "2.5", "12" + c + ".5", "12." + c + "5", "12.5" + c):
                _agrees_with_num_parse(codec, text, "3")
                _agrees_with_num_parse(codec, "3", text)


@given(st.sampled_from([BinanceSpot(), BinanceFutures()]), LEVEL_TEXT, LEVEL_TEXT)
def test_level_numbers_are_exact_on_any_level_string(codec, price, qty):
    """Random junk in prices and quantities: the codec agrees with engine.num.parse."""
    _agrees_with_num_parse(codec, price, qty)


# ---------------------------------------------------------------- the one number parser

_PLAIN = re.compile(r"[+-]?(?=\.?[0-9])[0-9]*\.?[0-9]*")


def _reference(s: str) -> int | None:
    """What a plain ASCII decimal string is worth in units, by Decimal; None if not exact."""
    if not _PLAIN.fullmatch(s):
        return None
    with localcontext(Context(prec=len(s) + num.SCALE + 2)):  # exact: never round (prec 28 did)
        units = Decimal(s).scaleb(num.SCALE)
        return int(units) if units == units.to_integral_value() else None


NUMBERISH = st.text("0123456789.+-_ e\t١\xa0", max_size=14) | st.decimals(
    allow_nan=False, allow_infinity=False, places=10
).map(str)


@given(NUMBERISH)
@example(".-0")  # a sign after the point: once read as 0
def test_num_parse_is_the_exact_decimal_value_or_a_precision_error(s):
    """Digits, signs, dots, spaces, underscores, exponents, non-ASCII digits in any order."""
    try:
        got = num.parse(s)
    except num.PrecisionError:
        got = None
    assert got == _reference(s), s


def test_num_parse_rejects_non_strings_and_oversized_digit_runs():
    for bad in (None, 5, 1.5, b"1.5", "9" * 5000, "1" * 3000 + "." + "1" * 3000):
        try:
            num.parse(bad)  # type: ignore[arg-type]
        except num.PrecisionError:
            continue
        raise AssertionError(f"accepted {bad!r:.40}")


@given(st.integers(-(2**63), 2**63 - 1) | st.integers(-num.MAX, num.MAX), st.integers(0, 20))
def test_render_then_parse_is_identity(units, decimals):
    if decimals < num.SCALE and units % 10 ** (num.SCALE - decimals):
        decimals = num.SCALE  # render refuses to drop digits
    assert num.parse(num.render(units, decimals)) == units


_JSON_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
JSON_NUMBERISH = (
    st.text("0123456789.+-eE", max_size=12)
    | st.decimals(allow_nan=False, allow_infinity=False, places=10).map(lambda d: f"{d:e}")
    | st.floats(allow_nan=False, allow_infinity=False, width=32).map(repr)
)


@given(JSON_NUMBERISH)
@example("..E2")  # two points and no digit: once taken for 0
def test_json_number_parse_is_the_exact_decimal_value_or_a_precision_error(s):
    """JSON number tokens (Kraken v2 prices): exact by Decimal, exponents included, or refused."""
    try:
        got = num.parse_json_number(s)
    except num.PrecisionError:
        got = None
    want = None
    if _JSON_NUMBER.fullmatch(s) and abs(int(s.lower().partition("e")[2] or 0)) <= 64:
        with localcontext(Context(prec=len(s) + num.SCALE + 70)):
            units = Decimal(s).scaleb(num.SCALE)
            want = int(units) if units == units.to_integral_value() else None
    if got is not None and want is None:
        # accepted beyond JSON's grammar: only the forms parse() takes for strings ("+1", ".5", "5.")
        assert num.parse(s.lower().partition("e")[0]) is not None
        return
    assert got == want, s
