# Stand-in for MicroPython's machine module (the WebAssembly port has none).
resets = []


class Pin:
    OUT = 1
    IN = 0

    def __init__(self, n, mode=None):
        self.n = n
        self.v = 0

    def value(self, v=None):
        if v is None:
            return self.v
        self.v = v


class ADC:
    ATTN_11DB = 3

    def __init__(self, pin):
        self.pin = pin

    def atten(self, a):
        self.a = a

    def read(self):
        return 1234


class PWM:
    def __init__(self, pin, freq=50):
        self.ns = None

    def duty_ns(self, ns):
        self.ns = ns


class WDT:
    def __init__(self, timeout=0):
        self.fed = 0

    def feed(self):
        self.fed += 1


def reset():
    resets.append(1)
