"""A multithreaded Python workload with a known GIL split.

- the main thread spins in pure Python (`main_spin`): it holds the GIL whenever it runs;
- thread `spinner` spins in pure Python too (`spin`): it holds the GIL whenever it runs;
- thread `hasher` hashes a 4 MiB buffer over and over (`hash_forever`): hashlib releases the GIL while it hashes
  data longer than 2047 bytes, so it burns CPU without the GIL almost all the time.

Threads name themselves (prctl PR_SET_NAME) so a profiler's thread names are known on every Python version.
Usage: python3 gil.py
"""
import ctypes
import hashlib
import threading

PR_SET_NAME = 15
LIBC = ctypes.CDLL(None, use_errno=True)
BIG = bytes(range(256)) * (4 * 4096)


def name_this_thread(name):
    LIBC.prctl(PR_SET_NAME, name.encode(), 0, 0, 0)


def spin_step(x):
    for i in range(10_000):
        x = (x * 31 + i) % 1_000_003
    return x


def spin():
    name_this_thread("spinner")
    x = 1
    while True:
        x = spin_step(x)


def hash_forever():
    name_this_thread("hasher")
    while True:
        hashlib.sha256(BIG).digest()


def main_spin():
    x = 2
    while True:
        x = spin_step(x)


def main():
    for target in (spin, hash_forever):
        threading.Thread(target=target, daemon=True).start()
    main_spin()


main()
