"""A real S3 server for the storage tests: moto's standalone server on 127.0.0.1, a bucket per test.

``moto.server`` serves the S3 REST API over HTTP; our code reaches it through
pyarrow's S3 client, unmocked, exactly as it would reach AWS or MinIO (only
the endpoint differs).  One server per test session (per xdist worker), in its
own process; each test gets a fresh bucket and the standard environment
(``AWS_ENDPOINT_URL``, credentials, region) so subprocesses find it too.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from helpers.stores import serving

KEYS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@contextmanager
def moto_server() -> Iterator[str]:
    """Run moto's S3 server on a free 127.0.0.1 port for the block; yields its endpoint URL."""
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p"]
    with serving(lambda port: [*argv, str(port)], "/moto-api/", {**os.environ, **KEYS}) as url:
        yield url


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """The endpoint URL of a moto S3 server running for the whole session."""
    with moto_server() as url:
        yield url


@pytest.fixture
def bucket(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new empty bucket; the environment points S3 clients (ours, subprocesses') at the server."""
    for k, v in KEYS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    name = f"t-{uuid.uuid4().hex[:12]}"
    client(s3_server).create_bucket(Bucket=name)
    return name


def client(endpoint: str):  # type: ignore[no-untyped-def]
    """A boto3 client of the server (to set up and to look at objects beside our own code)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=KEYS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=KEYS["AWS_SECRET_ACCESS_KEY"],
        region_name=KEYS["AWS_DEFAULT_REGION"],
    )


def keys(endpoint: str, bucket: str, prefix: str = "") -> dict[str, int]:
    """Every object under ``prefix``: key → size."""
    out: dict[str, int] = {}
    pages = client(endpoint).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    for page in pages:
        for obj in page.get("Contents", []):
            out[obj["Key"]] = obj["Size"]
    return out
