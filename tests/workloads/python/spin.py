"""A single-threaded pure-Python busy loop, for checks that need any Python process (e.g. an unsupported version).

Usage: python3 spin.py
"""


def spin_step(x):
    for i in range(10_000):
        x = (x * 31 + i) % 1_000_003
    return x


def spin_forever():
    x = 1
    while True:
        x = spin_step(x)


spin_forever()
