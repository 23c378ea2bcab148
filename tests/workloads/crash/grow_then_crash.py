"""Memory and threads climbing before a crash: after the go-ahead the main thread keeps 2 MiB bytearrays in a
list, about 16 MiB a second for 5 s (80 MiB), and starts a sleeping thread every second; then a NULL field read in C
(SIGSEGV), as null_field.py."""
import sys
import threading
import time

import crashcommon

lib = crashcommon.load_libcrash()
kept = []


def grow_and_spawn(seconds):
    end = time.monotonic() + seconds
    next_thread = time.monotonic()
    while time.monotonic() < end:
        kept.append(bytearray(2 << 20))
        if time.monotonic() >= next_thread:
            threading.Thread(target=time.sleep, args=(600,), daemon=True).start()
            next_thread += 1.0
        time.sleep(0.125)


def main():
    crashcommon.handshake()
    grow_and_spawn(5.0)
    lib.sum_counts(None)  # CRASH-LINE


main()
sys.exit("the NULL field read did not crash")
