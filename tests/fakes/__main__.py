"""Run the fake providers by hand, to try reelflow end to end with no provider account and no network.

    .venv/bin/python tests/fakes/__main__.py [replicate|fal|elevenlabs|openai|google|all ...] [--port N] [--latency S]

Starts the chosen fakes (default: all) on 127.0.0.1, prints the `export` lines to paste into the shell
where you run `reelflow` (each fake's base URL and key), and serves until Ctrl-C. `--port N` puts the
fakes on N, N+1, ... in the order named (default: free ports); `--latency S` sets how long a fake's
work takes where the fake has that knob (replicate, fal, google).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent.parent
# Run as a script, Python puts this folder first on sys.path, where openai.py & co would shadow real
# packages; the fakes import each other as `fakes.*`, so the tests folder goes there instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(TESTS))

FAKES: dict[str, tuple[str, str, str]] = {
    "replicate": ("fakes.replicate", "FakeReplicate", "REPLICATE_API_TOKEN"),
    "fal": ("fakes.fal", "FakeFal", "FAL_KEY"),
    "elevenlabs": ("fakes.elevenlabs", "FakeElevenLabs", "ELEVENLABS_API_KEY"),
    "openai": ("fakes.openai", "FakeOpenAI", "OPENAI_API_KEY"),
    "google": ("fakes.google", "FakeGoogle", "GEMINI_API_KEY"),
}
"""Provider -> (module, class, the environment variable its key goes in)."""

FIXED_TOKENS = {"replicate": "r8_fake_replicate_token"}
"""Keys a fake would otherwise draw at random: fixed, so pasted exports survive a restart."""


def _fixed_port_server(ports: list[int]) -> type:
    """A ThreadedServer that listens on the next of `ports` instead of a free one."""
    from fakes.runner import ThreadedServer

    class FixedPortServer(ThreadedServer):
        def __init__(self, app: Any, name: str, **kw: Any) -> None:
            super().__init__(app, name, **kw)
            port = ports.pop(0)
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError as exc:
                sock.close()
                raise SystemExit(f"error: cannot listen on 127.0.0.1:{port} for the fake {name}: {exc}") from None
            self.sock.close()
            self.sock, self.port, self.url = sock, port, f"http://127.0.0.1:{port}"
            self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)

    return FixedPortServer


def _make(provider: str, latency: float | None) -> Any:
    module_name, class_name, _ = FAKES[provider]
    cls = getattr(importlib.import_module(module_name), class_name)
    accepted = inspect.signature(cls).parameters
    kwargs: dict[str, Any] = {}
    if provider in FIXED_TOKENS and "token" in accepted:
        kwargs["token"] = FIXED_TOKENS[provider]
    if latency is not None and "latency_s" in accepted:
        kwargs["latency_s"] = latency
    return cls(**kwargs)


def _key(fake: Any) -> str:
    for attr in ("key", "token"):
        value = getattr(fake, attr, None)
        if isinstance(value, str) and value:
            return value
    raise SystemExit(f"error: {type(fake).__name__} has no key or token attribute")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tests/fakes/__main__.py", description="Run reelflow's fake providers on 127.0.0.1 until Ctrl-C."
    )
    names = [*FAKES, "all"]
    parser.add_argument("providers", nargs="*", metavar="|".join(names), help="which fakes to run (default: all)")
    parser.add_argument("--port", type=int, help="first port; the fakes take N, N+1, ... (default: free ports)")
    parser.add_argument("--latency", type=float, help="seconds a job takes, where the fake has that knob")
    args = parser.parse_args(argv)
    unknown = [p for p in args.providers if p not in names]
    if unknown:
        parser.error(f"unknown fake {unknown[0]!r}; choose from {', '.join(names)}")
    chosen = list(FAKES) if not args.providers or "all" in args.providers else list(dict.fromkeys(args.providers))
    if args.port is not None and not 1 <= args.port <= 65535 - len(chosen) + 1:
        parser.error(f"--port must leave room for {len(chosen)} ports below 65536")
    if args.latency is not None and args.latency < 0:
        parser.error("--latency must be 0 or more")

    if args.port is not None:
        server = _fixed_port_server([args.port + i for i in range(len(chosen))])
        for provider in chosen:
            module = importlib.import_module(FAKES[provider][0])
            module.ThreadedServer = server  # the fakes build their server by this name on entering

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with contextlib.ExitStack() as stack:
        lines: list[str] = []
        for provider in chosen:
            fake = stack.enter_context(_make(provider, args.latency))
            lines.append(f"export REELFLOW_{provider.upper()}_BASE_URL={fake.base_url}")
            lines.append(f"export {FAKES[provider][2]}={_key(fake)}")
        print("# reelflow against the fakes: paste into the shell that runs reelflow")
        print("\n".join(lines))
        print("export REELFLOW_ALLOW_PRIVATE_URLS=1  # plans may use the fakes' 127.0.0.1 output URLs as inputs")
        print(f"# serving the fake {', '.join(chosen)}; Ctrl-C stops", flush=True)
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            print("\nstopping", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
