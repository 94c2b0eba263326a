# Monotonic milliseconds that behave the same on MicroPython (ticks_ms wraps, so
# always compare through diff_ms) and CPython.
import time

try:
    _ticks_ms = time.ticks_ms
    _ticks_diff = time.ticks_diff

    def now_ms():
        return _ticks_ms()

    def diff_ms(later, earlier):
        return _ticks_diff(later, earlier)
except AttributeError:
    _monotonic = time.monotonic

    def now_ms():
        return int(_monotonic() * 1000)

    def diff_ms(later, earlier):
        return later - earlier


def since_ms(earlier):
    return diff_ms(now_ms(), earlier)
