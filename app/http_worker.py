"""A gunicorn worker that reads each request whole before a thread takes it, so slow clients cost no thread.

gunicorn's threaded worker hands a connection to a thread as soon as its first byte arrives, and the
thread then waits on the socket for the rest of the headers and the body. A client that sends one byte
a second holds that thread for as long as it likes; two workers of two threads are taken down by four
such clients (gunicorn's own design notes say its sync and thread workers need a buffering proxy). The
project's nginx does that buffering, but the Docker image, App Engine and a plain VM run gunicorn alone.

:class:`BufferingWorker` does in the worker's event loop what nginx does in front of it: it reads the
request line, the headers and the body of every connection without blocking, as bytes arrive, and
submits the connection to the thread pool only once the whole request is in hand (the body kept in a
spooled temporary file past :data:`SPOOL_BYTES`). The thread then parses it from those bytes and runs the
app without ever waiting on the client. The same limits as ``deploy/nginx.conf`` apply: the headers
must arrive within :data:`HEADER_TIMEOUT_S`, the body must not stall for more than
:data:`BODY_IDLE_TIMEOUT_S` between reads, and a body declared over ``MAX_CONTENT_LENGTH`` is not read
at all (the app answers its 413 at once and the connection is closed).
"""

from __future__ import annotations

import errno
import os
import selectors
import tempfile
import time
from collections import deque
from concurrent import futures
from functools import partial

from gunicorn import http
from gunicorn.workers.gthread import TConn, ThreadWorker

HEADER_TIMEOUT_S = float(os.environ.get("CLIENT_HEADER_TIMEOUT") or 10)
BODY_IDLE_TIMEOUT_S = float(os.environ.get("CLIENT_BODY_TIMEOUT") or 10)
# The request line and headers of a browser request are a few kB; nginx allows 4 x 8 kB.
MAX_HEAD_BYTES = 64 * 1024
# Bodies larger than this wait on disk rather than in memory while they arrive.
SPOOL_BYTES = 256 * 1024
READ_BYTES = 64 * 1024
MAX_CHUNK_LINE = 4096
_TOO_LARGE_BODY = (b'{"error": {"status": 431, "code": "headers_too_large", '
                   b'"message": "The request headers are too large."}}\n')
HEAD_TOO_LARGE = (b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\n"
                  b"Content-Type: application/json\r\nContent-Length: "
                  + str(len(_TOO_LARGE_BODY)).encode() + b"\r\n\r\n" + _TOO_LARGE_BODY)
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def max_body_bytes() -> int:
    """The app's ``MAX_CONTENT_LENGTH``: a longer body is answered 413 by the app without being read."""
    from app.config import Config

    raw = (os.environ.get("MAX_CONTENT_LENGTH") or "").strip()
    try:
        return Config.MAX_CONTENT_LENGTH.parse(raw) if raw else Config.MAX_CONTENT_LENGTH.default
    except ValueError:  # the app refuses the setting itself, with its own message
        return Config.MAX_CONTENT_LENGTH.default


class ChunkedBody:
    """Follows ``Transfer-Encoding: chunked`` framing as bytes arrive, to know where the body ends."""

    def __init__(self):
        self.state, self.line, self.remaining = "size", bytearray(), 0
        self.malformed = False

    @property
    def done(self) -> bool:
        return self.state == "done"

    def feed(self, data: bytes) -> int:
        """Consume body bytes; returns how many of ``data`` belong to the body (the rest follows it)."""
        position = 0
        while position < len(data) and not self.done and not self.malformed:
            if self.state == "data":
                taken = min(self.remaining, len(data) - position)
                self.remaining -= taken
                position += taken
                if not self.remaining:
                    self.state = "size"
                continue
            newline = data.find(b"\n", position)
            end = len(data) if newline < 0 else newline + 1
            self.line += data[position:end]
            position = end
            if len(self.line) > MAX_CHUNK_LINE:
                self.malformed = True
            if newline < 0:
                continue
            line, self.line = bytes(self.line).strip(), bytearray()
            if self.state == "size":
                if not line:  # the CRLF after a chunk's data
                    continue
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    self.malformed = True
                    continue
                self.state, self.remaining = ("trailer", 0) if size == 0 else ("data", size)
            elif not line:  # trailer: an empty line ends the message
                self.state = "done"
        return position


