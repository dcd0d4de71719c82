"""Alembic environment of the products database."""

from migrations._env import run

run("products")
