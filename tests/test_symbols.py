"""Normalized instrument names: one rule (``engine.codecs.base.instrument_name``), every venue.

Each venue's table holds real spellings (the cryptofeed captures and ``protocols.md``)
and the name a researcher joins on: spot ``BASE-QUOTE``, perpetual ``BASE-QUOTE-PERP``,
dated future ``BASE-QUOTE-YYYYMMDD`` (``BASE-QUOTE-YYYYM``, the month's letter, when the
venue's name gives no day).  The properties: within one venue, distinct instruments
never share a name (a wrong join), a name is either the right one or the spelling
itself (never a wrong split), and no text makes ``normalized`` raise.
"""

from __future__ import annotations

import datetime

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from engine.codecs.base import (
    FUTURE,
    MONTH_CODES,
    NO_USD_QUOTES,
    PERPETUAL,
    QUOTES,
    SPOT,
    Expiry,
    expiry_ddmmmyy,
    expiry_month_code,
    expiry_yymmdd,
    instrument_name,
)
from engine.codecs.registry import CODECS, get_codec

#: venue → (spelling, normalized name); "as spelled" rows are spellings the venue's rule cannot read
TABLES: dict[str, list[tuple[str, str]]] = {
    # BINANCE.ws.1.0 (2021) and protocols.md
    "binance": [
        ("NKNUSDT", "NKN-USDT"), ("LRCBTC", "LRC-BTC"), ("BLZETH", "BLZ-ETH"),
        ("RUNEEUR", "RUNE-EUR"), ("BNBBTC", "BNB-BTC"), ("btcusdt", "BTC-USDT"),
        ("ETHBUSD", "ETH-BUSD"), ("BTCFDUSD", "BTC-FDUSD"), ("FDUSDUSDT", "FDUSD-USDT"),
        ("BTCAEUR", "BTCAEUR"),  # BTC-AEUR or BTCA-EUR: not guessed
        ("BTCIDRT", "BTCIDRT"),  # a quote the table does not know
    ],
    "binance-us": [("BTCUSD", "BTC-USD"), ("BTCUSDT", "BTC-USDT"), ("ETHBUSD", "ETHBUSD")],
    # BINANCE_FUTURES.ws.1.0 (2021): USD-M names without a suffix are perpetuals
    "binance-futures": [
        ("SUSHIUSDT", "SUSHI-USDT-PERP"), ("CTKUSDT", "CTK-USDT-PERP"),
        ("AKROUSDT", "AKRO-USDT-PERP"), ("KEEPUSDT", "KEEP-USDT-PERP"),
        ("btcusdt", "BTC-USDT-PERP"), ("ETHBTC", "ETH-BTC-PERP"),
        ("BTCUSDT_240628", "BTC-USDT-20240628"), ("ETHUSDT_241227", "ETH-USDT-20241227"),
        ("BTCUSDT_241399", "BTCUSDT_241399"), ("BTCUSDT_PERP", "BTCUSDT_PERP"),
    ],
    # protocols.md: COIN-M symbols like btcusd_perp, linkusd_211231
    "binance-delivery": [
        ("btcusd_perp", "BTC-USD-PERP"), ("BTCUSD_PERP", "BTC-USD-PERP"),
        ("linkusd_211231", "LINK-USD-20211231"), ("BTCUSD_240628", "BTC-USD-20240628"),
        ("BTCUSD", "BTCUSD"),  # the index pair, not a contract
    ],
    # OKX.ws.1.0 (2022) and OKX's instId forms
    "okx": [
        ("BTC-USDT", "BTC-USDT"), ("UNI-USD-SWAP", "UNI-USD-PERP"),
        ("BTC-USD-220527", "BTC-USD-20220527"), ("BTC-USDT-SWAP", "BTC-USDT-PERP"),
        ("BTC-USD-240628", "BTC-USD-20240628"), ("BTC-USD-240927", "BTC-USD-20240927"),
        ("BTC-USD-240628-60000-C", "BTC-USD-240628-60000-C"),  # an option
        ("BTC-USD-FOO", "BTC-USD-FOO"),
    ],
    # KRAKEN.ws.50.0 (v1, 2021: XBT is BTC) and v2's names
    "kraken-v1": [
        ("XMR/USD", "XMR-USD"), ("XBT/CHF", "BTC-CHF"), ("WAVES/EUR", "WAVES-EUR"),
        ("SC/EUR", "SC-EUR"), ("OMG/USD", "OMG-USD"), ("OCEAN/XBT", "OCEAN-BTC"),
        ("KSM/XBT", "KSM-BTC"), ("GRT/ETH", "GRT-ETH"), ("ETH/CHF", "ETH-CHF"),
        ("ADA/XBT", "ADA-BTC"), ("XDG/USD", "DOGE-USD"),
    ],
    "kraken": [("BTC/USD", "BTC-USD"), ("ETH2.S/ETH", "ETH2.S-ETH"), ("WHAT", "WHAT")],
    # COINBASE.ws.28.0 (2021)
    "coinbase": [
        ("SKL-USD", "SKL-USD"), ("DASH-BTC", "DASH-BTC"), ("BAND-GBP", "BAND-GBP"),
        ("NMR-EUR", "NMR-EUR"), ("YFI-BTC", "YFI-BTC"), ("NU-GBP", "NU-GBP"),
    ],
    "coinbase-advanced": [("BTC-USD", "BTC-USD"), ("BIT-28JUN24-CDE", "BIT-28JUN24-CDE")],
    # Bybit v5: spot and linear share BTCUSDT; the market tells them apart
    "bybit": [("BTCUSDT", "BTC-USDT"), ("ETHUSDC", "ETH-USDC"), ("BTCEUR", "BTC-EUR")],
    "bybit-linear": [
        ("BTCUSDT", "BTC-USDT-PERP"), ("BTCPERP", "BTC-USDC-PERP"),
        ("BTC-28JUN24", "BTC-USDC-20240628"), ("BTCUSDT-27DEC24", "BTC-USDT-20241227"),
        ("ETH-31JUN24", "ETH-31JUN24"),  # no such day
    ],
    "bybit-inverse": [
        ("BTCUSD", "BTC-USD-PERP"), ("BTCUSDM24", "BTC-USD-2024M"), ("BTCUSDH23", "BTC-USD-2023H"),
        ("ETHUSDZ25", "ETH-USD-2025Z"), ("BTCUSDA24", "BTCUSDA24"),
    ],
    # BYBIT.ws.26.0 (2021): the realtime endpoint's inverse perpetuals
    "bybit-legacy": [("BTCUSD", "BTC-USD-PERP"), ("EOSUSD", "EOS-USD-PERP")],
    "sim": [("BTCUSDT", "BTC-USDT"), ("ethbtc", "ETH-BTC")],
}  # fmt: skip


