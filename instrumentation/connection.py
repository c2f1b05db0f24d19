"""How snapshots reach the sidecar: one kept-alive connection to its OTLP/HTTP
logs endpoint, retried once when the server closed it. Plain HTTP goes through
``PlainConnection`` (the request head built once and sent with the body in one
write, the response head parsed by hand); HTTPS, and headers that need
validating, through ``http.client``."""

from __future__ import annotations

import http.client
import socket
import urllib.parse

from a2a_quiescence import names


class PlainConnection:
    """A kept-alive HTTP/1.1 connection for POSTing snapshots: the request head is
    built once and sent with the body in one write, and the status line and the few
    headers the reporter reads are parsed by hand. (``http.client`` parses every
    response head with the ``email`` package: per export it cost more CPU than
    taking and encoding the snapshots.) Anything unusual (no content-length, a
    chunked body, ``connection: close``, HTTP/1.0) closes the connection after the
    response; the next export opens a new one."""

    def __init__(self, parsed: urllib.parse.SplitResult, headers: dict[str, str], timeout: float) -> None:
        self.address = (parsed.hostname, parsed.port or 80)
        self.timeout = timeout
        lines = [f"POST {parsed.path or '/v1/logs'} HTTP/1.1", f"host: {parsed.netloc.rpartition('@')[2]}",
                 "accept-encoding: identity"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self.head = ("\r\n".join(lines) + "\r\ncontent-length: ").encode("latin-1")
        self.sock: socket.socket | None = None

    @staticmethod
    def usable(headers: dict[str, str]) -> bool:
        """Headers this connection can send verbatim (else ``http.client`` validates them)."""
        try:
            text = "".join(f"{k}{v}" for k, v in headers.items())
            text.encode("latin-1")
        except UnicodeEncodeError:
            return False
        return not any(c in text for c in "\r\n\0") and all(k and ":" not in k and " " not in k for k in headers)

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None

    def post(self, body: bytes) -> tuple[int, str, dict[str, str]]:
        """POST ``body``; returns (status, reason, response headers lower-cased)."""
        sock = self.sock
        if sock is None:
            sock = socket.create_connection(self.address, timeout=self.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock = sock
        sock.sendall(self.request(body))
        buf = b""
        while (answer := parse_response(buf)) is None:
            chunk = sock.recv(65536)
            if not chunk:
                if buf:
                    raise http.client.IncompleteRead(buf)
                raise http.client.RemoteDisconnected("collector closed the connection")
            buf += chunk
        status, reason, headers, keep, rest = answer
        if not keep or rest:
            self.close()  # rest: more than one response, not ours to read
        return status, reason, headers

    def request(self, body: bytes) -> bytes:
        """The whole request for ``body``: the prebuilt head, its length, the body."""
        return b"".join((self.head, str(len(body)).encode(), b"\r\n\r\n", body))


def parse_response(buf: bytes) -> tuple[int, str, dict[str, str], bool, bytes] | None:
    """One HTTP/1.1 response from the start of ``buf``: (status, reason, headers lower-cased,
    whether the connection may be kept, what follows it), or None while incomplete. Interim
    (1xx) responses are skipped; a body is delimited by content-length only (anything
    else: the connection is not kept, and the body is not waited for)."""
    while True:
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > 65536:
                raise http.client.HTTPException("response head too large")
            return None
        lines = buf[:end].decode("latin-1").split("\r\n")
        buf = buf[end + 4:]
        version, _, rest = lines[0].partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/") or not code.isdigit():
            raise http.client.BadStatusLine(lines[0])
        status = int(code)
        if not 100 <= status < 200:
            break  # else an interim response: the real one follows
    headers: dict[str, str] = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
    length = headers.get("content-length", "")
    if "transfer-encoding" in headers or not length.isdigit():
        return status, reason, headers, False, b""  # a body we do not need and cannot delimit cheaply
    need = int(length)
    if len(buf) < need:
        return None
    return status, reason, headers, keep, buf[need:]


class Sender:
    """POSTs export bodies to ``parsed`` (an http(s) URL) with ``headers``."""

    def __init__(self, parsed: urllib.parse.SplitResult, headers: dict[str, str], timeout: float) -> None:
        self._parsed = parsed
        self.headers = headers
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None
        self._plain: PlainConnection | None = None
        if parsed.scheme == "http" and PlainConnection.usable(headers):
            self._plain = PlainConnection(parsed, headers, timeout)

    @property
    def plain(self) -> PlainConnection | None:
        """The plain-HTTP connection, where the endpoint allows one."""
        return self._plain

    def after_fork(self) -> None:
        """In a forked child: the parent's sockets are the parent's (not closed here)."""
        self._conn = None
        if self._plain is not None:
            self._plain.sock = None

    def post(self, body: bytes) -> str | None:
        """POST one body; the collector id it answered with (raises on failure)."""
        if self._plain is not None:
            return self._post_plain(self._plain, body)
        return self._post_http(body)

    def _post_http(self, body: bytes) -> str | None:
        for attempt in (0, 1):
            conn = self._conn
            if conn is None:
                cls = http.client.HTTPSConnection if self._parsed.scheme == "https" else http.client.HTTPConnection
                conn = self._conn = cls(self._parsed.hostname, self._parsed.port, timeout=self.timeout)
            try:
                conn.request("POST", self._parsed.path or "/v1/logs", body=body, headers=self.headers)
                response = conn.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                self._conn = None
                if attempt:
                    raise
                continue  # a kept-alive connection the server closed: retry once
            if response.status >= 300:
                raise RuntimeError(f"collector answered {response.status} {response.reason}")
            return response.getheader(names.HEADER_COLLECTOR_ID)
        return None

    @staticmethod
    def _post_plain(conn: PlainConnection, body: bytes) -> str | None:
        for attempt in (0, 1):
            reused = conn.sock is not None
            try:
                status, reason, headers = conn.post(body)
            except (OSError, http.client.HTTPException):
                conn.close()
                if attempt or not reused:
                    raise
                continue  # a kept-alive connection the server closed: retry once (a resend is harmless)
            if status >= 300:
                raise RuntimeError(f"collector answered {status} {reason}")
            return headers.get(names.HEADER_COLLECTOR_ID)
        return None
