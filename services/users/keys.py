"""Typed application keys of the users service."""

from __future__ import annotations

from aiohttp import web

from services.users.service import UsersService

__all__ = ["USERS_SERVICE"]

USERS_SERVICE = web.AppKey("users_service", UsersService)
