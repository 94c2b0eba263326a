# Stand-in for MicroPython's network module.
STA_IF = 0
AP_IF = 1
AUTH_OPEN = 0


class WLAN:
    def __init__(self, kind):
        self.kind = kind
        self._active = False
        self._connected = False

    def active(self, on=None):
        if on is None:
            return self._active
        self._active = on

    def config(self, *args, **kwargs):
        if args == ("mac",):
            return b"\xa4\xcf\x12\xb3\xc4\xd5"
        return None

    def isconnected(self):
        return self._connected

    def connect(self, ssid, password):
        self._connected = ssid == "good"

    def disconnect(self):
        self._connected = False

    def ifconfig(self):
        return ("192.0.2.7", "255.255.255.0", "192.0.2.1", "192.0.2.1")

    def scan(self):
        return [(b"Home", b"", 1, -50, 3, 0)]

    def status(self, what=None):
        return -50