@pytest.mark.parametrize("venue", sorted(TABLES))
def test_real_spellings_per_venue(venue):
    codec = get_codec(venue)
    assert [(s, codec.normalized(s)) for s, _ in TABLES[venue]] == TABLES[venue]


def test_no_two_instruments_of_a_venue_share_a_name_in_the_tables():
    # the bugs this rule closes: OKX spot vs swap, dated futures by expiry
    okx = get_codec("okx")
    names = [okx.normalized(s) for s in ("BTC-USDT", "BTC-USDT-SWAP", "BTC-USD-240628")]
    assert len(set(names + [okx.normalized("BTC-USD-240927")])) == 4
    for venue, rows in TABLES.items():
        read = {spelling.upper(): name for spelling, name in rows if name != spelling.upper()}
        assert len(set(read.values())) == len(read), venue


def test_same_pair_on_spot_and_perpetual_markets_is_two_instruments():
    assert get_codec("binance").normalized("BTCUSDT") == "BTC-USDT"
    assert get_codec("binance-futures").normalized("BTCUSDT") == "BTC-USDT-PERP"
    assert get_codec("bybit").normalized("BTCUSDT") == "BTC-USDT"
    assert get_codec("bybit-linear").normalized("BTCUSDT") == "BTC-USDT-PERP"
    # and one instrument under two venues' spellings is one name (a join that is right)
    assert get_codec("okx").normalized("BTC-USDT-SWAP") == "BTC-USDT-PERP"


def test_instrument_name_rule():
    june = Expiry(2024, 6, 28)
    assert instrument_name("btc", "usdt") == "BTC-USDT"
    assert instrument_name("BTC", "USDT", PERPETUAL) == "BTC-USDT-PERP"
    assert instrument_name("BTC", "USD", FUTURE, june) == "BTC-USD-20240628"
    assert instrument_name("BTC", "USD", FUTURE, Expiry(2024, 6)) == "BTC-USD-2024M"
    assert str(Expiry(2030, 1, 5)) == "20300105"
    for bad in (("", "USD"), ("BTC-X", "USD")):
        with pytest.raises(ValueError, match="asset"):
            instrument_name(*bad)
    with pytest.raises(ValueError, match="expiry"):
        instrument_name("BTC", "USD", FUTURE)
    with pytest.raises(ValueError, match="expiry"):
        instrument_name("BTC", "USD", PERPETUAL, june)
    with pytest.raises(ValueError, match="unknown instrument kind"):
        instrument_name("BTC", "USD", "option")
    with pytest.raises(ValueError):
        Expiry(2024, 2, 30)


