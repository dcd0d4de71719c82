"""Roles and the permissions they grant (API.md "Conventions"): the users service's own table.

Routes require permissions, never roles. The users service resolves a user's roles to permissions
when it issues an access token (the ``perms`` claim), so every verifier (services, gateway,
dashboard) authorizes from the token alone; a role change revokes the user's older tokens.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum
from types import MappingProxyType

__all__ = ["PERMISSIONS", "ROLE_PERMISSIONS", "Permission", "Role", "permissions_of"]


class Permission(StrEnum):
    """Everything a route can require."""

    users_read = "users:read"
    users_manage = "users:manage"
    catalog_write = "catalog:write"
    inventory_write = "inventory:write"
    orders_read_all = "orders:read_all"
    orders_ship = "orders:ship"
    orders_cancel_any = "orders:cancel_any"
    metrics_read = "metrics:read"


PERMISSIONS: frozenset[str] = frozenset(Permission)


class Role(StrEnum):
    """The roles a user may hold: named sets of permissions."""

    customer = "customer"
    admin = "admin"
    catalog_manager = "catalog_manager"
    support = "support"
    fulfillment = "fulfillment"


ROLE_PERMISSIONS: Mapping[Role, frozenset[str]] = MappingProxyType(
    {
        # Own profile and own orders only: ownership is checked per resource, not by permission.
        Role.customer: frozenset(),
        Role.admin: PERMISSIONS,
        Role.catalog_manager: frozenset({Permission.catalog_write, Permission.inventory_write}),
        Role.support: frozenset(
            {Permission.users_read, Permission.orders_read_all, Permission.orders_cancel_any}
        ),
        Role.fulfillment: frozenset({Permission.orders_read_all, Permission.orders_ship}),
    }
)


def permissions_of(roles: Iterable[str]) -> frozenset[str]:
    """The union of the permissions of ``roles``; unknown role names grant nothing."""
    granted: set[str] = set()
    for role in roles:
        if role in Role.__members__.values():
            granted |= ROLE_PERMISSIONS[Role(role)]
    return frozenset(str(p) for p in granted)
