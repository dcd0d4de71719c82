"""Who may read the dashboard's data, and what they see.

Outside development (``Settings.dashboard_is_public`` false) the data routes require an access
token whose principal has ``metrics:read``: 401 without a valid one, 403 without the permission.
On a public dashboard a caller without a token gets the public view (no host names, pids or
ids); a token, when sent, must be valid, and with ``metrics:read`` it opens the full view.

Tokens are read from the ``Authorization`` header only, never from the query string (URLs end
up in logs).
"""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import hdrs, web

from core.auth import Principal
from core.errors import Unauthorized
from core.forwarded import TrustedProxies
from core.keys import AUTHENTICATOR
from web.settings import METRICS_READ
from web.stream import Viewer

__all__ = ["Access"]


class Access:
    """Decides each data request: ``await access.viewer(request)``."""

    def __init__(self, *, public: bool, trusted_proxies: Iterable[str] = ()) -> None:
        self.public = public
        self.proxies = TrustedProxies(trusted_proxies)

    async def viewer(self, request: web.Request) -> Viewer:
        """The caller as a ``Viewer``, or ``Unauthorized`` (401) / ``Forbidden`` (403)."""
        header = request.headers.get(hdrs.AUTHORIZATION)
        if header is None:
            if not self.public:
                raise Unauthorized("Sign in with an account that has metrics:read")
            return Viewer(client=f"ip:{self.proxies.client_ip(request)}")
        principal = await self.authenticate(request)
        return Viewer(
            client=f"user:{principal.user_id}",
            authenticated=True,
            full=principal.has_permission(METRICS_READ),
            expires_at=float(principal.expires_at),
        )

    async def authenticate(self, request: web.Request) -> Principal:
        """The verified, unrevoked principal of the request, authorized when the dashboard is
        not public."""
        authenticator = request.app[AUTHENTICATOR]
        principal = await authenticator.authenticate(request.headers.get(hdrs.AUTHORIZATION))
        if not self.public:
            authenticator.authorize(principal, (METRICS_READ,))
        return principal
