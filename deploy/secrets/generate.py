"""The compose deployment's secrets, generated once (service `secrets`, compose.yaml).

Every secret is a file in the `iotp-secrets` volume, written only if it is missing, so
every replica of every service reads the same ones and a restart changes nothing:

  postgres_password             PostgreSQL's (POSTGRES_PASSWORD_FILE)
  IOTP_DATABASE_URL             the platform's database URL, with that password
  IOTP_SECRET_KEY               signs tokens, derives the platform's MQTT password
  IOTP_PROVISIONING_SECRET      the fleet secret devices provision with
  IOTP_ADMIN_PASSWORD           the first admin's password

The platform reads them as settings (IOTP_SECRETS_DIR, a file per setting). Mosquitto's
password and ACL files are created empty (nobody can log in) until `mosquitto-sync`
writes them from the database. Standard library only: it runs in the platform image.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

SECRETS_DIR = Path(os.environ.get("SECRETS_DIR", "/run/iotp-secrets"))
MOSQUITTO_AUTH_DIR = Path(os.environ.get("MOSQUITTO_AUTH_DIR", "/mosquitto/auth"))
PLATFORM_UID = 10001  # deploy/Dockerfile's `iotp` user: reads the secrets
MOSQUITTO_UID = 1883  # eclipse-mosquitto's user; mosquitto-sync runs as it too
DATABASE = "postgresql://iotp:{password}@postgres:5432/iotp"


def _own(path: Path, uid: int, gid: int) -> None:
    if os.geteuid() == 0:
        os.chown(path, uid, gid)


def write_once(path: Path, value: str, mode: int = 0o440) -> bool:
    """Creates path with value unless it exists; True when it was created."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(value)
    # the platform reads them as their owner, mosquitto-sync as their group
    _own(path, PLATFORM_UID, MOSQUITTO_UID)
    os.chmod(path, mode)
    return True


def generate() -> dict[str, str]:
    """Writes what is missing; returns the secrets made in this run."""
    SECRETS_DIR.mkdir(parents=True, exist_ok=True)
    made: dict[str, str] = {}
    wanted = {
        "postgres_password": secrets.token_urlsafe(24),
        "IOTP_SECRET_KEY": secrets.token_urlsafe(48),
        "IOTP_PROVISIONING_SECRET": secrets.token_urlsafe(24),
        "IOTP_ADMIN_PASSWORD": secrets.token_urlsafe(12),
    }
    for name, value in wanted.items():
        if write_once(SECRETS_DIR / name, value):
            made[name] = value
    password = (SECRETS_DIR / "postgres_password").read_text().strip()
    if write_once(SECRETS_DIR / "IOTP_DATABASE_URL", DATABASE.format(password=password)):
        made["IOTP_DATABASE_URL"] = "(written)"
    MOSQUITTO_AUTH_DIR.mkdir(parents=True, exist_ok=True)
    _own(MOSQUITTO_AUTH_DIR, MOSQUITTO_UID, MOSQUITTO_UID)
    for name in ("passwords", "acl", "platform-passwords", "platform-acl"):
        path = MOSQUITTO_AUTH_DIR / name
        if not path.exists():
            path.touch(mode=0o600)
            _own(path, MOSQUITTO_UID, MOSQUITTO_UID)
    return made


def main() -> int:
    made = generate()
    if "IOTP_ADMIN_PASSWORD" in made:
        # Shown once, here (docker compose logs secrets); kept in the volume.
        print("IoT Platform secrets generated (volume iotp-secrets):", flush=True)
        print(f"  admin password: {made['IOTP_ADMIN_PASSWORD']}  (user admin)")
        if "IOTP_PROVISIONING_SECRET" in made:
            print(f"  fleet secret:   {made['IOTP_PROVISIONING_SECRET']}  (devices' fleet_secret)")
    else:
        print("IoT Platform secrets: present, unchanged", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
