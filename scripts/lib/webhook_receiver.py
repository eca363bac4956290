#!/usr/bin/env python3
"""A local webhook receiver for the demos and benchmarks. Answers 204 to
every POST at once (HTTP/1.1 keep-alive) and takes each Idempotency-Key
once (a batch sent again is not counted or recorded twice).

    webhook_receiver.py PORT record OUT          # append each batch (the JSON array) as a line to OUT
    webhook_receiver.py PORT count EXPECT DONE   # count changes; when EXPECT arrived, write
                                                 # "<unix time> <requests> <batches> <bytes>" to DONE

Counting takes one change per `{"id":"` (change ids are strings; the row
ids of the benchmark's table are numbers), without parsing the JSON.
"""
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, MODE = int(sys.argv[1]), sys.argv[2]
lock = threading.Lock()
state = {"changes": 0, "requests": 0, "keys": set(), "bytes": 0, "done": False}


def take(body):
    if MODE == "record":
        with open(sys.argv[3], "ab") as out:
            out.write(body + b"\n")
        return
    # Schema lines (a table's shape) are not changes.
    state["changes"] += body.count(b'{"id":"') - body.count(b'"op":"schema"')
    if state["changes"] >= int(sys.argv[3]) and not state["done"]:
        state["done"] = True
        with open(sys.argv[4], "w") as out:
            out.write(f'{time.time()} {state["requests"]} {len(state["keys"])} {state["bytes"]}\n')


class Hook(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        key = self.headers.get("Idempotency-Key")
        with lock:
            state["requests"] += 1
            state["bytes"] += len(body)
            if key not in state["keys"]:
                state["keys"].add(key)
                take(body)
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", PORT), Hook).serve_forever()
