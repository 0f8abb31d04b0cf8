"""Analysts' queries while the sink owns an embedded chDB store (chDB locks its directory).

The sink serves ``POST /query`` (SQL in the body, JSON ``{"columns", "rows"}`` back) on
127.0.0.1; `smartport sql` uses it when it cannot open the store itself.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from streams.analytics.store import Result

DEFAULT_QUERY_PORT = 8124
_lock = threading.Lock()  # chDB connections are not for concurrent use


def serve(query: Callable[[str], Result], port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            sql = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
            try:
                with _lock:
                    columns, rows = query(sql)
                status, body = 200, {"columns": columns, "rows": rows}
            except Exception as exc:  # the analyst's SQL error goes back to the analyst
                status, body = 400, {"error": str(exc)}
            payload = json.dumps(body, default=str).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def remote_query(sql: str, port: int) -> Result:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/query", data=sql.encode(),
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            body = json.load(response)
    except urllib.error.HTTPError as exc:
        body = json.load(exc)
        raise ValueError(body.get("error", str(exc))) from None
    return body["columns"], [tuple(row) for row in body["rows"]]
