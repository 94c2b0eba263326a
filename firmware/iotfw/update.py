# Downloading, checking and installing an update (see ota.py for the slots, the
# trial and the trusted key). Loaded only while an update runs, and unloaded after:
# with the bundle reader, the HTTP client and the verifier it loads, it is the
# largest code the device has, and it needs it once per update.
from iotfw import VERSION, unload
from iotfw.ota import KEY_FILE, SLOTS, OTAError, running_version, save, trusted_key

STAGING_FILE = "ota.tmp"
MAX_BUNDLE = 1024 * 1024
CHUNK = 1024  # bytes read from the network and written to flash at a time


def check_signature(storage, manifest, signature):
    """Raises OTAError unless the manifest (its bytes, or an iterable of chunks of
    them) is signed with the trusted key (or unsigned bundles are allowed on this
    device)."""
    from iotfw import bundle

    key, allow_unsigned = trusted_key(storage)
    if allow_unsigned and (key is None or not signature):
        return
    if key is None:
        raise OTAError("this device has no signing key (%s): updates are refused" % KEY_FILE)
    mine = bundle.key_id(key)
    if not signature:
        raise OTAError("unsigned bundle refused: this device installs only bundles signed "
                       "with key %s" % mine)
    signer = bytes(signature[:32])
    if signer != key:
        raise OTAError("bundle signed with key %s refused: this device trusts key %s"
                       % (bundle.key_id(signer), mine))
    import gc

    from iotfw import ed25519

    gc.collect()  # what the download left behind: the verifier needs contiguous room
    good = ed25519.verify(key, manifest, signature[32:])
    ed25519 = None
    unload("ed25519")  # checked once per update: its tables go before the files are written
    unload("sha512")
    gc.collect()
    if not good:
        raise OTAError("bad signature: the manifest is not what key %s signed" % mine)


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


async def install(storage, state, command_id, params, progress, timeout=30):
    """Downloads, verifies, stages and switches; the caller reboots afterwards.

    progress(stage, percent) reports progress. Raises OTAError.
    """
    from iotfw import bundle, httpc

    # one buffer for every chunk of the update (download, files, image): allocated
    # once, before the heap is cut up, and nothing allocated per chunk after
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
    unload("httpc")  # downloaded: the verifier wants the room
    progress("verifying", None)
    if bundle.hexlify(hasher.sha.digest()) != params["sha256"]:
        storage.remove(STAGING_FILE)
        raise OTAError("sha256 mismatch")
    if params.get("size") is not None and params["size"] != hasher.size:
        storage.remove(STAGING_FILE)
        raise OTAError("size mismatch")
    from iotfw import payloads

    stream = storage.open_read(STAGING_FILE)
    data = None
    slot = SLOTS[1] if state.get("active") == SLOTS[0] else SLOTS[0]
    try:
        staged, manifest = _check(storage, state, stream, params)
        progress("installing", None)
        storage.remove_tree(slot)
        try:
            # the files' bytes through a second handle: the first reads the manifest
            data = storage.open_read(STAGING_FILE)
            paths = staged.unpack(data, lambda path: storage.open_write(slot + "/" + path),
                                  payloads.micropython_version(), buf)
        except (bundle.BundleError, OSError) as exc:
            storage.remove_tree(slot)
            raise OTAError("bad bundle: %s" % (exc,))
        try:
            _pack_image(storage, slot, paths, buf)
        except OSError as exc:
            storage.remove_tree(slot)
            raise OTAError("cannot write the firmware image: %s" % (exc,))
    finally:
        stream.close()
        if data is not None:
            data.close()
        storage.remove(STAGING_FILE)
    version = manifest["version"]
    state["versions"][slot] = version
    state["trial"] = {"id": command_id, "version": version, "previous": state.get("active", ""),
                      "boots": 0, "next_key": manifest.get("next_key")}
    state["active"] = slot
    save(storage, state)
    progress("rebooting", None)
    return version


def _pack_image(storage, slot, paths, buf):
    """On a build with ROMFS (this firmware runs from an image), the slot gets the
    image of its iotfw package, built from the files just written and checked;
    boot.py mounts it when it selects the slot."""
    from iotfw import romfs

    if not romfs.running_from_image():
        return
    files = romfs.board_files()
    for path in paths:
        full = slot + "/" + path
        files.append((path, storage.size(full), lambda full=full: storage.open_read(full)))
    out = storage.open_write(slot + "/" + romfs.IMAGE)
    try:
        romfs.pack(files, out, buf)
    finally:
        out.close()


def _check(storage, state, stream, params):
    """Reads the bundle's head and refuses it unless it is signed with the trusted
    key, is the version the command names, and is not older than the running
    version (unless allow_downgrade). Returns the bundle.Bundle and its manifest."""
    from iotfw import bundle

    try:
        staged = bundle.Bundle(stream)
        signature = staged.signature
        check_signature(storage, staged.manifest_chunks(), signature)
        manifest = staged.manifest()
    except (bundle.BundleError, OSError) as exc:
        raise OTAError("bad bundle: %s" % (exc,))
    if signature and manifest["key_id"] != bundle.key_id(bytes(signature[:32])):
        raise OTAError("bad bundle: the manifest names another key than its signer")
    version = manifest["version"]
    if version != params["version"]:
        raise OTAError("bundle is version %s, expected %s" % (version, params["version"]))
    running = running_version(state, VERSION)
    if bundle.older(version, running) and not params.get("allow_downgrade"):
        raise OTAError("downgrade from %s to %s refused (allow_downgrade not set)"
                       % (running, version))
    return staged, manifest
