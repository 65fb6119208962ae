"""API keys: `rf_<id>_<secret>`, stored only as a SHA-256 hash, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

from .logs import add_secret
from .store.base import ApiKey, Store

KEY_RE = re.compile(r"^rf_([0-9a-f]{12})_([A-Za-z0-9_-]{20,64})$")
TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass
class NewKey:
    api_key: str
    key_id: str
    tenant: str
    webhook_secret: str


def _hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def check_tenant_name(tenant: str) -> str:
    if not TENANT_RE.match(tenant):
        raise ValueError(f"invalid tenant name {tenant!r}: use letters, digits, '_', '.', '-' (at most 64)")
    return tenant


async def create_key(store: Store, tenant: str) -> NewKey:
    """A new key for `tenant` (created if new); the raw key is shown once and never stored."""
    check_tenant_name(tenant)
    key_id = secrets.token_hex(6)
    raw = f"rf_{key_id}_{secrets.token_urlsafe(32)}"
    add_secret(raw)  # the patterns mask keys already; this process also knows the exact value
    await store.add_api_key(ApiKey(id=key_id, tenant=tenant, key_hash=_hash(raw), created_at=time.time()))
    return NewKey(api_key=raw, key_id=key_id, tenant=tenant, webhook_secret=await store.ensure_tenant(tenant))


async def authenticate(store: Store, raw: str) -> str | None:
    """The tenant a raw key belongs to, or None (unknown, malformed, revoked or wrong secret)."""
    m = KEY_RE.match(raw)
    if m is None:
        return None
    key = await store.get_api_key(m.group(1))
    if key is None or key.revoked_at is not None:
        return None
    return key.tenant if hmac.compare_digest(key.key_hash, _hash(raw)) else None
