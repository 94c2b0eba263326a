"""Provisioning topics (docs/protocol.md): an unknown device, logged in as
``PROVISION_USER`` with the fleet secret, asks for its own credentials on its request
topic and reads the answer on its response topic. Every broker's ACL follows these."""

from __future__ import annotations

PROVISION_USER = "provision"
PROVISION_ROOT = "provision"


def request_topic(device_id: str) -> str:
    return f"{PROVISION_ROOT}/{device_id}/request"


def response_topic(device_id: str) -> str:
    return f"{PROVISION_ROOT}/{device_id}/response"
