"""Alembic environment of the orders database."""

from migrations._env import run

run("orders")
