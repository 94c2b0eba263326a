"""What a rule is: a trigger, conditions and actions, validated at the edge (API and
database load), then compiled by the engine. Plain pydantic: no I/O."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from iotp.automation.schedule import CronError, parse_cron
from iotp.protocol.topics import DEVICE_ID_PATTERN, DeviceId

NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
HHMM = r"^([01]\d|2[0-3]):[0-5]\d$"
SEVERITIES = ("info", "warning", "critical")
Severity = Literal["info", "warning", "critical"]
Compare = Literal[">", ">=", "<", "<=", "==", "!="]
MAX_CONDITIONS = 16
MAX_ACTIONS = 16


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_tz(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {value!r} (use an IANA name like 'Europe/Berlin')"
        ) from None
    return value


class Scope(_Spec):
    """Which devices a rule watches (and acts on when an action names none). Every given
    criterion must match; an empty scope means every device."""

    devices: list[DeviceId] = Field(default_factory=list, max_length=1000)
    tags: list[Annotated[str, Field(pattern=NAME_PATTERN)]] = Field(
        default_factory=list, max_length=16
    )
    device_type: str | None = Field(default=None, max_length=64)

    @property
    def is_empty(self) -> bool:
        return not (self.devices or self.tags or self.device_type)


# ---- triggers ---------------------------------------------------------------------------


class ThresholdTrigger(_Spec):
    """Fires when ``metric`` crosses ``value`` (not on every sample past it). It is armed
    again only after the value comes back past ``value -/+ hysteresis``; that return is
    the rule's *clear* (auto-clears its alert, runs its ``when: clear`` actions)."""

    type: Literal["threshold"] = "threshold"
    metric: str = Field(pattern=NAME_PATTERN)
    op: Literal["above", "below"] = "above"
    value: float
    hysteresis: float = Field(default=0.0, ge=0)
    for_seconds: float = Field(default=0.0, ge=0, le=86400, description="must hold this long")


class RateTrigger(_Spec):
    """Fires when the metric's change per minute (between consecutive samples) crosses
    ``value``: ``rises`` faster than, or ``falls`` faster than ``value`` units/minute."""

    type: Literal["rate"] = "rate"
    metric: str = Field(pattern=NAME_PATTERN)
    op: Literal["rises", "falls"] = "rises"
    value: float = Field(gt=0, description="units per minute")


class OfflineTrigger(_Spec):
    type: Literal["offline"] = "offline"
    for_seconds: float = Field(default=0.0, ge=0, le=7 * 86400)


class OnlineTrigger(_Spec):
    type: Literal["online"] = "online"


class RegisteredTrigger(_Spec):
    type: Literal["registered"] = "registered"


class ScheduleTrigger(_Spec):
    """``at`` a local time of day (on ``weekdays``, 0 = Monday), or a 5-field ``cron``
    expression, in ``timezone``."""

    type: Literal["schedule"] = "schedule"
    at: str | None = Field(default=None, pattern=HHMM)
    cron: str | None = Field(default=None, max_length=128)
    weekdays: list[Annotated[int, Field(ge=0, le=6)]] = Field(default_factory=list, max_length=7)
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        return _check_tz(value)

    @model_validator(mode="after")
    def _one_of(self) -> ScheduleTrigger:
        if (self.at is None) == (self.cron is None):
            raise ValueError("schedule: give exactly one of 'at' (HH:MM) or 'cron'")
        if self.cron is not None:
            try:
                parse_cron(self.cron)
            except CronError as exc:
                raise ValueError(f"schedule: {exc}") from None
        return self


class CommandFailedTrigger(_Spec):
    type: Literal["command_failed"] = "command_failed"
    command: str | None = Field(default=None, max_length=64, description="any if empty")


class AlertRaisedTrigger(_Spec):
    type: Literal["alert_raised"] = "alert_raised"
    min_severity: Severity = "info"
    rule_id: int | None = Field(default=None, description="only alerts of this rule")


Trigger = Annotated[
    ThresholdTrigger
    | RateTrigger
    | OfflineTrigger
    | OnlineTrigger
    | RegisteredTrigger
    | ScheduleTrigger
    | CommandFailedTrigger
    | AlertRaisedTrigger,
    Field(discriminator="type"),
]

# Triggers with a state that ends (their end is the rule's "clear").
CLEARABLE = frozenset({"threshold", "rate", "offline"})

# ---- conditions -------------------------------------------------------------------------


class MetricCondition(_Spec):
    """Latest value of a metric on ``device_id`` (another device), or on the triggering
    device when empty. Fails when there is no value younger than ``max_age_seconds``."""

    type: Literal["metric"] = "metric"
    device_id: str | None = Field(default=None, pattern=DEVICE_ID_PATTERN)
    metric: str = Field(pattern=NAME_PATTERN)
    op: Compare = ">"
    value: float
    max_age_seconds: float = Field(default=600.0, gt=0)


