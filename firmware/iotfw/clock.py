# Monotonic milliseconds that behave the same on MicroPython (ticks_ms wraps, so
# always compare through diff_ms) and CPython.
import time

try:
    _ticks_ms = time.ticks_ms
    _ticks_diff = time.ticks_diff
    _ticks_add = time.ticks_add

    def now_ms():
        return _ticks_ms()

    def diff_ms(later, earlier):
        return _ticks_diff(later, earlier)

    def add_ms(t, delta):
        return _ticks_add(t, delta)
except AttributeError:
    _monotonic = time.monotonic

    def now_ms():
        return int(_monotonic() * 1000)

    def diff_ms(later, earlier):
        return later - earlier

    def add_ms(t, delta):
        return t + delta


def since_ms(earlier):
    return diff_ms(now_ms(), earlier)


def next_due(now, due, period):
    """When a task every ``period`` ms that was due at ``due`` and ran at ``now`` runs
    next: on the beat while it keeps up; a whole period after ``now`` once it fell behind
    (after a stall it runs once, not once per missed beat)."""
    nxt = add_ms(due, period)
    if diff_ms(now, nxt) >= 0:
        return add_ms(now, period)
    return nxt
