"""Spark opens an export in one call (slow: a JVM starts; needs the ``spark`` extra and a JDK).

Spark reads no Parquet ``TIMESTAMP(NANOS)`` column unless told to take it as a
long (``spark.sql.legacy.parquet.nanosAsLong``): the README's Spark line sets
it, and this test runs that line on a real export of the Binance capture and
compares every row with what the engine wrote: exact decimals, epoch-ns times,
the ``symbol=``/``date=`` partitions discovered.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.replay.export import read_table

pyspark = pytest.importorskip("pyspark", reason="the spark extra is not installed")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("java") is None, reason="Spark needs a JDK"),
]

SPOT = Path(__file__).resolve().parent.parent / "fixtures" / "journals" / "binance-spot"


def test_spark_reads_the_export_in_one_call_exactly(tmp_path: Path) -> None:
    from pyspark.sql import SparkSession

    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "export", str(SPOT), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    spark = (
        SparkSession.builder.master("local[1]")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.legacy.parquet.nanosAsLong", "true")  # the README's line
        .getOrCreate()
    )
    try:
        df = spark.read.parquet(str(out / "table=trades"))
        types = dict(df.dtypes)
        assert types["recv_time"] == "bigint" and types["date"] == "date"
        assert types["price"].startswith("decimal(38,")
        got = [
            (r.seq, r.symbol, r.price, r.qty, r.recv_time, r.agg)
            for r in df.select("seq", "symbol", "price", "qty", "recv_time", "agg").collect()
        ]
    finally:
        spark.stop()
    mine = read_table(out, "trades")
    ns = mine.column("recv_time").cast("int64").to_pylist()  # timestamp[ns] → epoch ns
    want = [
        (r["seq"], r["symbol"], r["price"], r["qty"], t, r["agg"])
        for r, t in zip(mine.to_pylist(), ns, strict=True)
    ]
    assert want and sorted(got) == sorted(want)
