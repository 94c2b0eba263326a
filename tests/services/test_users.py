"""Users on a real database: names and passwords are checked with the reason, a name is
taken once, the last admin stays an admin, a change that affects what a token may do
signs the user out everywhere, and the first admin is made once."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from iotp.errors import AuthError, ConflictError, InvalidRequestError, NotFoundError
from iotp.services import users
from iotp.services.auth import PasswordVerifier, Role

PASSWORD = "correct-horse-battery"


@pytest.mark.parametrize(
    ("username", "password", "error", "reason"),
    [
        ("ada lovelace", PASSWORD, InvalidRequestError, "username must match"),
        ("", PASSWORD, InvalidRequestError, "username must match"),
        ("a" * 65, PASSWORD, InvalidRequestError, "username must match"),
        ("ada", "short", InvalidRequestError, "password must be at least 8 characters"),
    ],
)
async def test_a_user_that_cannot_be_is_refused_with_the_reason(
    session: AsyncSession,
    username: str,
    password: str,
    error: type[Exception],
    reason: str,
) -> None:
    with pytest.raises(error, match=reason):
        await users.create(session, username=username, password=password, role=Role.VIEWER)
    await session.rollback()
    assert await users.list_users(session) == []


async def test_a_name_is_taken_once(session: AsyncSession) -> None:
    await users.create(session, username="ada", password=PASSWORD, role=Role.ADMIN)
    await session.commit()
    with pytest.raises(ConflictError, match="user 'ada' exists"):
        await users.create(session, username="ada", password=PASSWORD, role=Role.VIEWER)
    await session.rollback()
    assert [(u.username, u.role) for u in await users.list_users(session)] == [("ada", "admin")]


async def test_the_last_admin_stays_an_admin(session: AsyncSession) -> None:
    ada = (await users.create(session, username="ada", password=PASSWORD, role=Role.ADMIN)).id
    otto = (await users.create(session, username="otto", password=PASSWORD, role=Role.OPERATOR)).id
    await session.commit()
    with pytest.raises(InvalidRequestError, match="the last admin cannot be demoted"):
        await users.update(session, user_id=ada, role=Role.VIEWER)
    await session.rollback()
    with pytest.raises(InvalidRequestError, match="the last admin cannot be demoted"):
        await users.update(session, user_id=ada, disabled=True)
    await session.rollback()
    with pytest.raises(InvalidRequestError, match="the last admin cannot be deleted"):
        await users.delete(session, user_id=ada)
    await session.rollback()
    assert (await users.get(session, ada)).role == "admin"

    # With a second admin, one may go; then the other is the last.
    await users.update(session, user_id=otto, role=Role.ADMIN)
    await session.commit()
    await users.delete(session, user_id=ada)
    await session.commit()
    with pytest.raises(InvalidRequestError, match="the last admin cannot be demoted"):
        await users.update(session, user_id=otto, disabled=True)
    await session.rollback()
    assert [u.username for u in await users.list_users(session)] == ["otto"]


async def test_a_disabled_admin_does_not_count_as_one(session: AsyncSession) -> None:
    ada = (await users.create(session, username="ada", password=PASSWORD, role=Role.ADMIN)).id
    otto = (await users.create(session, username="otto", password=PASSWORD, role=Role.ADMIN)).id
    await session.commit()
    await users.update(session, user_id=ada, disabled=True)
    await session.commit()
    with pytest.raises(InvalidRequestError, match="the last admin cannot be demoted"):
        await users.update(session, user_id=otto, role=Role.OPERATOR)
    await session.rollback()
    assert (await users.get(session, otto)).role == "admin"
    # The disabled one is no admin that counts: it may be demoted or deleted.
    await users.update(session, user_id=ada, role=Role.VIEWER)
    await session.commit()
    await users.update(session, user_id=ada, role=Role.ADMIN)
    await session.commit()
    await users.delete(session, user_id=ada)
    await session.commit()
    assert [u.username for u in await users.list_users(session)] == ["otto"]


async def test_what_changes_a_token_signs_the_user_out_everywhere(session: AsyncSession) -> None:
    admin = await users.create(session, username="ada", password=PASSWORD, role=Role.ADMIN)
    vera = await users.create(session, username="vera", password=PASSWORD, role=Role.VIEWER)
    await session.commit()
    versions = [vera.token_version]
    await users.update(session, user_id=vera.id, role=Role.OPERATOR)
    versions.append(vera.token_version)
    await users.update(session, user_id=vera.id, password="another-good-password")
    versions.append(vera.token_version)
    await users.update(session, user_id=vera.id, disabled=True)
    versions.append(vera.token_version)
    await session.commit()
    assert versions == [0, 1, 2, 3]
    # Enabling again signs no one out (there is no token of the disabled user left).
    row = await users.update(session, user_id=vera.id, disabled=False)
    assert row.token_version == 3
    assert admin.token_version == 0
    with pytest.raises(InvalidRequestError, match="password must be at least"):
        await users.update(session, user_id=vera.id, password="short")
    await session.rollback()
    with pytest.raises(NotFoundError):
        await users.set_password(session, username="nobody", password=PASSWORD)


async def test_sign_in_refuses_the_wrong_password_a_stranger_and_a_disabled_user(
    session: AsyncSession,
) -> None:
    vera = (await users.create(session, username="vera", password=PASSWORD, role=Role.VIEWER)).id
    await session.commit()
    verifier = PasswordVerifier(concurrency=1)
    signed_in = await users.authenticate(
        session, username="vera", password=PASSWORD, verifier=verifier
    )
    assert signed_in.id == vera
    refused = [("vera", "wrong-password"), ("nobody", PASSWORD)]
    for username, password in refused:
        with pytest.raises(AuthError, match="incorrect username or password"):
            await users.authenticate(
                session, username=username, password=password, verifier=verifier
            )
    await users.update(session, user_id=vera, disabled=True)
    await session.commit()
    with pytest.raises(AuthError, match="incorrect username or password"):
        await users.authenticate(session, username="vera", password=PASSWORD, verifier=verifier)


async def test_the_first_admin_is_made_once(session: AsyncSession) -> None:
    # The platform's own service account is not a person: the first start still makes
    # the admin.
    await users.create(
        session, username=users.HOMEASSISTANT_USER, password=PASSWORD, role=Role.OPERATOR
    )
    await session.commit()
    generated = await users.ensure_admin(session, password="")
    assert generated is not None
    assert len(generated) >= 8
    admin = await users.get_by_name(session, users.ADMIN_USERNAME)
    assert admin is not None
    assert admin.role == "admin"
    # Any later start: nothing is made, nothing is shown.
    assert await users.ensure_admin(session, password="") is None
    assert await users.ensure_admin(session, password=PASSWORD) is None
    assert len(await users.list_users(session)) == 2
