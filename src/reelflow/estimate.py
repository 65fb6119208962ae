"""Cost and time estimate of a plan, shared by the API (`POST /v1/estimate`) and `reelflow estimate`."""

from __future__ import annotations

from typing import Any

from .plan import JobSpec, Plan, parse_plan
from .providers.catalog import Catalog, default_catalog, estimate_cost, estimate_seconds


def job_cost(job: JobSpec, catalog: Catalog | None = None) -> float:
    """A job's estimated cost: that of its most expensive model (a failover may run any of them), priced
    from `catalog` (the process's default catalog when None)."""
    if not job.models:
        return estimate_cost(None, job.params)
    models = catalog or default_catalog()
    return max(estimate_cost(models.get(m), job.params) for m in job.models)


def estimate_plan(plan: Plan | Any, *, catalog: Catalog | None = None) -> dict[str, Any]:
    """Per job cost (USD) and seconds; totals: the summed cost, and the critical path's seconds.

    Parallel branches overlap, so the plan's time is the longest chain of dependencies, not the sum.
    Models, prices and times come from `catalog` (the process's default catalog when None), which a plan
    given as data is validated against first; raises PlanError for an invalid plan.
    """
    models = catalog or default_catalog()
    parsed = plan if isinstance(plan, Plan) else parse_plan(plan, catalog=models)
    cost: dict[str, float] = {}
    seconds: dict[str, float] = {}
    for job in parsed.jobs:
        model = models.get(job.primary) if job.primary else None
        cost[job.id] = job_cost(job, models)
        seconds[job.id] = estimate_seconds(model, job.params, job.type)
    finish: dict[str, float] = {}
    deps = parsed.dependencies()
    for job_key in parsed.topological_order():
        finish[job_key] = seconds[job_key] + max((finish[d] for d in deps[job_key]), default=0.0)
    return {
        "jobs": [{"id": j.id, "cost_usd": cost[j.id], "seconds": seconds[j.id]} for j in parsed.jobs],
        "cost_usd": round(sum(cost.values()), 6),
        "seconds": round(max(finish.values(), default=0.0), 3),
    }
