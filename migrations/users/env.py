"""Alembic environment of the users database."""

from migrations._env import run

run("users")
