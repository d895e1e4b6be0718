"""gunicorn's worker as ``gunicorn.conf.py`` configures it (app/http_worker.py), spoken to over raw sockets.

It reads every request whole before a thread takes it; these tests check that it still speaks HTTP/1.1
as clients expect: kept-alive and pipelined requests, chunked bodies, ``Expect: 100-continue``, a body
declared too large (answered at once, the connection closed), and clients that stall in their headers,
in their body, or send headers too large to be a browser's.
"""

from __future__ import annotations

import json
import socket
import time

import pytest

from gunicorn_support import running_gunicorn
from support import COLOR_RGB, encode

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(color_artifact, tmp_path_factory):
    with running_gunicorn(color_artifact, tmp_path_factory.mktemp("http-worker"), GUNICORN_THREADS="1",
                          CLIENT_HEADER_TIMEOUT="2", CLIENT_BODY_TIMEOUT="2",
                          MAX_CONTENT_LENGTH="200000") as (gunicorn, _):
        yield gunicorn


def connect(server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=15)


def read_response(sock: socket.socket, buffered: bytearray) -> tuple[int, dict, bytes]:
    """One response off ``sock`` (``buffered`` holds bytes already read past the previous one)."""
    while b"\r\n\r\n" not in buffered:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response: {bytes(buffered)!r}")
        buffered += chunk
    head, _, rest = bytes(buffered).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", 0))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    buffered[:] = rest[length:]
    return status, headers, rest[:length]


def upload_request(image: bytes, *, chunked: bool = False, expect: bool = False, extra: str = "") -> tuple[bytes, bytes]:
    boundary = "workerboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"car.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode() + image + f"\r\n--{boundary}--\r\n".encode()
    head = (f"POST /api/v1/predictions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n{extra}")
    if expect:
        head += "Expect: 100-continue\r\n"
    if chunked:
        head += "Transfer-Encoding: chunked\r\n\r\n"
        pieces = [body[i:i + 1000] for i in range(0, len(body), 1000)]
        body = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"
    else:
        head += f"Content-Length: {len(body)}\r\n\r\n"
    return head.encode(), body


def red_jpeg() -> bytes:
    from PIL import Image

    return encode(Image.new("RGB", (64, 48), COLOR_RGB["red"]), "JPEG")


def test_kept_alive_and_pipelined_requests_are_each_answered(server):
    sock, buffered = connect(server), bytearray()
    head, body = upload_request(red_jpeg())
    sock.sendall(head + body)
    assert read_response(sock, buffered)[0] == 201
    # Three requests in one write, before any answer.
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" + head + body + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    statuses = [read_response(sock, buffered)[0] for _ in range(3)]
    assert statuses == [200, 201, 200]
    sock.close()


def test_a_chunked_upload_trickled_in_pieces_is_read_whole(server):
    sock, buffered = connect(server), bytearray()
    head, body = upload_request(red_jpeg(), chunked=True)
    sock.sendall(head)
    for start in range(0, len(body), 700):  # splits fall inside size lines and data alike
        sock.sendall(body[start:start + 700])
        time.sleep(0.01)
    status, _, answer = read_response(sock, buffered)
    assert status == 201, answer
    assert json.loads(answer)["predictions"][0]["label"] == "red"


def test_expect_100_continue_is_answered_once_before_the_body(server):
    sock, buffered = connect(server), bytearray()
    head, body = upload_request(red_jpeg(), expect=True)
    sock.sendall(head)
    sock.settimeout(5)
    interim = sock.recv(65536)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    sock.sendall(body)
    sock.settimeout(15)
    status, _, answer = read_response(sock, buffered)
    assert status == 201, answer
    assert b"100 Continue" not in answer and not buffered


def test_a_body_declared_too_large_is_answered_at_once_and_the_connection_closed(server):
    sock, buffered = connect(server), bytearray()
    sock.sendall(b"POST /api/v1/predictions HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                 b"Content-Length: 5000000\r\n\r\n" + b"x" * 1000)
    started = time.monotonic()
    status, _, answer = read_response(sock, buffered)
    assert status == 413 and json.loads(answer)["error"]["status"] == 413
    assert time.monotonic() - started < 5
    sock.settimeout(5)
    assert sock.recv(100) == b""  # closed: the rest of that body is never read as a request


@pytest.mark.parametrize("kind", ["header", "body"])
def test_a_client_that_stalls_is_dropped_after_its_timeout(server, kind):
    sock = connect(server)
    if kind == "header":
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    else:
        sock.sendall(b"POST /api/v1/predictions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc")
    started = time.monotonic()
    sock.settimeout(15)
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    assert 1.5 < time.monotonic() - started < 6  # CLIENT_*_TIMEOUT=2, checked about once a second


def test_a_client_trickling_its_headers_is_dropped_even_while_it_keeps_sending(server):
    sock = connect(server)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    started, closed = time.monotonic(), False
    while time.monotonic() - started < 8:
        try:
            sock.sendall(b"x")
        except OSError:
            closed = True
            break
        time.sleep(0.5)
    assert closed and time.monotonic() - started < 6


def test_headers_larger_than_any_browser_sends_get_431(server):
    sock, buffered = connect(server), bytearray()
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"a" * 70_000)
    status, headers, answer = read_response(sock, buffered)
    assert status == 431 and headers["connection"] == "close"
    assert json.loads(answer)["error"]["code"] == "headers_too_large"


def test_the_one_thread_still_answers_while_slow_uploads_are_read(server):
    """GUNICORN_THREADS=1 here: any slow client tied to the thread would block this health check."""
    slow = [connect(server) for _ in range(4)]
    for sock in slow:
        sock.sendall(b"POST /api/v1/predictions HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nab")
    probe, buffered = connect(server), bytearray()
    probe.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    probe.settimeout(3)
    assert read_response(probe, buffered)[0] == 200
    for sock in slow:
        sock.close()
