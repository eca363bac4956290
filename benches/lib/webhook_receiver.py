#!/usr/bin/env python3
"""A local webhook receiver for the throughput benchmark: answers 204 to
every POST at once (HTTP/1.1 keep-alive), counts the changes of each new
Idempotency-Key (one per `{"id":"`: change ids are strings, row ids in
this benchmark numbers), and writes the time the EXPECT-th
change arrived to DONE.

    webhook_receiver.py PORT EXPECT DONE
"""
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, EXPECT, DONE = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
lock = threading.Lock()
state = {"changes": 0, "requests": 0, "keys": set(), "bytes": 0}


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
                state["changes"] += body.count(b'{"id":"')
            if state["changes"] >= EXPECT and not state.get("done"):
                state["done"] = True
                with open(DONE, "w") as out:
                    out.write(f'{time.time()} {state["requests"]} {len(state["keys"])} {state["bytes"]}\n')
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", PORT), Hook).serve_forever()
