#!/usr/bin/env python3
"""A webhook receiver for Alertmanager: appends every notification it is
sent, one JSON object per line, to FILE.

    receiver.py PORT FILE
"""
import http.server
import json
import sys
import time

port, path = int(sys.argv[1]), sys.argv[2]


class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with open(path, "a") as out:
            out.write(json.dumps({"received": time.time(), "notification": json.loads(body or b"{}")}) + "\n")
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


http.server.HTTPServer(("127.0.0.1", port), Receiver).serve_forever()
