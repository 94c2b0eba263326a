"""Device MQTT credentials (admins only): list, issue/rotate (secret shown once),
approve a pending device, revoke. Stored secrets and hashes are never returned."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Response, status
from pydantic import BaseModel, Field

from iotp.api.deps import SessionDep, StateDep
from iotp.api.schemas import iso
from iotp.broker import rabbitmq
from iotp.broker.provisioning import publish_answer
from iotp.db.auth_models import DeviceCredential
from iotp.protocol.topics import DEVICE_ID_RE
from iotp.services import credentials as cred_service
from iotp.services.credentials import CredentialStatus

router = APIRouter(prefix="/api/credentials", tags=["credentials"])

DeviceId = Annotated[str, Path(pattern=DEVICE_ID_RE.pattern, max_length=64)]


class CredentialPublic(BaseModel):
    device_id: str
    username: str
    status: CredentialStatus
    requested_at: datetime | None
    approved_at: datetime | None
    revoked_at: datetime | None
    updated_at: datetime | None
    fingerprint: str | None = Field(
        description="of the secret the device asked with; the device shows the same one "
        "(log line, setup portal): compare before approving"
    )
    conflicts: int = Field(
        description="provisioning requests refused because another secret held this id"
    )

    @classmethod
    def of(cls, c: DeviceCredential) -> CredentialPublic:
        return cls(
            device_id=c.device_id,
            username=c.device_id,
            status=CredentialStatus(c.status),
            requested_at=iso(c.requested_at),
            approved_at=iso(c.approved_at),
            revoked_at=iso(c.revoked_at),
            updated_at=iso(c.updated_at),
            fingerprint=c.fingerprint,
            conflicts=c.conflicts or 0,
        )


class CredentialIssued(CredentialPublic):
    password: str = Field(description="the device's MQTT password: shown only in this response")


class CredentialsPublic(BaseModel):
    data: list[CredentialPublic]
    count: int


@router.get("", response_model=CredentialsPublic)
async def list_credentials(
    session: SessionDep,
    status_: Annotated[CredentialStatus | None, Query(alias="status")] = None,
) -> CredentialsPublic:
    rows = await cred_service.list_credentials(session, status=status_)
    return CredentialsPublic(data=[CredentialPublic.of(c) for c in rows], count=len(rows))


@router.get("/{device_id}", response_model=CredentialPublic, responses={404: {}})
async def get_credentials(session: SessionDep, device_id: DeviceId) -> CredentialPublic:
    return CredentialPublic.of(await cred_service.get(session, device_id))


@router.post(
    "/{device_id}",
    response_model=CredentialIssued,
    status_code=status.HTTP_201_CREATED,
    responses={503: {"description": "RabbitMQ (when configured) could not take the password"}},
)
async def issue_credentials(
    session: SessionDep, state: StateDep, device_id: DeviceId
) -> CredentialIssued:
    """Create or rotate: a new password, shown once; the old one stops working and a
    device connected with it is disconnected."""
    row, secret = await cred_service.issue(session, device_id=device_id)
    try:  # operations: RabbitMQ keeps its own copy of the password (broker/rabbitmq.py)
        await rabbitmq.store_device_secret(state.settings, device_id, secret, approved=True)
    except rabbitmq.RabbitMQError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
    await session.commit()
    return CredentialIssued(**CredentialPublic.of(row).model_dump(), password=secret)


@router.post("/{device_id}/approve", response_model=CredentialPublic, responses={404: {}, 409: {}})
async def approve(session: SessionDep, state: StateDep, device_id: DeviceId) -> CredentialPublic:
    """Approve a pending device: it may now connect with the secret it asked with."""
    row = await cred_service.approve(session, device_id=device_id)
    await session.commit()
    publish_answer(state.link, device_id, CredentialStatus.APPROVED)
    return CredentialPublic.of(row)


@router.post("/{device_id}/revoke", response_model=CredentialPublic)
async def revoke(session: SessionDep, state: StateDep, device_id: DeviceId) -> CredentialPublic:
    """Revoke: the device is disconnected and refused (also from provisioning)."""
    row = await cred_service.revoke(session, device_id=device_id)
    await session.commit()
    publish_answer(state.link, device_id, CredentialStatus.REVOKED)
    return CredentialPublic.of(row)


@router.delete("/{device_id}", status_code=status.HTTP_204_NO_CONTENT, responses={404: {}})
async def delete_credentials(session: SessionDep, device_id: DeviceId) -> Response:
    """Forget the credentials (a revoked device may then provision again)."""
    await cred_service.delete(session, device_id=device_id)
    await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
