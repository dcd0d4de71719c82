"""The live dashboard: every service instance, order saga and event, as they happen.

``create_web_app(settings)`` builds it on ``core.create_app``; ``python -m web`` serves it on
:8080. It is fed by the ``metrics.snapshot`` events every instance publishes (``core.snapshot``)
and by the order, inventory, payment, user and product events, read from a bus queue of its own,
each validated first (``web.messages``). Outside development its data needs an access token with
``metrics:read`` (``web.access``); in development it is public, without host names, pids or ids.
"""

from web.app import create_web_app, run_web
from web.settings import Settings
from web.state import DashboardState

__all__ = ["DashboardState", "Settings", "create_web_app", "run_web"]
