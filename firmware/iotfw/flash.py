# Files on the device's flash: the file part of every HAL that has a real file
# system (hal.py on the ESP32, the unix HAL of the MicroPython simulator).
#
# Whole-file writes are crash-safe: the new content goes to <path>.tmp, which then
# replaces <path> by rename. Where the file system's rename cannot replace an
# existing file (FAT), the old file is removed first; a crash between that remove
# and the rename leaves only the complete .tmp, which read_file() takes (and puts
# in place). A crash before that leaves the old file, read as it was.
import os

TMP = ".tmp"


def makedirs(path):
    """Creates the folders above path (relative paths stay relative)."""
    built = "/" if path.startswith("/") else ""
    for part in path.split("/")[:-1]:
        if not part:
            continue
        built = built + part if built in ("", "/") else built + "/" + part
        try:
            os.mkdir(built)
        except OSError:
            pass


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def replace(tmp, path):
    """Puts tmp in the place of path, atomically where the file system can."""
    try:
        os.rename(tmp, path)
    except OSError:
        if not _exists(path):
            raise
        os.remove(path)  # FAT: rename does not replace; read_file() covers the gap
        os.rename(tmp, path)


class AtomicWriter:
    """Writes to path.tmp and puts it in the place of path on close."""

    def __init__(self, path):
        self.path = path
        makedirs(path)
        self.f = open(path + TMP, "wb")

    def write(self, data):
        self.f.write(data)

    def close(self):
        self.f.close()
        replace(self.path + TMP, self.path)


class FileStorage:
    def read_file(self, path):
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError:
            pass
        # the write that was replacing it stopped between remove and rename
        try:
            with open(path + TMP, "rb") as f:
                data = f.read()
        except OSError:
            return None
        try:
            os.rename(path + TMP, path)
        except OSError:
            pass
        return data

    def write_file(self, path, data):
        """data: bytes, or a list of bytes written one after the other."""
        w = AtomicWriter(path)
        for part in data if isinstance(data, list) else (data,):
            w.write(part)
        w.close()

    def open_write(self, path):
        return AtomicWriter(path)

    def open_read(self, path):
        return open(path, "rb")

    def size(self, path):
        return os.stat(path)[6]

    def remove(self, path):
        try:
            os.remove(path)
        except OSError:
            pass

    def remove_tree(self, path):
        try:
            entries = list(os.ilistdir(path))
        except OSError:
            return
        for entry in entries:
            child = path + "/" + entry[0]
            if entry[1] == 0x4000:
                self.remove_tree(child)
            else:
                self.remove(child)
        try:
            os.rmdir(path)
        except OSError:
            pass
