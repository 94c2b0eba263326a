from __future__ import annotations

from iotp.protocol.events import Presence, PresenceReason
from iotp.worker.presence import PresenceTracker


def test_first_message_brings_device_online() -> None:
    tracker = PresenceTracker()
    t = tracker.seen("A", 100.0)
    assert t is not None
    assert (t.old, t.new, t.reason) == (Presence.UNKNOWN, Presence.ONLINE, PresenceReason.DATA)
    assert tracker.seen("A", 101.0) is None


def test_last_will_takes_device_offline_once() -> None:
    tracker = PresenceTracker()
    tracker.seen("A", 100.0)
    t = tracker.reported("A", online=False, now=101.0)
    assert t is not None
    assert (t.new, t.reason) == (Presence.OFFLINE, PresenceReason.STATUS)
    assert tracker.reported("A", online=False, now=102.0) is None


def test_timeout_is_missed_reports_times_interval_with_a_floor() -> None:
    tracker = PresenceTracker(missed_reports=3, min_timeout=6.0)
    tracker.seen("slow", 0.0)
    tracker.set_interval("slow", 10.0)
    tracker.seen("fast", 0.0)
    tracker.set_interval("fast", 1.0)
    assert tracker.expire(5.9) == []
    expired = tracker.expire(6.5)
    assert [t.device_id for t in expired] == ["fast"]
    assert expired[0].reason is PresenceReason.TIMEOUT
    assert tracker.expire(29.0) == []
    assert [t.device_id for t in tracker.expire(30.5)] == ["slow"]
    # Each device goes offline exactly once.
    assert tracker.expire(100.0) == []


def test_data_after_timeout_brings_device_back() -> None:
    tracker = PresenceTracker(missed_reports=3, min_timeout=1.0)
    tracker.seen("A", 0.0)
    tracker.expire(10.0)
    t = tracker.seen("A", 11.0)
    assert t is not None
    assert (t.old, t.new) == (Presence.OFFLINE, Presence.ONLINE)


def test_online_birth_while_online_is_not_a_transition() -> None:
    tracker = PresenceTracker()
    tracker.seen("A", 1.0)
    assert tracker.reported("A", online=True, now=2.0) is None
    assert tracker.devices["A"].last_seen == 2.0
