"""N busy threads whose sampling window the benchmark marks, for the agent-cost and sampling-rate figures.

Each worker thread sorts copies of a large numpy array in a loop: numpy releases the GIL while it sorts, so all N
threads stay runnable at once, as the threads of a C-extension-heavy service do. The loop runs in the Python function
`before_window` until the first SIGUSR1, in `in_window` until the second, then in `after_window`: samples whose
stack holds `in_window` were taken inside the window the benchmark timed with the process's CPU clock, whenever
the profiler started. The main thread only waits for signals.

Usage: python3 busy_threads.py THREADS SECONDS   (exits by itself after SECONDS)
"""
import signal
import sys
import threading
import time

import numpy

THREADS = int(sys.argv[1])
SECONDS = float(sys.argv[2])
ARRAY = numpy.random.default_rng(3).random(200_000)
phase = 0


def sort_once():
    data = ARRAY.copy()
    data.sort(kind="quicksort")


def before_window():
    while phase == 0:
        sort_once()


def in_window():
    while phase == 1:
        sort_once()


def after_window():
    while True:
        sort_once()


def work():
    before_window()
    in_window()
    after_window()


def next_phase(_signum, _frame):
    global phase
    phase += 1


signal.signal(signal.SIGUSR1, next_phase)
for i in range(THREADS):
    threading.Thread(target=work, name=f"busy-{i}", daemon=True).start()
deadline = time.monotonic() + SECONDS
while time.monotonic() < deadline:
    time.sleep(0.1)
