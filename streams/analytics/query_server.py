"""Analysts' queries while the sink owns an embedded chDB store (chDB locks its directory).

The sink serves ``POST /query`` (SQL in the body, JSON ``{"columns", "rows"}`` back) on
127.0.0.1; `smartport sql` uses it when it cannot open the store itself. Loopback admits every
local user and every browser's cross-site POST, so a request must carry the token from a file
only the sink's user can read (``Authorization: Bearer``), name this server in ``Host`` (no DNS
rebinding), and stay under a size bound; the SQL then runs in a read-only, bounded session
(``Store.read``): no writes, no DDL, no table functions that reach files or the network.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import threading
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

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
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token


def serve(read: Callable[[str], Result], port: int, token_file: Path) -> ThreadingHTTPServer:
    token = ensure_token(token_file).encode()
    hosts = {f"127.0.0.1:{port}", f"localhost:{port}"}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            status, body = self._answer()
            payload = json.dumps(body, default=str).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _answer(self) -> tuple[int, dict[str, Any]]:
            if self.headers.get("Host") not in hosts:
                return 421, {"error": f"Host must be one of {sorted(hosts)}"}
            offered = self.headers.get("Authorization", "").removeprefix("Bearer ").encode()
            if not hmac.compare_digest(offered, token):
                return 401, {"error": f"no valid token: send `Authorization: Bearer` with the "
                                      f"token in {token_file}"}
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                return 411, {"error": "Content-Length is required"}
            if not 0 < length <= MAX_SQL_BYTES:
                return 413, {"error": f"the SQL must be 1 to {MAX_SQL_BYTES} bytes"}
            try:
                sql = self.rfile.read(length).decode()
            except UnicodeDecodeError:
                return 400, {"error": "the SQL is not UTF-8"}
            try:
                columns, rows = read(sql)  # the store runs one query at a time
            except Exception as exc:  # the analyst's SQL error goes back to the analyst
                return 400, {"error": str(exc)}
            return 200, {"columns": columns, "rows": rows}

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


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
