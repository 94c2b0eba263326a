"""Foreign firmware's messages as each project documents them, written for these tests
(topic, payload): Tasmota (tasmota.github.io, "MQTT" and "Commands"), Zigbee2MQTT
(zigbee2mqtt.io, "MQTT Topics and Messages", "Device availability"), Shelly Gen2
(shelly-api-docs.shelly.cloud/gen2, "MQTT", "RPC Protocol", "Switch")."""

from __future__ import annotations

from typing import Any

import orjson


def js(obj: Any) -> bytes:
    return orjson.dumps(obj)


# ---- Tasmota: topic "kitchen", FullTopic %prefix%/%topic%/ ------------------------------

TASMOTA_TOPIC = "kitchen"
TASMOTA_ID = "tasmota-kitchen"
TASMOTA_LWT_ONLINE = (f"tele/{TASMOTA_TOPIC}/LWT", b"Online")
TASMOTA_LWT_OFFLINE = (f"tele/{TASMOTA_TOPIC}/LWT", b"Offline")
TASMOTA_INFO1 = (
    f"tele/{TASMOTA_TOPIC}/INFO1",
    js(
        {
            "Info1": {
                "Module": "Sonoff Basic",
                "Version": "13.1.0(tasmota)",
                "FallbackTopic": "cmnd/DVES_3A2B1C_fb/",
                "GroupTopic": "cmnd/tasmotas/",
            }
        }
    ),
)
TASMOTA_STATE = (
    f"tele/{TASMOTA_TOPIC}/STATE",
    js(
        {
            "Time": "2024-02-24T22:20:38",
            "Uptime": "0T00:10:11",
            "UptimeSec": 611,
            "Heap": 24,
            "SleepMode": "Dynamic",
            "Sleep": 50,
            "LoadAvg": 19,
            "MqttCount": 1,
            "POWER1": "OFF",
            "POWER2": "ON",
            "Wifi": {
                "AP": 1,
                "SSId": "home",
                "BSSId": "E6:8D:8C:4B:BE:F7",
                "Channel": 3,
                "Mode": "11n",
                "RSSI": 44,
                "Signal": -78,
                "LinkCount": 1,
                "Downtime": "0T00:00:05",
            },
        }
    ),
)
TASMOTA_SENSOR = (
    f"tele/{TASMOTA_TOPIC}/SENSOR",
    js(
        {
            "Time": "2024-02-24T22:20:38",
            "AM2301": {"Temperature": 22.4, "Humidity": 45.1, "DewPoint": 9.9},
            "ENERGY": {
                "TotalStartTime": "2024-01-01T00:00:00",
                "Total": 12.345,
                "Yesterday": 0.5,
                "Today": 0.25,
                "Power": 42,
                "ApparentPower": 50,
                "ReactivePower": 27,
                "Factor": 0.84,
                "Voltage": 231,
                "Current": 0.217,
            },
            "TempUnit": "C",
        }
    ),
)


def tasmota_result(relay: str, state: str) -> tuple[str, bytes]:
    return (f"stat/{TASMOTA_TOPIC}/RESULT", js({relay: state}))


TASMOTA_UNKNOWN_COMMAND = (f"stat/{TASMOTA_TOPIC}/RESULT", js({"Command": "Unknown"}))

# ---- Zigbee2MQTT: base topic zigbee2mqtt, two devices behind one bridge ------------------

