"""abort() in C, called through ctypes from the main thread."""
import sys

import crashcommon

lib = crashcommon.load_libcrash()


def give_up():
    lib.call_abort()  # CRASH-LINE


def main():
    crashcommon.handshake()
    crashcommon.busy_python_work(0.5)
    give_up()


main()
sys.exit("abort() returned")
