"""A NULL dereference in a C library that is loaded (ctypes.CDLL) only after the go-ahead, shortly before the
crash: no sample taken before the crash was in the library, so the profiler has had no reason to see it mapped.
(The caller does Python work first, so its own frame has been sampled before the crash.)"""
import sys

import crashcommon


def crash_now(lib):
    crashcommon.busy_python_work(0.5)
    lib.do_crash(None)  # CRASH-LINE


def main():
    crashcommon.handshake()
    crashcommon.busy_python_work(0.5)
    lib = crashcommon.load_libcrash()
    crash_now(lib)


main()
sys.exit("the NULL dereference did not crash")
