"""What the PostgreSQL benchmarks share: a database of their own for each run, and the server's CPU.

A run on a database that earlier runs filled is a different run: `bench/overhead.py` pointed at `test` once
ran there after 16 others, on 340,000 jobs and 1.2 million events, and PostgreSQL spent 4.4-5.8 CPU-s on a
20,000-job run that costs it 2.6 on an empty database. So each run creates its own database and drops it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg


@contextmanager
def fresh_database(admin_url: str, prefix: str) -> Iterator[str]:
    """The URL of a new, empty database made through `admin_url` (the server's other databases are left
    alone); it is dropped on the way out, whatever its sessions."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    parts = urlsplit(admin_url)
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, ""))
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def postgres_cpu() -> float | None:
    """CPU seconds used so far by this machine's PostgreSQL processes, those that ended included (the
    postmaster's reaped children); None where /proc does not show one (another machine, another user)."""
    tick = os.sysconf("SC_CLK_TCK")
    total, found = 0, False
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        if not text[text.index("(") + 1 : text.rindex(")")].startswith("postgres"):
            continue
        found = True
        fields = text[text.rindex(")") + 2 :].split()
        total += sum(int(x) for x in fields[11:15])  # utime, stime, and of the children waited for
    return total / tick if found else None
