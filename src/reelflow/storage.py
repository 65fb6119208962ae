"""Artifact storage: outputs stored content-addressed, behind a small Storage protocol.

Keys are `<2 hex>/<sha256><suffix>` and nothing else, so no key can ever escape the storage root.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

from .errors import ReelflowError

KEY_RE = re.compile(r"^[0-9a-f]{2}/[0-9a-f]{64}(\.[a-z0-9]{1,8})?$")
ARTIFACT_PATH = "/v1/artifacts/"


class BadKey(ReelflowError):
    """An artifact key that is not one of ours (and may try to escape the storage root)."""


def check_key(key: str) -> str:
    if not KEY_RE.match(key):
        raise BadKey(f"invalid artifact key {key!r}")
    return key


class Storage(Protocol):
    """Where outputs live. Local folder now; S3 later through fsspec."""

    def put_file(self, path: Path, suffix: str) -> str:
        """Store a file under its content hash; return its key."""
        ...

    def local_path(self, key: str) -> Path | None:
        """A local file for `key` when this storage has one (local storage), else None."""
        ...

    def exists(self, key: str) -> bool: ...

    def url(self, key: str) -> str:
        """The URL users and later jobs read the artifact from."""
        ...

    def key_from_url(self, url: str) -> str | None:
        """The key of one of our own artifact URLs, or None for anything else."""
        ...


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class LocalStorage:
    """Artifacts in a local folder (`file://./.reelflow/artifacts`)."""

    def __init__(self, root: Path, public_url: str) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.public_url = public_url.rstrip("/")

    def _path(self, key: str) -> Path:
        path = (self.root / check_key(key)).resolve()
        if not path.is_relative_to(self.root):  # belt and braces: KEY_RE already forbids it
            raise BadKey(f"invalid artifact key {key!r}")
        return path

    def put_file(self, path: Path, suffix: str) -> str:
        suffix = suffix.lower()
        if suffix and not re.fullmatch(r"\.[a-z0-9]{1,8}", suffix):
            suffix = ""
        digest = file_digest(path)
        key = f"{digest[:2]}/{digest}{suffix}"
        dest = self._path(key)
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.{id(path)}.tmp")
            shutil.copyfile(path, tmp)
            tmp.replace(dest)
        return key

    def local_path(self, key: str) -> Path | None:
        path = self._path(key)
        return path if path.exists() else None

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def url(self, key: str) -> str:
        return f"{self.public_url}{ARTIFACT_PATH}{check_key(key)}"

    def key_from_url(self, url: str) -> str | None:
        base = f"{self.public_url}{ARTIFACT_PATH}"
        if url.startswith(base):
            key = url[len(base) :]
        else:
            parsed = urlparse(url)
            if not parsed.path.startswith(ARTIFACT_PATH) or parsed.scheme not in ("http", "https"):
                return None
            if f"{parsed.scheme}://{parsed.netloc}" != self.public_url.split(ARTIFACT_PATH)[0]:
                return None
            key = parsed.path[len(ARTIFACT_PATH) :]
        return key if KEY_RE.match(key) else None


def open_storage(url: str, public_url: str) -> Storage:
    """The Storage for a `REELFLOW_STORAGE_URL`."""
    if url.startswith("file://"):
        return LocalStorage(Path(url[len("file://") :]), public_url)
    if "://" not in url:
        return LocalStorage(Path(url), public_url)
    raise ValueError(f"unsupported storage URL {url!r}: use file://path (s3:// comes with the scale-out work)")
