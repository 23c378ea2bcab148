"""A small Flask app for the endpoint-label tests, served by Werkzeug's threaded server (a thread per request):
three routes of different costs, one of them a class-based view, a `before_request` hook and a background thread that
burn CPU outside any handler, and each handler's own CPU time written out as the truth.

    python flask_app.py PORT TOTALS.json
"""

from __future__ import annotations

import hashlib
import sys
import threading
import time

from flask import Flask, jsonify
from flask.views import MethodView

import handler_timer

port, totals = int(sys.argv[1]), sys.argv[2]
app = Flask(__name__)


def fib(n: int) -> int:
    return n if n < 2 else fib(n - 1) + fib(n - 2)


@app.before_request
def authenticate() -> None:
    # Work done for every request but outside the handler: no endpoint.
    digest = b"token"
    for _ in range(2000):
        digest = hashlib.sha256(digest).digest()


@app.get("/fib")
@handler_timer.timed
def fibonacci():
    return jsonify(value=fib(25))


@app.get("/primes")
@handler_timer.timed
def primes():
    found = [n for n in range(2, 15000) if all(n % d for d in range(2, int(n**0.5) + 1))]
    return jsonify(count=len(found))


class ReportView(MethodView):
    @handler_timer.timed
    def get(self):
        rows = sorted((i * 7919) % 10007 for i in range(60000))
        return jsonify(median=rows[len(rows) // 2])


app.add_url_rule("/report", view_func=ReportView.as_view("report"))


def housekeeping() -> None:
    """A background job, as a real service has: CPU outside any request."""
    while True:
        total = sum(i * i for i in range(100000))
        time.sleep(0.05 if total else 0.1)


threading.Thread(target=housekeeping, name="housekeeping", daemon=True).start()
handler_timer.write_totals_every(totals)
app.run(host="127.0.0.1", port=port, threaded=True)
