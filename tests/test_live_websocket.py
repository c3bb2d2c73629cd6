"""The capture's WebSocket client connection, sans-I/O: whatever bytes a text message carries come back exactly.

:class:`engine.live.websocket.CaptureClient` is a wsproto connection, so it is
driven here with bytes alone (a real wsproto server answers the handshake;
the frames are built by hand, as a hostile server would send them): any
payload, split into any fragments, fed in any TCP-sized pieces, must decode
to text whose ``surrogateescape`` encoding is the payload, and whose strict
encoding fails exactly when the payload is not UTF-8 (what the reader uses to
journal it as flagged binary).  The socket-level cases are in
``tests/test_live_hostile.py``.
"""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Ping, Request, TextMessage

from engine.live.websocket import CaptureClient


def opened() -> CaptureClient:
    client = CaptureClient()
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="127.0.0.1", target="/ws")))
    answer = b"".join(
        server.send(AcceptConnection()) for e in server.events() if isinstance(e, Request)
    )
    client.receive_data(answer)
    assert [type(e) for e in client.events()] == [AcceptConnection]
    return client


def frames(payload: bytes, cuts: list[int]) -> bytes:
    """``payload`` as one text message in fragments cut at ``cuts`` (unmasked, as a server sends)."""
    bounds = sorted({0, len(payload), *(c % (len(payload) + 1) for c in cuts)})
    parts = [payload[a:b] for a, b in zip(bounds, bounds[1:], strict=False)] or [b""]
    out = b""
    for i, part in enumerate(parts):
        opcode = 0x1 if i == 0 else 0x0
        fin = 0x80 if i == len(parts) - 1 else 0
        n = len(part)
        head = (
            struct.pack("!BB", fin | opcode, n)
            if n < 126
            else struct.pack("!BBH", fin | opcode, 126, n)
        )
        out += head + part
    return out


payloads = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=100).map(str.encode),
    # valid text with bytes spliced in: the hard cases sit next to multi-byte sequences
    st.tuples(
        st.text(min_size=1, max_size=40), st.binary(min_size=1, max_size=4), st.text(max_size=40)
    ).map(lambda t: t[0].encode() + t[1] + t[2].encode()),
)


@given(
    payloads, st.lists(st.integers(0, 400), max_size=6), st.lists(st.integers(1, 64), max_size=8)
)
def test_any_text_payload_in_any_fragments_comes_back_exactly(
    payload: bytes, cuts: list[int], reads: list[int]
) -> None:
    client = opened()
    wire = frames(payload, cuts)
    text = ""
    pos = 0
    for n in [*reads, len(wire)]:  # TCP delivers it in pieces of any size
        client.receive_data(wire[pos : pos + n])
        pos += n
        for e in client.events():
            assert isinstance(e, TextMessage), e  # never a CloseConnection(1007)
            text += e.data
        if pos >= len(wire):
            break
    assert text.encode("utf-8", "surrogateescape") == payload
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        valid = False
    else:
        valid = True
    try:
        strict = text.encode()
    except UnicodeEncodeError:
        assert not valid
    else:
        assert valid and strict == payload


def test_no_pong_goes_out_after_our_close() -> None:
    client = opened()
    client.send(CloseConnection(code=1000, reason="capture stopped"))
    client.receive_data(b"\x89\x01p")  # the server pings after our close
    (ping,) = list(client.events())
    assert isinstance(ping, Ping)
    assert client.send(ping.response()) == b""
