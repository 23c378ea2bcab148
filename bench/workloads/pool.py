"""Many processes or many threads, for the bench's scaling curves (section 9).

    python3 pool.py processes N SECONDS   a master and N forked workers, as a gunicorn/uvicorn worker pool
    python3 pool.py threads N SECONDS     one process with N threads
    python3 pool.py churn RATE SECONDS    a master starting RATE short-lived workers a second, each living ~1 s

Every worker (process or thread) does the same mix as a service's handler: a pure-Python loop, a JSON round trip and
a numpy sort (which releases the GIL). The master prints "ready" once all workers run, and everything exits after
SECONDS (or on SIGTERM). Workers are forked after the imports, so they share the master's libraries as a pool does.
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy

MODE, COUNT, SECONDS = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
ARRAY = numpy.random.default_rng(5).random(20_000)


def python_part():
    total = 0
    for i in range(2_000):
        total += i * i
    return total


def json_part():
    return json.loads(json.dumps({"values": list(range(200))}))


def numpy_part():
    data = ARRAY.copy()
    data.sort()


def handle_forever(until):
    while time.monotonic() < until:
        python_part()
        json_part()
        numpy_part()


def main():
    until = time.monotonic() + SECONDS
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    if MODE == "processes":
        children = []
        for _ in range(COUNT):
            pid = os.fork()
            if pid == 0:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                handle_forever(until)
                os._exit(0)
            children.append(pid)
        print("ready", flush=True)
        for pid in children:
            os.waitpid(pid, 0)
    elif MODE == "threads":
        # Every thread waits until all exist: started busy, the first ones would hold up the creation of the rest
        # (each start needs the GIL) for longer than the run.
        go = threading.Event()

        def worker():
            go.wait()
            handle_forever(until)

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(COUNT)]
        for thread in threads:
            thread.start()
        go.set()
        print("ready", flush=True)
        for thread in threads:
            thread.join()
    elif MODE == "churn":
        print("ready", flush=True)
        running = []
        worker = f"import sys; sys.argv = ['pool.py', 'worker', '0', '1']; exec(open({__file__!r}).read())"
        while time.monotonic() < until:
            running.append(subprocess.Popen([sys.executable, "-c", worker]))
            running = [child for child in running if child.poll() is None]
            time.sleep(1.0 / COUNT)
        for child in running:
            child.wait()
    elif MODE == "worker":
        handle_forever(until)
    else:
        sys.exit(f"unknown mode {MODE}")


if __name__ == "__main__":
    main()
