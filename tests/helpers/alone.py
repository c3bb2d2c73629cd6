"""One reducer folded on its own through a real pipeline, with its own trade selection.

A trade consumer does not apply the trade-selection rule itself (the
pipeline's selection stage does), so a test that folds one consumer folds it
through ``Pipeline(None, [reducer])``: the same fold ``engine replay`` runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from engine.pipeline import Pipeline
from engine.trades import SelectCounts


class Alone:
    """``reducer`` in a pipeline of its own; ``data``: a :meth:`snapshot` to start from."""

    def __init__(self, reducer: Any, data: dict[str, Any] | None = None) -> None:
        self.reducer = reducer
        self.pipeline = Pipeline(None, [reducer])
        if data is not None:
            self.pipeline.restore(data)

    @property
    def state(self) -> Any:
        return self.pipeline.states[0]

    @property
    def counts(self) -> SelectCounts:
        """What the selection rule set aside (a trade consumer only)."""
        return self.pipeline.selections[0].counts

    def feed(self, events: Iterable[Any]) -> list[Any]:
        """Fold ``events`` (each its own frame); their outputs, in order."""
        outs: list[Any] = []
        for ev in events:
            outs += [o for _, o in self.pipeline.fold_events(ev.seq, [ev])]
        return outs

    def snapshot(self) -> dict[str, Any]:
        """The pipeline's snapshot, through JSON (it must survive it)."""
        return json.loads(json.dumps(self.pipeline.snapshot()))

    def resumed(self) -> Alone:
        """A new pipeline restored from this one's snapshot."""
        return Alone(self.reducer, self.snapshot())


def run(reducer: Any, events: Iterable[Any], start: Alone | None = None) -> tuple[Alone, list[Any]]:
    """Fold ``events`` through ``start`` (default: a fresh :class:`Alone`)."""
    a = Alone(reducer) if start is None else start
    return a, a.feed(events)
