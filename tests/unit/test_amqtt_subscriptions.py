"""The amqtt fallback's subscriptions table (iotp.broker.embedded): amqtt awaits the ACL
while it walks it to deliver a message, so a client subscribing or leaving meanwhile
changes it under the walk. Pure: the table itself, no broker."""

from __future__ import annotations

from typing import Any

from iotp.broker.embedded import _Subscriptions


def test_a_filter_added_while_delivering_does_not_break_the_delivery() -> None:
    table = _Subscriptions({"devices/+/data": [("worker", 1)], "a/#": [("x", 0)]})
    walked = []
    for k_filter, subscribers in table.items():  # as amqtt's broadcast does
        walked.append((k_filter, [s for s, _ in subscribers]))
        table["devices/NEW/commands"] = [("newcomer", 1)]  # a SUBSCRIBE meanwhile
    assert walked == [("devices/+/data", ["worker"]), ("a/#", ["x"])]
    for k_filter in table:  # as amqtt's replay at CONNECT and its cleanup do
        table.pop("a/#", None)
        table[k_filter + "/more"] = []


def test_a_subscriber_leaving_while_delivering_does_not_hide_the_next_one() -> None:
    first: Any = ("first", 1)
    table = _Subscriptions({"devices/+/data": [first, ("second", 1)]})
    reached = []
    for _k, subscribers in table.items():
        for session, _qos in subscribers:
            reached.append(session)
            if session == "first":
                table["devices/+/data"].remove(first)  # it disconnects meanwhile
    assert reached == ["first", "second"]
