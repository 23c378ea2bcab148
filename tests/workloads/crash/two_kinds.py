"""Crashes in one of two C functions, chosen by the argument after the usual two: `segv`, a NULL store in
crash_here ← do_crash called from `null_deref`; `fpe`, an integer division by zero in divide called from
`zero_divide`. Run many times side by side by the grouping test: every run of one kind is the same crash."""
import sys

import crashcommon

lib = crashcommon.load_libcrash()


def null_deref():
    lib.do_crash(None)


def zero_divide():
    return lib.divide(1, 0)


def main():
    crash = {"segv": null_deref, "fpe": zero_divide}[sys.argv[3]]
    crashcommon.handshake()
    crash()


main()
sys.exit("the crash did not happen")
