# The simulated device's ROMFS partition: a region of fixed size, as on the chip,
# that holds the selected firmware's image and is mounted to run its modules in
# place. The chip maps the partition from flash; this port reads it into one block
# of memory at boot, before the firmware allocates, and the simulator adds that
# block to the process's heap (iotp.simulator.mpy), so the firmware's own heap is
# what it would have on the chip. IOTP_ROMFS_PARTITION is the partition's size in
# bytes; without it the device is a build without ROMFS (modules load from files).
import os

MOUNT = "/rom"


def mount(path):
    """Mounts the image at path on MOUNT; False when there is none to mount."""
    size = int(os.getenv("IOTP_ROMFS_PARTITION") or 0)
    if not size:
        return False
    try:
        length = os.stat(path)[6]
    except OSError:
        return False
    if length > size:
        print("romfs: %s is %d bytes, more than the partition (%d)" % (path, length, size))
        return False
    import gc
    import vfs

    gc.collect()
    region = bytearray(size)
    with open(path, "rb") as f:
        f.readinto(region)
    vfs.mount(vfs.VfsRom(region), MOUNT)
    return True
