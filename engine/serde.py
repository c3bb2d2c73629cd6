"""Lossless (un)structuring of events, outputs and reducer state: one converter for the engine.

``dump(obj)`` turns any registered attrs object into a JSON-safe dict tagged
with its class name (``{"type": "Trade", ...}``); ``load(d)`` turns it back.
Bytes become base64 text, tuples become lists and come back as tuples: what
``load(dump(x)) == x`` needs.  Checkpoints, output streams and exports all go
through here, so there is one encoding of every event in the engine.

Owns the converter, built by :func:`build_converter` from one explicit table,
:data:`HOOKS` (every type whose encoding is not cattrs' default, and how), the
first time ``serde.converter`` is used.  Nothing else registers hooks, so the
encoding does not depend on which module was imported first.  Classes make
themselves loadable by name with :func:`register` (a class decorator); the
build imports :data:`TYPE_MODULES`, so :func:`load` knows every such class
whatever has been imported.  Must not: do I/O (callers write the bytes).
"""

from __future__ import annotations

import base64
import importlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
import cattrs
import msgspec

from engine import events as _events
from engine.book import Book

__all__ = [
    "converter", "build_converter", "HOOKS", "TYPE_MODULES", "register", "dump", "load", "TYPES",
    "dumps_json", "loads_json",
]  # fmt: skip

T = TypeVar("T")


def _scalar_id(v: Any, _: Any) -> int | str | None:
    """Control-reply ids (``int | str | None``): cattrs has no hook for that union; keep as is."""
    if v is None or (isinstance(v, int | str) and not isinstance(v, bool)):
        return v
    raise ValueError(f"expected an int, a string or null, got {v!r:.40}")


def _dump_book(b: Book) -> dict[str, object]:
    bids, asks = b.levels()
    return {"last_id": b.last_id, "bids": bids, "asks": asks}


def _load_book(d: dict[str, Any], _: Any) -> Book:
    return Book.from_levels(d["last_id"], d["bids"], d["asks"])


@attrs.frozen
class Hooks:
    """How one type is (un)structured: ``dump(obj)`` / ``load(value, type)``; None: cattrs' default.

    ``derived`` names properties written as extra keys after the fields (loading
    ignores them): for a field that became a derived property, so outputs
    recorded before the change keep their format and ``engine replay --check``
    of such a journal still compares equal.
    """

    dump: Callable[[Any], Any] | None = None
    load: Callable[[Any, Any], Any] | None = None
    derived: tuple[str, ...] = ()


#: The one table: type (or ``"module:Class"`` for a class whose module imports this one) →
#: its hooks.  Order does not matter: every hook is registered before any is generated.
HOOKS: tuple[tuple[Any, Hooks], ...] = (
    (bytes, Hooks(dump=lambda b: base64.b64encode(b).decode("ascii"),
                  load=lambda v, _: v if isinstance(v, bytes) else base64.b64decode(v))),
    (int | str | None, Hooks(load=_scalar_id)),
    # a Book is state, not an attrs class: checkpoints store it as its levels, best first
    (Book, Hooks(dump=_dump_book, load=_load_book)),
    ("engine.trades:WindowStats", Hooks(derived=("vwap",))),
    ("engine.trades:TradeStats", Hooks(derived=("sell_volume", "vwap"))),
)  # fmt: skip

#: Modules whose classes use :func:`register`: imported by the build so :func:`load` knows them all.
TYPE_MODULES = (
    "engine.outputs",
    "engine.book_sync",
    "engine.book_reducer",
    "engine.trades",
    "engine.candles",
    "engine.anomaly",
    "engine.ratelimit",
    "engine.connection_actions",
    "engine.sequence_gaps",
)


def _resolve(key: Any) -> Any:
    if not isinstance(key, str):
        return key
    module, _, name = key.partition(":")
    return getattr(importlib.import_module(module), name)


def _derived_factory(conv: cattrs.Converter, cls: type, names: tuple[str, ...]) -> None:
    """Register ``cls``'s hook as cattrs' own for it plus the ``names`` keys, generated lazily.

    A factory runs when the hook is first needed, i.e. after the whole table is in:
    a class nesting this one (TradeStats holds WindowStats) gets the derived hook too.
    """
    conv.register_unstructure_hook_factory(
        lambda t: t is cls, lambda t: _with_derived(conv, t, names)
    )


