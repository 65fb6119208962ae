"""The engine's front door: submit, inspect, cancel, resume, retry and wait, on a Store.

The transitions themselves happen inside the Store's transactions (claim, finish, cancel,
resume), following the rules in `reelflow.states`; this module turns plans into rows and
gives the CLI, SDK and API one place to call.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..config import Settings, get_settings
from ..errors import ErrorItem, NotFound, PlanError
from ..estimate import job_cost
from ..limits import get_limits
from ..plan import Plan, parse_plan
from ..providers.catalog import Catalog, default_catalog
from ..providers.registry import missing_credential
from ..states import TERMINAL_EXECUTION
from ..storage import Storage, open_storage
from ..store.base import NewExecution, NewJob, Store, UsageLimit
from .ownership import artifact_links, has_urls, local_input_problems, refusal

if TYPE_CHECKING:  # the answer models load on first use: `reelflow run` never builds one
    from ..models import ExecutionState, JobLogs, Usage

Listener = Callable[[dict[str, Any]], Awaitable[None] | None]


def new_execution_id() -> str:
    """Sortable enough to eyeball, unique everywhere: `ex_<time hex><random hex>`."""
    return f"ex_{int(time.time() * 1000):x}{uuid.uuid4().hex[:12]}"


def build_execution(
    plan: Plan,
    *,
    execution_id: str | None = None,
    tenant: str = "default",
    webhook: str | None = None,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
    retry_of: str | None = None,
    local_timeout_s: float | None = None,
    catalog: Catalog | None = None,
) -> NewExecution:
    """The rows one validated plan becomes; a local job without `timeout_s` gets `local_timeout_s`; costs are
    estimated from `catalog`'s prices (the default catalog when None)."""
    catalog = catalog or default_catalog()
    deps = plan.dependencies()
    dependents = plan.dependents(deps)
    jobs = []
    total = 0.0
    for pos, job in enumerate(plan.jobs):
        cost = job_cost(job, catalog)
        total += cost
        provider = job.primary.split("/", 1)[0] if job.primary else "local"
        timeout_s = job.timeout_s if job.timeout_s is not None or provider != "local" else local_timeout_s
        jobs.append(
            NewJob(
                key=job.id,
                position=pos,
                type=job.type,
                provider=provider,
                model=job.primary,
                params=job.params,
                alternatives=job.models[1:],
                failover_on=job.failover_on,
                depends_on=deps[job.id],
                dependents=dependents[job.id],
                max_attempts=job.max_attempts,
                timeout_s=timeout_s,
                start_timeout_s=job.start_timeout_s,
                cost_estimated=cost,
                cache=plan.options.cache if job.cache is None else job.cache,
            )
        )
    return NewExecution(
        id=execution_id or new_execution_id(),
        plan=plan.model_dump(mode="json", exclude_none=True),
        jobs=jobs,
        tenant=tenant,
        metadata=plan.metadata,
        webhook=webhook or plan.webhook,
        on_failure=plan.options.on_failure,
        priority=plan.options.priority,
        timeout_s=plan.options.timeout_s,
        cost_estimated=total,
        retry_of=retry_of,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        webhook_events=list(plan.options.webhook_events or []),
    )


def check_credentials(plan: Plan) -> None:
    """A job whose provider has no key configured is refused now, not after a worker claims it."""
    problems = []
    missing: dict[str | None, str | None] = {}  # by provider: a plan names few providers, often
    for i, job in enumerate(plan.jobs):
        for model in job.models:
            provider = model.split("/", 1)[0]
            if provider not in missing:
                missing[provider] = missing_credential(provider)
            if var := missing[provider]:
                problems.append(
                    ErrorItem(["jobs", i, "model"], f"job '{job.id}': {model} needs {var}, which is not set")
                )
    if problems:
        raise PlanError(problems)


