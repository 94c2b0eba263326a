"""Command parameters: the shape of each built-in command's ``params`` (docs/protocol.md).
What depends on the device (its relays, capabilities, custom commands) is checked in
iotp.services.commands."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, NotRequired

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
)
from typing_extensions import TypedDict

from iotp.protocol.payloads import NAME_RE

HHMM = r"^([01]\d|2[0-3]):[0-5]\d$"
HTTP_URL = r"^https?://"
RELAY_STATES = {"on": "on", "off": "off", "toggle": "toggle", True: "on", False: "off"}
WEBHOOK_EVENTS = ("data", "gas_alarm", "gas_clear", "automation", "boot", "online", "command")
FORBID = ConfigDict(extra="forbid")


def _integral(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _relay_state(value: Any) -> Any:
    key = value.lower() if isinstance(value, str) else value
    return RELAY_STATES.get(key, value) if isinstance(key, str | bool) else value


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


def _some(what: str) -> Any:
    def check(value: dict[str, Any]) -> dict[str, Any]:
        if not value:
            raise ValueError(f"give {what}")
        return value

    return AfterValidator(check)


def _ordered(*pairs: tuple[str, str]) -> Any:
    def check(value: dict[str, Any]) -> dict[str, Any]:
        for high, low in pairs:
            a, b = value.get(high), value.get(low)
            if a is not None and b is not None and a < b:
                raise ValueError(f"{high} ({a}) must be >= {low} ({b})")
        return value

    return AfterValidator(check)


def _config_keys(value: dict[str, Any]) -> dict[str, Any]:
    for key in value:
        if NAME_RE.fullmatch(key) is None:
            raise ValueError(f"bad key {key!r}")
    return value


def number(lo: float, hi: float, description: str = "") -> Any:
    """A JSON number lo..hi that keeps its type (an int stays an int on the wire);
    booleans are not numbers."""
    return Annotated[
        Annotated[int, Field(strict=True, ge=math.ceil(lo), le=math.floor(hi))]
        | Annotated[float, Field(strict=True, allow_inf_nan=False, ge=lo, le=hi)],
        Field(description=description or f"a number {lo:g}..{hi:g}"),
    ]


class Relay(TypedDict):
    __pydantic_config__ = FORBID  # type: ignore[misc]
    name: Annotated[str, Field(description="a relay the device has (capability relay:<name>)")]
    state: Annotated[
        Literal["on", "off", "toggle"],
        BeforeValidator(_relay_state),
        Field(description="'on', 'off' or 'toggle'"),
    ]


class Servo(TypedDict):
    __pydantic_config__ = FORBID  # type: ignore[misc]
    angle: Annotated[
        int,
        BeforeValidator(_integral),
        Field(strict=True, ge=0, le=180, description="an integer 0..180"),
    ]


class Reboot(TypedDict):
    __pydantic_config__ = FORBID  # type: ignore[misc]
    delay: NotRequired[number(0, 3600, "a number of seconds 0..3600")]


Time = Annotated[
    Annotated[str, Field(pattern=HHMM)] | Literal[""] | None,
    Field(description="'HH:MM' (or null to disable)"),
]
Bool = Annotated[bool, Field(strict=True, description="true or false")]


class _Automation(TypedDict):
    """The reference firmware's local automation settings (null disables one)."""

    __pydantic_config__ = FORBID  # type: ignore[misc]
    light_auto: NotRequired[Bool]
    fan_auto: NotRequired[Bool]
    light_on: NotRequired[Time]
    light_off: NotRequired[Time]
    fan_temp_on: NotRequired[number(-40, 125) | None]
    fan_temp_off: NotRequired[number(-40, 125) | None]
    fan_hum_on: NotRequired[number(0, 100) | None]
    fan_hum_off: NotRequired[number(0, 100) | None]
    gas_alarm: NotRequired[number(0, 100_000) | None]
    gas_clear: NotRequired[number(0, 100_000) | None]


Automation = Annotated[
    _Automation,
    _some("at least one setting"),
    _ordered(
        ("fan_temp_on", "fan_temp_off"), ("fan_hum_on", "fan_hum_off"), ("gas_alarm", "gas_clear")
    ),
]


class _SetConfig(TypedDict):
    """Config keys the platform knows how to check (the reference firmware's schema);
    other keys pass through for user firmware, which acks an error if it rejects them."""

    __pydantic_config__ = ConfigDict(extra="allow")  # type: ignore[misc]
    interval: NotRequired[number(0.5, 86400)]
    mqtt_keepalive: NotRequired[number(10, 3600)]
    ota_confirm_timeout: NotRequired[number(10, 3600)]
    tz_offset: NotRequired[number(-720, 840)]
    watchdog_ms: NotRequired[number(0, 3_600_000)]
    wifi_max_failures: NotRequired[number(1, 1000)]
    automation: NotRequired[Annotated[Automation, Field(description="an object")]]


