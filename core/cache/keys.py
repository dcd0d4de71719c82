"""Cache keys: built from a template or a function of the arguments, namespaced and versioned.

A decorated function's *key* (``"product:42"``) names its result among the namespace's entries;
its *tags* (``"products"``) name groups of results to invalidate together. Both become *marks*
(``"k:product:42"``, ``"t:products"``), the unit of invalidation: every mark has a version
counter in Redis and an index in the in-process tier. ``KeySpace`` lays out the names in Redis and
memcached::

    <namespace>:cache:v<version>:<key>      the record (version = the decorator's ``version``)
    <namespace>:cache:lock:v<version>:<key> the short lock of a computation
    <namespace>:cache:ver:<mark>            the invalidation counter of a key or tag
    <namespace>:cache:invalidate            the pub/sub channel of invalidations

A key template's fields are filled with a *canonical* form of each argument (``canonical``),
one that tells types apart: ``None``, ``"None"``, ``1``, ``"1"``, ``1.0`` and ``True`` give six
different keys, and no string can pass for another argument or for a separator. Plain strings
(letters, digits, ``_.-@``, not all digits), ints and UUIDs read as themselves
(``product:42``, ``product:<uuid>``); anything else is ``~`` + a type letter + a
percent-encoded form. Tags are formatted plainly (``str``): they must equal the tags that code
passes to ``invalidate(tags=...)``, and two colliding tags only invalidate more than needed.
"""

from __future__ import annotations

import hashlib
import inspect
import re
import string
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from urllib.parse import quote

import orjson
from pydantic import BaseModel

__all__ = [
    "CacheKeyError",
    "KeyBuilder",
    "KeySpace",
    "KeySpec",
    "TagSpec",
    "canonical",
    "key_mark",
    "tag_mark",
]

KeySpec = str | Callable[..., str] | None
TagSpec = Sequence[str] | Callable[..., Iterable[str]]

_MAX_PLAIN_ARGS = 160
_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


class CacheKeyError(TypeError):
    """A key or tag cannot be built from a call's arguments (a programming error)."""


def key_mark(key: str) -> str:
    """The mark of a key."""
    return "k:" + key


def tag_mark(tag: str) -> str:
    """The mark of a tag."""
    return "t:" + tag


