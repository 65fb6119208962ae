"""Which fields of an answer may hold text of the caller's (where an artifact link or a local path can be): a helper
of its own, so that the stores and the storage can use it without importing every answer model."""

from __future__ import annotations

import functools
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, WithJsonSchema
from pydantic.fields import FieldInfo


def _is_plain(kind: Any, metadata: list[Any]) -> bool:
    """A type whose values are never text of the caller's: a number, a flag, a status, a timestamp, None."""
    if get_origin(kind) is Annotated:
        kind, *extra = get_args(kind)
        metadata = [*metadata, *extra]
    if any(isinstance(m, WithJsonSchema) and (m.json_schema or {}).get("format") == "date-time" for m in metadata):
        return True
    if get_origin(kind) in (Union, types.UnionType):
        return all(_is_plain(k, []) for k in get_args(kind))
    return kind in (int, float, bool, type(None)) or get_origin(kind) is Literal


@functools.cache
def text_fields(model: type[BaseModel]) -> tuple[str, ...]:
    """The fields of `model` that may hold free text, JSON objects, lists or models: where an artifact link or a
    local path can be (`strip_paths` and the link signer walk only these; the others are numbers, flags, statuses,
    timestamps)."""
    fields: dict[str, FieldInfo] = model.model_fields
    return tuple(name for name, info in fields.items() if not _is_plain(info.annotation, list(info.metadata)))
