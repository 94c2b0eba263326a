# Over-the-air update with A/B slots on flash and rollback.
#
# The factory firmware lives in /iotfw. An update is a bundle (see bundle.py)
# unpacked into slot_a or slot_b; ota.json says which slot is active. boot.py
# puts the active slot first on sys.path. A new slot boots on trial: it must
# reach the broker within ota_confirm_timeout seconds (and within MAX_TRIAL_BOOTS
# boots), else the device switches back and reports "rolled_back".
import hashlib

from iotfw import bundle, httpc, jsonx

STATE_FILE = "ota.json"
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
    storage.write_file(STATE_FILE, jsonx.dumps(state).encode())


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
        self.sha = hashlib.sha256()
        self.size = 0

    def __call__(self, data):
        self.sha.update(data)
        self.size += len(data)
        self.out.write(data)


def _hex(digest):
    return "".join(["%02x" % b for b in digest])


async def install(storage, state, command_id, params, progress, timeout=30):
    """Downloads, verifies, stages and switches; the caller reboots afterwards.

    progress(stage, percent) reports progress. Raises OTAError.
    """
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
    if _hex(hasher.sha.digest()) != params["sha256"]:
        storage.remove(STAGING_FILE)
        raise OTAError("sha256 mismatch")
    if params.get("size") is not None and params["size"] != hasher.size:
        storage.remove(STAGING_FILE)
        raise OTAError("size mismatch")
    progress("installing", None)
    slot = SLOTS[1] if state.get("active") == SLOTS[0] else SLOTS[0]
    storage.remove_tree(slot)
    stream = storage.open_read(STAGING_FILE)
    try:
        version, _ = bundle.unpack(stream, lambda path: storage.open_write(slot + "/" + path))
    except (bundle.BundleError, OSError) as exc:
        storage.remove_tree(slot)
        raise OTAError("bad bundle: %s" % (exc,))
    finally:
        stream.close()
        storage.remove(STAGING_FILE)
    if version != params["version"]:
        storage.remove_tree(slot)
        raise OTAError("bundle is version %s, expected %s" % (version, params["version"]))
    state["versions"][slot] = version
    state["trial"] = {"id": command_id, "version": version, "previous": state.get("active", ""),
                      "boots": 0}
    state["active"] = slot
    save(storage, state)
    progress("rebooting", None)
    return version