Z2M_SENSOR = "living_room/climate"  # a friendly name with the documented "/" separator
Z2M_PLUG = "0x00158d0001a2b3c4"  # a device without a friendly name: its IEEE address
Z2M_SENSOR_ID = "z2m-living_room_climate"
Z2M_PLUG_ID = "z2m-0x00158d0001a2b3c4"
Z2M_BRIDGE_DEVICES = (
    "zigbee2mqtt/bridge/devices",
    js(
        [
            {
                "ieee_address": "0x00124b00120144ae",
                "type": "Coordinator",
                "network_address": 0,
                "supported": False,
                "friendly_name": "Coordinator",
                "interview_completed": True,
            },
            {
                "ieee_address": "0x00158d0004866f11",
                "type": "EndDevice",
                "network_address": 1234,
                "supported": True,
                "friendly_name": Z2M_SENSOR,
                "power_source": "Battery",
                "software_build_id": "3000-0001",
                "model_id": "lumi.weather",
                "definition": {
                    "model": "WSDCGQ11LM",
                    "vendor": "Aqara",
                    "description": "Temperature, humidity and pressure sensor",
                    "exposes": [],
                },
                "interview_completed": True,
            },
            {
                "ieee_address": Z2M_PLUG,
                "type": "Router",
                "network_address": 4321,
                "supported": True,
                "friendly_name": Z2M_PLUG,
                "power_source": "Mains (single phase)",
                "software_build_id": "2.3.085",
                "definition": {
                    "model": "E1603",
                    "vendor": "IKEA",
                    "description": "Control outlet",
                    "exposes": [],
                },
                "interview_completed": True,
            },
        ]
    ),
)
Z2M_SENSOR_READING = (
    f"zigbee2mqtt/{Z2M_SENSOR}",
    js(
        {
            "temperature": 21.72,
            "humidity": 48.3,
            "pressure": 1008.4,
            "battery": 97,
            "voltage": 3025,
            "linkquality": 134,
        }
    ),
)
# The bridge's own state (retained; also its last will with "offline").
Z2M_BRIDGE_OFFLINE = ("zigbee2mqtt/bridge/state", js({"state": "offline"}))
Z2M_PLUG_STATE = (f"zigbee2mqtt/{Z2M_PLUG}", js({"state": "OFF", "linkquality": 201}))


def z2m_availability(name: str, state: str) -> tuple[str, bytes]:
    return (f"zigbee2mqtt/{name}/availability", js({"state": state}))


def z2m_state(name: str, state: str) -> tuple[str, bytes]:
    return (f"zigbee2mqtt/{name}", js({"state": state, "linkquality": 198}))


# ---- Shelly Gen2: a Plus 1PM, default topic prefix = its id -------------------------------

SHELLY = "shellyplus1pm-a8032ab12345"
SHELLY_ID = f"shelly-{SHELLY}"
SHELLY_ONLINE = (f"{SHELLY}/online", b"true")
SHELLY_OFFLINE = (f"{SHELLY}/online", b"false")
SHELLY_SWITCH = (
    f"{SHELLY}/status/switch:0",
    js(
        {
            "id": 0,
            "source": "init",
            "output": False,
            "apower": 0.0,
            "voltage": 229.8,
            "current": 0.0,
            "aenergy": {"total": 1234.567, "by_minute": [0.0, 0.0, 0.0], "minute_ts": 1700000000},
            "temperature": {"tC": 41.5, "tF": 106.7},
        }
    ),
)
SHELLY_WIFI = (
    f"{SHELLY}/status/wifi",
    js({"sta_ip": "192.168.1.50", "status": "got ip", "ssid": "home", "rssi": -58}),
)


def shelly_switch(on: bool, apower: float) -> tuple[str, bytes]:
    return (
        f"{SHELLY}/status/switch:0",
        js(
            {
                "id": 0,
                "source": "MQTT",
                "output": on,
                "apower": apower,
                "voltage": 230.1,
                "current": round(apower / 230.1, 3),
                "temperature": {"tC": 42.0, "tF": 107.6},
            }
        ),
    )


def shelly_response(request: dict[str, Any], result: dict[str, Any]) -> tuple[str, bytes]:
    """The answer to an RPC request frame, on <src>/rpc."""
    return (
        f"{request['src']}/rpc",
        js({"id": request["id"], "src": SHELLY, "dst": request["src"], "result": result}),
    )
