"""``aioshop seed``: fill the products database with a realistic catalog, fast.

Categories form a two-level tree (departments and their sub-categories, reused by slug when they
exist already); products go to the leaves with generated names, descriptions, prices (a
log-normal spread ending in .99), attributes, creation times over the past year and stock (about
one in ten sold out). Rows are written with ``COPY`` (asyncpg ``copy_records_to_table``) in
batches, each batch with its inventory in one transaction, then the tables are analyzed.

Seeding is bulk loading, not business: it publishes no events (nothing goes through the outbox)
and bypasses the service. Afterwards ``invalidate_cache`` drops the cached listings and
categories of running instances (tags ``catalog`` and ``categories``), so they show the new
products at once.
"""

from __future__ import annotations

import random
import re
import secrets
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

import asyncpg
import orjson

from core.cache import Cache
from core.settings import BaseServiceSettings

__all__ = ["ProgressBar", "SeedReport", "invalidate_cache", "seed", "seed_if_empty"]

Progress = Callable[[int, int], None]

DEPARTMENTS: dict[str, dict[str, list[str]]] = {
    "Electronics": {
        "Laptops": ["Laptop", "Ultrabook", "Notebook", "Chromebook"],
        "Phones": ["Smartphone", "Phone Case", "Charger", "Screen Protector"],
        "Audio": ["Headphones", "Earbuds", "Speaker", "Soundbar"],
        "Cameras": ["Camera", "Lens", "Tripod", "Action Camera"],
    },
    "Home & Kitchen": {
        "Cookware": ["Frying Pan", "Saucepan", "Dutch Oven", "Wok"],
        "Tableware": ["Mug", "Plate", "Bowl", "Teapot"],
        "Furniture": ["Chair", "Desk", "Bookshelf", "Side Table"],
        "Lighting": ["Desk Lamp", "Floor Lamp", "Pendant Light", "String Lights"],
    },
    "Sports & Outdoors": {
        "Camping": ["Tent", "Sleeping Bag", "Camping Stove", "Lantern"],
        "Cycling": ["Bike Helmet", "Bike Light", "Water Bottle", "Saddle Bag"],
        "Fitness": ["Yoga Mat", "Dumbbell", "Kettlebell", "Jump Rope"],
    },
    "Clothing": {
        "Outerwear": ["Jacket", "Raincoat", "Parka", "Vest"],
        "Footwear": ["Sneakers", "Boots", "Sandals", "Slippers"],
        "Accessories": ["Scarf", "Beanie", "Gloves", "Belt"],
    },
    "Books & Media": {
        "Fiction": ["Novel", "Short Story Collection", "Graphic Novel"],
        "Non-fiction": ["Cookbook", "Field Guide", "Biography", "Atlas"],
    },
    "Toys & Games": {
        "Board Games": ["Board Game", "Card Game", "Puzzle", "Chess Set"],
        "Building Sets": ["Building Kit", "Marble Run", "Model Kit"],
    },
    "Garden": {
        "Tools": ["Trowel", "Pruning Shears", "Watering Can", "Rake"],
        "Plants": ["Planter", "Seed Kit", "Herb Garden", "Grow Light"],
    },
    "Office": {
        "Stationery": ["Notebook", "Fountain Pen", "Pencil Case", "Planner"],
        "Desk Accessories": ["Monitor Stand", "Desk Mat", "Cable Organizer", "Letter Tray"],
    },
}


def _words(text: str) -> list[str]:
    return text.split()


ADJECTIVES = _words(
    """
    Classic Compact Deluxe Durable Elegant Ergonomic Essential Foldable Handcrafted
    Heavy-Duty Lightweight Modern Portable Premium Rustic Sleek Smart Sturdy Vintage
    Wireless
    """
)
MATERIALS = _words(
    """
    Aluminium Bamboo Canvas Ceramic Cotton Glass Leather Linen Oak Steel Walnut Wool
    """
)
COLORS = _words(
    """
    black white grey navy red green blue beige brown olive teal yellow
    """
)
FEATURES = (
    "built to last for years",
    "easy to clean",
    "designed for everyday use",
    "with a lifetime warranty",
    "tested by professionals",
    "made in small batches",
    "light enough to carry anywhere",
    "with a minimalist look",
)
BENEFITS = (
    "A favourite gift for any occasion.",
    "Ships in recyclable packaging.",
    "Pairs well with the rest of the collection.",
    "Rated highly by thousands of customers.",
    "Perfect for small spaces.",
)
PRODUCT_COLUMNS = [
    "id",
    "sku",
    "name",
    "description",
    "price_cents",
    "currency",
    "category_id",
    "attributes",
    "created_at",
    "updated_at",
]


