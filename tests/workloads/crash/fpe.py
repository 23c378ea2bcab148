"""An integer division by zero in C (SIGFPE), called through ctypes from the main thread."""
import sys

import crashcommon

lib = crashcommon.load_libcrash()


def compute_ratio(total, count):
    return lib.divide(total, count)  # CRASH-LINE


def main():
    crashcommon.handshake()
    crashcommon.busy_python_work(0.5)
    compute_ratio(10, 0)


main()
sys.exit("the division by zero did not trap")
