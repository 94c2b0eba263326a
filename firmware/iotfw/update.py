# Downloading an update (see ota.py for the slots, the trial and the trusted key).
# An update comes in two halves: this one runs while the device is online; it
# streams the bundle to flash through the SHA-256, checks the hash and the size,
# and stages it. install.py runs at the next boot (boot.py), before the firmware
# starts: it checks the signature, writes the spare slot and switches to it. The
# verifier, the bundle reader and the image packer so get the heap as it is at
# boot, whole, instead of what a running device has left of it after hours of
# messages. Loaded only while an update downloads, and unloaded after.
import binascii

from iotfw import unload
from iotfw.ota import STAGING_FILE, OTAError, save

MAX_BUNDLE = 1024 * 1024
CHUNK = 1024  # bytes read from the network and written to flash at a time


class _Hasher:
    def __init__(self, out):
        self.out = out
        import hashlib

        self.sha = hashlib.sha256()
        self.size = 0

    def __call__(self, data):
        self.sha.update(data)
        self.size += len(data)
        self.out.write(data)


async def download(storage, state, command_id, params, progress, timeout=30, buf=None):
    """Downloads the bundle, checks its SHA-256 and size, and stages it for
    install.install_staged() at the next boot; the caller reboots afterwards.

    progress(stage, percent) reports progress; buf (CHUNK bytes) is what every chunk
    goes through. Raises OTAError.
    """
    from iotfw import httpc

    if buf is None:
        buf = bytearray(CHUNK)
    progress("downloading", 0)
    out = storage.open_write(STAGING_FILE)
    hasher = _Hasher(out)
    last = [-10]

    def on_chunk(done, total):
        if total:
            pct = done * 100 // total
            if pct >= last[0] + 10:
                last[0] = pct - pct % 10
                progress("downloading", last[0])

    try:
        # streamed: one chunk at a time goes through the hash into the staging file
        await httpc.download(params["url"], hasher, on_chunk, timeout=timeout,
                             chunk=CHUNK, max_size=MAX_BUNDLE, buf=buf)
    except (OSError, httpc.HTTPError) as exc:
        out.close()
        storage.remove(STAGING_FILE)
        raise OTAError("download failed: %s" % (exc,))
    except Exception as exc:  # noqa: BLE001 - timeouts differ between runtimes
        out.close()
        storage.remove(STAGING_FILE)
        raise OTAError("download failed: %r" % (exc,))
    out.close()
    httpc = None
    unload("httpc")
    progress("verifying", None)
    failed = None
    if binascii.hexlify(hasher.sha.digest()).decode() != params["sha256"]:
        failed = "sha256 mismatch"
    elif params.get("size") is not None and params["size"] != hasher.size:
        failed = "size mismatch"
    if failed:
        storage.remove(STAGING_FILE)
        raise OTAError(failed)
    state["staged"] = {"id": command_id, "version": params["version"],
                       "allow_downgrade": bool(params.get("allow_downgrade")), "tries": 0}
    save(storage, state)
    progress("rebooting", None)
