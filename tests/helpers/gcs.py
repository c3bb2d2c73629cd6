"""A real GCS server for the storage tests: gcp-storage-emulator on 127.0.0.1, a bucket per test.

``gcp-storage-emulator`` (pure Python, PyPI) serves Google Cloud Storage's
JSON API over HTTP; our code reaches it through pyarrow's ``GcsFileSystem``
(google-cloud-cpp), unmocked, exactly as it would reach Google (only the
endpoint differs).  One server per test session (per xdist worker), in its own
process; each test gets a fresh bucket and the standard emulator variable
``STORAGE_EMULATOR_HOST``, so subprocesses find it too.

The emulator serves on ``http.server.HTTPServer``, one connection at a time;
pyarrow opens a download stream when it opens a file and then makes ranged
requests beside it, so a large object would deadlock a one-connection
server (it blocks sending the stream nobody reads).  The launcher gives it
the standard library's threading server instead; nothing else changes.
Buckets and objects are set up here with plain JSON-API requests (urllib),
beside our own code.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from helpers.stores import serving

_LAUNCH = """
import http.server, logging, sys, time
http.server.HTTPServer = http.server.ThreadingHTTPServer
http.server.ThreadingHTTPServer.daemon_threads = True
logging.disable(logging.CRITICAL)
from gcp_storage_emulator.server import create_server
create_server(sys.argv[1], int(sys.argv[2]), in_memory=True).start()
while True:
    time.sleep(3600)
"""


@contextmanager
def gcs_emulator() -> Iterator[str]:
    """Run the GCS emulator on a free 127.0.0.1 port for the block; yields its endpoint URL."""
    argv = [sys.executable, "-c", _LAUNCH, "127.0.0.1"]
    with serving(lambda port: [*argv, str(port)], "/storage/v1/b?project=test") as url:
        yield url


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[str]:
    """The endpoint URL of a GCS emulator running for the whole session."""
    with gcs_emulator() as url:
        yield url


@pytest.fixture
def gcs_bucket(gcs_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new empty bucket; ``STORAGE_EMULATOR_HOST`` points GCS clients (ours, subprocesses') at it."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server)
    for var in ("CLOUD_STORAGE_EMULATOR_ENDPOINT", "GOOGLE_APPLICATION_CREDENTIALS"):
        monkeypatch.delenv(var, raising=False)
    name = f"t-{uuid.uuid4().hex[:12]}"
    _request(gcs_server, "POST", "/storage/v1/b?project=test", json.dumps({"name": name}).encode())
    return name


def _request(endpoint: str, method: str, path: str, body: bytes | None = None) -> bytes:
    req = urllib.request.Request(endpoint + path, data=body, method=method)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return bytes(resp.read())


def objects(endpoint: str, bucket: str, prefix: str = "") -> dict[str, int]:
    """Every object under ``prefix``: name → size."""
    out: dict[str, int] = {}
    token = ""
    while True:
        query = urllib.parse.urlencode(
            {"prefix": prefix, **({"pageToken": token} if token else {})}
        )
        page = json.loads(_request(endpoint, "GET", f"/storage/v1/b/{bucket}/o?{query}"))
        for item in page.get("items", []):
            out[item["name"]] = int(item["size"])
        token = page.get("nextPageToken") or ""
        if not token:
            return out


def get(endpoint: str, bucket: str, name: str) -> bytes:
    """An object's content."""
    quoted = urllib.parse.quote(name, safe="")
    return _request(endpoint, "GET", f"/storage/v1/b/{bucket}/o/{quoted}?alt=media")


def put(endpoint: str, bucket: str, name: str, data: bytes) -> None:
    """Store ``data`` as object ``name`` (replacing it)."""
    query = urllib.parse.urlencode({"uploadType": "media", "name": name})
    req = urllib.request.Request(
        f"{endpoint}/upload/storage/v1/b/{bucket}/o?{query}", data=data, method="POST"
    )
    req.add_header("Content-Type", "application/octet-stream")
    try:
        urllib.request.urlopen(req, timeout=30).close()
    except urllib.error.HTTPError as exc:  # pragma: no cover - the emulator refused
        raise RuntimeError(f"upload of {name} failed: {exc}") from None


__all__ = ["gcs_emulator", "gcs_server", "gcs_bucket", "objects", "get", "put"]
