"""Analysts' queries while the sink owns an embedded chDB store (chDB locks its directory).

The sink serves ``POST /query`` (SQL in the body, JSON ``{"columns", "rows"}`` back) on
127.0.0.1; `smartport sql` uses it when it cannot open the store itself. Loopback admits every
local user and every browser's cross-site POST, so a request must carry the token from a file
only the sink's user can read (``Authorization: Bearer``), name this server in ``Host`` (no DNS
rebinding), and stay under a size bound; the SQL then runs in a read-only, bounded session
(``Store.read``): no writes, no DDL, no table functions that reach files or the network.
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets
import threading
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, parse_qs, urlsplit

from smartport.files import write_new
from streams.analytics.store import Result

DEFAULT_QUERY_PORT = 8124
MAX_SQL_BYTES = 64 * 1024


def ensure_token(path: Path) -> str:
    """The query token, created 0600 (never readable by others, not even for a moment)."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    write_new(path, (token + "\n").encode(), mode=0o600)
    return token


ReadRaw = Callable[[str, str], bytes]


def serve(read: Callable[[str], Result], read_raw: ReadRaw, port: int, token_file: Path
          ) -> ThreadingHTTPServer:
    """Serve ``POST /query`` (ours: JSON columns and rows) and the ClickHouse HTTP interface's
    ``POST /`` and ``GET /?query=`` (the SQL's FORMAT, else ``default_format``, else
    TabSeparated; the token as the password: Basic auth or ``X-ClickHouse-Key``), so that an
    analyst's ClickHouse tools (clickhouse-connect, curl) work unchanged."""
    token = ensure_token(token_file).encode()
    hosts = {f"127.0.0.1:{port}", f"localhost:{port}"}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path == "/ping":
                self._send(200, b"Ok.\n", "text/plain")
                return
            self._clickhouse(url, b"")

        def do_POST(self) -> None:
            url = urlsplit(self.path)
            refusal = self._refusal()
            if refusal is not None:
                self._send(refusal[0], refusal[1].encode(), "text/plain")
                return
            body = self._body()
            if isinstance(body, tuple):
                self._send(body[0], body[1].encode(), "text/plain")
            elif url.path == "/query":
                self._json(body)
            else:
                self._clickhouse(url, body)

        def _refusal(self) -> tuple[int, str] | None:
            if self.headers.get("Host") not in hosts:
                return 421, f"Host must be one of {sorted(hosts)}"
            if not any(hmac.compare_digest(offered, token) for offered in self._offered()):
                return 401, (f"no valid token: send the token in {token_file} as "
                             "`Authorization: Bearer`, the Basic password or X-ClickHouse-Key")
            return None

        def _offered(self) -> list[bytes]:
            authorization = self.headers.get("Authorization", "")
            offered = [self.headers.get("X-ClickHouse-Key", "").encode()]
            if authorization.startswith("Bearer "):
                offered.append(authorization.removeprefix("Bearer ").encode())
            elif authorization.startswith("Basic "):
                try:
                    decoded = base64.b64decode(authorization.removeprefix("Basic "))
                except ValueError:
                    decoded = b""
                offered.append(decoded.partition(b":")[2])
            return [value for value in offered if value]

        def _body(self) -> bytes | tuple[int, str]:
            try:
                length = int(self.headers.get("Content-Length", "0"))
            except ValueError:
                return 411, "Content-Length must be a number"
            if not 0 <= length <= MAX_SQL_BYTES:
                return 413, f"the SQL must be at most {MAX_SQL_BYTES} bytes"
            return self.rfile.read(length)

        def _json(self, body: bytes) -> None:
            status, answer = self._run_json(body)
            self._send(status, json.dumps(answer, default=str).encode(), "application/json")

        @staticmethod
        def _run_json(body: bytes) -> tuple[int, dict[str, Any]]:
            if not body:
                return 400, {"error": "no SQL in the body"}
            try:
                columns, rows = read(body.decode())  # the store runs one query at a time
            except UnicodeDecodeError:
                return 400, {"error": "the SQL is not UTF-8"}
            except Exception as exc:  # the analyst's SQL error goes back to the analyst
                return 400, {"error": str(exc)}
            return 200, {"columns": columns, "rows": rows}

        def _clickhouse(self, url: SplitResult, body: bytes) -> None:
            if self.command == "GET":
                refusal = self._refusal()
                if refusal is not None:
                    self._send(refusal[0], refusal[1].encode(), "text/plain")
                    return
            params = parse_qs(url.query)
            sql = "\n".join([*params.get("query", []), body.decode(errors="replace")]).strip()
            if not sql or len(sql.encode()) > MAX_SQL_BYTES:
                self._send(400, b"Code: 62. DB::Exception: Empty or too long query\n",
                           "text/plain")
                return
            output_format = params.get("default_format", ["TabSeparated"])[0]
            try:
                answer = read_raw(sql, output_format)
            except Exception as exc:
                self._send(500, f"{exc}\n".encode(), "text/plain",
                           {"X-ClickHouse-Exception-Code": _error_code(str(exc))})
                return
            self._send(200, answer, "application/octet-stream")

        def _send(self, status: int, payload: bytes, content_type: str,
                  headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _error_code(message: str) -> str:
    """ClickHouse's error code from its message ("Code: 164. DB::Exception: ..."), else 0."""
    head = message.partition("Code: ")[2].partition(".")[0]
    return head if head.isdigit() else "0"


def remote_query(sql: str, port: int, token_file: Path) -> Result:
    """Ask the sink's query server. Raises OSError when it does not answer, PermissionError
    without the token, ValueError when it refuses the SQL."""
    try:
        token = token_file.read_text().strip()
    except FileNotFoundError:
        raise PermissionError(f"no query token at {token_file}: the sink writes it when it "
                              "starts; run `smartport sql` as the sink's user") from None
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/query", data=sql.encode(), method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "text/plain"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            body = json.load(response)
    except urllib.error.HTTPError as exc:
        body = json.load(exc)
        if exc.code in (401, 421):
            raise PermissionError(body.get("error", str(exc))) from None
        raise ValueError(body.get("error", str(exc))) from None
    return body["columns"], [tuple(row) for row in body["rows"]]
