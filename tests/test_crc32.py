"""The C checksum path's CRC-32 (``engine/_crc32.h``) against ``zlib.crc32``.

The checksums' CRC has two implementations, chosen once when ``engine._cksum`` loads:
PCLMULQDQ folding where the CPU has it (x86-64), slicing-by-8 tables elsewhere (or with
``ENGINE_CRC32=table``).  ``_cksum.crc32(data, value, impl=...)`` runs either by name, so
both are checked here, differentially, whatever this machine would choose: random bytes,
random split points chained through ``value``, every length up to 300 at every alignment,
and buffers that end (or start) at a page no process may read, so that a read past either
end of the input crashes instead of passing by luck.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

cksum = pytest.importorskip("engine._cksum", reason="the optional C checksum helper is not built")


def _cpu_folds() -> bool | None:
    """Whether this CPU has PCLMULQDQ and SSE4.1 (None: not known here)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return False
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                  if line.startswith("flags")), [])  # fmt: skip
    return "pclmulqdq" in flags and "sse4_1" in flags


FOLDS = _cpu_folds()
IMPLS = ["table", "pclmul"] if FOLDS else ["table"]
#: every implementation by name, and the one the checksums use
ALL = [*IMPLS, None]
#: a buffer whose slices cover every length the tests below take, at every alignment
BUF = bytes((i * 131 + 7) & 0xFF for i in range(300 + 16))
_value = st.one_of(st.integers(0, 2**32 - 1), st.integers(-(2**40), 2**40))


def test_the_checksums_fold_where_the_cpu_can() -> None:
    if FOLDS is None:
        pytest.skip("this platform does not say whether its CPU has PCLMULQDQ")
    forced = os.environ.get("ENGINE_CRC32") == "table"
    assert cksum.crc32_impl() == ("pclmul" if FOLDS and not forced else "table")


@pytest.mark.parametrize("impl", ALL)
@given(data=st.binary(max_size=4096), value=_value)
def test_any_bytes_any_start_value(impl: str | None, data: bytes, value: int) -> None:
    assert cksum.crc32(data, value, impl=impl) == zlib.crc32(data, value)
    assert cksum.crc32(data, impl=impl) == zlib.crc32(data)


@pytest.mark.parametrize("impl", ALL)
@given(data=st.binary(max_size=4096), cuts=st.lists(st.integers(0, 4096), max_size=6))
def test_chained_through_value(impl: str | None, data: bytes, cuts: list[int]) -> None:
    """Pieces at random split points, each starting from the last one's value."""
    bounds = [0, *sorted(min(c, len(data)) for c in cuts), len(data)]
    value = 0
    for a, b in zip(bounds, bounds[1:], strict=False):
        value = cksum.crc32(data[a:b], value, impl=impl)
    assert value == zlib.crc32(data)


@pytest.mark.parametrize("impl", ALL)
def test_every_length_at_every_alignment(impl: str | None) -> None:
    view = memoryview(BUF)
    wrong = [(offset, n) for offset in range(16) for n in range(301)
             if cksum.crc32(view[offset:offset + n], 12345, impl=impl)
             != zlib.crc32(view[offset:offset + n], 12345)]  # fmt: skip
    assert wrong == []


_GUARDED = textwrap.dedent(
    """
    import ctypes, mmap, sys, zlib
    from engine import _cksum

    page = mmap.PAGESIZE
    m = mmap.mmap(-1, 3 * page)
    m[page:2 * page] = bytes((i * 37 + 11) & 0xFF for i in range(page))
    base = ctypes.addressof(ctypes.c_char.from_buffer(m))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    for p in (base, base + 2 * page):  # the pages before and after: no read
        assert libc.mprotect(p, page, 0) == 0, ctypes.get_errno()
    view = memoryview(m)
    checked = 0
    for impl in sys.argv[1:]:
        for n in range(301):
            for a in (page, 2 * page - n):  # starting at the first byte, ending at the last
                piece = view[a:a + n]
                assert _cksum.crc32(piece, 7, impl=impl) == zlib.crc32(piece, 7), (impl, n, a)
                checked += 1
    print(checked)
    """
)


@pytest.mark.skipif(sys.platform != "linux", reason="mprotect through ctypes: Linux")
def test_never_reads_outside_the_input() -> None:
    """Every length up to 300 right against an unreadable page, before and after."""
    done = subprocess.run(
        [sys.executable, "-c", _GUARDED, *IMPLS], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert int(done.stdout) == len(IMPLS) * 301 * 2


def test_environment_forces_the_table() -> None:
    """ENGINE_CRC32=table: the checksums use the table version, with the same results."""
    script = (
        "import zlib; from engine import _cksum; data = bytes(range(256)) * 7;"
        "assert _cksum.crc32(data, 3) == zlib.crc32(data, 3); print(_cksum.crc32_impl())"
    )
    env = {**os.environ, "ENGINE_CRC32": "table"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "table"


def test_arguments_as_zlib_takes_them() -> None:
    data = bytearray(b"wiretape" * 9)
    assert cksum.crc32(data) == zlib.crc32(data)
    assert cksum.crc32(b"abc", 2**64 + 5) == zlib.crc32(b"abc", 2**64 + 5)
    for bad in ("text", 1.5, memoryview(b"abcd")[::2]):
        with pytest.raises((TypeError, BufferError)) as ours:
            cksum.crc32(bad)
        with pytest.raises((TypeError, BufferError)) as theirs:
            zlib.crc32(bad)
        assert ours.type is theirs.type
    with pytest.raises(TypeError):
        cksum.crc32(b"abc", 1.5)
    with pytest.raises(ValueError, match="impl is 'table', 'pclmul' or None"):
        cksum.crc32(b"abc", impl="fast")
    if not FOLDS:
        with pytest.raises(ValueError, match="lacks PCLMULQDQ"):
            cksum.crc32(b"abc", impl="pclmul")