SetConfig = Annotated[_SetConfig, _some("at least one config key"), AfterValidator(_config_keys)]


OTA_URL_MAX = 512


class Ota(TypedDict):
    __pydantic_config__ = FORBID  # type: ignore[misc]
    url: Annotated[
        str,
        Field(
            pattern=HTTP_URL,
            max_length=OTA_URL_MAX,
            description=f"an http:// or https:// URL (<= {OTA_URL_MAX})",
        ),
    ]
    sha256: Annotated[
        str,
        Field(pattern=r"^[0-9a-fA-F]{64}$", description="64 hex characters"),
        AfterValidator(str.lower),
    ]
    version: Annotated[
        str,
        Field(pattern=r"^[^ ]{1,64}$", description="a non-empty string without spaces (<= 64)"),
    ]
    size: NotRequired[
        Annotated[int | None, Field(strict=True, gt=0, description="a positive integer")]
    ]
    allow_downgrade: NotRequired[Bool]


# The ``stage`` of an ``ota`` command's progress acks, in order (docs/protocol.md).
OTA_STAGES = ("downloading", "verifying", "installing", "rebooting")


class _Webhook(TypedDict):
    __pydantic_config__ = FORBID  # type: ignore[misc]
    url: NotRequired[
        Annotated[
            Annotated[str, Field(pattern=HTTP_URL, max_length=512)] | Literal[""],
            Field(description="an http:// or https:// URL (<= 512), or '' for none"),
        ]
    ]
    method: NotRequired[
        Annotated[Literal["GET", "POST"], BeforeValidator(_upper), Field(description="GET or POST")]
    ]
    events: NotRequired[
        Annotated[
            list[Literal[WEBHOOK_EVENTS]],
            Field(description=f"a list of {list(WEBHOOK_EVENTS)}"),
        ]
    ]


Webhook = Annotated[_Webhook, _some("url, method and/or events")]


class Ping(TypedDict):
    __pydantic_config__ = FORBID  # type: ignore[misc]


COMMAND_PARAMS: dict[str, Any] = {
    "relay": Relay,
    "servo": Servo,
    "reboot": Reboot,
    "set_config": SetConfig,
    "automation": Automation,
    "ota": Ota,
    "webhook": Webhook,
    "ping": Ping,
}
# ``custom`` names a command of the device's own (capability ``cmd:<name>``).
BUILTIN_COMMANDS = (*COMMAND_PARAMS, "custom")
_ADAPTERS = {name: TypeAdapter(shape) for name, shape in COMMAND_PARAMS.items()}


class ParamsError(ValueError):
    """Parameters that do not fit their command's shape; the message says why."""


def parse_params(command: str, params: dict[str, Any], where: str | None = None) -> dict[str, Any]:
    """The parameters as sent to the device (normalised); ParamsError with the first
    reason, prefixed by ``where`` (default: the command)."""
    adapter = _ADAPTERS[command]
    try:
        out: dict[str, Any] = adapter.validate_python(params)
    except ValidationError as exc:
        raise ParamsError(f"{where or command}{_reason(adapter, exc)}") from None
    return {key: out[key] for key in params}  # in the order given


def _reason(adapter: TypeAdapter[Any], exc: ValidationError) -> str:
    errors = exc.errors()
    extra = [e for e in errors if e["type"] == "extra_forbidden"]
    if extra:
        inner = [str(p) for p in extra[0]["loc"][:-1]]
        names = sorted(str(e["loc"][-1]) for e in extra if list(map(str, e["loc"][:-1])) == inner)
        allowed = sorted(_properties(adapter.json_schema(), inner))
        at = "".join(f".{p}" for p in inner)
        return f"{at}: unknown parameter(s) {names}; allowed: {allowed}"
    error = errors[0]
    schema = adapter.json_schema()
    path: list[str] = []
    for part in error["loc"]:
        if isinstance(part, str) and part in _properties(schema, path):
            path.append(part)
    if error["type"] == "value_error":
        message = str(error.get("ctx", {}).get("error", error["msg"]))
        return f"{''.join(f'.{p}' for p in path)}: {message}"
    if not path:
        return f": {error['msg']}"
    what = _description(schema, path) or error["msg"]
    got = "" if error["type"] == "missing" else f", got {error['input']!r}"
    return f": {'.'.join(path)} must be {what}{got}"


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def _properties(schema: dict[str, Any], path: list[str]) -> dict[str, Any]:
    node = _resolve(schema, schema)
    for part in path:
        node = _resolve(schema, node.get("properties", {}).get(part, {}))
        for option in node.get("anyOf", ()):
            if "$ref" in option or "properties" in option:
                node = _resolve(schema, option)
    props: dict[str, Any] = node.get("properties", {})
    return props


def _description(schema: dict[str, Any], path: list[str]) -> str | None:
    field = _properties(schema, path[:-1]).get(path[-1], {})
    for node in (field, *field.get("anyOf", ())):
        if node.get("description"):
            return str(node["description"])
    return None
