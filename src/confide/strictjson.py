"""Strict JSON: the one reader of JSON that another party sent.

The operator's API reads an app's manifest with it, the runtime the owner's
configuration request (and the plaintext of its sealed secrets), and
attestation the PCS's signed bodies; so the reader lives here, beside
:mod:`confide.errors`, and imports nothing else of Confide.

A document is refused, with one :class:`~confide.errors.JsonError` naming
what was read, when it is:

- larger than the caller's ``max_bytes``, or not UTF-8;
- not JSON, or JSON that two readers could understand differently: a key
  repeated in one object (one reader keeps the first, another the last), or
  ``NaN``, ``Infinity`` and ``-Infinity`` (not JSON, accepted by Python's
  reader);
- nested more than :data:`MAX_DEPTH` arrays or objects deep;
- (with :func:`loads_object`) anything but an object at the top.

Example::

    >>> from confide.strictjson import loads_object
    >>> loads_object(b'{"plan": "small"}', what="the manifest", max_bytes=1024)
    {'plan': 'small'}
    >>> loads_object(b'{"plan": "small", "plan": "large"}', what="the manifest", max_bytes=1024)
    Traceback (most recent call last):
    ...
    confide.errors.JsonError: the manifest is not valid JSON: duplicate key 'plan'
"""

from __future__ import annotations

import json
import typing

from confide import errors

# Only modules are imported: the module's public names are exactly ``__all__``.

__all__ = ["MAX_DEPTH", "loads", "loads_object"]

#: Most arrays and objects nested in one another.
MAX_DEPTH: typing.Final = 64


def _unique_keys(pairs: list[tuple[str, typing.Any]]) -> dict[str, typing.Any]:
    obj: dict[str, typing.Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"duplicate key {key!r}")
        obj[key] = value
    return obj


def _no_constant(name: str) -> typing.Any:
    raise ValueError(f"{name} is not JSON")


def _depth(value: typing.Any) -> int:
    """How deeply arrays and objects nest in ``value`` (iteratively: no recursion limit)."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, level = todo.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            todo.extend(
                (child, level + 1) for child in (item.values() if isinstance(item, dict) else item)
            )
    return deepest


def loads(data: bytes | str, *, what: str, max_bytes: int) -> typing.Any:
    """The value of a strict JSON document; ``what`` names it in the error."""
    try:
        size = len(data.encode("utf-8") if isinstance(data, str) else data)
        if size > max_bytes:
            raise errors.JsonError(f"{what} is {size} bytes, more than the {max_bytes} allowed")
        text = data if isinstance(data, str) else data.decode("utf-8")
        value = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except UnicodeError:
        raise errors.JsonError(f"{what} is not UTF-8") from None
    except RecursionError:
        raise errors.JsonError(
            f"{what} is nested too deeply (at most {MAX_DEPTH} levels)"
        ) from None
    except ValueError as exc:
        raise errors.JsonError(f"{what} is not valid JSON: {exc}") from None
    if _depth(value) > MAX_DEPTH:
        raise errors.JsonError(f"{what} is nested too deeply (at most {MAX_DEPTH} levels)")
    return value


def loads_object(data: bytes | str, *, what: str, max_bytes: int) -> dict[str, typing.Any]:
    """Like :func:`loads`, for a document that must be a JSON object."""
    value = loads(data, what=what, max_bytes=max_bytes)
    if not isinstance(value, dict):
        raise errors.JsonError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value
