# Installing a staged update, at boot (boot.py), before the firmware starts: the
# signature of the manifest is checked, every file against the manifest as it is
# written to the spare slot, the slot's ROMFS image packed, and the slot switched
# to only when all of it matched (update.py downloads and stages the bundle; ota.py
# has the slots, the trial and the trusted key). A refusal goes into the OTA
# state's results, sent as the command's error ack once the device is online.
from iotfw import VERSION, unload
from iotfw.ota import (KEY_FILE, SLOTS, STAGING_FILE, OTAError, load, refuse_staged,
                       running_version, save, trusted_key)
from iotfw.update import CHUNK

MAX_INSTALL_TRIES = 3  # boots that began installing a staged bundle and did not finish


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

    gc.collect()
    good = ed25519.verify(key, manifest, signature[32:])
    ed25519 = None
    unload("ed25519")  # checked once per update: its tables go before the files are written
    unload("sha512")
    gc.collect()
    if not good:
        raise OTAError("bad signature: the manifest is not what key %s signed" % mine)


def install_staged(storage, log=print):
    """At boot: installs the bundle update.download() staged, if there is one.
    Returns True when the device switched to a new slot. A refusal goes into the OTA
    state's results, sent as the command's error ack once the device is online; a
    boot that began installing and did not finish counts, and after
    MAX_INSTALL_TRIES of them the update is given up."""
    state = load(storage)
    job = state.get("staged")
    if not job:
        return False
    job["tries"] = job.get("tries", 0) + 1
    save(storage, state)
    try:
        if job["tries"] > MAX_INSTALL_TRIES:
            raise OTAError("installing did not finish in %d boots" % MAX_INSTALL_TRIES)
        _install(storage, state, job, log)
    except OTAError as exc:
        failed = str(exc)
    except Exception as exc:  # noqa: BLE001 - never keep a device from booting
        failed = "update failed: %r" % (exc,)
    else:
        storage.remove(STAGING_FILE)
        return True
    refuse_staged(storage, state, failed)
    log("update %s refused: %s" % (job.get("version"), failed))
    return False


def _install(storage, state, job, log):
    from iotfw import bundle, payloads

    def mem(stage):
        # the heap as it installs (firmware/README.md, "Heap"); MicroPython only
        import gc

        if hasattr(gc, "mem_free"):
            gc.collect()
            log("mem install %s free %d" % (stage, gc.mem_free()))

    # one buffer for the files and the image, allocated before anything else
    buf = bytearray(CHUNK)
    mem("verifying")
    stream = storage.open_read(STAGING_FILE)
    data = None
    slot = SLOTS[1] if state.get("active") == SLOTS[0] else SLOTS[0]
    try:
        staged, manifest = _check(storage, state, stream, job)
        mem("installing")
        storage.remove_tree(slot)
        try:
            # the files' bytes through a second handle: the first reads the manifest
            data = storage.open_read(STAGING_FILE)
            paths = staged.unpack(data, lambda path: storage.open_write(slot + "/" + path),
                                  payloads.micropython_version(), buf)
        except (bundle.BundleError, OSError) as exc:
            storage.remove_tree(slot)
            raise OTAError("bad bundle: %s" % (exc,))
        mem("packing")
        try:
            _pack_image(storage, slot, paths, buf)
        except OSError as exc:
            storage.remove_tree(slot)
            raise OTAError("cannot write the firmware image: %s" % (exc,))
    finally:
        stream.close()
        if data is not None:
            data.close()
    version = manifest["version"]
    state["versions"][slot] = version
    state["trial"] = {"id": job.get("id"), "version": version,
                      "previous": state.get("active", ""), "boots": 0,
                      "next_key": manifest.get("next_key")}
    state["active"] = slot
    state["staged"] = None
    save(storage, state)
    log("update %s installed in %s" % (version, slot))
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


def _check(storage, state, stream, job):
    """Reads the bundle's head and refuses it unless it is signed with the trusted
    key, is the version the command named, and is not older than the running
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
    if version != job["version"]:
        raise OTAError("bundle is version %s, expected %s" % (version, job["version"]))
    running = running_version(state, VERSION)
    if bundle.older(version, running) and not job.get("allow_downgrade"):
        raise OTAError("downgrade from %s to %s refused (allow_downgrade not set)"
                       % (running, version))
    return staged, manifest
