from fwtest_helpers import raises
from iotfw import commands
from iotfw.commands import CommandError


def test_parse_valid_command():
    cmd = commands.parse(b'{"id": "c1", "command": "relay", "params": {"name": "light"}}')
    assert cmd == {"id": "c1", "command": "relay", "params": {"name": "light"}}
    assert commands.parse(b'{"id": "c2", "command": "ping"}')["params"] == {}


def test_parse_errors_keep_the_id_when_there_is_one():
    for raw in (
        b"{nope",
        b"[]",
        b'"x"',
        b"\xff",
        b'{"command": "ping"}',
        b'{"id": 5, "command": "ping"}',
        b'{"id": "", "command": "ping"}',
    ):
        exc = raises(CommandError, commands.parse, raw)
        assert exc.command_id is None
    exc = raises(CommandError, commands.parse, b'{"id": "c", "command": 7}')
    assert exc.command_id == "c"
    exc = raises(CommandError, commands.parse, b'{"id": "c", "command": "x", "params": [1]}')
    assert exc.command_id == "c"
    assert "params" in str(exc)


def test_relay_params():
    names = ("light", "fan")
    assert commands.relay_params("c", {"name": "light", "state": "on"}, names) == ("light", True)
    assert commands.relay_params("c", {"name": "fan", "state": "OFF"}, names) == ("fan", False)
    assert commands.relay_params("c", {"name": "fan", "state": True}, names) == ("fan", True)
    assert commands.relay_params("c", {"name": "fan", "state": "toggle"}, names)[1] == "toggle"
    for params in (
        {"name": "pump", "state": "on"},
        {"name": "fan", "state": "maybe"},
        {"name": 3, "state": "on"},
        {"name": "fan", "state": 1},
        {"name": "fan", "state": "on", "x": 1},
    ):
        assert raises(CommandError, commands.relay_params, "c", params, names).command_id == "c"


def test_servo_params():
    assert commands.servo_params("c", {"angle": 90}) == 90
    assert commands.servo_params("c", {"angle": 180.0}) == 180
    exc = raises(CommandError, commands.servo_params, "c", {"angle": 200})
    assert str(exc) == "angle must be 0..180"
    for angle in (-1, "90", True, None, 45.5):
        raises(CommandError, commands.servo_params, "c", {"angle": angle})


def test_reboot_and_ota_params():
    assert commands.reboot_params("c", {}) == 0
    assert commands.reboot_params("c", {"delay": 1.5}) == 1.5
    raises(CommandError, commands.reboot_params, "c", {"delay": -1})
    sha = "ab" * 32
    ota = commands.ota_params(
        "c", {"url": "http://h/fw.bin", "sha256": sha.upper(), "version": "1.1.0"}
    )
    assert ota["sha256"] == sha
    assert ota["size"] is None
    assert ota["allow_downgrade"] is False
    assert (
        commands.ota_params(
            "c", {"url": "http://h/fw.bin", "sha256": sha, "version": "1", "allow_downgrade": True}
        )["allow_downgrade"]
        is True
    )
    for params in (
        {"url": "ftp://h", "sha256": sha, "version": "1"},
        {"url": "http://h", "sha256": "zz" * 32, "version": "1"},
        {"url": "http://h", "sha256": sha[:-1], "version": "1"},
        {"url": "http://h", "sha256": sha, "version": ""},
        {"url": "http://h", "sha256": sha, "version": "1", "size": 0},
        {"url": "http://h", "sha256": sha, "version": "1", "allow_downgrade": "yes"},
    ):
        raises(CommandError, commands.ota_params, "c", params)


def test_recent_answers_a_repeat_with_the_first_ack():
    recent = commands.Recent(size=3)
    assert recent.begin("a") is None
    assert recent.begin("a") is commands.Recent.RUNNING  # first delivery still running
    recent.finish({"id": "a", "status": "progress", "result": {"stage": "x"}})
    assert recent.begin("a") is commands.Recent.RUNNING  # progress is not an answer
    ack = {"id": "a", "status": "ok", "result": {"n": 1}}
    recent.finish(ack)
    assert recent.begin("a") == ack
    recent.finish({"id": "zz", "status": "ok"})  # unknown ids are not remembered
    assert recent.begin("zz") is None
    assert recent.repeats == 3


def test_recent_is_bounded_and_forgets_the_oldest():
    recent = commands.Recent(size=2)
    for cid in ("a", "b", "c"):
        assert recent.begin(cid) is None
        recent.finish({"id": cid, "status": "error", "error": "e"})
    assert len(recent) == 2
    assert recent.begin("a") is None  # forgotten: runs again
    assert recent.begin("c")["error"] == "e"


def test_the_id_of_a_command_too_large_to_parse_is_found_in_its_text():
    pad = "x" * 3000
    for text, expected in (
        ('{"id": "a1", "command": "ping"}', "a1"),
        ('{"params": {"id": "inner", "pad": "%s"}, "id": "outer"}' % pad, "outer"),
        ('{"command": "id", "note": "\\"id\\": \\"no\\"", "id" : "ok"}', "ok"),
        ('{"pad": "%s", "id":"last"}' % pad, "last"),
        ('{"id": 5, "command": "id"}', None),
        ('{"id": {"x": "y"}}', None),
        ('{"command": "ping"}', None),
        ('{"id": "%s"}' % ("i" * 200), None),
        ("not json at all", None),
    ):
        assert commands.find_id(text.encode()) == expected, text
        assert commands.find_id(memoryview(bytearray(text.encode()))) == expected, text
