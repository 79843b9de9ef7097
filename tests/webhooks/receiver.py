"""A webhook receiver for LexiFlow's tests: it checks every delivery's signature with the
`standardwebhooks` package from PyPI (an implementation we did not write).

Usage: receiver.py [--fail N] [--redirect URL]
  Prints {"port": P} once listening on 127.0.0.1, then reads the signing secret (whsec_...)
  as one line on stdin. Each request is reported as one JSON line on stdout:
  {"path", "id", "timestamp", "signature", "verified", "error", "body", "status"}.
  --fail N answers the first N requests with 500; --redirect URL answers every request with a
  302 to URL.
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook

args = sys.argv[1:]
fail = int(args[args.index("--fail") + 1]) if "--fail" in args else 0
redirect = args[args.index("--redirect") + 1] if "--redirect" in args else None
secret = {"value": None}
ready = threading.Event()
lock = threading.Lock()
seen = {"n": 0}


def out(obj):
    with lock:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        ready.wait(10)
        headers = {k.lower(): v for k, v in self.headers.items()}
        verified, error = False, None
        try:
            Webhook(secret["value"]).verify(body, headers)
            verified = True
        except Exception as e:  # noqa: BLE001 - reported to the test
            error = f"{type(e).__name__}: {e}"
        with lock:
            seen["n"] += 1
            n = seen["n"]
        if redirect:
            status = 302
        elif n <= fail:
            status = 500
        else:
            status = 200
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        out({
            "path": self.path,
            "id": headers.get("webhook-id"),
            "timestamp": headers.get("webhook-timestamp"),
            "signature": headers.get("webhook-signature"),
            "verified": verified,
            "error": error,
            "body": parsed,
            "status": status,
        })
        self.send_response(status)
        if redirect:
            self.send_header("location", redirect)
        self.send_header("content-type", "text/plain")
        self.end_headers()
        self.wfile.write(b"thanks" if status == 200 else b"not now")


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
out({"port": server.server_address[1]})


def read_secret():
    line = sys.stdin.readline().strip()
    secret["value"] = line
    ready.set()


threading.Thread(target=read_secret, daemon=True).start()
server.serve_forever()