@dataclass(frozen=True, slots=True)
class SeedReport:
    """What a seeding run wrote."""

    products: int
    categories: int
    seconds: float
    sku_prefix: str


class ProgressBar:
    """A one-line progress bar on ``stream`` (standard error): redrawn in place on a terminal,
    a line per tenth otherwise (logs stay readable)."""

    def __init__(self, label: str, *, stream: TextIO | None = None, width: int = 30) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.width = width
        self.started = time.perf_counter()
        self._tty = self.stream.isatty()
        self._last_tenth = -1

    def __call__(self, done: int, total: int) -> None:
        """Show ``done`` of ``total``."""
        fraction = done / total if total else 1.0
        tenth = int(fraction * 10)
        if not self._tty and tenth == self._last_tenth:
            return
        self._last_tenth = tenth
        filled = int(fraction * self.width)
        rate = done / max(time.perf_counter() - self.started, 1e-9)
        line = (
            f"{self.label} [{'#' * filled}{'-' * (self.width - filled)}] {fraction:4.0%} "
            f"{done:,}/{total:,} {rate:,.0f}/s"
        )
        self.stream.write(f"\r{line}" if self._tty else f"{line}\n")
        if self._tty and done >= total:
            self.stream.write("\n")
        self.stream.flush()


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _category_plan(count: int) -> list[tuple[str, str, str | None]]:
    """``(name, slug, parent slug)`` of ``count`` categories, parents first."""
    departments = list(DEPARTMENTS)
    if count <= len(departments):
        return [(name, _slug(name), None) for name in departments[:count]]
    plan: list[tuple[str, str, str | None]] = [(name, _slug(name), None) for name in departments]
    children = [(sub, dept) for dept, subs in DEPARTMENTS.items() for sub in subs]
    for n in range(count - len(departments)):
        sub, dept = children[n % len(children)]
        round_ = n // len(children)
        name = sub if round_ == 0 else f"{sub} {round_ + 1}"
        plan.append((name, _slug(f"{dept} {name}"), _slug(dept)))
    return plan


async def _categories(conn: asyncpg.Connection, count: int) -> list[tuple[uuid.UUID, list[str]]]:
    """Create (or find) the categories; ``(id, product nouns)`` of those products go to."""
    ids: dict[str, uuid.UUID] = {}
    plan = _category_plan(count)
    for name, slug, parent in plan:
        await conn.execute(
            """
            INSERT INTO categories (id, name, slug, parent_id) VALUES ($1, $2, $3, $4)
            ON CONFLICT (slug) DO NOTHING
            """,
            uuid.uuid4(),
            name,
            slug,
            ids.get(parent) if parent else None,
        )
        ids[slug] = await conn.fetchval("SELECT id FROM categories WHERE slug = $1", slug)
    nouns_by_slug: dict[str, list[str]] = {}
    for dept, subs in DEPARTMENTS.items():
        nouns_by_slug[_slug(dept)] = [noun for nouns in subs.values() for noun in nouns]
        for sub, nouns in subs.items():
            nouns_by_slug[_slug(f"{dept} {sub}")] = nouns
    parents = {parent for _, _, parent in plan if parent}
    leaves = [(name, slug) for name, slug, _ in plan if slug not in parents]
    targets = []
    for name, slug in leaves:
        base = re.sub(r"-\d+$", "", slug)
        nouns = nouns_by_slug.get(slug) or nouns_by_slug.get(base) or [name]
        targets.append((ids[slug], nouns))
    return targets


