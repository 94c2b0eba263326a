from iotfw import clock


def test_a_task_that_keeps_up_stays_on_its_beat():
    # due at 10,000, ran 30 ms late: next on the beat, not 10 s after the late run
    assert clock.next_due(10030, 10000, 10000) == 20000


def test_after_a_stall_a_task_runs_once_then_a_period_later():
    # due at 10,000, ran at 45,000 (three beats missed): next a whole period later
    assert clock.next_due(45000, 10000, 10000) == 55000
    # exactly on the next beat counts as behind: it ran now, so now + period
    assert clock.next_due(20000, 10000, 10000) == 30000


def test_the_next_deadline_compares_after_the_ticks_wrap():
    # Near the wrap of MicroPython's ticks the deadline wraps too; compared through
    # diff_ms it is still ahead of now (on CPython there is no wrap to cross).
    now = clock.add_ms(0, -5)  # 5 ms before the wrap
    nxt = clock.next_due(now, now, 1000)
    assert clock.diff_ms(nxt, now) == 1000
