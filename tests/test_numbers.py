"""The number model holds every venue's precision: no instrument is refused for its decimals.

Real strings from every capture (fixtures/numbers/numbers.tsv: per venue and
instrument its finest and widest numbers) parse exactly and render back to the
very same text at their own decimals; properties for 9-18 decimals, values
beyond int64 and the boundary (a 19th significant decimal is refused, trailing
zeros are fine); :func:`engine.num.rescale`; and ``engine replay --check`` of
outputs recorded at the old scale says so in one line (exit 1).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from decimal import Context, Decimal, localcontext
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import num
from engine.journal.recorder import OUTPUTS_DIR, OutputRecorder, outputs_scale
from engine.journal.schema import Dir, Kind
from engine.journal.writer import JournalWriter

FIX = Path(__file__).resolve().parent.parent / "fixtures"
ROWS = [
    line.split("\t")
    for line in (FIX / "numbers" / "numbers.tsv").read_text().splitlines()
    if line and not line.startswith("#")
]


def exact(text: str) -> int:
    """The value of a decimal text in engine units, by Decimal arithmetic that never rounds."""
    with localcontext(Context(prec=len(text) + num.SCALE + 2)):
        units = Decimal(text).scaleb(num.SCALE)
        assert units == units.to_integral_value()
        return int(units)


def test_every_number_of_every_captured_instrument_parses_exactly_and_renders_back():
    venues: dict[str, set[str]] = {}
    finest = 0
    for venue, symbol, kind, text in ROWS:
        units = num.parse(text) if kind == "str" else num.parse_json_number(text)
        assert units == exact(text), (venue, symbol, text)
        assert num.render(units, num.decimals_of(text)) == text, (venue, symbol, text)
        venues.setdefault(venue, set()).add(symbol)
        finest = max(finest, num.decimals_of(text))
    assert set(venues) >= {"BINANCE", "BINANCE_FUTURES", "BYBIT", "COINBASE", "KRAKEN", "OKX"}
    assert finest > 8  # Kraken prints 9 decimals for some pairs: refused at the old scale
    print(f"{len(ROWS)} numbers of {sum(map(len, venues.values()))} instruments, up to {finest} dp")


DIGITS = st.integers(0, 10**20 - 1).map(str)  # a whole part, no leading zeros


@given(DIGITS, st.text("0123456789", min_size=9, max_size=18), st.booleans())
def test_9_to_18_decimals_are_exact(whole, frac, negative):
    text = ("-" if negative else "") + whole + "." + frac
    units = num.parse(text)
    assert units == exact(text)
    assert num.render(units, len(frac)) == (text if units or not negative else text[1:])


@given(st.integers(2**63, num.MAX) | st.integers(-num.MAX, -(2**63)), st.integers(0, 18))
def test_values_beyond_int64_round_trip(units, decimals):
    if units % 10 ** (num.SCALE - decimals):
        decimals = num.SCALE
    assert num.parse(num.render(units, decimals)) == units


@given(DIGITS, st.text("0123456789", min_size=18, max_size=18), st.sampled_from("123456789"))
def test_a_19th_significant_decimal_is_refused(whole, frac, last):
    with pytest.raises(num.PrecisionError, match="more than 18 significant decimals"):
        num.parse(f"{whole}.{frac}{last}")
    with pytest.raises(num.PrecisionError):
        num.parse_json_number(f"{whole}{frac}{last}e-19")


@given(DIGITS, st.text("0123456789", min_size=18, max_size=18), st.integers(1, 30))
def test_trailing_zeros_beyond_18_decimals_are_fine(whole, frac, zeros):
    text = f"{whole}.{frac}" + "0" * zeros
    assert num.parse(text) == exact(text) == num.parse(f"{whole}.{frac}")


def test_rescale_is_exact_or_refuses():
    assert num.rescale(num.parse("0.35130000") // 10**10, 8) == num.parse("0.3513")
    assert num.rescale(15, 1) == num.parse("1.5")
    assert num.rescale(num.ONE * 10**2, 20) == num.ONE
    with pytest.raises(ValueError):
        num.rescale(1, 20)


def test_outputs_record_their_number_scale(tmp_path):
    rec = OutputRecorder(tmp_path)
    rec.close()
    assert outputs_scale(tmp_path) == num.SCALE == 18
    assert outputs_scale(tmp_path / "none") is None


def test_check_refuses_outputs_recorded_at_the_old_scale_in_one_line(tmp_path):
    journal = tmp_path / "j"
    shutil.copytree(FIX / "journals" / "binance-spot", journal)
    # an outputs journal as engine run wrote it before the scale was raised: no number_scale
    w = JournalWriter.create(journal / OUTPUTS_DIR, {"content": "pipeline outputs"})
    w.append(1, 0, Dir.LOCAL, Kind.MARKER, "X", b'{"frame_seq":1,"output":{}}')
    w.close()
    assert outputs_scale(journal) == 8
    r = subprocess.run(
        [sys.executable, "-m", "engine.cli", "replay", str(journal), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1, (r.stdout, r.stderr)
    lines = (r.stdout + r.stderr).strip().splitlines()
    assert any("recorded at number scale 8" in ln and "1e-18" in ln for ln in lines), lines
