"""A bounded load generator for the monitor, on loopback, standard library only.

    python loadgen.py --url http://127.0.0.1:8000 --rate 20 --duration 15

Sends `rate` requests per second in total, alternating between /earthquakes and /weather, for `duration` seconds,
then prints one summary line (requests/s and latencies per endpoint) and exits. SIGTERM or Ctrl-C ends it early
with the same summary, so a caller can stop it when the profile it was feeding is done.
"""

from __future__ import annotations

import argparse
import http.client
import signal
import statistics
import sys
import threading
import time
from collections import defaultdict
from urllib.parse import urlsplit

ENDPOINTS = ["/earthquakes", "/weather"]


class Schedule:
    """Hands out request slots at a fixed rate, shared by the worker threads (an open-loop load: a slow response
    delays only the worker that waits for it)."""

    def __init__(self, rate: float, duration: float, stop: threading.Event) -> None:
        self.interval = 1.0 / rate
        self.start = time.monotonic()
        self.end = self.start + duration
        self.stop = stop
        self.next = 0
        self.lock = threading.Lock()

    def take(self) -> str | None:
        """Waits for the next slot and returns its endpoint; None once the time is up or stop is set."""
        with self.lock:
            slot = self.next
            self.next += 1
        due = self.start + slot * self.interval
        if due >= self.end or self.stop.wait(max(0.0, due - time.monotonic())):
            return None
        return ENDPOINTS[slot % len(ENDPOINTS)]


class Results:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.errors = 0

    def record(self, endpoint: str, seconds: float | None) -> None:
        with self.lock:
            if seconds is None:
                self.errors += 1
            else:
                self.latencies[endpoint].append(seconds)


def worker(host: str, port: int, schedule: Schedule, results: Results) -> None:
    connection = http.client.HTTPConnection(host, port, timeout=10)
    while (endpoint := schedule.take()) is not None:
        started = time.monotonic()
        try:
            connection.request("GET", endpoint)
            response = connection.getresponse()
            response.read()
            ok = response.status == 200
        except (OSError, http.client.HTTPException):
            # A fresh connection next time: the old one may be half-closed.
            connection.close()
            connection = http.client.HTTPConnection(host, port, timeout=10)
            ok = False
        results.record(endpoint, time.monotonic() - started if ok else None)
    connection.close()


def summary(results: Results, elapsed: float) -> str:
    done = sum(len(v) for v in results.latencies.values())
    parts = [f"loadgen: {done} requests in {elapsed:.1f} s = {done / elapsed:.1f} requests/s, {results.errors} errors"]
    for endpoint in ENDPOINTS:
        latencies = sorted(results.latencies.get(endpoint, []))
        if latencies:
            p50 = statistics.median(latencies) * 1000
            p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
            parts.append(f"{endpoint} {len(latencies)} (p50 {p50:.0f} ms, p99 {p99:.0f} ms)")
    return "; ".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the app's base URL")
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second, all endpoints together")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds to run")
    parser.add_argument("--concurrency", type=int, default=4, help="connections in flight at most")
    args = parser.parse_args()
    url = urlsplit(args.url)
    if url.scheme != "http" or not url.hostname or args.rate <= 0 or args.duration <= 0:
        parser.error("needs an http:// URL with a host, and a positive rate and duration")

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    schedule = Schedule(args.rate, args.duration, stop)
    results = Results()
    workers = [
        threading.Thread(target=worker, args=(url.hostname, url.port or 80, schedule, results), name=f"loadgen-{i}")
        for i in range(args.concurrency)
    ]
    for thread in workers:
        thread.start()
    # Joined with a timeout so the main thread keeps running signal handlers.
    while any(thread.is_alive() for thread in workers):
        for thread in workers:
            thread.join(timeout=0.2)
    print(summary(results, time.monotonic() - schedule.start), flush=True)
    return 0 if results.latencies else 1


if __name__ == "__main__":
    sys.exit(main())
