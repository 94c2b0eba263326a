# Capped exponential backoff with jitter ("full jitter" on the upper half), shared
# by the Wi-Fi station loop and the MQTT link.


class Backoff:
    def __init__(self, base=1.0, cap=60.0, factor=2.0, jitter=0.5, rand=None):
        if base <= 0 or cap < base or factor < 1 or not 0 <= jitter <= 1:
            raise ValueError("bad backoff parameters")
        self.base = base
        self.cap = cap
        self.factor = factor
        self.jitter = jitter
        self.failures = 0
        if rand is None:
            import random

            rand = random.random
        self._rand = rand

    def ceiling(self):
        """Largest delay for the current failure count, before jitter."""
        delay = self.base
        for _ in range(self.failures):
            delay *= self.factor
            if delay >= self.cap:
                return self.cap
        return delay

    def next_delay(self):
        """Records a failure and returns how long to wait before the next attempt."""
        ceiling = self.ceiling()
        self.failures += 1
        # delay in [ceiling * (1 - jitter), ceiling]
        return ceiling * (1 - self.jitter * self._rand())

    def reset(self):
        self.failures = 0
