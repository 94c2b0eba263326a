"""`iotp firmware ...`: OTA bundles and the Ed25519 keys that sign them."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from iotp.errors import InvalidRequestError
from iotp.services import signing
from iotp.services.manifest import BundleFormatError, key_id, parse, public_bytes

firmware_app = typer.Typer(
    no_args_is_help=True, help="Firmware bundles for OTA updates, and their signing keys."
)

DataDir = Annotated[
    Path | None, typer.Option(help="the platform's data dir (default: IOTP_DATA_DIR or ./data)")
]


def _data_dir(given: Path | None) -> Path:
    if given is not None:
        return given
    from iotp.cli_security import load_settings

    return load_settings().data_dir


def _fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    sys.exit(2)


def _describe(what: str, public: bytes) -> None:
    print(f"{what}: key id {key_id(public)}, public key {public.hex()}")


@firmware_app.command("bundle")
def firmware_bundle(
    version: Annotated[str, typer.Argument(help="version the bundle installs, e.g. 1.1.0")],
    out: Annotated[Path, typer.Argument(help="file to write")],
    source: Annotated[Path | None, typer.Option(help="firmware folder (default: ours)")] = None,
    key: Annotated[Path | None, typer.Option(help="sign it with this private key file")] = None,
) -> None:
    """Build an OTA bundle of the firmware (upload it with POST /api/firmware)."""
    from iotp.simulator.bundle import build_firmware_bundle

    try:
        data = build_firmware_bundle(
            version, source, key=None if key is None else signing.load_key(key)
        )
    except (InvalidRequestError, BundleFormatError, ValueError) as exc:
        _fail(str(exc))
    out.write_bytes(data)
    print(f"{out}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}")


@firmware_app.command("image")
def firmware_image(
    out: Annotated[Path, typer.Argument(help="file to write, e.g. iotfw.rom")],
    source: Annotated[Path | None, typer.Option(help="firmware folder (default: ours)")] = None,
) -> None:
    """Build the ROMFS image of the firmware, for boards built with ROMFS (the
    modules run from flash: firmware/README.md, "Heap")."""
    from iotp.simulator.fleet import SimulatorError
    from iotp.simulator.mpy import ROMFS_PARTITION_BYTES, board_image

    try:
        size = board_image(out, source)
    except (SimulatorError, OSError) as exc:
        _fail(str(exc))
    if size > ROMFS_PARTITION_BYTES:
        _fail(f"{out}: {size} bytes, more than a {ROMFS_PARTITION_BYTES}-byte romfs partition")
    print(f"{out}: {size} bytes, sha256 {hashlib.sha256(out.read_bytes()).hexdigest()}")


@firmware_app.command("keygen")
def firmware_keygen(
    output: Annotated[
        Path | None,
        typer.Option(help="write an offline key to this file instead of the server's data dir"),
    ] = None,
    next_key: Annotated[
        bool,
        typer.Option("--next", help="create the key to rotate to (bundles then carry it)"),
    ] = False,
    promote: Annotated[
        bool, typer.Option(help="make the next key the current one (after the fleet took it)")
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Create an Ed25519 signing key (never overwrites one).

    Without options: the server's key, which signs every unsigned bundle uploaded."""
    try:
        if promote:
            key = signing.promote(_data_dir(data_dir))
            _describe("current key", public_bytes(key.public_key()))
            return
        if output is not None:
            path = output
        else:
            root = _data_dir(data_dir)
            path = signing.next_path(root) if next_key else signing.current_path(root)
        key = signing.write_new_key(path)
    except InvalidRequestError as exc:
        _fail(str(exc))
    _describe(str(path), public_bytes(key.public_key()))
    print(
        "flash devices with its key file: iotp firmware pubkey"
        + (f" --key {path}" if output else "")
    )


@firmware_app.command("sign")
def firmware_sign(
    bundle: Annotated[Path, typer.Argument(help="bundle to sign (from `iotp firmware bundle`)")],
    key: Annotated[Path, typer.Option(help="private key file (`iotp firmware keygen --output`)")],
    output: Annotated[Path | None, typer.Option(help="where to write (default: in place)")] = None,
    next_key: Annotated[
        str | None,
        typer.Option(help="rotate devices to this key: 64 hex characters or a key file"),
    ] = None,
) -> None:
    """Sign a bundle offline; upload the result as it is (the server keeps its signature)."""
    try:
        private = signing.load_key(key)
        rotate = None if next_key is None else signing.public_key_from(next_key)
        signed = parse(bundle.read_bytes()).sign(private, next_key=rotate)
    except (OSError, InvalidRequestError, BundleFormatError) as exc:
        _fail(str(exc))
    data = signed.to_bytes()
    (output or bundle).write_bytes(data)
    print(
        f"{output or bundle}: version {signed.version}, signed with key {signed.key_id}"
        + (f", rotating to key {key_id(rotate)}" if rotate else "")
        + f", {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}"
    )


@firmware_app.command("pubkey")
def firmware_pubkey(
    key: Annotated[
        Path | None, typer.Option(help="private key file (default: the server's current key)")
    ] = None,
    output: Annotated[
        Path | None, typer.Option(help="write the device key file here (default: stdout)")
    ] = None,
    allow_unsigned: Annotated[
        bool, typer.Option(help="development only: the device also installs unsigned bundles")
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """The device key file (copy it to the device as ota_key.json, firmware/README.md)."""
    try:
        private = signing.load_key(key or signing.current_path(_data_dir(data_dir)))
    except InvalidRequestError as exc:
        _fail(str(exc))
    data = signing.device_key_file(
        public_bytes(private.public_key()), allow_unsigned=allow_unsigned
    )
    if output is None:
        sys.stdout.write(data.decode())
    else:
        output.write_bytes(data)
        print(f"{output}: key id {key_id(public_bytes(private.public_key()))}")
