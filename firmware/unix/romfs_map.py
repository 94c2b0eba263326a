# The simulated device's ROMFS partition: a region of fixed size, as on the chip,
# that holds the selected firmware's image and is mounted to run its modules in
# place. The chip maps the partition from flash; this port holds it in one block of
# memory, taken at the start of boot whether an image is mounted or not, and the
# simulator adds that block to the process's heap (iotp.simulator.mpy), so the
# firmware's own heap is what it would have on the chip. IOTP_ROMFS_PARTITION is
# the partition's size in bytes; without it the device is a build without ROMFS
# (modules load from files).
import os

MOUNT = "/rom"
_region = None


def release():
    """Nothing mounted from the partition, and nothing on sys.path from it (as the
    ESP32's romfs_map leaves it); the partition's block taken."""
    global _region
    from iotfw import romfs

    romfs.unmount()
    size = int(os.getenv("IOTP_ROMFS_PARTITION") or 0)
    if size and _region is None:
        import gc

        gc.collect()
        _region = bytearray(size)


def mount(path):
    """Mounts the image at path on MOUNT; False when there is none to mount."""
    from iotfw import romfs

    if _region is None or romfs.fits(path, len(_region)) is None:
        return False
    import vfs

    with open(path, "rb") as f:
        f.readinto(_region)
    vfs.mount(vfs.VfsRom(_region), MOUNT)
    return True
