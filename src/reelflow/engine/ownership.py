"""Tenants touch only their own artifacts.

A job parameter that is a link to one of our stored artifacts (in any spelling that reaches it: the API's
`/v1/artifacts/<key>`, signed or not, an S3 presigned or `s3://` URL…) must name an artifact that the job's
tenant produced. Checked at submission for literal values and again in the worker, after references are
resolved, before anything is fetched or handed to a provider. Another tenant's artifact and one that does not
exist get exactly the same answer, so the check tells nobody what other tenants have.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from ..errors import ErrorItem
from ..plan import Plan
from ..providers.catalog import MEDIA_INPUT_NOTE, local_media_inputs, show
from ..storage import Storage, artifact_key
from ..store.base import Store

NOT_FOUND = "artifact not found"
"""The one answer for an input that is not the tenant's artifact, whether it is another's or no one's."""


def artifact_links(storage: Storage, value: Any, loc: list[str | int]) -> Iterator[tuple[list[str | int], str]]:
    """`(location, key)` of every string anywhere in `value` (nested maps and lists) that links to one of our
    artifacts. Keys of maps are not looked at: only values reach a provider as inputs."""
    stack: list[tuple[Any, list[str | int]]] = [(value, loc)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if (key := artifact_key(storage, item)) is not None:
                yield where, key
        elif isinstance(item, Mapping):
            stack.extend((v, [*where, str(k)]) for k, v in reversed(list(item.items())))
        elif isinstance(item, list | tuple):
            stack.extend((v, [*where, i]) for i, v in reversed(list(enumerate(item))))


def has_urls(value: Any) -> bool:
    """True when some string anywhere in `value` looks like a URL (then `artifact_links` needs the storage)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "://" in item:
                return True
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


async def foreign_inputs(
    store: Store, storage: Storage, tenant: str, params: Mapping[str, Any], loc: list[str | int]
) -> list[list[str | int]]:
    """The locations in `params` of artifact links whose artifact `tenant` does not own (one store query)."""
    if not has_urls(params):  # no string holds "://": no artifact link (see artifact_key), and no walk that
        return []  # builds a location for every value
    links = list(artifact_links(storage, dict(params), loc))
    if not links:
        return []
    owned = await store.owned_artifacts(tenant, {key for _, key in links})
    return [where for where, key in links if key not in owned]


def refusal(where: list[str | int], job_key: str) -> ErrorItem:
    """The error for a foreign or unknown artifact at `where`: it names the job and the parameter, nothing else."""
    return ErrorItem(where, f"job '{job_key}': {NOT_FOUND}")


def local_input_problems(plan: Plan, storage: Storage) -> list[ErrorItem]:
    """A literal URL given to a media input of a local operation (or local model) that is not a link to one of
    our artifacts: ffmpeg in the worker reads stored files only, so it would fail at run time."""
    problems = []
    for i, job in enumerate(plan.jobs):
        for loc, value in local_media_inputs(job.type, job.primary, job.params):
            if artifact_key(storage, value) is None:
                label = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if j else p) for j, p in enumerate(loc))
                problems.append(
                    ErrorItem(
                        ["jobs", i, "params", *loc],
                        f"job '{job.id}': {label} must be {MEDIA_INPUT_NOTE}, since {job.type} runs in the worker"
                        f" and reads stored files only (got {show(value)})",
                    )
                )
    return problems
