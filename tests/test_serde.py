"""Every event round-trips losslessly through engine.serde (and through JSON text)."""

from __future__ import annotations

import json

import attrs
import orjson
import pytest
from hypothesis import given

from engine import events as ev
from engine import serde
from engine.codecs.registry import get_codec
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
