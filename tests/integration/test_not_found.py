"""One 404 shape from the API: JSON {"detail": "<reason>"} for an unknown resource of
every kind and for an unknown /api route (never the dashboard's HTML). Open mode on
purpose (the `stack` fixture): no device connects."""

from __future__ import annotations

from tests.support import Stack

UNKNOWN = "NOSUCHDEVICE1"

RESOURCES = [
    f"/api/devices/{UNKNOWN}",
    f"/api/devices/{UNKNOWN}/latest",
    f"/api/devices/{UNKNOWN}/telemetry",
    f"/api/devices/{UNKNOWN}/events",
    f"/api/devices/{UNKNOWN}/commands",
    f"/api/devices/{UNKNOWN}/shadow",
    "/api/commands/00000000000000000000000000000000",
    "/api/rules/999999",
    "/api/webhooks/999999",
    "/api/firmware/999999",
    "/api/rollouts/999999",
    "/api/users/999999",
]


async def test_every_404_is_json_with_a_reason(stack: Stack) -> None:
    for path in RESOURCES:
        r = await stack.http.get(path)
        assert r.status_code == 404, (path, r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/json"), (path, r.text)
        body = r.json()
        assert set(body) == {"detail"}, (path, body)
        assert isinstance(body["detail"], str), (path, body)
        assert "not found" in body["detail"], (path, body)
        assert body["detail"] != "Not Found", (path, body)  # names what is missing
    r = await stack.http.get("/api/no/such/route")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == {"detail": "Not Found"}  # the dashboard's cue: no such route