class Engine:
    """Submit and follow executions on one Store."""

    def __init__(
        self,
        store: Store,
        settings: Settings | None = None,
        *,
        storage: Storage | None = None,
        catalog: Catalog | None = None,
    ) -> None:
        self.store = store
        self.settings = settings or get_settings()
        self._catalog = catalog
        self._storage = storage
        """Where artifacts live; opened on the first plan that holds a URL (to recognise our artifact links)."""

    @property
    def catalog(self) -> Catalog:
        """The models plans are checked and priced against (the process's default catalog unless given)."""
        return self._catalog if self._catalog is not None else default_catalog()

    async def storage(self) -> Storage:
        if self._storage is None:
            self._storage = await asyncio.to_thread(open_storage, self.settings.storage_url, self.settings.public_url)
        return self._storage

    async def check_inputs(self, plan: Plan, tenant: str) -> None:
        """Every literal parameter that links to one of our artifacts must name one of `tenant`'s: another
        tenant's artifact and a made-up key are refused alike, naming the job and the parameter."""
        if not any(has_urls(job.params) for job in plan.jobs):
            return
        storage = await self.storage()
        if problems := local_input_problems(plan, storage):
            raise PlanError(problems)
        links = [
            (where, key, job.id)
            for i, job in enumerate(plan.jobs)
            for where, key in artifact_links(storage, job.params, ["jobs", i, "params"])
        ]
        if not links:
            return
        owned = await self.store.owned_artifacts(tenant, {key for _, key, _ in links})
        if problems := [refusal(where, job_key) for where, key, job_key in links if key not in owned]:
            raise PlanError(problems)

    async def submit(
        self,
        plan: Plan | dict[str, Any] | Any,
        *,
        tenant: str = "default",
        webhook: str | None = None,
        idempotency_key: str | None = None,
        retry_of: str | None = None,
    ) -> str:
        """Validate (raises PlanError, storing nothing) and enqueue in one transaction; return the id.

        With an `idempotency_key`, the same request within 24 h returns the first execution's id, and a
        different request under the same key raises IdempotencyConflict.
        """
        parsed = plan if isinstance(plan, Plan) else parse_plan(plan, catalog=self.catalog)
        check_credentials(parsed)
        if url := webhook or parsed.webhook:
            from ..net import EgressPolicy, UnsafeDestination, check_destination  # httpx: only for a webhook

            try:
                await check_destination(url, policy=EgressPolicy.from_settings(self.settings))
            except UnsafeDestination as exc:
                raise PlanError([ErrorItem(["webhook"], str(exc))]) from None
        await self.check_inputs(parsed, tenant)
        request_hash = None
        if idempotency_key is not None:
            canonical = {"plan": parsed.model_dump(mode="json"), "webhook": webhook}
            request_hash = hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()
        execution = build_execution(
            parsed,
            tenant=tenant,
            webhook=webhook,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            retry_of=retry_of,
            local_timeout_s=self.settings.local_timeout_s,
            catalog=self.catalog,
        )
        limit = get_limits(self.settings).tenant(tenant)
        if limit.monthly_executions is not None or limit.monthly_cost_usd is not None:
            execution.usage_limit = UsageLimit(limit.monthly_executions, limit.monthly_cost_usd)
        return await self.store.create_execution(execution)

    async def usage(self, tenant: str = "default") -> Usage:
        """This month's executions and cost of a tenant, its jobs running now, with its limits."""
        used = await self.store.usage(tenant)
        limit = get_limits(self.settings).tenant(tenant)
        used["limits"] = {
            "monthly_executions": limit.monthly_executions,
            "monthly_cost_usd": limit.monthly_cost_usd,
            "max_concurrent": limit.max_concurrent,
        }
        from ..models import Usage

        return Usage.model_validate(used)

    async def get(self, execution_id: str, tenant: str | None = None) -> ExecutionState:
        state = await self.store.get_execution(execution_id, tenant)
        if state is None:
            raise NotFound(f"execution {execution_id!r} not found")
        return state

    async def job_logs(self, execution_id: str, job_key: str, tenant: str | None = None) -> JobLogs:
        """One job's provider log; NotFound naming what is unknown (the execution, or the job in it)."""
        found = await self.store.job_logs(execution_id, job_key, tenant)
        if found is None:
            await self.get(execution_id, tenant)
            raise NotFound(f"job {job_key!r} not found in execution {execution_id!r}")
        return found

    async def cancel(self, execution_id: str, tenant: str | None = None) -> ExecutionState:
        return await self.store.cancel_execution(execution_id, tenant)

    async def resume(self, execution_id: str, tenant: str | None = None) -> ExecutionState:
        return await self.store.resume_execution(execution_id, tenant)

    async def retry(self, execution_id: str, tenant: str | None = None) -> str:
        """A new execution of the same plan; the old one stays as it is."""
        state = await self.store.get_execution(execution_id, tenant)
        if state is None:
            raise NotFound(f"execution {execution_id!r} not found")
        plan = await self.plan_of(execution_id, tenant)
        return await self.submit(plan, tenant=tenant or "default", retry_of=execution_id)

    async def plan_of(self, execution_id: str, tenant: str | None = None) -> dict[str, Any]:
        plan = await self.store.execution_plan(execution_id, tenant)
        if plan is None:
            raise NotFound(f"execution {execution_id!r} not found")
        return plan

    async def wait(
        self,
        execution_id: str,
        *,
        tenant: str | None = None,
        timeout: float | None = None,
        poll_s: float = 0.2,
        on_update: Listener | None = None,
    ) -> dict[str, Any]:
        """Poll until the execution ends (or `timeout` passes); call `on_update` with each new state. The states
        are the API's JSON (`ExecutionState.model_dump(mode="json")`, artifact paths kept)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            state = (await self.get(execution_id, tenant)).model_dump(mode="json")
            if on_update is not None:
                maybe = on_update(state)
                if maybe is not None:
                    await maybe
            if state["status"] in TERMINAL_EXECUTION:
                return state
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"execution {execution_id} still {state['status']} after {timeout} s")
            await asyncio.sleep(poll_s)
