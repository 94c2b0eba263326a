# The ESP32's ROMFS partition (a MicroPython build with MICROPY_VFS_ROM and a
# partition table with a "romfs" partition, e.g. the port's
# partitions-4MiB-romfs.csv): holds the image of the firmware boot.py selected,
# mapped from flash and mounted on /rom, so the firmware's modules run in place
# instead of being copied to the heap. The images themselves live on the file
# system (the factory one in /, an update's in its slot); the partition is written
# only when the selected image differs from what it holds (after an update or a
# rollback); boot.py has unmounted it before (release()), so nothing runs from it
# while it is written, and a cut while writing it is written again at the next boot
# (the partition then differs from the image). A boot whose image does not mount
# runs the same firmware's files.
import esp32
import vfs

MOUNT = "/rom"
BLOCK = 4096
_GET_SEGMENT = 2  # vfs.rom_ioctl: the partition, as a buffer mapped from flash


def _partition():
    found = esp32.Partition.find(esp32.Partition.TYPE_DATA, label="romfs")
    return found[0] if found else None


def release():
    """Unmounts the partition the port mounted at start-up and takes it off
    sys.path: boot selection runs from the factory files, and nothing runs from the
    partition while it may be written."""
    from iotfw import romfs

    romfs.unmount()


def mount(path):
    """Mounts the image at path on MOUNT, writing it into the partition first when
    it holds another; False when there is no partition or no image."""
    from iotfw import romfs

    part = _partition()
    if part is None:
        return False
    length = romfs.fits(path, part.ioctl(4, 0) * BLOCK)  # the partition's blocks
    if length is None:
        return False
    if not _holds(part, path, length):
        _write(part, path, length)
    vfs.mount(vfs.VfsRom(vfs.rom_ioctl(_GET_SEGMENT, 0)), MOUNT)
    return True


def _holds(part, path, length):
    theirs = bytearray(BLOCK)
    ours = bytearray(BLOCK)
    with open(path, "rb") as f:
        for block in range((length + BLOCK - 1) // BLOCK):
            n = f.readinto(ours)
            part.readblocks(block, theirs)  # the partition's blocks are 4 KB
            if theirs[:n] != ours[:n]:
                return False
    return True


def _write(part, path, length):
    buf = bytearray(BLOCK)
    with open(path, "rb") as f:
        for block in range((length + BLOCK - 1) // BLOCK):
            n = f.readinto(buf)
            for i in range(n, BLOCK):
                buf[i] = 0xFF
            part.writeblocks(block, buf)  # erases the block, then writes it
