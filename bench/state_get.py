"""CPU of `GET /v1/executions/{id}` for a large execution, in process (no sockets, no server thread).

A plan of `--jobs` sim jobs (default 200) runs to its end on a fresh SQLite database (one embedded worker), then
`--calls` GETs of its state go through `httpx.ASGITransport` to the app; the figure is this process's CPU per call
(client and app together: the route, the store's read, the links signed, the answer rendered), best of `--rounds`.

    python bench/state_get.py [--jobs 200] [--calls 200] [--rounds 5] [--media] [--profile out.prof]

Measured on the shared 2-core machine (noisy: other processes ran), 200 jobs, 5 rounds of 200 GETs, three runs each,
interleaved: before the stores returned models (da08b33) best 32.1 / 32.0 / 27.9 ms, median 36.2 / 37.5 / 31.2 ms;
after, best 33.9 / 23.9 / 23.6 ms, median 34.9 / 28.9 / 25.9 ms. Under cProfile (100 GETs) the route took 2.34 s
(was 3.23 s): the state is validated once, by the store (FastAPI passes the instance through: 2 us, where validating
the dict took 2.25 ms), and `strip_paths` no longer copies the whole state (1,808 calls per GET, was 10,229).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import tempfile
import time
from pathlib import Path

import httpx

from reelflow.api.app import create_app
from reelflow.config import Settings
from reelflow.keys import create_key


def plan(jobs: int, media: bool) -> dict[str, object]:
    """`jobs` independent sim jobs; with `media`, images stored as artifacts (their links signed on every GET)."""
    kind, model = ("generate-image", "sim/image") if media else ("generate-video", "sim/video")
    return {
        "jobs": [{"id": f"shot{i:03d}", "type": kind, "model": model,
                  "params": {"latency_s": 0.01, "prompt": f"shot {i} of the scene", "cost_usd": 0.01, "media": media}}
                 for i in range(jobs)],
        "metadata": {"bench": "state_get", "jobs": jobs},
    }  # fmt: skip


async def bench(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as root:
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            database_url=f"sqlite:///{Path(root)}/reelflow.db",
            storage_url=f"file://{Path(root)}/artifacts",
            public_url="http://127.0.0.1:8000",
            poll_interval_s=0.05,
        )
        app = create_app(settings, workers=1, deliver_webhooks=False)
        async with app.router.lifespan_context(app):
            key = await create_key(app.state.services.store, "bench")
            transport = httpx.ASGITransport(app=app)
            headers = {"Authorization": f"Bearer {key.api_key}"}
            async with httpx.AsyncClient(transport=transport, base_url="http://test", headers=headers) as http:
                r = await http.post("/v1/executions", json=plan(args.jobs, args.media))
                assert r.status_code == 202, r.text
                path = f"/v1/executions/{r.json()['id']}"
                deadline = time.monotonic() + 300
                while (state := (await http.get(path)).json())["status"] not in ("succeeded", "failed"):
                    assert time.monotonic() < deadline, "the execution did not end in 300 s"
                    await asyncio.sleep(0.2)
                for worker in app.state.workers:
                    worker.stop()  # an idle worker's polling would count in the figures
                await asyncio.sleep(1.0)
                size = len((await http.get(path)).content)
                figures = []
                profiler = cProfile.Profile() if args.profile else None
                if profiler is not None:
                    profiler.enable()
                for _ in range(args.rounds):
                    cpu = time.process_time()
                    for _ in range(args.calls):
                        answer = await http.get(path)
                        assert answer.status_code == 200
                    figures.append((time.process_time() - cpu) / args.calls * 1000)
                if profiler is not None:
                    profiler.disable()
                    profiler.dump_stats(args.profile)
        print(f"{args.jobs} jobs{' with media' if args.media else ''} ({state['status']}), answer {size} bytes: "
              f"CPU per GET best {min(figures):.2f} ms, median {sorted(figures)[len(figures) // 2]:.2f} ms "
              f"({args.rounds} rounds of {args.calls})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--media", action="store_true", help="jobs that store an image each (artifact links)")
    parser.add_argument("--profile", help="write the GETs' cProfile stats to this file")
    asyncio.run(bench(parser.parse_args()))


if __name__ == "__main__":
    main()