class PendingRequest:
    """One request being read: its head in memory, its body spooled, what follows it kept aside."""

    def __init__(self, body_limit: int, initial: bytes = b""):
        self.body_limit = body_limit
        self.head = bytearray()
        self.head_done = False
        self.body = None
        self.body_bytes = 0
        self.expected: int | None = None  # Content-Length
        self.chunked: ChunkedBody | None = None
        self.leftover = b""
        self.complete = False
        self.unbuffered = False  # handed over before its body arrived (too large, or framing unclear)
        self.wants_continue = False
        self.started = time.monotonic()
        self.last_read = self.started
        if initial:
            self.feed(initial)

    def feed(self, data: bytes) -> None:
        self.last_read = time.monotonic()
        if not self.head_done:
            searched_from = max(0, len(self.head) - 3)
            self.head += data
            end = self.head.find(b"\r\n\r\n", searched_from)
            if end < 0:
                return
            data, self.head = bytes(self.head[end + 4:]), self.head[:end + 4]
            self.head_done = True
            self._read_framing()
            if self.complete:
                self.leftover = data
                return
        if self.chunked is not None:
            used = self.chunked.feed(data)
            self._store(data[:used])
            if self.chunked.done or self.chunked.malformed or self.body_bytes > self.body_limit:
                self.unbuffered = not self.chunked.done
                self.complete, self.leftover = True, data[used:]
            return
        used = min(len(data), self.expected - self.body_bytes)
        self._store(data[:used])
        if self.body_bytes >= self.expected:
            self.complete, self.leftover = True, data[used:]

    def _store(self, data: bytes) -> None:
        if not data:
            return
        if self.body is None:
            self.body = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
        self.body.write(data)
        self.body_bytes += len(data)

    def _read_framing(self) -> None:
        lines = bytes(self.head).split(b"\r\n")[1:]
        lengths, encodings = [], []
        kept = [bytes(self.head).split(b"\r\n", 1)[0]]
        for line in lines:
            name, _, value = line.partition(b":")
            key = name.strip().lower()
            if key == b"content-length":
                lengths.append(value.strip())
            elif key == b"transfer-encoding":
                encodings.append(value.strip().lower())
            elif key == b"expect" and value.strip().lower() == b"100-continue":
                self.wants_continue = True
                continue  # answered here; the thread must not answer it a second time
            kept.append(line)
        self.head = bytearray(b"\r\n".join(kept))
        if encodings and not lengths and encodings == [b"chunked"]:
            self.chunked = ChunkedBody()
            return
        if encodings or len(set(lengths)) > 1 or (lengths and not lengths[0].isdigit()):
            # Framing the thread's parser will refuse (400): no body to wait for.
            self.complete = self.unbuffered = True
            return
        self.expected = int(lengths[0]) if lengths else 0
        if self.expected > self.body_limit:
            self.complete = self.unbuffered = True  # the app answers 413 without reading it
        elif self.expected == 0:
            self.complete = True

    def replay(self) -> bytes:
        """The request as the thread's parser reads it (head without ``Expect``, then the body)."""
        data = bytes(self.head)
        if self.body is not None:
            self.body.seek(0)
            data += self.body.read()
            self.body.close()
            self.body = None
        return data

    def close(self) -> None:
        if self.body is not None:
            self.body.close()
            self.body = None


class BufferedConn(TConn):
    """A connection and the request being read from it."""

    def __init__(self, cfg, sock, client, server, body_limit: int):
        super().__init__(cfg, sock, client, server)
        self.body_limit = body_limit
        self.pending = PendingRequest(body_limit)
        self.unbuffered = False

    def close(self):
        self.pending.close()
        super().close()


