"""HTTP handlers of the users service: parse, authorize, call the service, shape the response."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from aiohttp import web

from core import Body, Path, Principal, Router
from core.forwarded import client_address
from core.pagination import Cursor, Limit
from core.schemas import Page
from services.users.keys import USERS_SERVICE
from services.users.models import User
from services.users.roles import ROLE_PERMISSIONS, permissions_of
from services.users.schemas import (
    LoginIn,
    ProfilePatch,
    RefreshIn,
    RegisterIn,
    RoleOut,
    RolesIn,
    RolesOut,
    TokenPair,
    UserOut,
)

__all__ = ["router"]

router = Router(prefix="/api/v1")


@router.post(
    "/auth/register",
    status=201,
    response=UserOut,
    tags=["auth"],
    responses={409: "The email is already registered"},
    idempotent=True,
)
async def register(request: web.Request, body: Annotated[RegisterIn, Body()]) -> UserOut:
    """Register a new account (role ``customer``)."""
    user = await request.app[USERS_SERVICE].register(
        email=body.email, password=body.password, full_name=body.full_name
    )
    return _user_out(user)


@router.post(
    "/auth/login", response=TokenPair, tags=["auth"], responses={401: "Wrong email or password"}
)
async def login(request: web.Request, body: Annotated[LoginIn, Body()]) -> TokenPair:
    """Exchange email and password for an access and a refresh token."""
    tokens = await request.app[USERS_SERVICE].login(
        email=body.email, password=body.password, client=client_address(request)
    )
    return TokenPair.model_validate(tokens)


@router.post(
    "/auth/refresh",
    response=TokenPair,
    tags=["auth"],
    responses={401: "Invalid, expired, used or revoked refresh token"},
)
async def refresh(request: web.Request, body: Annotated[RefreshIn, Body()]) -> TokenPair:
    """Rotate a refresh token: the old one stops working; reusing it revokes the session."""
    tokens = await request.app[USERS_SERVICE].refresh(body.refresh_token)
    return TokenPair.model_validate(tokens)


@router.post("/auth/logout", status=204, auth=True, tags=["auth"])
async def logout(request: web.Request, principal: Principal) -> None:
    """End this session: the access token and its refresh tokens stop working at once."""
    await request.app[USERS_SERVICE].logout(principal)


@router.get("/users/me", response=UserOut, auth=True, tags=["users"])
async def get_me(request: web.Request, principal: Principal) -> UserOut:
    """The caller's own profile."""
    return _user_out(await request.app[USERS_SERVICE].get(principal.user_id))


@router.patch(
    "/users/me",
    response=UserOut,
    auth=True,
    tags=["users"],
    responses={403: "The current password is incorrect"},
)
async def patch_me(
    request: web.Request, principal: Principal, body: Annotated[ProfilePatch, Body()]
) -> UserOut:
    """Change one's name and/or password (with ``current_password``; ends every session)."""
    user = await request.app[USERS_SERVICE].update_profile(
        principal,
        full_name=body.full_name,
        password=body.password,
        current_password=body.current_password,
    )
    return _user_out(user)


@router.get("/users", response=Page[UserOut], permissions={"users:read"}, tags=["users"])
async def list_users(
    request: web.Request, limit: Limit = 20, cursor: Cursor = None
) -> Page[UserOut]:
    """Every user, newest first (admin)."""
    page = await request.app[USERS_SERVICE].list_users(limit=limit, cursor=cursor)
    return Page[UserOut](items=[_user_out(u) for u in page.items], next_cursor=page.next_cursor)


@router.put(
    "/users/{user_id}/roles",
    response=RolesOut,
    permissions={"users:manage"},
    tags=["users"],
    responses={404: "No such user"},
)
async def put_roles(
    request: web.Request, user_id: Annotated[UUID, Path()], body: Annotated[RolesIn, Body()]
) -> RolesOut:
    """Replace a user's roles (admin). The user's current access tokens stop working."""
    roles = await request.app[USERS_SERVICE].set_roles(user_id, [r.value for r in body.roles])
    return RolesOut(roles=roles)


@router.get("/roles", response=Page[RoleOut], permissions={"users:read"}, tags=["users"])
async def list_roles(request: web.Request) -> Page[RoleOut]:
    """Every role and the permissions it grants (one page: the list is short and fixed)."""
    items = [
        RoleOut(name=role, permissions=sorted(granted))
        for role, granted in ROLE_PERMISSIONS.items()
    ]
    return Page[RoleOut](items=items, next_cursor=None)


def _user_out(user: User) -> UserOut:
    return UserOut(
        id=user.id,
        email=user.email,
        full_name=user.full_name,
        roles=user.roles,
        permissions=sorted(permissions_of(user.roles)),
        created_at=user.created_at,
        updated_at=user.updated_at,
    )
