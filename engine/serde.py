"""Lossless (un)structuring of events, outputs and reducer state: one converter for the engine.

``dump(obj)`` turns any registered attrs object into a JSON-safe dict tagged
with its class name (``{"type": "Trade", ...}``); ``load(d)`` turns it back.
Bytes become base64 text, tuples become lists and come back as tuples: what
``load(dump(x)) == x`` needs.  Checkpoints, output streams and exports all go
through here, so there is one encoding of every event in the engine.

Register output/state classes with :func:`register` (a class decorator).
"""

from __future__ import annotations

import base64
import json
from typing import Any, TypeVar

import attrs
import cattrs
import orjson

from engine import events as _events

__all__ = [
    "converter", "register", "dump", "load", "dump_derived", "TYPES", "dumps_json", "loads_json"
]  # fmt: skip

T = TypeVar("T")

converter = cattrs.Converter()
converter.register_unstructure_hook(bytes, lambda b: base64.b64encode(b).decode("ascii"))
converter.register_structure_hook(
    bytes, lambda v, _: v if isinstance(v, bytes) else base64.b64decode(v)
)


def _scalar_id(v: Any, _: Any) -> int | str | None:
    """Control-reply ids (``int | str | None``): cattrs has no hook for that union; keep as is."""
    if v is None or (isinstance(v, int | str) and not isinstance(v, bool)):
        return v
    raise ValueError(f"expected an int, a string or null, got {v!r:.40}")


converter.register_structure_hook(int | str | None, _scalar_id)

#: class name → class, for every type :func:`load` can rebuild.
TYPES: dict[str, type] = {}


def register(cls: type[T]) -> type[T]:
    """Class decorator: make an attrs class loadable by name."""
    if not attrs.has(cls):
        raise TypeError(f"{cls.__name__} is not an attrs class")
    other = TYPES.get(cls.__name__)
    if other is not None and other is not cls:
        raise TypeError(f"two serde types named {cls.__name__}: {other} and {cls}")
    TYPES[cls.__name__] = cls
    return cls


def dump_derived(cls: type, *names: str) -> None:
    """Unstructure ``cls`` with the properties ``names`` as keys too (loading ignores them).

    For a field that became a derived property: recorded outputs keep their
    format, so ``engine replay --check`` of a journal recorded before the change
    still compares equal.  Register a nested class before the class holding it
    (cattrs builds the outer hook from the inner one).
    """
    base = converter.get_unstructure_hook(cls)

    def unstructure(obj: Any) -> dict[str, Any]:
        d = base(obj)
        for name in names:
            d[name] = getattr(obj, name)
        return d

    converter.register_unstructure_hook(cls, unstructure)


for _name in _events.__all__:
    _obj = getattr(_events, _name)
    if isinstance(_obj, type) and attrs.has(_obj):
        register(_obj)


def dump(obj: Any) -> dict[str, Any]:
    """A registered attrs object → JSON-safe dict with a ``"type"`` tag."""
    d: dict[str, Any] = converter.unstructure(obj)
    d["type"] = type(obj).__name__
    return d


def load(d: dict[str, Any]) -> Any:
    """Inverse of :func:`dump`."""
    d = dict(d)
    name = d.pop("type")
    try:
        cls = TYPES[name]
    except KeyError:
        raise ValueError(f"unknown serde type {name!r} (register the class)") from None
    return converter.structure(d, cls)


_BIG = b'{"bigints":true,'


def dumps_json(doc: dict[str, Any]) -> bytes:
    """Compact JSON of a dict, exact for every int.

    orjson (fast) when every int fits in 64 bits.  Exact products such as a
    trade notional (price × qty in 1e-16 units) can exceed that; orjson cannot
    write them and would read them back as floats, so such a document is
    written by the stdlib encoder with a leading ``"bigints": true`` key that
    :func:`loads_json` recognises by prefix.
    """
    try:
        return orjson.dumps(doc)
    except TypeError:
        return json.dumps({"bigints": True, **doc}, separators=(",", ":")).encode()


def loads_json(raw: bytes) -> dict[str, Any]:
    """Inverse of :func:`dumps_json` (the ``bigints`` marker key is removed)."""
    if raw.startswith(_BIG):
        d: dict[str, Any] = json.loads(raw)
        del d["bigints"]
        return d
    out: dict[str, Any] = orjson.loads(raw)
    return out