class KeySpace:
    """The names one cache namespace uses in Redis and memcached."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.prefix = f"{namespace}:cache:"
        self.channel = f"{namespace}:cache:invalidate"

    def record(self, key: str, version: int) -> str:
        """Where the record of ``key`` is stored."""
        return f"{self.prefix}v{version}:{key}"

    def lock(self, key: str, version: int) -> str:
        """The lock taken while ``key`` is computed."""
        return f"{self.prefix}lock:v{version}:{key}"

    def version(self, mark: str) -> str:
        """The invalidation counter of ``mark``."""
        return f"{self.prefix}ver:{mark}"


def _key_default(value: object) -> object:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    raise TypeError(f"{type(value).__name__} cannot be part of a cache key")


_PLAIN = re.compile(r"[A-Za-z0-9_.@-]+")
_INTEGER = re.compile(r"-?[0-9]+")


def _escaped(tag: str, text: str) -> str:
    return f"~{tag}{quote(text, safe='')}"


_MEMO_SIZE = 4096
# canonical forms of recent strings and UUIDs, by exact type (a str never equals a UUID, and the
# key of a dict is compared with ==, under which 1, 1.0 and True would meet): a hot key is formed
# on every call, and the percent-encoding or the UUID's formatting is the costly part
_STR_MEMO: dict[str, str] = {}
_UUID_MEMO: dict[uuid.UUID, str] = {}


def canonical(value: Any) -> str:
    """The form of ``value`` in a key: different for values of different types or contents.

    The result never holds ``:`` or ``{``, so a template's separators stay unambiguous.
    """
    kind = type(value)
    if kind is str:
        form = _STR_MEMO.get(value)
        if form is None:
            form = _canonical(value)
            if len(_STR_MEMO) >= _MEMO_SIZE:
                _STR_MEMO.clear()
            _STR_MEMO[value] = form
        return form
    if kind is int:
        return int.__repr__(value)
    if kind is uuid.UUID:
        form = _UUID_MEMO.get(value)
        if form is None:
            form = str(value)
            if len(_UUID_MEMO) >= _MEMO_SIZE:
                _UUID_MEMO.clear()
            _UUID_MEMO[value] = form
        return form
    return _canonical(value)


def _canonical(value: Any) -> str:
    if value is None:
        return "~n"
    if isinstance(value, bool):
        return "~t" if value else "~f"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, str):
        text = str(value)
        if _PLAIN.fullmatch(text) and not _INTEGER.fullmatch(text):
            return text
        return _escaped("s", text)
    if isinstance(value, float):
        return _escaped("d", repr(value))
    try:
        encoded = orjson.dumps(
            value, default=_key_default, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
        ).decode()
    except TypeError as exc:
        raise CacheKeyError(str(exc)) from exc
    return _escaped("j", f"{type(value).__name__}:{encoded}")


class _CanonicalFormatter(string.Formatter):
    def format_field(self, value: Any, format_spec: str) -> str:
        if format_spec:
            value = format(value, format_spec)
        return canonical(value)


_FORMATTER = _CanonicalFormatter()


class KeyBuilder:
    """Builds the key and tags of one decorated function from the arguments of a call.

    ``key`` is a ``str.format`` template over the parameter names (``"product:{product_id}"``,
    each field filled with ``canonical``),
    a callable taking the function's arguments, or ``None``: the function's qualified name and its
    arguments as JSON (hashed when long). ``self``/``cls`` is left out of a default key. Tags are
    templates too, or one callable returning them.
    """

    def __init__(self, func: Callable[..., Any], key: KeySpec, tags: TagSpec) -> None:
        self._signature = inspect.signature(func)
        params = list(self._signature.parameters.values())
        self._variadic = any(p.kind in _VARIADIC for p in params)
        self._positional = [p.name for p in params if p.kind in _POSITIONAL]
        self._names = {p.name for p in params}
        self._defaults = [(p.name, p.default) for p in params if p.default is not p.empty]
        skip_first = bool(self._positional) and self._positional[0] in ("self", "cls")
        self._key_names = [p.name for p in params][1 if skip_first else 0 :]
        self._prefix = f"{func.__module__}.{func.__qualname__}"
        self._key = key
        self._tags = tags
        self._npos = len(self._positional)
        self._fast: Callable[[tuple[Any, ...]], str] | None = None
        if isinstance(key, str):
            self._check_template(key)
            if not self._variadic:
                self._fast = _compile(key, self._positional)
        if not callable(tags):
            for tag in tags:
                self._check_template(tag)
        self.has_tags = callable(tags) or bool(tags)

    def arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The call's arguments by parameter name, defaults included."""
        if self._variadic or len(args) > len(self._positional) or not kwargs.keys() <= self._names:
            bound = self._signature.bind(*args, **kwargs)
            bound.apply_defaults()
            return bound.arguments
        values = dict(zip(self._positional, args, strict=False))
        values.update(kwargs)
        for name, default in self._defaults:
            values.setdefault(name, default)
        return values

    def key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """The key of a call."""
        if not kwargs and len(args) == self._npos and self._fast is not None:
            try:
                return self._fast(args)  # every parameter given positionally: the hot path
            except CacheKeyError:
                pass  # said again below, with the function and the template
        key = self._key
        if callable(key):
            return str(key(*args, **kwargs))
        values = self.arguments(args, kwargs)
        if key is not None:
            return self._format(key, values, canonical=True)
        try:
            encoded = orjson.dumps(
                [values[name] for name in self._key_names],
                default=_key_default,
                option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS,
            ).decode()
        except TypeError as exc:
            raise CacheKeyError(f"{self._prefix}: {exc}; pass key=...") from exc
        if len(encoded) > _MAX_PLAIN_ARGS:
            encoded = hashlib.sha256(encoded.encode()).hexdigest()
        return f"{self._prefix}:{encoded}"

    def tags(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[str, ...]:
        """The tags of a call."""
        tags = self._tags
        if callable(tags):
            return tuple(str(tag) for tag in tags(*args, **kwargs))
        if not tags:
            return ()
        values = self.arguments(args, kwargs)
        return tuple(self._format(tag, values) for tag in tags)

    def _format(self, template: str, values: dict[str, Any], *, canonical: bool = False) -> str:
        try:
            if canonical:
                return _FORMATTER.vformat(template, (), values)
            return template.format_map(values)
        except CacheKeyError as exc:
            raise CacheKeyError(f"{self._prefix}: {template!r}: {exc}") from exc
        except (KeyError, AttributeError, IndexError) as exc:
            raise CacheKeyError(f"{self._prefix}: cannot format {template!r}: {exc!r}") from exc

    def _check_template(self, template: str) -> None:
        for _, field, _, _ in string.Formatter().parse(template):
            if field is None:
                continue
            root = field.split(".", 1)[0].split("[", 1)[0]
            if not root or (root not in self._names and not self._variadic):
                raise CacheKeyError(
                    f"{self._prefix}: {template!r} names {root!r}, which is not a parameter"
                )


def _compile(template: str, positional: Sequence[str]) -> Callable[[tuple[Any, ...]], str] | None:
    """The template as a function of a call's positional arguments (all of them given), when
    its fields are plain parameter names; ``None`` otherwise (attributes, indexes, format specs
    and conversions go through ``str.format``)."""
    parts: list[str | int] = []
    for literal, field, spec, conversion in string.Formatter().parse(template):
        if literal:
            parts.append(literal)
        if field is None:
            continue
        if spec or conversion or field not in positional:
            return None
        parts.append(positional.index(field))
    if len(parts) == 2 and isinstance(parts[0], str) and isinstance(parts[1], int):
        head, index = parts[0], parts[1]
        return lambda args: head + canonical(args[index])
    if len(parts) == 1 and isinstance(parts[0], int):
        index = parts[0]
        return lambda args: canonical(args[index])

    def build(args: tuple[Any, ...]) -> str:
        return "".join(part if isinstance(part, str) else canonical(args[part]) for part in parts)

    return build
