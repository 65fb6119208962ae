"""Artifact storage: outputs stored content-addressed, behind a small Storage protocol.

Keys are `<2 hex>/<sha256><suffix>` and nothing else, so no key can ever escape the storage root.
Two storages: a local folder (`file://…`) and S3 or anything speaking its API (`s3://bucket/prefix`, through
fsspec/s3fs). Every S3 call blocks (s3fs runs its own event loop in a thread): async callers use
`asyncio.to_thread`. Only `url`, `key_from_url` and `local_path` are cheap enough to call from a loop.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable, Collection
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import ReelflowError
from .fieldkinds import text_fields

KEY_RE = re.compile(r"^[0-9a-f]{2}/[0-9a-f]{64}(\.[a-z0-9]{1,8})?\Z")  # \Z: no trailing newline
ARTIFACT_PATH = "/v1/artifacts/"
MAX_PRESIGN_SECONDS = 7 * 24 * 3600  # the longest a SigV4 presigned URL may live
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PREFIX_PART_RE = re.compile(r"^[A-Za-z0-9._-]+$")
_SAMPLE_KEY = "00/" + "0" * 64 + ".bin"
T = TypeVar("T")


class BadKey(ReelflowError):
    """An artifact key that is not one of ours (and may try to escape the storage root)."""


class StorageError(ReelflowError):
    """The storage cannot be used: bad URL, missing bucket, refused credentials, unreachable endpoint."""


def check_key(key: str) -> str:
    if not KEY_RE.match(key):
        raise BadKey(f"invalid artifact key {key!r}")
    return key


class Storage(Protocol):
    """Where outputs live: a local folder or an S3 bucket."""

    def put_file(self, path: Path, suffix: str) -> str:
        """Store a file under its content hash; return its key. Blocking."""
        ...

    def local_path(self, key: str) -> Path | None:
        """A local file for `key` when this storage has one (local storage), else None."""
        ...

    def fetch_to(self, key: str, folder: Path) -> Path | None:
        """A local file with the artifact's bytes: the stored file itself when local, else a download into
        `folder` (done once per folder). None when there is no such artifact. Blocking."""
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


def content_key(path: Path, suffix: str) -> str:
    """The key a file is stored under: its SHA-256, plus the suffix when it is a plain one."""
    suffix = suffix.lower()
    if suffix and not re.fullmatch(r"\.[a-z0-9]{1,8}", suffix):
        suffix = ""
    digest = file_digest(path)
    return f"{digest[:2]}/{digest}{suffix}"


def _api_key_from_url(public_url: str, url: str) -> str | None:
    """The key of a `{public_url}/v1/artifacts/{key}` URL (served by the API), else None."""
    base = f"{public_url}{ARTIFACT_PATH}"
    if url.startswith(base):
        key = url[len(base) :]
    else:
        parsed = urlsplit(url)
        if not parsed.path.startswith(ARTIFACT_PATH) or parsed.scheme not in ("http", "https"):
            return None
        if f"{parsed.scheme}://{parsed.netloc}" != public_url.split(ARTIFACT_PATH)[0]:
            return None
        key = parsed.path[len(ARTIFACT_PATH) :]
    return key if KEY_RE.match(key) else None


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
        key = content_key(path, suffix)
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

    def fetch_to(self, key: str, folder: Path) -> Path | None:
        return self.local_path(key)

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def url(self, key: str) -> str:
        return f"{self.public_url}{ARTIFACT_PATH}{check_key(key)}"

    def key_from_url(self, url: str) -> str | None:
        return _api_key_from_url(self.public_url, url)


class S3Settings(BaseSettings):
    """The S3 knobs beyond the standard AWS variables (credentials, region), which botocore reads itself."""

    model_config = SettingsConfigDict(env_prefix="REELFLOW_S3_", env_file=".env", extra="ignore")

    endpoint_url: str | None = None
    """A non-AWS endpoint (MinIO, moto, R2…); unset: AWS (or botocore's own AWS_ENDPOINT_URL_S3)."""
    public_base_url: str | None = None
    """Artifacts are public (CDN, public bucket): `url(key)` is `<this>/<prefix>/<key>` instead of a signed URL."""
    presign_seconds: int = Field(default=MAX_PRESIGN_SECONDS, ge=1, le=MAX_PRESIGN_SECONDS)
    """How long presigned artifact URLs work (SigV4 allows at most 7 days)."""


def parse_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` → ("bucket", "some/prefix"); anything odd is a StorageError."""
    parsed = urlsplit(url)
    if parsed.scheme != "s3" or parsed.query or parsed.fragment:
        raise StorageError(f"invalid S3 storage URL {url!r}: expected s3://bucket/prefix")
    bucket = parsed.netloc
    if not _BUCKET_RE.match(bucket) or ".." in bucket:
        raise StorageError(f"invalid S3 bucket name {bucket!r} in {url!r}")
    parts = [p for p in parsed.path.split("/") if p]
    for part in parts:
        if not _PREFIX_PART_RE.match(part) or part in (".", ".."):
            raise StorageError(f"invalid S3 prefix {parsed.path!r} in {url!r}: use letters, digits, '.', '_', '-'")
    return bucket, "/".join(parts)


class S3Storage:
    """Artifacts in an S3 bucket under a prefix, through s3fs. Opening checks that the bucket is reachable."""

    def __init__(
        self,
        bucket: str,
        prefix: str,
        public_url: str,
        *,
        endpoint_url: str | None = None,
        public_base_url: str | None = None,
        presign_seconds: int = MAX_PRESIGN_SECONDS,
        part_size_mb: int = 50,
        fs: Any = None,
    ) -> None:
        """`part_size_mb`: files of at least twice this size go up in parts of this size (S3's minimum is 5)."""
        if part_size_mb < 5:
            raise StorageError(f"part_size_mb must be at least 5 (S3's smallest part), got {part_size_mb}")
        if not 1 <= presign_seconds <= MAX_PRESIGN_SECONDS:
            raise StorageError(f"presign_seconds must be between 1 and {MAX_PRESIGN_SECONDS} (got {presign_seconds})")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.public_url = public_url.rstrip("/")
        self.endpoint_url = endpoint_url
        self.public_base_url = public_base_url.rstrip("/") if public_base_url else None
        self.presign_seconds = presign_seconds
        self.part_size = part_size_mb * 2**20
        if fs is None:
            import s3fs

            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
            fs = s3fs.S3FileSystem(
                endpoint_url=endpoint_url,
                client_kwargs={"region_name": region} if region else None,
                config_kwargs={"signature_version": "s3v4"},  # presigned URLs too: SigV2 is refused in newer regions
                skip_instance_cache=True,
                use_listings_cache=False,
            )
        self.fs = fs
        self._check_bucket()
        signed = urlsplit(self._presign(_SAMPLE_KEY, 60))  # where our signed URLs point, for key_from_url
        self._signed_origin = (signed.scheme, signed.netloc)
        self._signed_path = unquote(signed.path)[: -len(_SAMPLE_KEY)]

    def __repr__(self) -> str:
        return f"S3Storage(s3://{self.bucket}/{self.prefix}, endpoint={self.endpoint_url or 'AWS'})"

    def _where(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" + (f" at {self.endpoint_url}" if self.endpoint_url else "")

    def _object(self, key: str) -> str:
        """The object key inside the bucket."""
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _error(self, doing: str, exc: Exception) -> StorageError:
        if isinstance(exc, PermissionError):
            why = "access denied (check the AWS credentials and the bucket policy)"
        elif isinstance(exc, FileNotFoundError):
            why = "not found"
        else:
            why = f"{type(exc).__name__}: {exc}"
        return StorageError(f"S3 storage {self._where()}: {doing} failed: {why}")

    def _check_bucket(self) -> None:
        try:
            self.fs.call_s3("head_bucket", Bucket=self.bucket)
        except FileNotFoundError:
            raise StorageError(
                f"S3 bucket {self.bucket!r} does not exist"
                + (f" at {self.endpoint_url}" if self.endpoint_url else "")
                + " (REELFLOW_STORAGE_URL); create it first"
            ) from None
        except Exception as exc:
            raise self._error(f"opening bucket {self.bucket!r}", exc) from exc

    def exists(self, key: str) -> bool:
        name = self._object(key)
        try:
            self.fs.call_s3("head_object", Bucket=self.bucket, Key=name)
        except FileNotFoundError:
            return False
        except Exception as exc:
            # without s3:ListBucket, S3 answers 403 rather than 404 for a missing object
            raise self._error(
                f"looking up {name!r} (the credentials need s3:GetObject and s3:ListBucket)", exc
            ) from exc
        return True

    def put_file(self, path: Path, suffix: str) -> str:
        key = content_key(path, suffix)
        if self.exists(key):  # same bytes already stored (by us or another worker)
            return key
        from .media import CONTENT_TYPES

        name = self._object(key)
        content_type = CONTENT_TYPES.get(Path(key).suffix, "application/octet-stream")
        try:
            self.fs.put_file(str(path), f"{self.bucket}/{name}", chunksize=self.part_size, ContentType=content_type)
        except Exception as exc:
            raise self._error(f"uploading {name!r}", exc) from exc
        return key

    def local_path(self, key: str) -> Path | None:
        check_key(key)
        return None

    def fetch_to(self, key: str, folder: Path) -> Path | None:
        name = self._object(key)
        dest = folder / key.replace("/", "-")
        if dest.is_file():
            return dest
        folder.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            self.fs.get_file(f"{self.bucket}/{name}", str(tmp))
        except FileNotFoundError:
            tmp.unlink(missing_ok=True)
            return None
        except Exception as exc:
            tmp.unlink(missing_ok=True)
            raise self._error(f"downloading {name!r}", exc) from exc
        tmp.replace(dest)
        return dest

    def _presign(self, key: str, seconds: int) -> str:
        name = f"{self.prefix}/{key}" if self.prefix else key
        try:
            url: str = self.fs.url(f"{self.bucket}/{name}", expires=seconds)
        except Exception as exc:
            raise self._error("signing a URL", exc) from exc
        return url

    def url(self, key: str) -> str:
        """`<REELFLOW_S3_PUBLIC_BASE_URL>/<prefix>/<key>` when set, else a presigned GET URL (signed locally)."""
        name = self._object(key)
        if self.public_base_url:
            return f"{self.public_base_url}/{name}"
        return self._presign(key, self.presign_seconds)

    def key_from_url(self, url: str) -> str | None:
        """Keys of our own URLs: presigned, public-base, `s3://bucket/prefix/key` and the API's artifact URLs."""
        parsed = urlsplit(url)
        head = f"/{self.prefix}/" if self.prefix else "/"
        rest: str | None = None
        if parsed.scheme == "s3":
            if parsed.netloc == self.bucket and parsed.path.startswith(head):
                rest = parsed.path[len(head) :]
        elif self.public_base_url and url.startswith(self.public_base_url + head):
            rest = url[len(self.public_base_url + head) :]
        elif (parsed.scheme, parsed.netloc) == self._signed_origin and unquote(parsed.path).startswith(
            self._signed_path
        ):
            rest = unquote(parsed.path)[len(self._signed_path) :]
        else:
            return _api_key_from_url(self.public_url, url)
        return rest if rest is not None and KEY_RE.match(rest) else None


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4: `/a/./b/../c` → `/a/c`, as HTTP clients do before they send a request."""
    out: list[str] = []
    segments = path.split("/")
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == ".":
            if last:
                out.append("")
        elif seg == "..":
            if len(out) > 1:
                out.pop()
            if last:
                out.append("")
        else:
            out.append(seg)
    return "/".join(out)


def canonical_link(url: str) -> str | None:
    """`url` as the server it names would see it: scheme and host in lower case, no user info, no default port,
    no trailing dot on the host, the path percent-decoded once with its dot segments resolved, no query or
    fragment (a signed link's `?exp=&sig=` included). None when it is not an http(s) or s3 URL."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    if scheme not in ("http", "https", "s3") or not host:
        return None
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    if port is not None and _DEFAULT_PORTS.get(scheme) != port:
        host = f"{host}:{port}"
    path = _remove_dot_segments(unquote(parts.path))
    return f"{scheme}://{host}{path}"


def artifact_key(storage: Storage, value: object) -> str | None:
    """The key of `value` when it is a link to one of our artifacts in any spelling that reaches it: exactly
    as `url(key)` makes it, signed or not, or spelled otherwise (`%2F`, `./`, `../`, upper-case host, default
    port, user info, a query). None for anything else. Cheap: no I/O."""
    if not isinstance(value, str) or "://" not in value:
        return None
    try:
        key = storage.key_from_url(value)
        if key is None and (canonical := canonical_link(value)) is not None and canonical != value:
            key = storage.key_from_url(canonical)
    except ValueError:  # not a URL at all (an unbalanced '[', a bad port): nobody can fetch it
        return None
    return key


def open_storage(url: str, public_url: str) -> Storage:
    """The Storage for a `REELFLOW_STORAGE_URL`; S3 settings come from `REELFLOW_S3_*` (see S3Settings)."""
    if url.startswith("file://"):
        return LocalStorage(Path(url[len("file://") :]), public_url)
    if "://" not in url:
        return LocalStorage(Path(url), public_url)
    if url.startswith("s3://"):
        bucket, prefix = parse_s3_url(url)
        s3 = S3Settings()
        return S3Storage(
            bucket,
            prefix,
            public_url,
            endpoint_url=s3.endpoint_url,
            public_base_url=s3.public_base_url,
            presign_seconds=s3.presign_seconds,
        )
    raise StorageError(f"unsupported storage URL {url!r}: use file://path or s3://bucket/prefix")


# ---------------------------------------------------------------------------------------- signed links
LINK_TENANT = "~links"
"""The `tenants` row whose secret signs artifact links when REELFLOW_LINK_SECRET is unset: made once by the first
process that asks, then read by every other one. No API key can belong to it (a tenant's name starts with a
letter or digit), so no one is ever shown this secret."""


def link_signature(secret: bytes, key: str, exp: int) -> str:
    """`sig` of an artifact link: base64url (no padding) HMAC-SHA256 over the key and its expiry."""
    mac = hmac.new(secret, f"reelflow-artifact-link\n{key}\n{exp}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


class LinkRefused(ReelflowError):
    """A signed artifact link that does not open: malformed, tampered with, or expired."""


class LinkSigner:
    """Makes and checks `{public_url}/v1/artifacts/{key}?exp=<unix seconds>&sig=<signature>` links.

    The signature binds the key (a content hash: one link opens those bytes and no others) and the expiry; who
    may have a link is decided when it is made: `sign_links` signs only keys the tenant owns."""

    def __init__(
        self, secret: bytes, public_url: str, seconds: int, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.secret = secret
        self.public_url = public_url.rstrip("/")
        self.seconds = seconds
        self.clock = clock

    def link(self, key: str) -> str:
        exp = int(self.clock()) + self.seconds
        return f"{self.public_url}{ARTIFACT_PATH}{check_key(key)}?exp={exp}&sig={link_signature(self.secret, key, exp)}"

    def check(self, key: str, exp: str | None, sig: str | None) -> None:
        """Nothing when the link opens; LinkRefused saying why otherwise."""
        if not exp or not sig:
            raise LinkRefused("a signed link needs both exp and sig")
        if not exp.isdigit() or len(exp) > 12:
            raise LinkRefused("exp is not a time in Unix seconds")
        if not hmac.compare_digest(sig.encode(), link_signature(self.secret, key, int(exp)).encode()):
            raise LinkRefused("the link's signature does not match (changed, or signed with another secret)")
        if int(exp) <= self.clock():
            raise LinkRefused("the link has expired: fetch the execution's state again for a fresh one")

    def _api_key(self, value: str) -> str | None:
        """The key of a link to this server's artifact route, in any spelling that reaches it, signed or not."""
        if ARTIFACT_PATH not in value:
            return None
        try:
            key = _api_key_from_url(self.public_url, value)
            if key is None and (canonical := canonical_link(value)) is not None and canonical != value:
                key = _api_key_from_url(self.public_url, canonical)
        except ValueError:
            return None
        return key

    def _candidates(self, value: Any, found: set[str]) -> None:
        if isinstance(value, BaseModel):  # an answer model: its fields that may hold text (an entry is a dict)
            fields = value.__dict__
            for name in text_fields(type(value)):
                if (v := fields[name]) is not None:
                    self._candidates(v, found)
        elif isinstance(value, dict):
            if "key" in value and (entry := _entry_key(value)) is not None:
                found.add(entry)
            for v in value.values():
                if not isinstance(v, int | float | bool | None):
                    self._candidates(v, found)
        elif isinstance(value, list):
            for v in value:
                if not isinstance(v, int | float | bool | None):
                    self._candidates(v, found)
        elif isinstance(value, str) and (key := self._api_key(value)) is not None:
            found.add(key)

    def _rewrite(self, value: Any, links: dict[str, str]) -> Any:
        """`value` with the links of `links`' keys replaced; parts without any are returned as they are."""
        if isinstance(value, BaseModel):
            fields, changes = value.__dict__, {}
            for name in text_fields(type(value)):
                if (v := fields[name]) is not None and (new := self._rewrite(v, links)) is not v:
                    changes[name] = new
            return value.model_copy(update=changes) if changes else value
        if isinstance(value, dict):
            out: dict[str, Any] | None = None
            for k, v in value.items():
                new = self._rewrite(v, links)
                if new is not v:
                    out = dict(value) if out is None else out
                    out[k] = new
            if "key" in value and (entry := _entry_key(value)) is not None and entry in links:
                out = dict(value) if out is None else out
                out["url"] = links[entry]
            return value if out is None else out
        if isinstance(value, list):
            items = [self._rewrite(v, links) for v in value]
            return value if all(a is b for a, b in zip(items, value, strict=True)) else items
        if isinstance(value, str) and (key := self._api_key(value)) is not None and key in links:
            return links[key]
        return value

    async def sign_links(self, value: T, owned: Callable[[Collection[str]], Awaitable[Collection[str]]]) -> T:
        """A copy of `value` (a JSON answer) whose links to the API's artifact route carry a fresh signature:
        an artifact entry's `url` (beside its `key`, whichever server the worker that stored it named) and any
        other string that links to this server's artifact route. Only the keys `owned` returns (those the
        tenant owns: one query) are signed; a link to anything else is left as it was. `value` is not changed;
        the parts of the copy without a link are shared with it."""
        found: set[str] = set()
        self._candidates(value, found)
        if not found:
            return value
        links = {key: self.link(key) for key in set(await owned(found)) & found}
        return cast(T, self._rewrite(value, links)) if links else value


def _entry_key(value: dict[str, Any]) -> str | None:
    """The key of an artifact entry (`{"url": ".../v1/artifacts/<key>", "key": "<key>", ...}`), else None."""
    key, url = value.get("key"), value.get("url")
    if not isinstance(key, str) or not isinstance(url, str) or f"{ARTIFACT_PATH}{key}" not in url:
        return None
    if not KEY_RE.match(key):
        return None
    try:
        path = urlsplit(url).path
    except ValueError:
        return None
    return key if path == f"{ARTIFACT_PATH}{key}" else None


class _TenantSecrets(Protocol):
    async def ensure_tenant(self, tenant: str) -> str: ...


async def link_signer(
    store: _TenantSecrets, public_url: str, seconds: int, secret: str | None = None
) -> LinkSigner:
    """The signer every process agrees on: REELFLOW_LINK_SECRET when set, else the `LINK_TENANT` row's secret."""
    key = secret if secret else await store.ensure_tenant(LINK_TENANT)
    return LinkSigner(key.encode(), public_url, seconds)
