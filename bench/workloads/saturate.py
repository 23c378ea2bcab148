"""A closed-loop load for the demo app: each connection sends its next request as soon as the previous one is
answered, alternating /earthquakes and /weather, for a fixed time; prints the requests per second served.

The app's own loadgen.py sends at a fixed rate (an open loop, what the demo needs); to see a profiler slow the app
down, the app must be the bottleneck, so here the load is as fast as the app.

Usage: python3 saturate.py URL SECONDS CONNECTIONS
"""
import http.client
import sys
import threading
import time
from urllib.parse import urlsplit

URL = urlsplit(sys.argv[1])
SECONDS = float(sys.argv[2])
CONNECTIONS = int(sys.argv[3])
ENDPOINTS = ["/earthquakes", "/weather"]
done = [0] * CONNECTIONS
errors = [0] * CONNECTIONS


def connection(index, deadline):
    client = http.client.HTTPConnection(URL.hostname, URL.port, timeout=30)
    sent = index
    while time.monotonic() < deadline:
        try:
            client.request("GET", ENDPOINTS[sent % len(ENDPOINTS)])
            response = client.getresponse()
            response.read()
            if response.status == 200:
                done[index] += 1
            else:
                errors[index] += 1
        except (OSError, http.client.HTTPException):
            client.close()
            client = http.client.HTTPConnection(URL.hostname, URL.port, timeout=30)
            errors[index] += 1
        sent += 1
    client.close()


start = time.monotonic()
threads = [threading.Thread(target=connection, args=(i, start + SECONDS)) for i in range(CONNECTIONS)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
elapsed = time.monotonic() - start
print(f"{sum(done) / elapsed:.3f} requests/s, {sum(errors)} errors", flush=True)
sys.exit(0 if sum(done) else 1)
