"""engine.timefmt: the one time grammar, exact to the nanosecond in both directions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.timefmt import (
    ACCEPTED,
    NS_PER_S,
    format_ms,
    format_ns,
    parse_epoch_s,
    parse_iso,
    parse_time,
)

INT64 = st.integers(-(2**63), 2**63 - 1)


@given(INT64)
def test_format_then_parse_is_identity_for_every_int64(ns):
    text = format_ns(ns)
    assert text.endswith("Z") and len(text.rsplit(".", 1)[1]) == 10
    assert parse_time(text) == ns
    assert parse_iso(text) == ns


@given(INT64)
def test_a_bare_integer_is_always_epoch_nanoseconds(ns):
    assert parse_time(str(ns)) == ns
    assert parse_time(f" {ns} ") == ns


def test_no_magnitude_guessing():
    # seconds-, ms- and µs-sized integers are nanoseconds too: one rule, whatever the size
    assert parse_time("1704067205") == 1_704_067_205
    assert parse_time("1704067205123") == 1_704_067_205_123
    assert parse_time("1704067205.0") == 1_704_067_205 * NS_PER_S


@given(INT64, st.integers(0, 9))
def test_fewer_digits_truncate_and_parse_back_exactly(ns, digits):
    step = 10 ** (9 - digits)
    assert parse_time(format_ns(ns, digits)) == ns // step * step


@given(st.integers(-(2**62), 2**62), st.integers(-(23 * 60 + 59), 23 * 60 + 59))
def test_zone_offsets_name_the_same_instant(ns, offset_min):
    secs, frac = divmod(ns, NS_PER_S)
    local = datetime(1970, 1, 1) + timedelta(seconds=secs, minutes=offset_min)
    sign = "-" if offset_min < 0 else "+"
    hh, mm = divmod(abs(offset_min), 60)
    text = f"{local:%Y-%m-%dT%H:%M:%S}.{frac:09d}{sign}{hh:02d}:{mm:02d}"
    assert parse_time(text) == ns
    if offset_min == 0:
        assert parse_time(text[:-6]) == ns == parse_time(text[:-6] + "Z")  # no zone: UTC


@given(st.integers(0, 2**33), st.text("0123456789", min_size=1, max_size=9))
def test_epoch_seconds_with_a_fraction_are_exact(secs, frac):
    want = secs * NS_PER_S + int(frac.ljust(9, "0"))
    assert parse_time(f"{secs}.{frac}") == want == parse_epoch_s(f"{secs}.{frac}")


def test_exact_where_floats_and_datetime_are_not():
    # datetime keeps microseconds only; a float cannot hold this many digits
    assert parse_time("2024-01-01T00:00:06.3915486Z") == 1_704_067_206_391_548_600
    assert parse_time("2024-01-01T00:00:06.999999999Z") == 1_704_067_206_999_999_999
    assert parse_epoch_s("1633998512.0633569") == 1_633_998_512_063_356_900
    assert parse_epoch_s("1633998512") == 1_633_998_512 * NS_PER_S  # cryptofeed whole seconds
    assert parse_iso("2021-10-12T02:28:32.5+02:00") == 1_633_998_512_500_000_000
    assert parse_time("2024-01-01") == parse_time("2024-01-01T00:00Z") == 1_704_067_200 * NS_PER_S
    assert parse_time("1969-12-31T23:59:59.999999999Z") == -1


@pytest.mark.parametrize(
    "text",
    [
        "",
        "abc",
        "1.5e3",
        "1,5",
        "-1.5",  # epoch seconds are unsigned
        "1.1234567891",  # finer than ns: would be dropped
        "2024-01-01 00:00:05",  # the separator is T
        "2024-01-01T00:00:05.1234567891Z",
        "2024-01-01T00:00:05+0200",
        "2024-01-01T5:00Z",
        "١٧٠٤٠٦٧٢٠٥",  # non-ASCII digits
        "now",
    ],
)
def test_anything_else_is_refused_saying_what_is_accepted(text):
    with pytest.raises(ValueError) as exc:
        parse_time(text)
    assert ACCEPTED in str(exc.value)


@pytest.mark.parametrize(
    "text", ["2024-02-30T00:00:00Z", "2023-02-29", "2024-01-01T24:00Z", "2024-01-01T00:00+24:00"]
)
def test_calendar_nonsense_is_refused_saying_why(text):
    with pytest.raises(ValueError, match="not a valid time"):
        parse_time(text)


def test_the_importers_forms_are_strict():
    for bad in ("", "abc", "-1.5", "1.5e3", "1,5", "1.1234567891"):
        with pytest.raises(ValueError):
            parse_epoch_s(bad)
    for bad in ("2021-10-12 00:28:32", "1633998512", "2021-10-12T00:28:32.0633569ZZ"):
        with pytest.raises(ValueError):
            parse_iso(bad)


def test_formatting_is_total_and_utc():
    assert format_ns(0) == "1970-01-01T00:00:00.000000000Z"
    assert format_ns(1_704_067_205_123_456_789, 3) == "2024-01-01T00:00:05.123Z"
    assert format_ns(1_704_067_205_999_999_999, 0) == "2024-01-01T00:00:05Z"
    assert format_ms(1_704_067_205_123) == "2024-01-01T00:00:05.123Z"
    assert format_ms(-1) == "1969-12-31T23:59:59.999Z"
    assert format_ms(2**63 - 1) == f"{2**63 - 1}ms"  # outside the calendar: the number, no error
    assert parse_time(format_ms(1_704_067_205_123)) == 1_704_067_205_123_000_000
    assert datetime.fromisoformat(format_ns(123)[:-4] + "+00:00").tzinfo == UTC
