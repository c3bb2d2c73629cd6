"""engine.frozen: the fast __init__ (C slot filler or descriptors) is indistinguishable from attrs'.

Both fast variants run here: ``Trade`` gets the C one when the optional
extension is built (CI builds it), ``Descr`` is Trade's twin forced onto the
pure-Python descriptor stores.
"""

from __future__ import annotations

import pickle

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import serde
from engine.candles import CandleClosed
from engine.events import Trade
from engine.frozen import _fast_init, frozen
from engine.trades import TradeStats, WindowStats


def twin(name: str) -> type:
    """A class with Trade's fields and defaults, built by attrs' own frozen decorator."""
    fields = {a.name: a.type for a in attrs.fields(Trade)}
    return attrs.frozen(slots=True, weakref_slot=False)(
        type(name, (), {"__annotations__": fields, "agg": False})
    )


Reference = twin("Reference")  # attrs' own __init__
Descr = twin("Descr")  # the pure-Python fast __init__ (below)
_fast_init(Descr, use_c=False)

try:
    from engine import _slots
except ImportError:  # the extension is optional; the C checks below then skip
    _slots = None  # type: ignore[assignment]


def _is_fast(cls: type) -> bool:
    return cls.__init__.__doc__.startswith(f"Build a {cls.__name__}")


def test_hot_value_classes_get_the_fast_init() -> None:
    for cls in (Trade, TradeStats, WindowStats, CandleClosed, Descr):
        assert _is_fast(cls), cls
    assert not _is_fast(Reference)
    assert "_fill" in Trade.__init__.__code__.co_names or _slots is None
    assert "_fill" not in Descr.__init__.__code__.co_names


ints = st.integers(-(2**70), 2**70)
opt = st.none() | ints


@given(st.tuples(ints, ints, st.text(max_size=5), ints, ints, ints, st.sampled_from(["buy", "sell"]),
                 opt, opt, ints, ints, st.booleans()))  # fmt: skip
def test_same_values_as_attrs_init(args: tuple) -> None:
    ref = Reference(*args)
    assert attrs.astuple(Descr(*args)) == attrs.astuple(ref)
    fast = Trade(*args)
    assert attrs.astuple(fast) == attrs.astuple(ref)
    assert repr(fast) == repr(ref).replace("Reference", "Trade")
    assert fast == Trade(*args) and hash(fast) == hash(Trade(*args))  # type: ignore[arg-type]
    assert pickle.loads(pickle.dumps(fast)) == fast
    assert serde.converter.structure(serde.converter.unstructure(fast), Trade) == fast
    assert attrs.evolve(fast, qty=1).qty == 1


def test_defaults_keywords_and_arity() -> None:
    t = Trade(1, 2, "X", 3, 4, 5, "buy", None, None, 3, 3)
    assert t.agg is False
    assert Trade(seq=1, recv_ns=2, symbol="X", trade_id=3, price=4, qty=5, side="buy",
                 exch_ms=None, txn_ms=None, first_id=3, last_id=3, agg=True).agg is True  # fmt: skip
    with pytest.raises(TypeError):
        Trade(1, 2, "X")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Trade(1, 2, "X", 3, 4, 5, "buy", None, None, 3, 3, False, "extra")  # type: ignore[call-arg]


def test_still_frozen() -> None:
    t = Trade(1, 2, "X", 3, 4, 5, "buy", None, None, 3, 3)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        t.qty = 7  # type: ignore[misc]
    with pytest.raises(AttributeError):
        t.extra = 1  # type: ignore[attr-defined]


def test_fields_that_need_attrs_keep_its_init() -> None:
    @frozen
    class Checked:
        x: int = attrs.field(validator=attrs.validators.ge(0))

    @frozen
    class Factory:
        xs: list[int] = attrs.Factory(list)

    @frozen
    class Hooked:
        x: int

        def __attrs_post_init__(self) -> None:
            if self.x < 0:
                raise ValueError("negative")

    for cls in (Checked, Factory, Hooked):
        assert not _is_fast(cls), cls
    with pytest.raises(ValueError):
        Checked(-1)
    with pytest.raises(ValueError):
        Hooked(-1)
    assert Factory().xs == [] and Factory().xs is not Factory().xs


@pytest.mark.skipif(_slots is None, reason="engine._slots was not built")
def test_c_filler_refuses_what_would_write_out_of_bounds() -> None:
    spec = _slots.spec(Trade, ("seq", "qty"))
    t = Trade(1, 2, "X", 3, 4, 5, "buy", None, None, 3, 3)
    _slots.fill(t, spec, 10, 50)
    assert (t.seq, t.qty) == (10, 50)
    with pytest.raises(TypeError):
        _slots.fill(Reference(*attrs.astuple(t)), spec, 1, 2)  # another layout
    with pytest.raises(TypeError):
        _slots.fill(t, spec, 1)  # too few values
    with pytest.raises(TypeError):
        _slots.fill(t, spec, 1, 2, 3)  # too many
    with pytest.raises(TypeError):
        _slots.spec(Trade, ("nope",))
    with pytest.raises(TypeError):
        _slots.spec(Reference, ("__weakref__",))
