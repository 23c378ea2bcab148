"""A read of a struct field at offset 0x18 through a NULL pointer in C (SIGSEGV at 0x18), called through ctypes
from the main thread."""
import sys

import crashcommon

lib = crashcommon.load_libcrash()


def read_config_count():
    return lib.sum_counts(None)  # CRASH-LINE


def main():
    crashcommon.handshake()
    crashcommon.busy_python_work(0.5)
    read_config_count()


main()
sys.exit("the NULL field read did not crash")
