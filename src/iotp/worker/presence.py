"""Device presence: an explicit state machine fed by the status topic (and the MQTT
last will), by any message from the device, and by a last-seen timeout."""

from __future__ import annotations

from dataclasses import dataclass, field

from iotp.protocol.events import Presence, PresenceReason


@dataclass(frozen=True, slots=True)
class Transition:
    device_id: str
    old: Presence
    new: Presence
    reason: PresenceReason
    ts: float


@dataclass(slots=True)
class DevicePresence:
    status: Presence = Presence.UNKNOWN
    last_seen: float = 0.0
    interval: float = 2.0


@dataclass
class PresenceTracker:
    missed_reports: int = 3
    min_timeout: float = 6.0
    devices: dict[str, DevicePresence] = field(default_factory=dict)

    def timeout_for(self, dev: DevicePresence) -> float:
        return max(self.missed_reports * dev.interval, self.min_timeout)

    def load(self, device_id: str, status: Presence, last_seen: float, interval: float) -> None:
        self.devices[device_id] = DevicePresence(status, last_seen, interval)

    def _get(self, device_id: str) -> DevicePresence:
        dev = self.devices.get(device_id)
        if dev is None:
            dev = self.devices[device_id] = DevicePresence()
        return dev

    def set_interval(self, device_id: str, interval: float) -> None:
        self._get(device_id).interval = interval

    def seen(self, device_id: str, now: float) -> Transition | None:
        """Any message from the device: it is alive."""
        dev = self._get(device_id)
        dev.last_seen = max(dev.last_seen, now)
        if dev.status is not Presence.ONLINE:
            return self._move(device_id, dev, Presence.ONLINE, PresenceReason.DATA, now)
        return None

    def reported(self, device_id: str, online: bool, now: float) -> Transition | None:
        """The device's status topic: ``online`` birth or ``offline`` (clean or last will)."""
        dev = self._get(device_id)
        target = Presence.ONLINE if online else Presence.OFFLINE
        if online:
            dev.last_seen = max(dev.last_seen, now)
        if dev.status is target:
            return None
        return self._move(device_id, dev, target, PresenceReason.STATUS, now)

    def expire(self, now: float) -> list[Transition]:
        """Devices silent for longer than their timeout go offline."""
        out: list[Transition] = []
        for device_id, dev in self.devices.items():
            if dev.status is Presence.ONLINE and now - dev.last_seen > self.timeout_for(dev):
                out.append(
                    self._move(device_id, dev, Presence.OFFLINE, PresenceReason.TIMEOUT, now)
                )
        return out

    def forget(self, device_id: str) -> None:
        self.devices.pop(device_id, None)

    @staticmethod
    def _move(
        device_id: str, dev: DevicePresence, new: Presence, reason: PresenceReason, now: float
    ) -> Transition:
        old = dev.status
        dev.status = new
        return Transition(device_id, old, new, reason, now)
