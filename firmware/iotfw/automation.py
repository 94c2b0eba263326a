# On-device automation: light schedule, fan on temperature/humidity with
# hysteresis, gas safety. Pure logic: the device feeds it readings and the local
# time, it returns the actions to take. No I/O, so it keeps working offline and is
# tested on CPython and MicroPython alike.

DEFAULTS = {
    "light_auto": True,
    "light_on": "18:00",
    "light_off": "23:00",
    "fan_auto": True,
    "fan_temp_on": 28.0,
    "fan_temp_off": 26.0,
    "fan_hum_on": 70.0,
    "fan_hum_off": 65.0,
    "gas_alarm": 400,
    "gas_clear": 350,
}

_BOOL_KEYS = ("light_auto", "fan_auto")
_TIME_KEYS = ("light_on", "light_off")
_NUM_KEYS = ("fan_temp_on", "fan_temp_off", "fan_hum_on", "fan_hum_off", "gas_alarm",
             "gas_clear")


class AutomationError(ValueError):
    pass


def parse_hhmm(value):
    """'HH:MM' -> minutes after midnight; None or '' -> None (disabled)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise AutomationError("time must be a 'HH:MM' string")
    parts = value.split(":")
    if len(parts) != 2 or not parts[0].isdigit() or not parts[1].isdigit():
        raise AutomationError("time must be 'HH:MM', got %r" % (value,))
    hours = int(parts[0])
    minutes = int(parts[1])
    if hours > 23 or minutes > 59:
        raise AutomationError("time out of range: %r" % (value,))
    return hours * 60 + minutes


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        value == value and value not in (float("inf"), float("-inf"))


def validate(updates, current=None):
    """Validates automation settings; returns the merged settings.

    Raises AutomationError naming the first bad key.
    """
    if not isinstance(updates, dict):
        raise AutomationError("automation settings must be an object")
    merged = dict(DEFAULTS if current is None else current)
    for key in updates:
        value = updates[key]
        if key in _BOOL_KEYS:
            if not isinstance(value, bool):
                raise AutomationError("%s must be true or false" % key)
        elif key in _TIME_KEYS:
            parse_hhmm(value)
            if value is None:
                value = ""
        elif key in _NUM_KEYS:
            if value is not None and not _is_number(value):
                raise AutomationError("%s must be a number or null" % key)
            if value is not None and key.startswith("fan_hum") and not 0 <= value <= 100:
                raise AutomationError("%s must be 0..100" % key)
            if value is not None and key.startswith("gas") and not 0 <= value <= 100000:
                raise AutomationError("%s must be 0..100000" % key)
            if value is not None and key.startswith("fan_temp") and not -40 <= value <= 125:
                raise AutomationError("%s must be -40..125" % key)
        else:
            raise AutomationError("unknown automation setting: %s" % key)
        merged[key] = value
    _check_pair(merged, "fan_temp_on", "fan_temp_off")
    _check_pair(merged, "fan_hum_on", "fan_hum_off")
    _check_pair(merged, "gas_alarm", "gas_clear")
    return merged


def _check_pair(settings, on_key, off_key):
    on = settings.get(on_key)
    off = settings.get(off_key)
    if on is not None and off is not None and off > on:
        raise AutomationError("%s must not be above %s" % (off_key, on_key))


def schedule_wants_on(settings, minute_of_day):
    """Whether the light schedule wants the light on at minute_of_day (0..1439).

    None when the schedule is disabled or incomplete. on > off spans midnight.
    """
    if not settings.get("light_auto"):
        return None
    start = parse_hhmm(settings.get("light_on"))
    end = parse_hhmm(settings.get("light_off"))
    if start is None or end is None or start == end:
        return None
    if start < end:
        return start <= minute_of_day < end
    return minute_of_day >= start or minute_of_day < end


def _threshold(value, on, off, previous):
    """Hysteresis: True above on, False at or below off, else previous."""
    if value is None or on is None:
        return None
    if off is None:
        off = on
    if value >= on:
        return True
    if value <= off:
        return False
    return previous


class Automation:
    """Edge-triggered automation state.

    The schedule and the climate rule act when what they want changes, so a manual
    command holds until the next edge. Gas safety is level-triggered: while the
    alarm is active the fan is forced on and a manual "off" is refused.
    """

    def __init__(self, settings=None):
        self.settings = validate(settings if settings is not None else {})
        self.light_wanted = None
        self.fan_wanted = None
        self._temp_wanted = None
        self._hum_wanted = None
        self.gas_alarm = False
        self.fan_before_alarm = None
        self._sched_for = None
        self._sched = None

    def _schedule(self, minute_of_day):
        # schedule_wants_on, with the parsed times cached for the settings object
        s = self.settings
        if self._sched_for is not s:
            self._sched_for = s
            start = parse_hhmm(s.get("light_on"))
            end = parse_hhmm(s.get("light_off"))
            self._sched = (start, end) if s.get("light_auto") and start is not None \
                and end is not None and start != end else None
        sched = self._sched
        if sched is None:
            return None
        start, end = sched
        if start < end:
            return start <= minute_of_day < end
        return minute_of_day >= start or minute_of_day < end

    def update_settings(self, updates):
        self.settings = validate(updates, self.settings)
        # re-evaluate edges against the new settings on the next step
        self.light_wanted = None
        self.fan_wanted = None
        self._temp_wanted = None
        self._hum_wanted = None
        return self.settings

    def step(self, readings, minute_of_day, relays):
        """Returns (actions, events).

        readings: dict with optional temperature, humidity, gas.
        minute_of_day: local minutes after midnight, or None when the clock is unset.
        relays: current relay states {name: bool}.
        actions: list of (relay_name, state, reason); events: list of event dicts.
        """
        s = self.settings
        actions = []
        events = []

        gas = readings.get("gas")
        alarm_at = s.get("gas_alarm")
        if gas is not None and alarm_at is not None:
            clear_at = s.get("gas_clear")
            if clear_at is None:
                clear_at = alarm_at
            if not self.gas_alarm and gas >= alarm_at:
                self.gas_alarm = True
                self.fan_before_alarm = relays.get("fan")
                events.append({"event": "gas_alarm", "level": "critical", "value": gas,
                               "threshold": alarm_at})
            elif self.gas_alarm and gas <= clear_at:
                self.gas_alarm = False
                events.append({"event": "gas_clear", "level": "info", "value": gas})
                if "fan" in relays:
                    back = self.fan_wanted if s.get("fan_auto") and self.fan_wanted is not None \
                        else self.fan_before_alarm
                    if back is not None and back != relays.get("fan"):
                        actions.append(("fan", bool(back), "gas_clear"))
        elif self.gas_alarm and alarm_at is None:
            self.gas_alarm = False
        if self.gas_alarm and "fan" in relays and not relays.get("fan"):
            actions.append(("fan", True, "gas_alarm"))

        if minute_of_day is not None and "light" in relays:
            wanted = self._schedule(minute_of_day)
            if wanted is not None and wanted != self.light_wanted:
                self.light_wanted = wanted
                if relays.get("light") != wanted:
                    actions.append(("light", wanted, "schedule"))
            elif wanted is None:
                self.light_wanted = None

        if s.get("fan_auto") and "fan" in relays:
            self._temp_wanted = _threshold(readings.get("temperature"), s.get("fan_temp_on"),
                                           s.get("fan_temp_off"), self._temp_wanted)
            self._hum_wanted = _threshold(readings.get("humidity"), s.get("fan_hum_on"),
                                          s.get("fan_hum_off"), self._hum_wanted)
            if self._temp_wanted is None and self._hum_wanted is None:
                wanted = None
            else:
                wanted = bool(self._temp_wanted) or bool(self._hum_wanted)
            if wanted is not None and wanted != self.fan_wanted:
                self.fan_wanted = wanted
                if not self.gas_alarm and relays.get("fan") != wanted:
                    actions.append(("fan", wanted, "climate"))

        for name, state, reason in actions:
            events.append({"event": "automation", "level": "info", "relay": name,
                           "state": state, "reason": reason})
        return actions, events

    def refuse_manual(self, relay, state):
        """Reason string if a manual relay command must be refused, else None."""
        if relay == "fan" and not state and self.gas_alarm:
            return "gas alarm active: fan is forced on"
        return None
