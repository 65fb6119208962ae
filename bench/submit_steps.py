"""The CPU time of each step of one large submission (`POST /v1/executions`), in this process: reading the
JSON body, its shape check, plan validation, the credential check, the rows it becomes, and `Engine.submit`
on a fresh SQLite database (process CPU: the store's thread included). Medians of 50; CPU time rather than
wall time, so that a busy machine disturbs the figures less.

    python bench/submit_steps.py [JOBS]   (default 200: bench/api.py's --jobs plan)
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from api import big_plan
from reelflow.api.app import _JsonObject, _NonFinite, check_shape
from reelflow.engine.scheduler import Engine, build_execution, check_credentials
from reelflow.plan import parse_plan
from reelflow.store import open_store

N = int(sys.argv[1]) if len(sys.argv) > 1 else 200
BODY = json.dumps(big_plan(N)).encode()


def cpu_ms(fn: Callable[[], object], n: int = 50) -> float:
    """Median thread CPU time of `fn()`, in ms."""
    times = []
    for _ in range(n):
        start = time.thread_time()
        fn()
        times.append(time.thread_time() - start)
    return statistics.median(times) * 1000


async def main() -> None:
    tmp = tempfile.mkdtemp(prefix="reelflow-submit-steps-")
    store = open_store(f"sqlite:///{tmp}/steps.db")
    await store.migrate()
    engine = Engine(store)

    def load() -> object:
        return json.loads(BODY, object_pairs_hook=_JsonObject.of, parse_constant=_NonFinite)

    data = load()
    plan = parse_plan(data, catalog=engine.catalog)
    print(f"plan of {N} jobs, {len(BODY)} bytes of JSON; median CPU ms of each step:")
    print(f"  json.loads        {cpu_ms(load):6.2f}")
    print(f"  check_shape       {cpu_ms(lambda: check_shape(data, BODY)):6.2f}")
    print(f"  parse_plan        {cpu_ms(lambda: parse_plan(data, catalog=engine.catalog)):6.2f}")
    print(f"  check_credentials {cpu_ms(lambda: check_credentials(plan)):6.2f}")
    print(f"  build_execution   {cpu_ms(lambda: build_execution(plan, catalog=engine.catalog)):6.2f}")
    times = []
    for _ in range(50):
        start = time.process_time()
        await engine.submit(plan)
        times.append(time.process_time() - start)
    print(f"  Engine.submit     {statistics.median(times) * 1000:6.2f}  (parsed plan: rows, estimate, store write)")
    await store.close()


if __name__ == "__main__":
    asyncio.run(main())
