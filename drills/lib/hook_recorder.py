#!/usr/bin/env python3
"""A webhook receiver for the demos: appends each accepted batch (the JSON
array walpipe POSTs) as one line to OUT, skipping a batch whose
Idempotency-Key it already has, and answers 204.

    hook_recorder.py PORT OUT
"""
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, OUT = int(sys.argv[1]), sys.argv[2]
lock = threading.Lock()
seen = set()


class Hook(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        key = self.headers.get("Idempotency-Key")
        with lock:
            if key not in seen:
                seen.add(key)
                with open(OUT, "ab") as out:
                    out.write(body + b"\n")
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", PORT), Hook).serve_forever()
