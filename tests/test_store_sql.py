"""The named SQL statements of the stores (src/reelflow/store/sql/*.sql, read by `common.Statements`): every name
the Python uses is defined for its dialect, none is left unused, the status guards are expanded from the
transition table, and the files ship as package data."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from reelflow.states import guard
from reelflow.store.common import Statements

STORE = Path(__file__).resolve().parent.parent / "src" / "reelflow" / "store"
USED = re.compile(r"\b(?:self\.sql|SQL)\.([a-z_]+)\b")


def names_used(*files: str) -> set[str]:
    code = "".join((STORE / f).read_text(encoding="utf-8") for f in files)
    stats = re.search(r"args = \{(.*?)\}", code[code.index("async def stats(") :], re.S)
    assert stats is not None
    return set(USED.findall(code)) | {f"stats_{n}" for n in re.findall(r'"(\w+)":', stats[1])}


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
def test_every_statement_named_in_the_code_is_defined_and_expanded(dialect: str) -> None:
    sql = Statements(dialect)
    defined = vars(sql)
    assert names_used("manager.py", f"{dialect}.py") - set(defined) == set()
    unexpanded = ("{guard", "{use", "--")
    assert [name for name, text in defined.items() if any(u in text for u in unexpanded) or not text] == []


def test_no_statement_is_left_unused() -> None:
    used = names_used("manager.py", "sqlite.py", "postgres.py")
    defined = set(vars(Statements("sqlite"))) | set(vars(Statements("postgres")))
    assert defined - used == set()


def test_a_dependent_leased_by_its_count_down_is_written_and_returned_as_a_lease_writes_and_returns() -> None:
    """`count_down_lease` takes `lease_jobs`' assignments (each under its `w.go`) and its returned columns from one
    fragment each: a column added to the lease cannot be missing from the hand-off."""
    sql = Statements("postgres")
    lease, count_down = sql.lease_jobs, sql.count_down_lease
    assignments = lease[lease.index("SET status = 'running', ") + 24 : lease.index(" FROM executions")]
    pairs = [part.split(" = ", 1) for part in re.split(r", (?=\w+ = )", assignments)]
    assert [col for col, _ in pairs][:3] == ["attempts", "lease_owner", "lease_expires_at"] and len(pairs) == 9
    for col, value in pairs:
        assert f"{col} = CASE WHEN w.go THEN {value} ELSE j.{col} END" in count_down
    returned = lease[lease.index(" RETURNING ") + 11 :]
    assert count_down.endswith(f"SELECT {returned} FROM c AS j JOIN executions e ON e.id = j.execution_id"
                               " WHERE j.go AND j.status = 'running'")  # fmt: skip
    assert returned.startswith("j.id, j.execution_id,") and returned.endswith("END AS dep_results")


def test_guards_come_from_the_transition_table_and_unknown_names_fail() -> None:
    pg, lite = Statements("postgres"), Statements("sqlite")
    assert f"AND {guard('queued', 'j.status', frm='waiting')} RETURNING" in pg.count_down
    assert f"WHERE {guard('running', execution=True, frm='queued')} AND {{cond}}" in lite.start_executions
    assert f"WHERE execution_id = %s AND {guard('canceled')} RETURNING" in lite.cancel_jobs
    assert lite.lease_jobs != pg.lease_jobs  # a dialect's block replaces the shared one of its name
    with pytest.raises(AttributeError, match="no SQL statement named 'nope'"):
        _ = pg.nope


def test_the_statements_ship_with_the_package() -> None:
    pyproject = (STORE.parents[2] / "pyproject.toml").read_text(encoding="utf-8")
    assert '"store/sql/*.sql"' in pyproject
    assert {p.name for p in (STORE / "sql").glob("*.sql")} == {"shared.sql", "sqlite.sql", "postgres.sql"}


def test_loads_reads_what_json_loads_reads_and_refuses_what_it_refuses() -> None:
    """`common.loads` calls the decoder's scanner itself: the same values, and the same errors."""
    import json
    import math

    from reelflow.store.common import loads

    for text in ('[]', '{}', '["r5"]', ' [1] ', '{"a": [1, 2.5, null, true, "\\u00e9\\u2028"], "b": {"c": "d"}}',
                 '"x"', '12345678901234567890', '1e400', '-0.0'):  # fmt: skip
        assert loads(text) == json.loads(text)
        assert type(loads(text)) is type(json.loads(text))
    assert math.isnan(loads("NaN")) and loads("-Infinity") == -math.inf
    assert loads(None) is None and loads("[]") is not loads("[]")  # a fresh object each time
    for bad in ("[1]x", "", "x", "[1,", "\ufeff[1]", '{"a" 1}'):
        with pytest.raises(json.JSONDecodeError):
            loads(bad)


def test_dumps_writes_what_the_compact_encoder_writes() -> None:
    """`common.dumps` takes strings and finite floats the short way: the same text as json.dumps gives them."""
    import json
    import math

    from reelflow.store.common import dumps

    for value in ("", "r5", 'a "quoted" \\ line\nbreak \u2028 é 猫 \x00', 0.0, -0.0, 1.5, 1e300, 5e-324, 0.1 + 0.2,
                  math.inf, -math.inf, 3, True, None, {"provider_job_id": "p-1"}, ["é", 1.0]):  # fmt: skip
        assert dumps(value) == json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    assert dumps(math.nan) == "NaN"
    assert f'{{"after":{dumps("k")}}}' == dumps({"after": "k"})  # how the events spell their small objects
