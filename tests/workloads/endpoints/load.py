"""A bounded, open-loop load generator on loopback, standard library only: `rate` GET requests per second in total,
cycling through `paths`, for `duration` seconds, from `concurrency` connections; prints one summary line.

    python load.py --url http://127.0.0.1:8000 --paths /fib,/primes --rate 20 --duration 15
"""

from __future__ import annotations

import argparse
import http.client
import sys
import threading
import time
from urllib.parse import urlsplit


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--paths", required=True, help="comma-separated paths, requested in turn")
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    url = urlsplit(args.url)
    paths = args.paths.split(",")
    start = time.monotonic()
    end = start + args.duration
    lock = threading.Lock()
    state = {"next": 0, "ok": 0, "errors": 0}

    def worker() -> None:
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        while True:
            with lock:
                slot = state["next"]
                state["next"] += 1
            due = start + slot / args.rate
            if due >= end:
                break
            time.sleep(max(0.0, due - time.monotonic()))
            try:
                connection.request("GET", paths[slot % len(paths)])
                response = connection.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
                ok = False
            with lock:
                state["ok" if ok else "errors"] += 1
        connection.close()

    threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(f"load: {state['ok']} requests, {state['errors']} errors in {time.monotonic() - start:.1f} s", flush=True)
    return 0 if state["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