def _with_derived(
    conv: cattrs.Converter, cls: type, names: tuple[str, ...]
) -> Callable[[Any], dict[str, Any]]:
    """cattrs' own hook for ``cls`` plus the ``names`` keys."""
    base: Callable[[Any], dict[str, Any]] = conv.gen_unstructure_attrs_fromdict(cls)

    def unstructure(obj: Any) -> dict[str, Any]:
        d = base(obj)
        for name in names:
            d[name] = getattr(obj, name)
        return d

    return unstructure


def build_converter() -> cattrs.Converter:
    """The engine's converter, from :data:`HOOKS` alone (and the classes of :data:`TYPE_MODULES`)."""
    for module in TYPE_MODULES:
        importlib.import_module(module)
    conv = cattrs.Converter()
    for key, hooks in HOOKS:
        cls = _resolve(key)
        if hooks.dump is not None:
            conv.register_unstructure_hook(cls, hooks.dump)
        if hooks.load is not None:
            conv.register_structure_hook(cls, hooks.load)
        if hooks.derived:
            _derived_factory(conv, cls, hooks.derived)
    return conv


#: The converter (an annotation only: the name is bound by the first use, see ``__getattr__``).
converter: cattrs.Converter
_build_lock = threading.Lock()
_built: cattrs.Converter | None = None


def _conv() -> cattrs.Converter:
    """The converter, built on first use (not at import: the modules it imports import this one)."""
    global _built
    conv = _built
    if conv is None:
        with _build_lock:
            if _built is None:
                _built = build_converter()
                globals()["converter"] = _built  # from now on a plain module attribute
            conv = _built
    return conv


def __getattr__(name: str) -> Any:
    """``serde.converter`` before its first use: build it."""
    if name == "converter":
        return _conv()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: class name → class, for every type :func:`load` can rebuild.
TYPES: dict[str, type] = {}


def _require_attrs(cls: type) -> None:
    if not attrs.has(cls):
        raise TypeError(f"{cls.__name__} is not an attrs class")


def register(cls: type[T]) -> type[T]:
    """Class decorator: make an attrs class loadable by name."""
    _require_attrs(cls)  # a check apart: attrs.has() would narrow cls to type[AttrsInstance]
    other = TYPES.get(cls.__name__)
    if other is not None and other is not cls:
        raise TypeError(f"two serde types named {cls.__name__}: {other} and {cls}")
    TYPES[cls.__name__] = cls
    return cls


for _name in _events.__all__:
    _obj = getattr(_events, _name)
    if isinstance(_obj, type) and attrs.has(_obj):
        register(_obj)


def dump(obj: Any) -> dict[str, Any]:
    """A registered attrs object → JSON-safe dict with a ``"type"`` tag."""
    d: dict[str, Any] = _conv().unstructure(obj)
    d["type"] = type(obj).__name__
    return d


def load(d: dict[str, Any]) -> Any:
    """Inverse of :func:`dump`."""
    conv = _conv()  # built: every module of TYPE_MODULES is imported, its classes registered
    d = dict(d)
    name = d.pop("type")
    try:
        cls = TYPES[name]
    except KeyError:
        raise ValueError(f"unknown serde type {name!r} (register the class)") from None
    return conv.structure(d, cls)


#: the marker older files carry before a document with ints wider than 64 bits (read still)
_BIG = b'{"bigints":true,'
_ENCODE = msgspec.json.encode
_DECODE = msgspec.json.decode


def dumps_json(doc: dict[str, Any]) -> bytes:
    """Compact JSON of a dict, exact for every int.

    msgspec writes and reads Python ints of any width exactly.  At 18 decimals
    nearly every price and every exact product (a trade notional, price × qty
    in 1e-36 units) exceeds 64 bits, which orjson cannot write: documents used
    to go through the stdlib encoder behind a ``"bigints": true`` marker
    (``bench/serde.py`` prints both); files written that way still load.
    """
    return _ENCODE(doc)


def loads_json(raw: bytes) -> dict[str, Any]:
    """Inverse of :func:`dumps_json` (an older file's ``bigints`` marker key is removed)."""
    d: dict[str, Any] = _DECODE(raw)
    if raw.startswith(_BIG):
        del d["bigints"]
    return d
