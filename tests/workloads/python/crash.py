"""A SIGSEGV in a Python thread, the same on every Python 3: ctypes.string_at(0) makes libc's strlen read address 0.

Run as `python3 crash.py DIR`: the thread `parser` writes DIR/ready ("PID TID") once it runs, waits for the test to
create DIR/go (the profiler is recording by then), then crashes in read_name (the line marked CRASH-LINE), called
by parse_record (PARSE-LINE) ← worker (WORKER-LINE). Nothing but the standard library: it runs in every test root.
The functions on the crashing stack are short: a crash report read after the process is gone has only the first
256 bytes of each one's line table (3.11's table of a function with a `with` block and a loop is longer).
"""
import ctypes
import os
import sys
import threading
import time


def read_name(address):
    return ctypes.string_at(address)  # CRASH-LINE


def parse_record(address):
    name = read_name(address)  # PARSE-LINE
    return name.decode()


def wait_for_go(directory):
    ready = os.path.join(directory, "ready")
    with open(ready + ".tmp", "w") as f:
        f.write("%d %d\n" % (os.getpid(), threading.get_native_id()))
    os.rename(ready + ".tmp", ready)
    give_up = time.monotonic() + 120
    while not os.path.exists(os.path.join(directory, "go")):
        if time.monotonic() > give_up:
            os._exit(3)
        time.sleep(0.01)


def worker(directory):
    wait_for_go(directory)
    parse_record(0)  # WORKER-LINE


thread = threading.Thread(target=worker, name="parser", args=(sys.argv[1],))
thread.start()
thread.join()
