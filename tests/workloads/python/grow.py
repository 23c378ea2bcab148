"""A Python workload whose memory grows by known amounts in known functions.

Each round, `numpy_grow` fills a new 12 MiB numpy array (numpy asks the kernel for 2 MiB huge pages for arrays
of 4 MiB and more) and `bytes_grow` a new 4 MiB bytearray (4 KiB pages), then both are freed. glibc is told to
serve every allocation of 128 KiB or more with a mapping of its own (mallopt M_MMAP_THRESHOLD, which also turns
off its adaptive threshold), so each round's arrays are memory the process had not touched: 3 bytes grown in
`numpy_grow` for every byte in `bytes_grow`, by construction. Without numpy, `bytes_grow` alone.

The main thread writes its running totals to the JSON file named on the command line every 0.25 s:
{"writes": K, "numpy_grow.bytes": N, "bytes_grow.bytes": N, "rounds": N}.
Usage: python3 grow.py OUT.json [ROUNDS_PER_SECOND]   (default: as fast as it can)
"""
import ctypes
import json
import os
import sys
import time

try:
    import numpy
except ImportError:
    numpy = None

OUT = sys.argv[1]
PAUSE = 1.0 / float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
M_MMAP_THRESHOLD = -3
NUMPY_BYTES = 12 << 20
BYTEARRAY_BYTES = 4 << 20
TOTALS = {"writes": 0, "numpy_grow.bytes": 0, "bytes_grow.bytes": 0, "rounds": 0}

if ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, 128 << 10) != 1:
    sys.exit("mallopt(M_MMAP_THRESHOLD) failed")


def numpy_grow():
    array = numpy.ones(NUMPY_BYTES // 8)
    TOTALS["numpy_grow.bytes"] += array.nbytes


def bytes_grow():
    # bytearray(n) allocates n + 1 bytes and zeroes them: every page is touched.
    data = bytearray(BYTEARRAY_BYTES)
    TOTALS["bytes_grow.bytes"] += len(data)


def write_totals():
    TOTALS["writes"] += 1
    with open(OUT + ".tmp", "w") as out:
        json.dump(TOTALS, out)
    os.replace(OUT + ".tmp", OUT)


next_write = 0.0
while True:
    if numpy is not None:
        numpy_grow()
    bytes_grow()
    TOTALS["rounds"] += 1
    now = time.monotonic()
    if now >= next_write:
        write_totals()
        next_write = now + 0.25
    if PAUSE:
        time.sleep(PAUSE)
