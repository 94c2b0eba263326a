from fwtest_helpers import raises
from iotfw.backoff import Backoff


def test_backoff_grows_and_is_capped():
    b = Backoff(base=1, cap=10, factor=2, jitter=0, rand=lambda: 0.5)
    assert [b.next_delay() for _ in range(6)] == [1, 2, 4, 8, 10, 10]
    b.reset()
    assert b.next_delay() == 1


def test_backoff_jitter_stays_in_range():
    b = Backoff(base=2, cap=60, jitter=0.5, rand=lambda: 1.0)
    assert b.next_delay() == 1.0  # 2 * (1 - 0.5)
    b = Backoff(base=2, cap=60, jitter=0.5, rand=lambda: 0.0)
    assert b.next_delay() == 2.0
    b = Backoff(base=1, cap=30)
    for _ in range(50):
        d = b.next_delay()
        assert 0 < d <= 30


def test_backoff_rejects_bad_parameters():
    raises(ValueError, Backoff, base=0)
    raises(ValueError, Backoff, base=5, cap=1)
    raises(ValueError, Backoff, jitter=2)
