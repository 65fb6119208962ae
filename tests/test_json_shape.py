"""The JSON body's shape check (`check_shape`): what it refuses and where it says the problem is, with and
without the raw body that lets it skip the string walk when no surrogate escape can be in the text."""

from __future__ import annotations

import json
from typing import Any

import pytest

from reelflow.api.app import MAX_NESTING, _JsonObject, _NonFinite, check_shape
from reelflow.api.problems import Problem


def parsed(raw: bytes) -> Any:
    return json.loads(raw, object_pairs_hook=_JsonObject.of, parse_constant=_NonFinite)


def refusal(raw: bytes, *, give_raw: bool = True) -> str | None:
    """check_shape's detail for this body, or None when it passes."""
    try:
        check_shape(parsed(raw), raw if give_raw else None)
    except Problem as exc:
        assert exc.status == 400
        return str(exc.detail)
    return None


def nested(depth: int) -> bytes:
    """`depth` levels of containers: lists, with one object in the middle."""
    half = depth // 2
    return b"[" * half + b'{"a": ' + b"[" * (depth - half - 1) + b"1" + b"]" * (depth - half - 1) + b"}" + b"]" * half


SURROGATE = "the JSON body contains invalid Unicode (a lone surrogate)"


@pytest.mark.parametrize("give_raw", [True, False], ids=["raw", "parsed-only"])
@pytest.mark.parametrize(
    ("raw", "want"),
    [
        (b'{"jobs": [{"params": {"prompt": "\\ud800"}}]}', SURROGATE),
        (b'{"jobs": [{"params": {"prompt": "x\\uDFFFy"}}]}', SURROGATE),
        (b'{"\\udc00": 1}', SURROGATE),  # in a key
        (b'["\\ud83d\\ude00"]', None),  # a pair is one character: fine
        (b'["\\\\ud800"]', None),  # an escaped backslash, then the text "ud800"
        ('["caf\u00e9 \u4e2d"]'.encode(), None),
        (b'{"a": 1e999}', "body.a: number too large (beyond a 64-bit float: not finite)"),
        (b'{"a": [1, NaN]}', "body.a[1]: NaN is not a finite number (JSON has no NaN or Infinity)"),
        (b'{"a": {"b": 1, "b": 2}}', "body.a.b: duplicate key"),
        (b'"just text"', None),
        (b"1e999", "body: number too large (beyond a 64-bit float: not finite)"),
    ],
)
def test_refusals_name_the_problem(raw: bytes, want: str | None, give_raw: bool) -> None:
    got = refusal(raw, give_raw=give_raw)
    if want is None:
        assert got is None
    else:
        assert got is not None and want in got


def test_a_surrogate_in_a_utf16_body_is_found() -> None:
    """json.loads reads UTF-16 too; there the escape's bytes are not ASCII, so the raw search cannot be trusted."""
    raw = '{"a": "\\ud800"}'.encode("utf-16")
    assert raw[:2] in (b"\xff\xfe", b"\xfe\xff")
    assert refusal(raw) == SURROGATE


@pytest.mark.parametrize("give_raw", [True, False])
def test_nesting_limit_is_exact(give_raw: bool) -> None:
    assert refusal(nested(MAX_NESTING), give_raw=give_raw) is None
    assert refusal(nested(MAX_NESTING + 1), give_raw=give_raw) == (
        f"the JSON body is nested deeper than {MAX_NESTING} levels"
    )
