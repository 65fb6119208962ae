"""How fast this machine runs plain Python and SQLite: a yardstick printed beside every benchmark's figures.

The project's machine is "2 cores", but the cores differ from one day to the next: the same code has drained
`bench/overhead.py` at 4,900 jobs/s on one and 13,300 on another. A figure means something only beside the
speed of the machine it came from, so each benchmark prints this line first:

    machine: 2 CPUs (AMD EPYC), Python loop 136 ms, SQLite inserts 24 ms, load 0.7 (lower is faster)

- Python loop: 5,000,000 additions in a `for` loop (the interpreter's own speed), best of 3;
- SQLite inserts: 20,000 one-row INSERTs of a short text into an in-memory table, one transaction, best of 3.

Run alone (`python bench/machine.py`) it prints the line and exits.
"""

from __future__ import annotations

import os
import sqlite3
import time


def _python_loop() -> float:
    started = time.perf_counter()
    total = 0
    for i in range(5_000_000):
        total += i
    assert total == 12_499_997_500_000
    return time.perf_counter() - started


def _sqlite_inserts() -> float:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    started = time.perf_counter()
    conn.execute("BEGIN")
    for i in range(20_000):
        conn.execute("INSERT INTO t (v) VALUES (?)", (f"value {i}",))
    conn.execute("COMMIT")
    took = time.perf_counter() - started
    conn.close()
    return took


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def speed_line() -> str:
    """One line: CPUs, CPU model, the two yardsticks (best of 3 each) and the 1-minute load average."""
    loop = min(_python_loop() for _ in range(3))
    inserts = min(_sqlite_inserts() for _ in range(3))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"machine: {os.cpu_count()} CPUs ({_cpu_model()}), Python loop {loop * 1000:.0f} ms,"
        f" SQLite inserts {inserts * 1000:.0f} ms,"
        f" load {load:.1f} (lower is faster)"
    )


if __name__ == "__main__":
    print(speed_line())
