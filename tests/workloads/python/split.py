"""A Python workload whose CPU split is measured by the workload itself.

The main thread loops forever over three functions, each called through the same chain
`<module> -> main -> dispatch -> <function>`:

- `py_hot`: a pure-Python loop (its hottest line is marked HOT-LINE for the line-number test);
- `lxml_parse`: `lxml.etree.fromstring` of a generated XML document (time in lxml's etree and libxml2);
- `numpy_compute`: sorting a copy of a large array (time in numpy's _multiarray_umath, in the calling thread).

`dispatch` measures the thread's CPU time (time.thread_time_ns) spent in each call and `main` writes the running
totals to the JSON file named on the command line every 0.25 s and on SIGTERM, so a test can compare a profiler's
shares with the truth over the same stretch of time: {"thread_cpu_ns": N, "functions": {name: ns}, "writes": K}.

Usage: python3 split.py OUT.json
"""
import json
import os
import signal
import sys
import time

import numpy
from lxml import etree

OUT = sys.argv[1]

# Sized so that each call takes a few milliseconds (the timing calls around it cost microseconds) and the three
# shares are far apart (roughly 45 / 30 / 25 % on this machine's interpreters).
HOT_ITERATIONS = 50_000
QUAKES = 1300
ARRAY = numpy.random.default_rng(7).random(50_000)


def make_document(quakes):
    events = "".join(
        f'<event id="q{i}"><origin><time>2024-01-01T00:00:{i % 60:02d}Z</time>'
        f"<latitude>{(i * 7) % 180 - 90}.5</latitude><longitude>{(i * 13) % 360 - 180}.25</longitude>"
        f'<depth unit="km">{i % 700}</depth></origin><magnitude type="Mw">{(i % 90) / 10}</magnitude>'
        f"<description>Synthetic event number {i} near a made-up place</description></event>"
        for i in range(quakes)
    )
    return f'<?xml version="1.0" encoding="UTF-8"?><quakeml><eventParameters>{events}</eventParameters></quakeml>'.encode()


DOCUMENT = make_document(QUAKES)


def py_hot():
    total = 0
    for i in range(HOT_ITERATIONS):
        total += (i * i + (i ^ 5) * 3 - (i >> 2)) % 7  # HOT-LINE
    return total


def lxml_parse():
    root = etree.fromstring(DOCUMENT)
    events = len(root[0])
    # Freed here, while this function is still running, so the truth and the profile both count it here.
    del root
    return events


def numpy_compute():
    data = ARRAY.copy()
    data.sort(kind="quicksort")
    return float(data[0])


FUNCTIONS = {"py_hot": py_hot, "lxml_parse": lxml_parse, "numpy_compute": numpy_compute}
SPENT = {name: 0 for name in FUNCTIONS}


def dispatch(name):
    function = FUNCTIONS[name]
    start = time.thread_time_ns()
    function()  # DISPATCH-CALL
    SPENT[name] += time.thread_time_ns() - start


def write_totals(writes):
    totals = {"thread_cpu_ns": time.thread_time_ns(), "functions": dict(SPENT), "writes": writes}
    temporary = OUT + ".tmp"
    with open(temporary, "w") as out:
        json.dump(totals, out)
    os.replace(temporary, OUT)


def main():
    writes = 0

    def on_sigterm(_signum, _frame):
        write_totals(writes + 1)
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_sigterm)
    next_write = time.monotonic()
    while True:
        for name in FUNCTIONS:
            dispatch(name)  # MAIN-CALL
        if time.monotonic() >= next_write:
            writes += 1
            write_totals(writes)
            next_write += 0.25


main()  # MODULE-CALL
