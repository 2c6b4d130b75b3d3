"""`acr listen serve`: the test page over HTTP for raters in the room, saving each submission.

The standard library's ThreadingHTTPServer: a handful of raters on a local network is far below
what it handles, it adds no dependency, and every request is answered from a fixed table of the
test's files (index.html and audio/), so no path a client sends ever reaches the file system.
Not served: design.json (it names the settings) and responses/. `/` hands out rater slots in
turn (`index.html?slot=N`); POST /submit checks the answers against design.json and stores them
(responses.py), answering 4xx with a message for anything wrong and writing nothing then.
"""
from __future__ import annotations

import itertools
import json
import mimetypes
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from acr.commands.listen.design import Design, find_test
from acr.commands.listen.responses import (MAX_BYTES, check_response, load_responses,
                                           parse_json, store_response)
from acr.core import console
from acr.core.errors import UsageError
from acr.core.runs import Run

READ_TIMEOUT = 30  # seconds a client may take to send its request


class TestServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer that knows its test: the files it may serve and the next slot."""

    daemon_threads = True
    request_queue_size = 64  # connections waiting to be accepted (socketserver's default: 5,
    # so a room of raters submitting at once could have its connections retried a second later)

    def __init__(self, address: tuple[str, int], design: Design, run_dir: Path | None):
        self.design = design
        self.run_dir = run_dir
        folder = design.folder
        self.files = {"/index.html": folder / "index.html"}
        self.files.update({f"/audio/{p.name}": p for p in sorted((folder / "audio").iterdir())
                           if p.is_file()})
        start = len(load_responses(design)[0])
        self.slots = itertools.count(start)
        self.lock = threading.Lock()
        super().__init__(address, Handler)

    def next_slot(self) -> int:
        with self.lock:
            return next(self.slots) % self.design.slot_count


class Handler(BaseHTTPRequestHandler):
    server: TestServer
    timeout = READ_TIMEOUT
    server_version = "acr-listen"
    sys_version = ""

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        console.info(f"{self.address_string()} {format % args}")

    def _reply(self, status: int, body: bytes, content_type: str, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for key, value in headers.items():
            self.send_header(key.replace("_", "-"), value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _message(self, status: int, message: str, **extra) -> None:
        body = json.dumps({"message": message, **extra}).encode()
        self._reply(status, body, "application/json")

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = unquote(urlsplit(self.path).path)
        if path == "/":
            self._reply(302, b"", "text/plain", Location=f"/index.html?slot="
                                                          f"{self.server.next_slot()}")
            return
        file = self.server.files.get(path)
        if file is None:
            self._message(404, f"{path}: not part of this listening test")
            return
        data = file.read_bytes()
        kind = "text/html; charset=utf-8" if file.suffix == ".html" else \
            mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        self._reply(200, data, kind)

    do_HEAD = do_GET

    def do_POST(self) -> None:  # noqa: N802
        if unquote(urlsplit(self.path).path) != "/submit":
            self._message(404, "POST answers to /submit")
            return
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self._message(411, "a Content-Length header is required")
            return
        if int(length) > MAX_BYTES:
            self.close_connection = True
            self._message(413, f"{length} bytes: answers are never that large (limit "
                               f"{MAX_BYTES}); nothing saved")
            return
        data, error = parse_json(self.rfile.read(int(length)))
        if error:
            self._message(400, f"{error}; nothing saved")
            return
        problems = check_response(self.server.design, data)
        if problems:
            self._message(422, f"not saved: {problems[0]}" + (
                f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
                problems=problems)
            return
        stored = store_response(self.server.design, data, via="serve")
        if self.server.run_dir is not None and (self.server.run_dir / "events.jsonl").is_file():
            Run(self.server.run_dir).event("listen.submit", test=self.server.design.name,
                                           file=stored.path.name, new=stored.new)
        if stored.new:
            self._message(201, "Saved. Thank you!", file=stored.path.name)
        else:
            self._message(200, "These answers were already saved. Thank you!",
                          file=stored.path.name)

    def _not_allowed(self) -> None:
        self._message(405, f"{self.command} is not supported here")

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed


def make_server(run_dir: Path, name: str | None = None, host: str = "127.0.0.1",
                port: int = 8000) -> TestServer:
    """A server for the run's test (`name`, or its only one), bound but not yet serving."""
    design = find_test(Path(run_dir), name)
    try:
        return TestServer((host, port), design, Path(run_dir))
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise UsageError(f"--host {host} --port {port}: cannot listen there ({reason}); choose "
                         "another --port (0 picks a free one)")


def serve_test(server: TestServer) -> None:
    """Serve until Ctrl-C."""
    try:
        server.serve_forever()
    finally:
        server.server_close()
