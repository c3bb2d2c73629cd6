"""The value-class decorator: frozen, slotted attrs classes that are cheap to construct.

Events and outputs are built on the hot path (one ``Trade`` per trade in the
codec, one ``TradeStats`` per symbol and second in the aggregator ...), and
attrs' frozen ``__init__`` is slow there: it stores each field through
``object.__setattr__`` bound to the new instance (a generic attribute lookup
by name per field), so building a 12-field ``Trade`` costs about as much as
the whole fused reducer step that consumes it (``bench/reducers.py
--diagnose`` prints both).

:func:`frozen` keeps everything attrs gives (``__eq__``, ``__hash__``,
``__repr__``, ``attrs.fields``, ``attrs.evolve``, cattrs, pickling,
``FrozenInstanceError`` on assignment) and replaces only ``__init__`` with
one that stores the fields straight into their slots: one call of the
optional C helper :mod:`engine._slots` for the whole object, or, without it,
one member-descriptor store per field (no name lookup: a little faster than
attrs).  ``tests/test_frozen.py`` pins that the result is indistinguishable
either way; ``bench/reducers.py --diagnose`` prints the cost of one ``Trade``
under each.  Classes whose fields need more than a plain store (validators, converters, factory defaults, ``init=False``,
aliases, a post-init hook) keep attrs' own ``__init__``.
"""

from __future__ import annotations

import inspect
from types import MemberDescriptorType
from typing import TypeVar, dataclass_transform

import attrs

try:  # optional C slot filler (engine/_slots.c); None: Python descriptor stores
    import engine._slots as _slots
except ImportError:  # pragma: no cover - the extension is optional
    _slots = None  # type: ignore[assignment]

__all__ = ["frozen"]

_T = TypeVar("_T")


def _fast_init(cls: type, use_c: bool | None = None) -> None:
    """Install the fast ``__init__`` on ``cls`` if every field allows it.

    ``use_c``: None = the C slot filler when it was built, else descriptors;
    False/True force one (tests compare both).
    """
    if hasattr(cls, "__attrs_pre_init__") or hasattr(cls, "__attrs_post_init__"):
        return
    names, params, defaults = [], [], {}
    for f in attrs.fields(cls):
        if not f.init or f.kw_only or f.validator or f.converter or f.alias != f.name:
            return
        if type(inspect.getattr_static(cls, f.name, None)) is not MemberDescriptorType:
            return
        if f.default is attrs.NOTHING:
            params.append(f.name)
        elif isinstance(f.default, attrs.Factory):  # type: ignore[arg-type]
            return
        else:
            defaults[f"_d_{f.name}"] = f.default
            params.append(f"{f.name}=_d_{f.name}")
        names.append(f.name)
    namespace: dict[str, object] = dict(defaults)
    if (_slots is not None) if use_c is None else use_c:
        assert _slots is not None
        namespace |= {"_fill": _slots.fill, "_spec": _slots.spec(cls, tuple(names))}
        body = f"    _fill(self, _spec, {', '.join(names)})" if names else "    pass"
    else:
        namespace |= {f"_s_{n}": inspect.getattr_static(cls, n).__set__ for n in names}
        body = "\n".join(f"    _s_{n}(self, {n})" for n in names) or "    pass"
    src = f"def __init__(self, {', '.join(params)}):\n{body}\n"
    exec(src, namespace)  # noqa: S102 - generated from attrs field names only
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"  # type: ignore[attr-defined]
    init.__module__ = cls.__module__
    init.__doc__ = f"Build a {cls.__name__} (fields stored straight into their slots)."
    cls.__init__ = init  # type: ignore[misc]


@dataclass_transform(frozen_default=True, field_specifiers=(attrs.field, attrs.Factory))
def frozen(cls: type[_T]) -> type[_T]:
    """``attrs.frozen(slots=True, weakref_slot=False)`` with a fast ``__init__`` (module docstring)."""
    out = attrs.frozen(slots=True, weakref_slot=False)(cls)
    _fast_init(out)
    return out  # type: ignore[no-any-return]
