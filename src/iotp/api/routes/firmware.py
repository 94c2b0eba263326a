"""Firmware registry: upload (raw body), list, download with HTTP range requests, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi.responses import FileResponse

from iotp.api.control import FirmwarePublic, FirmwaresPublic
from iotp.api.deps import SessionDep, StateDep
from iotp.services import firmware as firmware_service

router = APIRouter(prefix="/api/firmware", tags=["firmware"])


@router.post(
    "",
    response_model=FirmwarePublic,
    status_code=status.HTTP_201_CREATED,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
)
async def upload_firmware(
    state: StateDep,
    session: SessionDep,
    request: Request,
    version: Annotated[
        str | None,
        Query(min_length=1, max_length=64, description="if given, must be the bundle's version"),
    ] = None,
    notes: Annotated[str, Query(max_length=4000)] = "",
    device_type: Annotated[str, Query(max_length=64, description="empty: any type")] = "",
) -> FirmwarePublic:
    """The bundle is the raw request body (`iotp firmware bundle`), checked whole; the
    SHA-256 is computed here. An unsigned bundle is signed with the server's key when it
    has one (`iotp firmware keygen`); one signed offline (`iotp firmware sign`) is kept."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > firmware_service.MAX_BUNDLE_BYTES:
        raise HTTPException(
            status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
            f"the bundle is larger than {firmware_service.MAX_BUNDLE_BYTES} bytes",
        )
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > firmware_service.MAX_BUNDLE_BYTES:
            raise HTTPException(
                status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
                f"the bundle is larger than {firmware_service.MAX_BUNDLE_BYTES} bytes",
            )
    row = await firmware_service.upload(
        session,
        data_dir=state.settings.data_dir,
        version=version,
        data=bytes(data),
        notes=notes,
        device_type=device_type,
    )
    await session.commit()
    return FirmwarePublic.of(row)


@router.get("", response_model=FirmwaresPublic)
async def list_firmware(session: SessionDep) -> FirmwaresPublic:
    rows = await firmware_service.list_firmware(session)
    return FirmwaresPublic(data=[FirmwarePublic.of(r) for r in rows], count=len(rows))


@router.get("/{firmware_id}", response_model=FirmwarePublic)
async def get_firmware(session: SessionDep, firmware_id: int) -> FirmwarePublic:
    return FirmwarePublic.of(await firmware_service.get(session, firmware_id))


@router.get("/{firmware_id}/download", response_class=FileResponse)
async def download_firmware(state: StateDep, session: SessionDep, firmware_id: int) -> Response:
    """The bundle; supports ``Range: bytes=...`` so a device can resume a download."""
    row = await firmware_service.get(session, firmware_id)
    path = firmware_service.bundle_path(state.settings.data_dir, row)
    if not path.is_file():
        raise HTTPException(status.HTTP_410_GONE, f"the bundle file for {row.version!r} is missing")
    return FileResponse(
        path,
        media_type="application/octet-stream",
        filename=f"firmware-{row.version}.bin",
        headers={"X-Checksum-SHA256": row.sha256},
    )


@router.delete("/{firmware_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_firmware(state: StateDep, session: SessionDep, firmware_id: int) -> Response:
    """Delete a firmware no active rollout uses (409 otherwise)."""
    await firmware_service.delete(
        session, data_dir=state.settings.data_dir, firmware_id=firmware_id
    )
    await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