class BufferingWorker(ThreadWorker):
    """gunicorn's threaded worker, with requests read whole in the event loop (see the module notes)."""

    def init_process(self):
        self.body_limit = max_body_bytes()
        self.reading: set[BufferedConn] = set()
        # Connections whose next request was already read with the last one; the pipe wakes the loop.
        self.ready: deque[BufferedConn] = deque()
        self.wake_read, self.wake_write = os.pipe()
        os.set_blocking(self.wake_read, False)
        os.set_blocking(self.wake_write, False)
        super().init_process()  # runs the loop

    def accept(self, server, listener):
        try:
            sock, client = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        conn = BufferedConn(self.cfg, sock, client, server, self.body_limit)
        self.nr_conns += 1
        with self._lock:
            self.reading.add(conn)
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_client_socket_readable, conn))

    def on_client_socket_readable(self, conn, client):
        if self.cfg.is_ssl:  # TLS bytes cannot be read ahead here; gunicorn's own path handles them
            super().on_client_socket_readable(conn, client)
            return
        with self._lock:
            if conn.initialized and conn in self._keep:
                self._keep.remove(conn)  # a kept-alive connection starts its next request
                conn.pending = PendingRequest(self.body_limit)
                self.reading.add(conn)
            elif conn not in self.reading:
                return
        try:
            data = conn.sock.recv(READ_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        pending = conn.pending
        if not data:
            if pending.head_done and not pending.complete:
                # The client stopped sending before its body's end (and may still read): the app answers
                # the short body (400) as it would have without this read-ahead.
                pending.complete = pending.unbuffered = True
                with self._lock:
                    self.reading.discard(conn)
                    self.poller.unregister(conn.sock)
                self.enqueue_req(conn)
                return
            self._drop(conn)
            return
        pending.feed(data)
        if not pending.head_done and len(pending.head) > MAX_HEAD_BYTES:
            try:
                conn.sock.send(HEAD_TOO_LARGE)
            except OSError:
                pass
            self._drop(conn)
            return
        if pending.wants_continue and not pending.complete and not pending.body_bytes:
            pending.wants_continue = False
            try:
                conn.sock.send(CONTINUE)
            except OSError:
                pass
        if pending.complete:
            with self._lock:
                self.reading.discard(conn)
                self.poller.unregister(conn.sock)
            self.enqueue_req(conn)

    def enqueue_req(self, conn):
        conn.init()
        conn.unbuffered = conn.pending.unbuffered
        # A fresh parser per request, fed the bytes read here: an earlier request's unread body (which a
        # kept parser would first skip) was dropped with that request's buffer.
        conn.parser = http.RequestParser(self.cfg, conn.sock, conn.client)
        conn.parser.unreader.unread(conn.pending.replay())
        fs = self.tpool.submit(self.handle, conn)
        self._wrap_future(fs, conn)

    def handle(self, conn):
        keepalive, conn = super().handle(conn)
        # A request handed over before its body arrived leaves that body on the socket: never reuse it.
        return (keepalive and not conn.unbuffered), conn

    def finish_request(self, fs):
        if fs.cancelled():
            super().finish_request(fs)
            return
        try:
            keepalive, conn = fs.result()
        except Exception:
            super().finish_request(fs)
            return
        leftover = conn.pending.leftover
        if keepalive and self.alive and leftover:
            # The client sent its next request before this answer (pipelining): read on from those bytes.
            conn.sock.setblocking(False)
            conn.pending = PendingRequest(self.body_limit, leftover)
            with self._lock:
                self.reading.add(conn)
                if conn.pending.complete:
                    self.ready.append(conn)  # submitted by the loop, which owns the futures list
                    try:
                        os.write(self.wake_write, b"x")
                    except BlockingIOError:
                        pass
                else:
                    self.poller.register(conn.sock, selectors.EVENT_READ,
                                         partial(self.on_client_socket_readable, conn))
            return
        super().finish_request(fs)

    def on_wake(self, _):
        try:
            while os.read(self.wake_read, 4096):
                pass
        except BlockingIOError:
            pass
        while True:
            with self._lock:
                if not self.ready:
                    return
                conn = self.ready.popleft()
                self.reading.discard(conn)
            self.enqueue_req(conn)

    def _drop(self, conn):
        with self._lock:
            self.reading.discard(conn)
            try:
                self._keep.remove(conn)
            except ValueError:
                pass
            try:
                self.poller.unregister(conn.sock)
            except (KeyError, ValueError, OSError):
                pass
        self.nr_conns -= 1
        conn.close()

    def murder_keepalived(self):
        super().murder_keepalived()
        now = time.monotonic()
        with self._lock:
            stalled = [conn for conn in self.reading
                       if (not conn.pending.head_done and now - conn.pending.started > HEADER_TIMEOUT_S)
                       or (conn.pending.head_done and now - conn.pending.last_read > BODY_IDLE_TIMEOUT_S)]
        for conn in stalled:
            self._drop(conn)

    def run(self):
        # gunicorn's loop stops polling altogether when it holds worker_connections connections, which
        # would freeze the reads below; here the listeners alone stop while the others are still read.
        for sock in self.sockets:
            sock.setblocking(False)
            server = sock.getsockname()
            self.poller.register(sock, selectors.EVENT_READ, partial(self.accept, server))
        self.poller.register(self.wake_read, selectors.EVENT_READ, self.on_wake)
        accepting = True
        while self.alive:
            self.notify()
            full = self.nr_conns >= self.worker_connections
            if full == accepting:
                accepting = not full
                with self._lock:
                    for sock in self.sockets:
                        if accepting:
                            self.poller.register(sock, selectors.EVENT_READ,
                                                 partial(self.accept, sock.getsockname()))
                        else:
                            self.poller.unregister(sock)
            for key, _ in self.poller.select(1.0):
                key.data(key.fileobj)
            result = futures.wait(self.futures, timeout=0, return_when=futures.FIRST_COMPLETED)
            for fut in result.done:
                self.futures.remove(fut)
            if not self.is_parent_alive():
                break
            self.murder_keepalived()
        self.tpool.shutdown(False)
        self.poller.close()
        for sock in self.sockets:
            sock.close()
        futures.wait(self.futures, timeout=self.cfg.graceful_timeout)
