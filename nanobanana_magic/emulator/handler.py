"""HTTP plumbing: read a request, ask the service, put the answer on the wire.

Faults that spoil an answer in transit (resets, truncation, delays, dribbles, endless
or huge bodies) live here because they are about bytes and sockets, not about the API.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

from .faults import PHASES
from .records import Headers, RequestRecord
from .service import Reply, json_reply, route_of

if TYPE_CHECKING:
    from .faults import Fault
    from .service import Service

MAX_BODY_BYTES = 1024 * 1024
CHUNK = 64 * 1024
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class EmulatorHTTPServer(ThreadingHTTPServer):
    """Threaded server that can also drop its open keep-alive connections on stop."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], service: Service, verbose: bool = False) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.service = service
        self.verbose = verbose
        self.stopping = threading.Event()
        self._connections_lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        super().__init__(address, EmulatorHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, which can stall without DNS.
        TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def process_request(self, request, client_address) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Cut every open connection, so pooled clients see the server is gone."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request, client_address) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)) or self.stopping.is_set():
            return  # clients hanging up mid-answer is business as usual here
        super().handle_error(request, client_address)


class EmulatorHandler(BaseHTTPRequestHandler):
    """One connection; HTTP/1.1 keep-alive, every answer carries a Content-Length."""

    protocol_version = "HTTP/1.1"
    server_version = "NanoBananaEmulator/1.0"
    timeout = 60
    # Small header and body writes would otherwise meet the client's delayed ACK (~40 ms each).
    disable_nagle_algorithm = True
    server: EmulatorHTTPServer

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def log_message(self, format: str, *args) -> None:
        if self.server.verbose:
            sys.stderr.write(f"[nanobanana-emulator] {self.address_string()} {format % args}\n")

    # --- request ----------------------------------------------------------------------

    def _serve(self) -> None:
        service = self.server.service
        url = urlsplit(self.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        headers = Headers(self.headers.items())
        body = self._read_body()
        phase, _ = route_of(self.command, url.path)
        # A request refused by the rate limit never reaches the service, so it uses up no fault.
        refusal = service.admit(phase)
        fault = service.faults.take(phase) if phase in PHASES and refusal is None else None
        record = RequestRecord(self.command, url.path, query, headers, phase, time.time(), body or b"", fault)
        service.log.add(record)
        if body is None:
            self.close_connection = True
            reply = json_reply({"code": 413, "msg": "request body too large"}, status=413)
            fault = None
        else:
            reply, fault = (refusal, None) if refusal else self._answer(url.path, query, headers, body, fault)
        record.status, record.code, record.limited_by = reply.status, reply.code, reply.limited_by
        self._deliver(reply, fault)

    def _answer(
        self, path: str, query: dict[str, str], headers: Headers, body: bytes, fault: Fault | None
    ) -> tuple[Reply, Fault | None]:
        """The service's (or the fault's) answer, and the fault still to apply on delivery."""
        service = self.server.service
        try:
            if fault and fault.replaces_answer:
                return service.fault_reply(fault, path), fault
            return service.handle(self.command, path, query, headers, body, fault), fault
        except Exception:
            traceback.print_exc()
            return json_reply({"code": 500, "msg": "emulator internal error"}, status=500), None

    def _read_body(self) -> bytes | None:
        """The request body; None when it is too large to read."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked()
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return None
        if length > MAX_BODY_BYTES or length < 0:
            return None
        return self.rfile.read(length) if length else b""

    def _read_chunked(self) -> bytes | None:
        parts, total = [], 0
        while True:
            try:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            except ValueError:
                return None
            if size == 0:
                while self.rfile.readline().strip():
                    pass  # trailers
                return b"".join(parts)
            total += size
            if total > MAX_BODY_BYTES:
                return None
            parts.append(self.rfile.read(size))
            self.rfile.readline()

    # --- answer -----------------------------------------------------------------------

    def _deliver(self, reply: Reply, fault: Fault | None) -> None:
        kind = fault.kind if fault else None
        if kind == "delay":
            self._pause(fault["seconds"])
        if kind == "endless":
            self._send_endless(reply, fault["limit_bytes"])
        elif kind == "huge_json":
            self._send_padded_json(reply, fault["megabytes"])
        elif kind == "reset":
            self.wfile.write(self._head(reply) + reply.body[: len(reply.body) // 2])
            self._pause(0.05)  # let the head and half a body reach the client first
            self._abort()
        elif kind == "truncate":
            self.wfile.write(self._head(reply) + reply.body[: len(reply.body) // 2])
            self.close_connection = True
        elif kind == "slow":
            self._send_slowly(reply, fault["seconds"])
        else:
            # One write for head and body: no small second packet for delayed ACKs to hold up.
            self.wfile.write(self._head(reply) + reply.body)

    def _head(self, reply: Reply, length: int | None = None, endless: bool = False) -> bytes:
        """Status line and headers; Content-Length always, unless the body never ends."""
        self.log_request(reply.status)
        phrase = self.responses.get(reply.status, ("",))[0]
        lines = [
            f"{self.protocol_version} {reply.status} {phrase}",
            f"Server: {self.version_string()}",
            f"Date: {self.date_time_string()}",
            f"Content-Type: {reply.content_type}",
        ]
        if not endless:
            lines.append(f"Content-Length: {len(reply.body) if length is None else length}")
        lines += [f"{name}: {value}" for name, value in reply.headers.items()]
        if endless or self.close_connection:
            lines.append("Connection: close")
            self.close_connection = True
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _send_slowly(self, reply: Reply, seconds: float) -> None:
        self.wfile.write(self._head(reply))
        pieces = 20
        step = max(1, -(-len(reply.body) // pieces))
        for start in range(0, len(reply.body), step):
            self.wfile.write(reply.body[start : start + step])
            if self._pause(seconds / pieces):
                return

    def _send_endless(self, reply: Reply, limit: int) -> None:
        """An image that never ends: stop at ``limit`` bytes, a hang-up, or shutdown."""
        self.wfile.write(self._head(reply, endless=True) + PNG_SIGNATURE)
        block, sent = bytes(CHUNK), len(PNG_SIGNATURE)
        while sent < limit and not self.server.stopping.is_set():
            self.wfile.write(block[: min(CHUNK, limit - sent)])
            sent += CHUNK

    def _send_padded_json(self, reply: Reply, megabytes: float) -> None:
        """Valid JSON, but padded with a huge string field to ``megabytes``."""
        payload = json.loads(reply.body)
        payload["padding"] = ""
        head, _, tail = json.dumps(payload).rpartition('""')
        pad = int(megabytes * 1024 * 1024)
        prefix, suffix = (head + '"').encode(), ('"' + tail).encode()
        self.wfile.write(self._head(reply, length=len(prefix) + pad + len(suffix)) + prefix)
        block = b"x" * CHUNK
        for start in range(0, pad, CHUNK):
            self.wfile.write(block[: min(CHUNK, pad - start)])
        self.wfile.write(suffix)

    def _pause(self, seconds: float) -> bool:
        """Sleep, but wake at shutdown; True when the server is stopping."""
        return self.server.stopping.wait(max(0.0, seconds))

    def _abort(self) -> None:
        """Close with SO_LINGER 0 so the kernel sends a TCP RST instead of a FIN."""
        self.close_connection = True
        connection = self.connection
        try:
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        # The socket only really closes once the buffered reader lets go of it too.
        self.rfile.close()
        connection.close()