def test_expiry_spellings():
    assert expiry_yymmdd("240628") == Expiry(2024, 6, 28)
    assert expiry_ddmmmyy("28jun24") == Expiry(2024, 6, 28)
    assert expiry_month_code("U", "21") == Expiry(2021, 9)
    for bad in ("24062", "2406288", "241301", "240230", "24O628", "２４０６２８"):
        assert expiry_yymmdd(bad) is None, bad
    for bad in ("28JUX24", "28JUN2", "32JAN24", "2JUN024"):
        assert expiry_ddmmmyy(bad) is None, bad
    assert expiry_month_code("A", "24") is None and expiry_month_code("M", "2x") is None


# --------------------------------------------------------------------------- properties

_DATES = st.dates(datetime.date(2000, 1, 1), datetime.date(2099, 12, 31))


def _yymmdd(e: Expiry) -> str:
    return f"{e.year % 100:02d}{e.month:02d}{e.day:02d}"


def _ddmmmyy(e: Expiry) -> str:
    month = datetime.date(e.year, e.month, 1).strftime("%b").upper()
    return f"{e.day:02d}{month}{e.year % 100:02d}"


def _spell(venue: str, base: str, quote: str, kind: str, e: Expiry | None) -> str | None:
    """The venue's own spelling of an instrument (its naming convention), None: not listed there."""
    glued = base + quote
    if kind == SPOT:
        sep = {"coinbase": "-", "okx": "-", "kraken": "/"}.get(venue, "")
        return f"{base}{sep}{quote}" if venue in _SPOT_VENUES else None
    if kind == PERPETUAL:
        return {
            "binance-futures": glued,
            "binance-delivery": f"{glued}_PERP",
            "okx": f"{base}-{quote}-SWAP",
            "bybit-linear": glued if quote == "USDT" else f"{base}PERP",
            "bybit-inverse": glued,
        }.get(venue)
    assert e is not None
    if e.day is None:  # only Bybit's inverse futures are named by (quarter) month
        quarter = venue == "bybit-inverse" and e.month in (3, 6, 9, 12)
        return f"{glued}{MONTH_CODES[e.month - 1]}{e.year % 100:02d}" if quarter else None
    return {
        "binance-futures": f"{glued}_{_yymmdd(e)}",
        "binance-delivery": f"{glued}_{_yymmdd(e)}",
        "okx": f"{base}-{quote}-{_yymmdd(e)}",
        "bybit-linear": f"{glued if quote == 'USDT' else base}-{_ddmmmyy(e)}",
    }.get(venue)


_SPOT_VENUES = ("binance", "binance-us", "bybit", "coinbase", "okx", "kraken")

#: venue → the quotes its names use (glued venues: from the codec's own table)
_VENUE_QUOTES = {
    "binance": NO_USD_QUOTES, "binance-us": QUOTES, "bybit": NO_USD_QUOTES,
    "binance-futures": ("USDT", "USDC", "BUSD", "BTC"), "binance-delivery": ("USD",),
    "bybit-linear": ("USDT", "USDC"), "bybit-inverse": ("USD",),
    "okx": ("USDT", "USDC", "USD", "BTC", "ETH", "EUR"), "coinbase": ("USD", "USDT", "EUR", "BTC"),
    "kraken": ("USD", "EUR", "CHF", "ETH", "USDT"),
}  # fmt: skip

# letters that also spell quotes, so glued names run into each other (ETHBUSD, XAEUR ...)
_ASSET = st.text("ABCDEHSTUR0", min_size=1, max_size=5)


