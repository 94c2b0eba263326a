# Over-the-air update with A/B slots on flash and rollback.
#
# The factory firmware lives in /iotfw. An update is a bundle (see bundle.py),
# downloaded while the device runs and staged ("staged" in ota.json), then
# unpacked into slot_a or slot_b at the next boot, before the firmware starts;
# ota.json says which slot is active. boot.py puts the active slot first on
# sys.path. A new slot boots on trial: it must reach the broker within
# ota_confirm_timeout seconds (and within MAX_TRIAL_BOOTS boots), else the device
# switches back and reports "rolled_back".
#
# Only bundles signed with the key in KEY_FILE (written at flash time, see
# firmware/README.md) are installed: the signature of the manifest is checked
# before the spare slot is touched, every file against the manifest as it is
# written, and the slot is switched to only when all of it matched. A bundle
# signed with that key may carry the next key (next_key): it replaces the
# trusted key once the new version is confirmed.
import binascii

from iotfw import VERSION, jsonx

# Downloading an update is update.py's, installing it install.py's, each loaded only
# while it runs: this module is what every boot needs (the slots, the trial, the
# trusted key).

STATE_FILE = "ota.json"
STAGING_FILE = "ota.tmp"  # a downloaded bundle, until the next boot installs it
KEY_FILE = "ota_key.json"
SLOTS = ("slot_a", "slot_b")
MAX_TRIAL_BOOTS = 3


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
    state.setdefault("staged", None)
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


def refuse_staged(storage, state, failed):
    """The staged update will not be installed: reported as its command's error ack
    once the device is online (take_results)."""
    job = state.get("staged") or {}
    state["staged"] = None
    state["results"].append({"id": job.get("id"), "status": "error", "error": failed,
                             "version": job.get("version")})
    storage.remove(STAGING_FILE)
    save(storage, state)


def take_results(storage, state):
    results = state["results"]
    if results:
        state["results"] = []
        save(storage, state)
    return results
