# The whole device runtime with a fake HAL and no reachable broker: it keeps
# measuring, automating and answering commands (acks wait in the MQTT queue).
# Runs under pytest (asyncio) and inside MicroPython (top-level await).
import asyncio

from fwtest_helpers import MemoryStorage, until
from iotfw import commands, handlers, jsonx
from iotfw.device import Device


class FakeHal(MemoryStorage):
    network_static = True
    portal_dns = False

    def __init__(self):
        MemoryStorage.__init__(self)
        self.relays = {}
        self.servo = None
        self.gas = 100
        self.resets = 0
        self.fed = 0
        self.files["config.json"] = jsonx.dumps(
            {
                "interval": 0.5,
                "mqtt_host": "127.0.0.1",
                "mqtt_port": 9,
                "wifi_ssid": "x",
                "automation": {"fan_auto": False},
            }
        ).encode()

    def mac(self):
        return b"\x02\x00\x00\x00\x00\x01"

    def setup(self, cfg):
        pass

    def sensors(self):
        return ("temperature", "humidity", "gas")

    def read_climate(self):
        return 21.5, 40.0

    def read_gas(self):
        return self.gas

    def set_relay(self, name, on):
        self.relays[name] = on

    def set_servo(self, angle):
        self.servo = angle

    def time(self):
        return 1764230400.0

    async def sync_time(self, host):
        return True

    def wifi_connected(self):
        return True

    def ip(self):
        return "192.0.2.1"

    def rssi(self):
        return -50

    def uptime(self):
        return 1.0

    def free_mem(self):
        return 100000

    def reset(self):
        self.resets += 1

    def wdt_start(self, ms):
        pass

    def wdt_feed(self):
        self.fed += 1

    def log(self, msg):
        pass


def queued(device, leaf):
    topic = "devices/020000000001/" + leaf
    return [jsonx.loads(p) for t, p, _ in device.mqtt.pending if t == topic]


async def test_device_keeps_working_without_broker():
    hal = FakeHal()
    device = Device(hal)
    task = asyncio.create_task(device.run())
    await until(lambda: device.mqtt is not None and queued(device, "data") and hal.fed >= 1)
    assert device.node_id == "020000000001"
    assert not device.mqtt.connected
    data = queued(device, "data")
    assert data
    assert data[0]["gas"] == 100
    assert data[0]["seq"] == 0
    assert data[0]["temperature"] == 21.5
    assert data[0]["ts"] == 1764230400.0
    assert hal.fed >= 1

    await device.handle_command(b'{"id": "a", "command": "servo", "params": {"angle": 200}}')
    await device.handle_command(b"{bad json")
    await device.handle_command(
        b'{"id": "b", "command": "relay", "params": {"name": "light", "state": "on"}}'
    )
    await device.handle_command(b'{"id": "c", "command": "nope"}')
    acks = queued(device, "ack")
    assert acks[0] == {"id": "a", "status": "error", "error": "angle must be 0..180"}
    assert acks[1] == {"id": None, "status": "error", "error": "malformed JSON"}
    assert acks[2] == {"id": "b", "status": "ok", "result": {"name": "light", "state": True}}
    assert acks[3]["status"] == "error"
    assert hal.relays["light"] is True

    # gas safety works offline
    hal.gas = 900
    await until(lambda: hal.relays.get("fan") is True)
    assert hal.relays["fan"] is True
    events = queued(device, "events")
    assert [e["event"] for e in events if e["event"] == "gas_alarm"] == ["gas_alarm"]
    await device.handle_command(
        b'{"id": "d", "command": "relay", "params": {"name": "fan", "state": "off"}}'
    )
    assert queued(device, "ack")[-1]["status"] == "error"
    assert hal.relays["fan"] is True

    # commands beyond the ones running at once are answered busy, not started
    device.commands_running = handlers.MAX_RUNNING
    device.take_command(b'{"id": "e", "command": "ping"}')
    assert queued(device, "ack")[-1] == {
        "id": "e",
        "status": "error",
        "error": "busy: 4 commands running",
    }
    device.commands_running = 0
    device.take_command(b'{"id": "f", "command": "ping"}')
    await until(lambda: queued(device, "ack")[-1]["id"] == "f")
    assert queued(device, "ack")[-1]["id"] == "f"
    assert queued(device, "ack")[-1]["status"] == "ok"

    # a command the heap has no room to parse is answered, by the id in its text;
    # a view of the receive buffer is parsed before take_command returns
    parse = commands.parse

    def no_room(payload):
        raise MemoryError("memory allocation failed, allocating 3958 bytes")

    commands.parse = no_room
    try:
        device.take_command(b'{"params": {"pad": "x"}, "id": "g", "command": "ping"}')
    finally:
        commands.parse = parse
    ack = queued(device, "ack")[-1]
    assert ack["id"] == "g"
    assert ack["error"].startswith("out of memory")
    buf = bytearray(b'{"id": "h", "command": "ping"}')
    device.take_command(memoryview(buf))
    buf[8] = 0x58  # the buffer is reused: the command was parsed already
    await until(lambda: queued(device, "ack")[-1]["id"] == "h")
    assert queued(device, "ack")[-1]["status"] == "ok"

    device.request_reboot("shutdown")
    reason = await task
    assert reason == "shutdown"
    assert hal.resets == 0
