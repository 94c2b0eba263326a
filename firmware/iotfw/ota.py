# Over-the-air update with A/B slots on flash and rollback.
#
# The factory firmware lives in /iotfw. An update is a bundle (see bundle.py)
# unpacked into slot_a or slot_b; ota.json says which slot is active. boot.py
# puts the active slot first on sys.path. A new slot boots on trial: it must
# reach the broker within ota_confirm_timeout seconds (and within MAX_TRIAL_BOOTS
# boots), else the device switches back and reports "rolled_back".
#
# Only bundles signed with the key in KEY_FILE (written at flash time, see
# firmware/README.md) are installed: the signature of the manifest is checked
# before the spare slot is touched, every file against the manifest as it is
# written, and the slot is switched to only when all of it matched. A bundle
# signed with that key may carry the next key (next_key): it replaces the
# trusted key once the new version is confirmed.
import binascii

from iotfw import VERSION, jsonx

# bundle and httpc (and the verifier) are imported by the functions of an update
# only: the heap holds them while one runs, not at every boot

STATE_FILE = "ota.json"
KEY_FILE = "ota_key.json"
STAGING_FILE = "ota.tmp"
SLOTS = ("slot_a", "slot_b")
MAX_TRIAL_BOOTS = 3
MAX_BUNDLE = 1024 * 1024


class OTAError(Exception):
    pass


def load(storage):
    state = None
    try:
        raw = storage.read_file(STATE_FILE)
        if raw:
            state = jsonx.loads(raw)
    except (OSError, ValueError):
        state = None
    if not isinstance(state, dict):
        state = {}
    state.setdefault("active", "")
    state.setdefault("versions", {})
    state.setdefault("trial", None)
    state.setdefault("results", [])
    if state["active"] and state["active"] not in SLOTS:
        state["active"] = ""
    return state


def save(storage, state):
    rotate = state.pop("rotate", None)
    if rotate:
        # before the state: a cut in between repeats the rotation at the next confirm
        _, allow_unsigned = trusted_key(storage)
        storage.write_file(KEY_FILE, jsonx.dumps({"key": rotate,
                                                  "allow_unsigned": allow_unsigned}).encode())
    storage.write_file(STATE_FILE, jsonx.dumps(state).encode())


def trusted_key(storage):
    """(the public key bundles must be signed with, or None; whether unsigned
    bundles are allowed), from KEY_FILE. A missing or corrupt file trusts nothing."""
    try:
        raw = storage.read_file(KEY_FILE)
        doc = jsonx.loads(raw) if raw else {}
    except (OSError, ValueError):
        doc = {}
    if not isinstance(doc, dict):
        doc = {}
    key = doc.get("key")
    try:
        key = binascii.unhexlify(key) if isinstance(key, str) and len(key) == 64 else None
    except ValueError:
        key = None
    return key, doc.get("allow_unsigned") is True


def check_signature(storage, manifest_bytes, signature):
    """Raises OTAError unless the manifest is signed with the trusted key (or
    unsigned bundles are allowed on this device)."""
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
    if not ed25519.verify(key, manifest_bytes, signature[32:]):
        raise OTAError("bad signature: the manifest is not what key %s signed" % mine)


def running_version(state, builtin):
    slot = state.get("active")
    if slot:
        return state["versions"].get(slot, builtin)
    return builtin


def boot_select(storage):
    """Called once per boot before the firmware is imported; returns the slot to
    run ('' = factory). Counts trial boots and rolls back after too many."""
    state = load(storage)
    trial = state.get("trial")
    if trial:
        trial["boots"] = trial.get("boots", 0) + 1
        if trial["boots"] > MAX_TRIAL_BOOTS:
            rollback(state)
        save(storage, state)
    return state["active"]


def rollback(state):
    trial = state.get("trial")
    if not trial:
        return
    state["active"] = trial.get("previous", "")
    state["results"].append({"id": trial.get("id"), "status": "error",
                             "error": "rolled_back", "version": trial.get("version")})
    state["trial"] = None


def confirm(state):
    """The trial version reached the broker: keep it."""
    trial = state.get("trial")
    if not trial:
        return
    state["results"].append({"id": trial.get("id"), "status": "ok",
                             "version": trial.get("version")})
    if trial.get("next_key"):
        state["rotate"] = trial["next_key"]
    state["trial"] = None


def take_results(storage, state):
    results = state["results"]
    if results:
        state["results"] = []
        save(storage, state)
    return results


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
        await httpc.download(params["url"], hasher, on_chunk, timeout=timeout,
                             max_size=MAX_BUNDLE)
    except (OSError, httpc.HTTPError) as exc:
        out.close()
        storage.remove(STAGING_FILE)
        raise OTAError("download failed: %s" % (exc,))
    except Exception as exc:  # noqa: BLE001 - timeouts differ between runtimes
        out.close()
        storage.remove(STAGING_FILE)
        raise OTAError("download failed: %r" % (exc,))
    out.close()
    progress("verifying", None)
    if bundle.hexlify(hasher.sha.digest()) != params["sha256"]:
        storage.remove(STAGING_FILE)
        raise OTAError("sha256 mismatch")
    if params.get("size") is not None and params["size"] != hasher.size:
        storage.remove(STAGING_FILE)
        raise OTAError("size mismatch")
    from iotfw import payloads
    stream = storage.open_read(STAGING_FILE)
    slot = SLOTS[1] if state.get("active") == SLOTS[0] else SLOTS[0]
    try:
        manifest = _check(storage, state, stream, params)
        progress("installing", None)
        storage.remove_tree(slot)
        try:
            bundle.unpack(stream, manifest, lambda path: storage.open_write(slot + "/" + path),
                          payloads.micropython_version())
        except (bundle.BundleError, OSError) as exc:
            storage.remove_tree(slot)
            raise OTAError("bad bundle: %s" % (exc,))
    finally:
        stream.close()
        storage.remove(STAGING_FILE)
    version = manifest["version"]
    state["versions"][slot] = version
    state["trial"] = {"id": command_id, "version": version, "previous": state.get("active", ""),
                      "boots": 0, "next_key": manifest.get("next_key")}
    state["active"] = slot
    save(storage, state)
    progress("rebooting", None)
    return version


def _check(storage, state, stream, params):
    """Reads the bundle's head and refuses it unless it is signed with the trusted
    key, is the version the command names, and is not older than the running
    version (unless allow_downgrade). Returns the manifest."""
    from iotfw import bundle

    try:
        manifest_bytes, signature = bundle.read_head(stream)
        check_signature(storage, manifest_bytes, signature)
        manifest = bundle.parse_manifest(manifest_bytes)
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
    return manifest
