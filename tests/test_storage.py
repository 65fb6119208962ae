"""Local artifact storage: content-addressed keys that can never leave the storage folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reelflow.storage import BadKey, LocalStorage


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "artifacts", "http://127.0.0.1:8000")


def test_put_is_content_addressed_and_idempotent(storage: LocalStorage, tmp_path: Path) -> None:
    a = tmp_path / "a.mp4"
    a.write_bytes(b"same bytes")
    b = tmp_path / "b.MP4"
    b.write_bytes(b"same bytes")
    key_a = storage.put_file(a, ".mp4")
    key_b = storage.put_file(b, ".MP4")
    assert key_a == key_b
    assert key_a.endswith(".mp4") and len(key_a.split("/")[1]) == 64 + 4
    path = storage.local_path(key_a)
    assert path is not None and path.read_bytes() == b"same bytes"
    assert len(list((tmp_path / "artifacts").rglob("*.mp4"))) == 1


def test_urls_round_trip_to_keys_and_foreign_urls_do_not(storage: LocalStorage, tmp_path: Path) -> None:
    f = tmp_path / "x.png"
    f.write_bytes(b"png")
    key = storage.put_file(f, ".png")
    url = storage.url(key)
    assert url == f"http://127.0.0.1:8000/v1/artifacts/{key}"
    assert storage.key_from_url(url) == key
    assert storage.key_from_url(f"https://evil.example/v1/artifacts/{key}") is None
    assert storage.key_from_url("http://127.0.0.1:8000/v1/artifacts/../../etc/passwd") is None


@pytest.mark.parametrize(
    "key",
    ["../secret", "/etc/passwd", "ab/../../x", "ab/" + "0" * 64 + "/../x", "", "..", "ab\\..\\x", "AB/" + "A" * 64],
)
def test_hostile_keys_are_refused(storage: LocalStorage, key: str) -> None:
    with pytest.raises(BadKey):
        storage.local_path(key)
    with pytest.raises(BadKey):
        storage.url(key)


@given(st.text(max_size=80))
def test_no_key_resolves_outside_the_root(key: str) -> None:
    storage = LocalStorage(Path("/tmp/reelflow-hyp-artifacts"), "http://127.0.0.1:8000")
    try:
        path = storage.local_path(key)
    except BadKey:
        return
    assert path is None or path.resolve().is_relative_to(storage.root)
