"""Garbage in a running Python's structures: code objects whose qualified name does not point to a string.

`Outer.forged` runs with its co_qualname replaced by an int whose digits are laid out as a compact ASCII string
would be (for CPython 3.11: the state word, then "FOR0GED0NAME" where the characters would be), so a profiler
that reads a name without checking its type reports a name no function has. `Outer.wild` runs with co_qualname
pointing to unmapped memory. Both pointers are put back before the functions' code objects could be used for a
traceback. Usage: forged_name.py SECONDS
"""
import ctypes
import sys
import time

assert sys.version_info[:2] == (3, 11), "the forged layout is CPython 3.11's"


class Outer:
    def forged(self, end):
        x = 0
        while time.monotonic() < end:
            x += 1
        return x

    def wild(self, end):
        x = 0
        while time.monotonic() < end:
            x += 1
        return x


def pointer_slot(code):
    """The offset in the code object of its co_qualname pointer, found by value (qualname differs from name)."""
    target = id(code.co_qualname)
    for offset in range(16, 256, 8):
        if ctypes.c_uint64.from_address(id(code) + offset).value == target:
            return offset
    raise SystemExit("co_qualname not found in the code object")


def int_with_digits(digits):
    return sum(d << (30 * i) for i, d in enumerate(digits))


def ascii_digit(text):
    # Four characters in one 30-bit digit: the last byte must stay below 0x40 ('0'..'?').
    value = int.from_bytes(text.encode(), "little")
    assert value < 1 << 30, text
    return value


# PyLongObject (3.11): refcnt, type, ob_size (the number of digits) at 16, 30-bit digits from 24. Read as a
# PyASCIIObject: length at 16 (12), state at 32 (digit 2: compact, ASCII, one byte per character), characters
# at 48 (digits 6, 7, 8).
FORGED = int_with_digits([1, 1, 0x64, 1, 1, 1, ascii_digit("FOR0"), ascii_digit("GED0"), ascii_digit("NAM0"), 1, 1, 1])


def run_with_qualname(method, pointer, seconds):
    code = method.__code__
    slot = ctypes.c_uint64.from_address(id(code) + pointer_slot(code))
    original = slot.value
    slot.value = pointer
    try:
        method(Outer(), time.monotonic() + seconds)
    finally:
        slot.value = original


seconds = float(sys.argv[1])
print("ready", flush=True)
while True:
    run_with_qualname(Outer.forged, id(FORGED), seconds / 4)
    run_with_qualname(Outer.wild, 0x10, seconds / 4)