def _products(
    rng: random.Random,
    ids: random.Random,
    targets: list[tuple[uuid.UUID, list[str]]],
    sku_prefix: str,
    start: int,
    count: int,
    now: datetime,
) -> Iterator[tuple[tuple[Any, ...], tuple[Any, ...]]]:
    """``count`` product rows and their inventory rows."""
    for n in range(start, start + count):
        category_id, nouns = targets[n % len(targets)]
        noun, material = rng.choice(nouns), rng.choice(MATERIALS)
        adjective, color = rng.choice(ADJECTIVES), rng.choice(COLORS)
        name = f"{adjective} {material} {noun}"
        description = (
            f"{adjective} {color} {noun.lower()} in {material.lower()}, "
            f"{rng.choice(FEATURES)}. {rng.choice(BENEFITS)}"
        )
        price = min(int(rng.lognormvariate(8.0, 1.2)), 5_000_000) // 100 * 100 + 99
        attributes = orjson.dumps(
            {
                "color": color,
                "material": material.lower(),
                "weight_g": rng.randint(50, 25_000),
                "rating": round(rng.uniform(2.5, 5.0), 1),
            }
        ).decode()
        created = now - timedelta(seconds=rng.uniform(0, 365 * 86_400))
        product_id = uuid.UUID(int=ids.getrandbits(128), version=4)
        stock = 0 if rng.random() < 0.1 else rng.randint(1, 500)
        yield (
            (
                product_id,
                f"{sku_prefix}-{n + 1:07d}",
                name,
                description,
                price,
                "USD",
                category_id,
                attributes,
                created,
                created,
            ),
            (product_id, stock),
        )


async def seed(
    dsn: str,
    *,
    products: int,
    categories: int = 40,
    batch_size: int = 5_000,
    random_seed: int | None = None,
    progress: Progress | None = None,
) -> SeedReport:
    """Add ``products`` products in ``categories`` categories to the database at ``dsn``.

    ``random_seed`` makes the content repeatable (ids and SKUs stay unique per run).
    """
    if products < 0 or categories < 1 or batch_size < 1:
        raise ValueError("products >= 0, categories >= 1 and batch_size >= 1 are required")
    started = time.perf_counter()
    rng = random.Random(random_seed)  # noqa: S311 (made-up catalog content, not secrets)
    ids = random.Random(secrets.randbits(64))  # noqa: S311 (unique per run, not secret)
    sku_prefix = f"SEED-{secrets.token_hex(3).upper()}"
    now = datetime.now(UTC)
    conn = await asyncpg.connect(dsn)
    try:
        targets = await _categories(conn, categories)
        done = 0
        if progress is not None:
            progress(0, products)
        while done < products:
            size = min(batch_size, products - done)
            rows = list(_products(rng, ids, targets, sku_prefix, done, size, now))
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "products", records=[p for p, _ in rows], columns=PRODUCT_COLUMNS
                )
                await conn.copy_records_to_table(
                    "inventory", records=[i for _, i in rows], columns=["product_id", "on_hand"]
                )
            done += size
            if progress is not None:
                progress(done, products)
        await conn.execute("ANALYZE categories, products, inventory")
    finally:
        await conn.close()
    return SeedReport(
        products=products,
        categories=len(_category_plan(categories)),
        seconds=time.perf_counter() - started,
        sku_prefix=sku_prefix,
    )


async def seed_if_empty(dsn: str, products: int) -> SeedReport | None:
    """``seed`` a catalog of ``products`` products unless the database has products already
    (so that a demo started again does not grow its catalog); ``None`` when nothing was done."""
    conn = await asyncpg.connect(dsn)
    try:
        if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM products)"):
            return None
    finally:
        await conn.close()
    return await seed(dsn, products=products)


async def invalidate_cache(settings: BaseServiceSettings) -> bool:
    """Drop every cached listing and category of the running instances; whether Redis took it."""
    cache = Cache(settings.redis_namespace, redis_url=settings.redis_url, tiers=("redis",))
    try:
        return await cache.invalidate(tags=["catalog", "categories"])
    finally:
        await cache.close()
