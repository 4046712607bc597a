"""A Kinesis endpoint that throttles: a proxy in front of kinesalite, which never does.

Forwards every request unchanged, except PutRecords and PutRecord: entries beyond
``records_per_second`` in the current second are answered with
``ProvisionedThroughputExceededException``, as a shard over its budget answers, and only the
rest are forwarded. Bytes in, bytes out: the client sees a Kinesis answer from an HTTP server.

``faults`` makes the first calls of an operation fail: ``{"CreateStream": ["500", "reset"]}``
answers the first CreateStream with an HTTP 500 ``InternalFailure`` (not forwarded) and forwards
the second, then closes the connection without an answer (done, but the client never hears it);
``"delay:3"`` forwards the call at once and answers 3 s later.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

THROTTLED = "ProvisionedThroughputExceededException"


class _Budget:
    def __init__(self, per_second: int) -> None:
        self.per_second = per_second
        self._second = 0
        self._used = 0
        self._lock = threading.Lock()
        self.throttled = 0

    def take(self, count: int) -> int:
        """How many of ``count`` entries fit in this second."""
        with self._lock:
            second = int(time.monotonic())
            if second != self._second:
                self._second, self._used = second, 0
            granted = max(0, min(count, self.per_second - self._used))
            self._used += granted
            self.throttled += count - granted
            return granted


@contextmanager
def throttling_proxy(
    upstream: str, records_per_second: int, faults: dict[str, list[str]] | None = None
) -> Iterator[Any]:
    """Serve on 127.0.0.1 (a free port); yield an object with ``url`` and ``throttled``."""
    budget = _Budget(records_per_second)
    pending_faults = {target: list(kinds) for target, kinds in (faults or {}).items()}
    faults_lock = threading.Lock()

    def next_fault(operation: str) -> str | None:
        with faults_lock:
            kinds = pending_faults.get(operation)
            return kinds.pop(0) if kinds else None

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802 (the http.server name)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            target = self.headers.get("X-Amz-Target", "")
            fault = next_fault(target.rsplit(".", 1)[-1])
            if fault == "500":
                failure = {"__type": "InternalFailure", "message": "injected"}
                self._reply(500, json.dumps(failure).encode(), "application/x-amz-json-1.1")
            elif fault is not None and fault.startswith("delay:"):
                status, answer, content_type = self._forward(body)  # written now, told later
                time.sleep(float(fault.removeprefix("delay:")))
                self._reply(status, answer, content_type)
            elif fault == "reset":
                self._forward(body)
                self.close_connection = True
                self.connection.shutdown(2)  # socket.SHUT_RDWR: no answer reaches the client
            elif target.endswith(".PutRecords"):
                self._put_records(body)
            else:
                self._reply(*self._forward(body))

        def _forward(self, body: bytes) -> tuple[int, bytes, str]:
            headers = {k: v for k, v in self.headers.items() if k.lower() != "content-length"}
            request = urllib.request.Request(upstream, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    return response.status, response.read(), response.headers["Content-Type"]
            except urllib.error.HTTPError as error:
                return error.code, error.read(), error.headers["Content-Type"]

        def _put_records(self, body: bytes) -> None:
            request = json.loads(body)
            entries = request["Records"]
            granted = budget.take(len(entries))
            results: list[dict[str, Any]] = []
            if granted:
                forwarded = json.dumps({**request, "Records": entries[:granted]}).encode()
                status, answer, content_type = self._forward(forwarded)
                if status != 200:
                    self._reply(status, answer, content_type)
                    return
                results = json.loads(answer)["Records"]
            refused = {"ErrorCode": THROTTLED, "ErrorMessage": "Rate exceeded for shard"}
            results += [dict(refused) for _ in entries[granted:]]
            failed = sum(1 for r in results if "ErrorCode" in r)
            answer = json.dumps({"FailedRecordCount": failed, "Records": results}).encode()
            self._reply(200, answer, "application/x-amz-json-1.1")

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type or "application/x-amz-json-1.1")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    class Proxy:
        url = f"http://127.0.0.1:{server.server_address[1]}"

        @property
        def throttled(self) -> int:
            return budget.throttled

    try:
        yield Proxy()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
