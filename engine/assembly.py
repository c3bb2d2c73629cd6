"""Which codec and reducers a capture or a replay runs: one place, so live and replay agree.

``engine run``, ``engine replay``, ``engine book`` and ``engine export`` all
build their pipeline here from the journal's exchange name, so the same
journal always folds through the same reducers with the same configuration.
"""

from __future__ import annotations

from typing import Any

from engine.pipeline import Pipeline

__all__ = ["standard_reducers", "build_pipeline", "pipeline_from_manifest", "OPTIONS"]


#: Reducer options a capture may set (recorded in the manifest's ``"pipeline"``).
OPTIONS = frozenset({"verify_interval_s"})


def standard_reducers(codec: Any, options: dict[str, Any] | None = None) -> list[Any]:
    """The reducer set of a capture: order book, trades, candles, anomalies, outbound rate audit, actions.

    ``options`` (see :data:`OPTIONS`) come from ``engine run``'s flags and are
    stored in the journal's manifest, so a replay builds the very same set.
    """
    from engine.anomaly import AnomalyDetector
    from engine.book_reducer import BookReducer
    from engine.book_sync import rule_for
    from engine.candles import Candles
    from engine.connection_actions import ConnectionActions
    from engine.ratelimit import SendAudit
    from engine.trades import TradeAggregator, TradeTape

    options = dict(options or {})
    unknown = set(options) - OPTIONS
    if unknown:
        raise ValueError(f"unknown pipeline options {sorted(unknown)}; known: {sorted(OPTIONS)}")
    book_kw = {k: options[k] for k in ("verify_interval_s",) if k in options}
    no_rest = codec.snapshot_url(getattr(codec, "rest_base", "") or "", "X", 1) is None
    if rule_for(codec.sync_rule).has_checksum or no_rest:
        # the exchange's checksum verifies every update, so a REST verification adds nothing;
        # a venue with no REST snapshot could not answer one (Bybit, Coinbase): only when asked
        book_kw.setdefault("verify_interval_s", None)
    reducers: list[Any] = [
        BookReducer(sync_rule=codec.sync_rule, **book_kw),
        TradeAggregator(),
        TradeTape(),
        Candles(),
        AnomalyDetector(),
        # replay-side audit of what live sent: the venue's published control-message limit
        SendAudit(
            limit=codec.limits.control_per_window,
            window_ns=int(codec.limits.control_window_s * 1e9),
        ),
        # what the live runtime must do on a connection (rotate on serverShutdown)
        ConnectionActions(),
    ]
    # trade-id continuity, for venues whose trade ids rise by 1 per product (Coinbase)
    if getattr(codec, "trade_ids_consecutive", False):
        from engine.sequence_gaps import TradeIds

        reducers.append(TradeIds())
    # full tickers from ticker deltas, for venues that send changed fields only (Bybit linear)
    if getattr(codec, "ticker_deltas", False):
        from engine.tickers import TickerMerge

        reducers.append(TickerMerge())
    return reducers


def build_pipeline(exchange: str, options: dict[str, Any] | None = None) -> Pipeline:
    """The standard pipeline for a journal of ``exchange`` ("sim", "binance", "binance-futures")."""
    from engine.codecs.registry import get_codec

    codec = get_codec(exchange)
    return Pipeline(codec, standard_reducers(codec, options))


def pipeline_from_manifest(metadata: dict[str, Any]) -> Pipeline:
    """The pipeline a journal was captured with (its manifest's ``exchange`` and ``pipeline``)."""
    return build_pipeline(str(metadata.get("exchange") or "sim"), metadata.get("pipeline"))