@st.composite
def _instruments(draw, venue: str):
    """A few instruments of ``venue`` around shared bases, quotes and expiry months."""
    bases = draw(st.lists(_ASSET, min_size=1, max_size=3, unique=True))
    quotes = draw(st.lists(st.sampled_from(_VENUE_QUOTES[venue]), min_size=1, max_size=2))
    if venue == "kraken":
        bases = [b for b in bases if b not in ("XBT", "XDG", "BTC", "DOGE")] or ["ADA"]
    if venue == "bybit-linear":  # Bybit's own names would collide (XUSDT-28JUN24: two readings)
        bases = [b for b in bases if not b.endswith(("USDT", "USDC"))] or ["ETH"]
    days = draw(st.lists(_DATES, min_size=1, max_size=3))
    expiries = [Expiry(d.year, d.month, d.day) for d in days] + [
        Expiry(d.year, d.month) for d in days
    ]
    out = set()
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from((SPOT, PERPETUAL, FUTURE)))
        e = draw(st.sampled_from(expiries)) if kind == FUTURE else None
        inst = (draw(st.sampled_from(bases)), draw(st.sampled_from(quotes)), kind, e)
        if _spell(venue, *inst) is not None:
            out.add(inst)
    return sorted(out, key=repr)


#: venues that name their instruments as another does (same protocol or same market)
_NAMED_AS = {
    "sim": "binance", "binance-tr": "binance", "kraken-v1": "kraken",
    "coinbase-advanced": "coinbase", "bybit-legacy": "bybit-inverse",
}  # fmt: skip


@pytest.mark.parametrize("codec_name", sorted(CODECS))
@given(data=st.data())
def test_distinct_instruments_of_a_venue_never_share_a_name(codec_name, data):
    codec = get_codec(codec_name)
    venue = _NAMED_AS.get(codec_name, codec_name)
    insts = data.draw(_instruments(venue))
    spellings = [_spell(venue, *i) for i in insts]
    assume(len(set(spellings)) == len(spellings))  # the venue names each instrument once
    names = [codec.normalized(s) for s in spellings]
    assert len(set(names)) == len(names), list(zip(spellings, names, strict=True))
    for inst, spelling, name in zip(insts, spellings, names, strict=True):
        # the right name, or the spelling unread: never another instrument's split
        assert name in (instrument_name(*inst), spelling.upper()), (inst, spelling)
        if venue not in ("binance", "binance-us", "bybit", "binance-futures"):
            assert name == instrument_name(*inst)  # nothing is ambiguous in these spellings


@given(
    a=st.tuples(_ASSET, _ASSET, st.sampled_from((SPOT, PERPETUAL, FUTURE)), _DATES, st.booleans()),
    b=st.tuples(_ASSET, _ASSET, st.sampled_from((SPOT, PERPETUAL, FUTURE)), _DATES, st.booleans()),
)
def test_the_rule_is_one_to_one(a, b):
    def name(t):
        base, quote, kind, d, has_day = t
        e = Expiry(d.year, d.month, d.day if has_day else None) if kind == FUTURE else None
        return (base, quote, kind, e), instrument_name(base, quote, kind, e)

    (ia, na), (ib, nb) = name(a), name(b)
    assert (na == nb) == (ia == ib)


@pytest.mark.parametrize("venue", sorted(CODECS))
@given(text=st.text(max_size=24) | st.from_regex(r"[A-Za-z0-9]{0,8}[-_/][A-Z0-9]{0,8}"))
def test_any_text_gives_a_name_never_an_error(venue, text):
    assert isinstance(get_codec(venue).normalized(text), str)


# --------------------------------------------------------------------------- where a user sees it


def test_replay_json_the_api_and_every_export_table_carry_the_normalized_name(tmp_path):
    """USD-M's BTCUSDT is a perpetual: the name says so wherever a symbol is reported."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    import engine
    from engine.replay.export import TABLES, export_journal, read_table

    futures = Path(__file__).resolve().parent.parent / "fixtures" / "journals" / "binance-futures"
    j = engine.open(futures)
    assert j.normalized and all(
        name == f"{s[:-4]}-USDT-PERP" for s, name in j.normalized.items()
    ), j.normalized
    rep = json.loads(
        subprocess.run(
            [sys.executable, "-m", "engine.cli", "replay", str(futures), "--json"],
            capture_output=True, text=True, check=True, timeout=120,
        ).stdout
    )  # fmt: skip
    assert {s: v["normalized"] for s, v in rep["symbols"].items()} == j.normalized
    export_journal(futures, tmp_path / "x")
    for name in TABLES:
        t = read_table(tmp_path / "x", name)
        assert t.schema.names[-3:] == ["normalized", "symbol", "date"] or t.num_rows == 0, name
        for sym, norm in zip(t.column("symbol").to_pylist(), t.column("normalized").to_pylist(),
                             strict=True):  # fmt: skip
            assert norm == (None if sym == "_" else j.normalized[sym]), (name, sym, norm)
