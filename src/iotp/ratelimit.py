"""Per-device message rate limit for the worker (security hardening).

A token bucket per device: ``rate`` messages per second on average, bursts of up to
``burst``. A device over its limit has its excess rejected and counted as
``rate_limited``; other devices are unaffected. Off (None) unless configured or in
secure mode (``Settings.effective_device_rate_limit``). The broker's ACLs make sure a
device cannot spend another device's budget by publishing under its id.
"""

from __future__ import annotations

from iotp.settings import Settings

REJECT_REASON = "rate_limited"
BURST_SECONDS = 5.0
MAX_TRACKED = 200_000


class DeviceRateLimiter:
    __slots__ = ("_buckets", "burst", "rate")

    def __init__(self, rate: float, burst: float | None = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.rate = rate
        self.burst = max(1.0, burst if burst is not None else rate * BURST_SECONDS)
        self._buckets: dict[str, list[float]] = {}  # device -> [tokens, last refill time]

    @classmethod
    def from_settings(cls, settings: Settings) -> DeviceRateLimiter | None:
        rate = settings.effective_device_rate_limit
        return cls(rate) if rate > 0 else None

    def allow(self, device_id: str, now: float) -> bool:
        bucket = self._buckets.get(device_id)
        if bucket is None:
            if len(self._buckets) >= MAX_TRACKED:
                self._prune(now)
            self._buckets[device_id] = [self.burst - 1.0, now]
            return True
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens < 1.0:
            bucket[0] = tokens
            return False
        bucket[0] = tokens - 1.0
        return True

    def _prune(self, now: float) -> None:
        """Forget devices whose bucket has refilled: they behave as new ones anyway."""
        full = [
            d
            for d, (t, last) in self._buckets.items()
            if t + (now - last) * self.rate >= self.burst
        ]
        for device_id in full:
            del self._buckets[device_id]
        if len(self._buckets) >= MAX_TRACKED:  # everyone is busy: bound memory regardless
            self._buckets.clear()
