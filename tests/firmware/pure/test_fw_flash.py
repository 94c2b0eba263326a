# Crash-safe file writes (iotfw/flash.py): a power cut at any step of writing the
# config leaves the old or the new content readable at the next boot, on a file
# system whose rename replaces files (littlefs, POSIX) and on one whose rename
# does not (FAT: the old file is removed first).
# Runs under pytest and inside MicroPython.
import os
import sys

from iotfw import flash

OLD = b'{"interval": 5, "name": "old"}'
NEW = b'{"interval": 7, "name": "new", "mqtt_host": "10.0.0.2"}'


class PowerCut(Exception):
    pass


class Cut:
    """Counts the steps of a write and cuts the power at step `at`."""

    def __init__(self, at):
        self.at = at
        self.steps = 0

    def step(self):
        self.steps += 1
        if self.steps == self.at:
            raise PowerCut()


class CutFile:
    def __init__(self, cut, f):
        self.cut = cut
        self.f = f

    def write(self, data):
        half = len(data) // 2
        self.f.write(data[:half])
        self.f.flush()
        self.cut.step()  # half of it on flash
        self.f.write(data[half:])
        self.cut.step()  # all of it written, not closed

    def close(self):
        self.f.close()
        self.cut.step()


class CutOS:
    """os for flash.py: the real one, with steps counted; fat=True makes rename
    refuse to replace an existing file."""

    def __init__(self, cut, fat):
        self.cut = cut
        self.fat = fat

    def mkdir(self, path):
        os.mkdir(path)

    def stat(self, path):
        return os.stat(path)

    def remove(self, path):
        self.cut.step()
        os.remove(path)

    def rename(self, a, b):
        self.cut.step()
        if self.fat:
            try:
                os.stat(b)
            except OSError:
                pass
            else:
                raise OSError(17, "exists")
        os.rename(a, b)


def _scratch():
    if sys.implementation.name == "micropython":
        base = "/tmp/flashtest"
    else:
        import tempfile

        base = tempfile.mkdtemp()
    try:
        os.mkdir(base)
    except OSError:
        pass
    return base


def _clean(path):
    for p in (path, path + flash.TMP):
        try:
            os.remove(p)
        except OSError:
            pass


def _write_cut(path, at, fat):
    cut = Cut(at)
    real_os = flash.os
    flash.os = CutOS(cut, fat)
    flash.open = lambda p, mode: CutFile(cut, open(p, mode))
    try:
        cut.step()  # before anything
        flash.FileStorage().write_file(path, NEW)
        return True
    except PowerCut:
        return False
    finally:
        flash.os = real_os
        del flash.open


def _cut_at_every_step(fat):
    path = _scratch() + "/config.json"
    seen = set()
    at = 1
    while True:
        _clean(path)
        flash.FileStorage().write_file(path, OLD)
        finished = _write_cut(path, at, fat)
        # the next boot
        got = flash.FileStorage().read_file(path)
        assert got in (OLD, NEW), (at, got)
        seen.add(got)
        if finished:
            break
        at += 1
    assert seen == {OLD, NEW}
    # once read, the recovered content is in its place, and no .tmp is taken again
    assert flash.FileStorage().read_file(path) == NEW
    _clean(path)
    return at


def test_power_cut_at_every_step_rename_replaces():
    steps = _cut_at_every_step(fat=False)
    assert steps >= 5  # begin, half, written, closed, renamed


def test_power_cut_at_every_step_rename_does_not_replace():
    steps = _cut_at_every_step(fat=True)
    assert steps >= 7  # ... and the remove before the second rename


def test_no_file_reads_none():
    path = _scratch() + "/nothing.json"
    _clean(path)
    assert flash.FileStorage().read_file(path) is None