class TimeCondition(_Spec):
    """Local time between ``after`` and ``before`` (across midnight when after > before)."""

    type: Literal["time"] = "time"
    after: str | None = Field(default=None, pattern=HHMM)
    before: str | None = Field(default=None, pattern=HHMM)
    weekdays: list[Annotated[int, Field(ge=0, le=6)]] = Field(default_factory=list, max_length=7)
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        return _check_tz(value)


class DeviceCondition(_Spec):
    """The triggering device has every tag in ``tags`` and is of ``device_type``."""

    type: Literal["device"] = "device"
    tags: list[Annotated[str, Field(pattern=NAME_PATTERN)]] = Field(
        default_factory=list, max_length=16
    )
    device_type: str | None = Field(default=None, max_length=64)


Condition = Annotated[
    MetricCondition | TimeCondition | DeviceCondition, Field(discriminator="type")
]

# ---- actions ----------------------------------------------------------------------------

When = Literal["fire", "clear"]


class _Target(_Spec):
    """Target devices: ``device_id``, or every device with all ``tags``; when neither is
    given, the triggering device (or, for schedules, every device in the rule's scope)."""

    when: When = "fire"
    device_id: str | None = Field(default=None, pattern=DEVICE_ID_PATTERN)
    tags: list[Annotated[str, Field(pattern=NAME_PATTERN)]] = Field(
        default_factory=list, max_length=16
    )


class CommandAction(_Target):
    type: Literal["command"] = "command"
    command: str = Field(min_length=1, max_length=64)
    params: dict[str, Any] = Field(default_factory=dict)


class ShadowAction(_Target):
    type: Literal["shadow"] = "shadow"
    desired: dict[str, Any] = Field(min_length=1)


class AlertAction(_Spec):
    """Raise an alert (one per rule and device while it is open). With ``auto_clear`` it
    is cleared when the trigger's condition ends."""

    type: Literal["alert"] = "alert"
    when: When = "fire"
    severity: Severity = "warning"
    message: str = Field(default="{rule}: {device} {reading}", max_length=500)
    auto_clear: bool = True


class ClearAlertAction(_Spec):
    type: Literal["clear_alert"] = "clear_alert"
    when: When = "fire"
    rule_id: int | None = Field(default=None, description="whose alert; this rule if empty")


class WebhookAction(_Spec):
    type: Literal["webhook"] = "webhook"
    when: When = "fire"
    webhook_id: int


class NotifyAction(_Spec):
    type: Literal["notify"] = "notify"
    when: When = "fire"
    level: Severity = "info"
    message: str = Field(default="{rule}: {device}", max_length=500)


Action = Annotated[
    CommandAction | ShadowAction | AlertAction | ClearAlertAction | WebhookAction | NotifyAction,
    Field(discriminator="type"),
]


class RuleBody(_Spec):
    """The user-editable part of a rule."""

    name: str = Field(min_length=1, max_length=128)
    description: str = Field(default="", max_length=2000)
    enabled: bool = True
    scope: Scope = Field(default_factory=Scope)
    trigger: Trigger
    conditions: list[Condition] = Field(default_factory=list, max_length=MAX_CONDITIONS)
    actions: list[Action] = Field(min_length=1, max_length=MAX_ACTIONS)
    cooldown_seconds: float = Field(
        default=60.0, ge=0, le=7 * 86400, description="minimum time between two firings"
    )

    @model_validator(mode="after")
    def _clear_actions_need_a_clear(self) -> RuleBody:
        if self.trigger.type not in CLEARABLE:
            for action in self.actions:
                if action.when == "clear":
                    raise ValueError(
                        f"a {self.trigger.type} trigger never clears: "
                        "'when: clear' actions need a threshold, rate or offline trigger"
                    )
        return self


class Rule(RuleBody):
    id: int


def render(template: str, values: dict[str, Any]) -> str:
    """``{name}`` placeholders from ``values``; unknown ones stay as written. No format
    spec or attribute access (unlike str.format), so user templates cannot reach objects."""

    def one(m: re.Match[str]) -> str:
        key = m.group(1)
        if key not in values or values[key] is None:
            return m.group(0)
        value = values[key]
        if isinstance(value, float):
            return f"{value:g}"
        return str(value)

    return _PLACEHOLDER.sub(one, template)


def reading(context: dict[str, Any]) -> dict[str, str]:
    """``{reading}``: the whole comparison with the metric's unit, "temperature 31.5 °C >
    30 °C" (without the comparison when the trigger has no threshold). ``{value}`` and
    ``{threshold}`` stay bare numbers, as messages written before units existed expect,
    and ``{unit}`` is the unit alone. Nothing for a firing without a metric (offline,
    schedule), so the placeholder stays as written."""
    metric, value = context.get("metric"), context.get("value")
    if not isinstance(metric, str) or not isinstance(value, int | float):
        return {}
    unit = context.get("unit")

    def with_unit(number: float) -> str:
        return f"{number:g} {unit}" if unit else f"{number:g}"

    text = f"{metric} {with_unit(value)}"
    threshold, op = context.get("threshold"), context.get("op")
    if isinstance(threshold, int | float) and isinstance(op, str):
        text += f" {op} {with_unit(threshold)}"
    return {"reading": text}


_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]{0,31})\}")
