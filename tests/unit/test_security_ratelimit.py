from __future__ import annotations

from iotp import ratelimit
from iotp.ratelimit import DeviceRateLimiter
from iotp.settings import Settings


def test_bucket_allows_burst_then_rate() -> None:
    limiter = DeviceRateLimiter(rate=2.0, burst=4)
    allowed = [limiter.allow("A", 100.0) for _ in range(6)]
    assert allowed == [True, True, True, True, False, False]
    assert limiter.allow("B", 100.0)  # other devices are unaffected
    assert not limiter.allow("A", 100.4)  # 0.8 token
    assert limiter.allow("A", 100.5)  # 1 token after 0.5 s at 2/s
    assert not limiter.allow("A", 100.5)
    assert [limiter.allow("A", 110.0) for _ in range(5)] == [True] * 4 + [False]


def test_sustained_rate_is_the_limit() -> None:
    limiter = DeviceRateLimiter(rate=10.0)
    now, passed = 0.0, 0
    for _ in range(1000):  # 100 msg/s for 10 s
        now += 0.01
        passed += limiter.allow("A", now)
    assert 100 + 50 - 2 <= passed <= 100 + 50 + 2  # 10/s for 10 s plus a 5 s burst


def test_off_by_default_in_open_mode_on_in_secure_mode() -> None:
    assert DeviceRateLimiter.from_settings(Settings(open=True)) is None
    secure = Settings(secure=True, secret_key="k" * 40)  # type: ignore[arg-type]
    limiter = DeviceRateLimiter.from_settings(secure)
    assert limiter is not None
    assert limiter.rate == 20.0
    assert DeviceRateLimiter.from_settings(Settings(device_rate_limit=0)) is None


def test_memory_is_bounded(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(ratelimit, "MAX_TRACKED", 10)
    limiter = DeviceRateLimiter(rate=1.0, burst=2)
    for i in range(100):
        limiter.allow(f"D{i}", 0.0)
        assert len(limiter._buckets) <= 10
