"""A store into a shared mapping of a file truncated underneath it (SIGBUS), from C called through ctypes."""
import os
import sys

import crashcommon

lib = crashcommon.load_libcrash()


def read_truncated(path):
    return lib.touch_truncated(path.encode())  # CRASH-LINE


def main():
    crashcommon.handshake()
    crashcommon.busy_python_work(0.5)
    rc = read_truncated(os.path.join(crashcommon.work_dir(), "truncated.bin"))
    sys.exit(f"touch_truncated returned {rc} instead of crashing")


main()
