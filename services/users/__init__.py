"""The users service: registration, login, sessions (JWT), profiles and roles."""

from services.users.app import create_users_app
from services.users.settings import Settings

__all__ = ["Settings", "create_users_app"]
