"""A fixed amount of CPU-bound work, pure Python and C extensions (lxml, numpy), whose wall time the benchmark
compares with and without a profiler attached.

The work starts at SIGUSR1, so the profiler can attach first and its start-up is not part of what is timed. It
prints `ready` once it waits for the signal, then the wall time of the work in seconds, and exits.

Usage: python3 fixed_work.py ROUNDS
"""
import signal
import sys
import time

import numpy
from lxml import etree

ROUNDS = int(sys.argv[1])
ARRAY = numpy.random.default_rng(11).random(50_000)
DOCUMENT = (
    "<quakeml>"
    + "".join(
        f'<event id="q{i}"><magnitude>{(i % 90) / 10}</magnitude><depth>{i % 700}</depth>'
        f"<description>Synthetic event number {i}</description></event>"
        for i in range(1500)
    )
    + "</quakeml>"
).encode()


def python_loop():
    total = 0
    for i in range(40_000):
        total += (i * i + (i ^ 5) * 3 - (i >> 2)) % 7
    return total


def parse_xml():
    root = etree.fromstring(DOCUMENT)
    return sum(float(event[0].text) for event in root)


def sort_array():
    data = ARRAY.copy()
    data.sort(kind="quicksort")
    return float(data[0])


def work():
    for _ in range(ROUNDS):
        python_loop()
        parse_xml()
        sort_array()


signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
print("ready", flush=True)
signal.sigwait({signal.SIGUSR1})
start = time.perf_counter()
work()
print(f"{time.perf_counter() - start:.6f}", flush=True)
