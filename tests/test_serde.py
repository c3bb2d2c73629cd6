"""Every event round-trips losslessly through engine.serde (and through JSON text)."""

from __future__ import annotations

import json
import subprocess
import sys

import attrs
import orjson
import pytest
from hypothesis import given

from engine import events as ev
from engine import serde
from engine.codecs.registry import get_codec
from engine.trades import TradeStats, WindowStats
from tests.strategies import STRATEGIES, event_classes, events, strategy_for


def roundtrip(x):
    d = serde.dump(x)
    assert d["type"] == type(x).__name__
    # checkpoints and exports write JSON text: the dict must survive it too
    back = serde.load(json.loads(orjson.dumps(d)))
    assert back == x and type(back) is type(x)
    # tuples stay tuples (levels), bytes stay bytes
    for f in attrs.fields(type(x)):
        assert type(getattr(back, f.name)) is type(getattr(x, f.name)), f.name
    return back


def test_every_event_class_has_a_strategy_and_is_registered():
    classes = event_classes()
    assert len(classes) >= 14
    for cls in classes:
        assert serde.TYPES[cls.__name__] is cls
    # a class added later falls back to type inference (and still round-trips below);
    # this reminds whoever adds it to give it a realistic strategy in tests/strategies.py
    missing = [c.__name__ for c in classes if c not in STRATEGIES]
    assert not missing, f"add strategies for {missing} in tests/strategies.py"


@pytest.mark.parametrize("cls", event_classes(), ids=lambda c: c.__name__)
def test_each_class_roundtrips(cls):
    @given(strategy_for(cls))
    def check(x):
        assert type(x) is cls
        roundtrip(x)

    check()


@given(events())
def test_any_event_roundtrips(x):
    roundtrip(x)


def test_decoded_real_shapes_roundtrip():
    """The codec's own output (levels as int tuples, optional fields None) round-trips."""
    codec = get_codec("binance-futures")
    frames = [
        b'{"stream":"x@depth@100ms","data":{"e":"depthUpdate","E":1,"T":2,"s":"X","U":1,"u":2,'
        b'"pu":0,"b":[["7.6110","2"]],"a":[]}}',
        b'{"result":null,"id":1}',
        b"not json",
    ]
    for i, p in enumerate(frames):
        (x,) = codec.decode(i + 1, 5, "text", "wss://x/stream", p)
        roundtrip(x)
    assert isinstance(x, ev.DecodeError) and x.excerpt == b"not json"


# ---------------------------------------------------------------- one converter, one table

# The encoding of a derived-field output, a nested one, a Book and bytes, exactly as recorded
# outputs and checkpoints hold it (before and after the converter was built from one table).
_PINNED = [
    '{"seq":5,"recv_ns":6,"symbol":"BTCUSDT","as_of_ms":1000,"last_price":4200000000,'
    '"count":2,"volume":300000000,"buy_volume":100000000,"notional":7000000000000000000000000,'
    '"windows":[{"window_ms":60000,"count":2,"volume":300000000,"buy_volume":100000000,'
    '"notional":7000000000000000000000000,"vwap":23333333333333333}],"sell_volume":200000000,'
    '"vwap":23333333333333333,"type":"TradeStats"}',
    '{"phase":"synced","book":{"last_id":9,"bids":[[100,5],[99,1]],"asks":[[101,2]]},"buffer":[],'
    '"depth":null,"price_decimals":null,"qty_decimals":null,"type":"Sync"}',
    '{"seq":1,"recv_ns":2,"source":"wss://x","reason":"bad","excerpt":"AP8=","type":"DecodeError"}',
]

_DUMP_SCRIPT = """
import importlib, sys
for m in sys.argv[1:]:
    importlib.import_module(m)
from engine import serde
from engine.book import Book
from engine.book_sync import Sync
from engine.events import DecodeError
from engine.trades import TradeStats, WindowStats
w = WindowStats(60000, 2, 3 * 10**8, 10**8, 7 * 10**24)
for o in (
    TradeStats(5, 6, "BTCUSDT", 1000, 42 * 10**8, 2, 3 * 10**8, 10**8, 7 * 10**24, (w,)),
    Sync("synced", Book.from_levels(9, [(100, 5), (99, 1)], [(101, 2)]), []),
    DecodeError(1, 2, "wss://x", "bad", b"\\x00\\xff"),
):
    text = serde.dumps_json(serde.dump(o))
    assert serde.load(serde.loads_json(text)) == o
    print(text.decode())
"""


@pytest.mark.parametrize(
    "first",
    [[], ["engine.trades"], ["engine.book_sync", "engine.trades"], ["engine.replay.replay"]],
    ids=lambda m: "+".join(m) or "serde-first",
)
def test_the_encoding_is_pinned_whatever_was_imported_first(first):
    out = subprocess.run(
        [sys.executable, "-c", _DUMP_SCRIPT, *first], capture_output=True, text=True, check=True
    ).stdout
    assert out.splitlines() == _PINNED


def test_the_order_of_the_hook_table_does_not_matter(monkeypatch):
    w = WindowStats(60000, 2, 3 * 10**8, 10**8, 7 * 10**24)
    stats = TradeStats(5, 6, "BTCUSDT", 1000, 42 * 10**8, 2, 3 * 10**8, 10**8, 7 * 10**24, (w,))
    want = serde.build_converter().unstructure(stats)
    monkeypatch.setattr(serde, "HOOKS", tuple(reversed(serde.HOOKS)))
    conv = serde.build_converter()
    assert conv.unstructure(stats) == want and want["windows"][0]["vwap"] == w.vwap
    assert conv.structure(want, TradeStats) == stats


def test_load_knows_every_registered_type_in_a_fresh_interpreter():
    """Only engine.serde imported: loading a recorded reducer output still finds its class."""
    code = (
        "import sys, json; from engine import serde; "
        "print(type(serde.load(json.loads(sys.argv[1]))).__module__)"
    )
    for text, module in ((_PINNED[0], "engine.trades"), (_PINNED[1], "engine.book_sync")):
        out = subprocess.run(
            [sys.executable, "-c", code, text], capture_output=True, text=True, check=True
        ).stdout
        assert out.strip() == module


def test_the_build_knows_every_registered_class_of_the_engine():
    """Importing every engine module registers no class that serde alone would not know."""
    every = (
        "import importlib, pkgutil, engine; from engine import serde\n"
        "for m in pkgutil.walk_packages(engine.__path__, 'engine.'):\n"
        "    if not m.name.endswith('__main__'): importlib.import_module(m.name)\n"
        "print(sorted(serde.TYPES))"
    )
    alone = "from engine import serde; serde.converter; print(sorted(serde.TYPES))"
    got = [
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
        for code in (every, alone)
    ]
    assert got[0] == got[1] and "RotateRequest" in got[0]


def test_documents_written_with_the_older_bigints_marker_still_load():
    """Outputs journals and checkpoints of earlier versions put ``"bigints": true`` first."""
    doc = {"frame_seq": 3, "output": {"price": 65_000 * 10**18, "notional": 10**40 + 7}}
    old = b'{"bigints":true,' + serde.dumps_json(doc)[1:]
    assert serde.loads_json(old) == doc
    assert serde.loads_json(serde.dumps_json(doc)) == doc
