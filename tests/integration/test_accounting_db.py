"""Database accounting (issue 12, spec F.1) against real databases.

The binary runs with `[Dispatcher] accounting = database`; each answered
call that ends (remove, expiry) must become exactly one row of
`media_sessions` whose `info` is the session's final record.

* SQLite: the file (relative and absolute `dburi`) is read with Python's
  sqlite3 module; a row for `remove` (call-ids with quotes, SQL and
  non-UTF-8 bytes, kept byte-exact) and for expiry.
* PostgreSQL: a real server (pgserver.PgServer: Debian's postgresql-15
  binaries, a private data directory, socket directory and TCP port, run as
  the `postgres` user), skipped with the reason when it is not installed.
  One server for the module, a fresh database per test. Rows for `remove`
  (non-UTF-8 bytes as \\xhh), an operator's own table (no unique key, jsonb
  info, a column too short for one call-id: that record is set aside in the
  rejected file), a LATIN1 database. Faults: the server down when
  mediaproxy starts, killed (immediate shutdown) mid-run and restarted,
  down across a restart of mediaproxy (the journal), slow (a session holding
  ACCESS EXCLUSIVE on the table) and hung (every server process stopped).
  Through all of them the module's requests are answered as fast as before,
  and once the server is usable again every record arrives, each exactly
  once.

Ports: PostgreSQL listens on MEDIAPROXY_TEST_PG_PORT (default
MEDIAPROXY_TEST_PORT_BASE + 990, TCP; the relays use UDP).
"""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import statistics
from typing import Dict, List, Tuple

import pytest

from mpclient import Dialog, MediaPort, assert_media_flows, parse_ports
from mpharness import PORT_BASE, MediaProxy
from pgserver import PgServer, wait_until

PG_PORT = int(os.environ.get("MEDIAPROXY_TEST_PG_PORT", str(PORT_BASE + 990)))
# How long a record may take to arrive once the database is usable again:
# the queue's retry backoff grows to 30 s.
ARRIVAL = 45.0
# A request answered this much slower than the baseline means the
# dispatcher waited for the database.
LATENCY_SLACK = 0.2

_db_counter = itertools.count(1)


def db_overrides(dburi: str, **extra) -> Dict[str, object]:
    # No hang-up requests: no proxy runs here, and they are not the subject.
    return {"Dispatcher.accounting": "database", "Database.dburi": dburi,
            "OpenSIPS.socket_path": "none", "Kamailio.socket_path": "none", **extra}


class Calls:
    """Answered calls on one module connection, with request latencies."""

    def __init__(self, mp: MediaProxy):
        self.client = mp.client()
        self.caller = MediaPort("127.0.0.2")
        self.callee = MediaPort("127.0.0.3")
        self.latencies: List[float] = []

    def _timed(self, fn, *args):
        r = fn(*args)
        self.latencies.append(self.client.last_elapsed)
        return r

    def call(self, **kw) -> Dialog:
        """INVITE + 200 OK; `d.ports` = (caller's relay port, callee's)."""
        d = Dialog(self.client, **kw)
        p = parse_ports(self._timed(d.invite, self.caller.sdp()), 1)[0]
        q = parse_ports(self._timed(d.answer, self.callee.sdp()), 1)[0]
        d.ports = (q, p)
        return d

    def hang_up(self, d: Dialog) -> None:
        assert self._timed(d.remove) == "removed"

    def calls_removed(self, n: int, **kw) -> List[Dialog]:
        out = []
        for _ in range(n):
            d = self.call(**kw)
            self.hang_up(d)
            out.append(d)
        return out

    def take_latencies(self) -> List[float]:
        out, self.latencies = self.latencies, []
        return out


def assert_latency_unchanged(baseline: List[float], during: List[float], what: str) -> None:
    limit = max(baseline) + LATENCY_SLACK
    assert max(during) < limit, (
        f"{what}: slowest request {max(during) * 1000:.0f} ms, baseline at most "
        f"{max(baseline) * 1000:.0f} ms (median {statistics.median(baseline) * 1000:.1f} ms): "
        "the dispatcher waited for the database")


def ident(value) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def journal_empty(mp: MediaProxy) -> bool:
    path = os.path.join(mp.runtime_dir, "accounting-database.journal")
    return not os.path.exists(path) or os.path.getsize(path) == 0


# ---------------------------------------------------------------------------
# SQLite


def sqlite_rows(path: str) -> List[Tuple[bytes, bytes, bytes, bytes]]:
    if not os.path.exists(path):
        return []
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    con.text_factory = bytes
    try:
        return con.execute(
            "SELECT call_id, from_tag, to_tag, info FROM media_sessions ORDER BY id").fetchall()
    except sqlite3.OperationalError:  # table not made yet
        return []
    finally:
        con.close()


def sqlite_has_table(path: str) -> bool:
    if not os.path.exists(path):
        return False
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return bool(con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' "
                                "AND name = 'media_sessions'").fetchall())
    except sqlite3.OperationalError:  # the file is being made
        return False
    finally:
        con.close()


def test_sqlite_row_for_remove(mp_factory):
    mp = mp_factory(**db_overrides("sqlite:accounting.db"))
    path = os.path.join(mp.runtime_dir, "accounting.db")
    wait_until(lambda: sqlite_has_table(path), 10, f"{path} with its table, made at start")
    calls = Calls(mp)
    ids = ["plain@127.0.0.2", "it's \"quoted\"", "'; DROP TABLE media_sessions; --",
           b"\xff\xfe-raw@host"]
    dialogs = [calls.call(call_id=i) for i in ids]
    unanswered = Dialog(calls.client)
    unanswered.invite(calls.caller.sdp())
    for d in dialogs + [unanswered]:
        calls.hang_up(d)
    wait_until(lambda: len(sqlite_rows(path)) >= len(ids), ARRIVAL, f"{len(ids)} rows in {path}")
    wait_until(lambda: journal_empty(mp), 10, "journal drained")
    rows = sqlite_rows(path)
    assert len(rows) == len(ids), f"rows: {rows!r} (a never-answered call is not accounted)"
    for d, (call_id, from_tag, to_tag, info) in zip(dialogs, rows):
        assert call_id == ident(d.call_id)
        assert from_tag == ident(d.from_tag)
        assert to_tag == ident(d.to_tag)
        rec = json.loads(info)
        assert rec["from_tag"] == d.from_tag and rec["to_tag"] == d.to_tag
        assert rec["timed_out"] is False
        assert rec["start_time"] is not None
        assert rec["streams"] and rec["streams"][0]["status"] == "closed"


@pytest.mark.parametrize("dburi_kind", ["relative", "absolute"])
def test_sqlite_row_for_expiry(mp_factory, dburi_kind):
    holder = {}

    def prestart(inst):
        holder["path"] = os.path.join(inst.workdir, "db", "acct.db")
        os.mkdir(os.path.dirname(holder["path"]))
        if dburi_kind == "absolute":
            text = inst.config_text.replace("sqlite:PLACEHOLDER", "sqlite://" + holder["path"])
        else:
            holder["path"] = os.path.join(inst.runtime_dir, "acct.db")
            text = inst.config_text.replace("sqlite:PLACEHOLDER", "sqlite:acct.db")
        with open(inst.config_path, "w") as f:
            f.write(text)

    mp = mp_factory(prestart=prestart, stream_timeout=1, answer_timeout=10,
                    **db_overrides("sqlite:PLACEHOLDER"))
    path = holder["path"]
    calls = Calls(mp)
    d = calls.call(dialog_id="4321:8765")
    # The last packets; then silence until stream_timeout expires the call.
    assert_media_flows(calls.caller, d.ports[0], calls.callee, d.ports[1], n=5)
    rows = wait_until(lambda: sqlite_rows(path), 15, f"a row in {path} after expiry")
    assert len(rows) == 1
    call_id, from_tag, to_tag, info = rows[0]
    assert (call_id, from_tag, to_tag) == (ident(d.call_id), ident(d.from_tag), ident(d.to_tag))
    rec = json.loads(info)
    assert rec["timed_out"] is True
    assert rec["dialog_id"] == "4321:8765"
    assert rec["streams"][0]["status"].endswith("timeout")
    assert rec["streams"][0]["caller_packets"] >= 5
    # The module's remove after the expiry adds no second row.
    calls.hang_up(d)
    wait_until(lambda: journal_empty(mp), 10, "journal drained")
    assert len(sqlite_rows(path)) == 1


# ---------------------------------------------------------------------------
# PostgreSQL


@pytest.fixture(scope="module")
def pg_server():
    server = PgServer(PG_PORT)
    try:
        server.init().start()
        yield server
    finally:
        server.destroy()


@pytest.fixture
def pg(pg_server):
    """The module's server, running, with a fresh database `pg.db`."""
    if not pg_server.running():
        pg_server.start()
    pg_server.db = f"acct_{os.getpid()}_{next(_db_counter)}"
    pg_server.create_database(pg_server.db)
    return pg_server


def pg_rows(pg: PgServer) -> List[List[str]]:
    # Before mediaproxy's worker has created the table there are no rows.
    if not pg_table_exists(pg):
        return []
    return pg.query(pg.db, "SELECT call_id, from_tag, to_tag, info FROM media_sessions "
                           "ORDER BY id")


def pg_table_exists(pg: PgServer) -> bool:
    return pg.query(pg.db, "SELECT to_regclass('media_sessions') IS NOT NULL") == [["t"]]


def stored_text(value) -> str:
    """The PostgreSQL text rule: valid UTF-8 as is, other bytes as \\xhh."""
    if isinstance(value, str):
        value = value.encode()
    return value.decode("utf-8", "backslashreplace").replace("\0", "\\x00")


def assert_exactly_once(pg: PgServer, mp: MediaProxy, dialogs: List[Dialog]) -> None:
    """Every dialog's row arrives, once; then the journal is empty and no
    other row turns up."""
    want = sorted((stored_text(d.call_id), stored_text(d.from_tag), stored_text(d.to_tag))
                  for d in dialogs)

    def arrived():
        try:
            return len(pg_rows(pg)) >= len(want)
        except AssertionError:  # the server is still starting
            return False

    wait_until(arrived, ARRIVAL, f"{len(want)} rows in PostgreSQL")
    wait_until(lambda: journal_empty(mp), 10, "journal drained")
    rows = pg_rows(pg)
    got = sorted((r[0], r[1], r[2]) for r in rows)
    assert got == want, f"rows {got!r}, expected each of {want!r} once"
    for r in rows:
        assert json.loads(r[3])["call_id"] is not None


def test_postgresql_rows_for_remove(mp_factory, pg):
    mp = mp_factory(**db_overrides(pg.uri(pg.db)))
    wait_until(lambda: pg_table_exists(pg), 10, "media_sessions created at start")
    calls = Calls(mp)
    dialogs = [calls.call(call_id=i) for i in
               ["pg-plain@127.0.0.2", "it's \"quoted\"", "'); DROP TABLE media_sessions; --",
                "caf\u00e9@h\u00f4te", b"\xff\xfe-raw@host", b"mixed-caf\xc3\xa9\xff@host"]]
    for d in dialogs:
        calls.hang_up(d)
    assert_exactly_once(pg, mp, dialogs)
    rec = json.loads(pg_rows(pg)[0][3])
    assert rec["call_id"] == "pg-plain@127.0.0.2"
    assert rec["timed_out"] is False
    assert "accounting backend database ready" in mp.stderr_text()


def test_postgresql_down_at_start(mp_factory, pg):
    pg.stop()
    mp = mp_factory(**db_overrides(pg.uri(pg.db)))
    wait_until(lambda: "accounting backend database not ready" in mp.stderr_text(), 15,
               "the log says the database is not ready")
    calls = Calls(mp)
    first = calls.calls_removed(3)
    baseline = calls.take_latencies()
    later = calls.calls_removed(5)
    assert_latency_unchanged(baseline, calls.take_latencies(), "database down")
    mp.assert_alive()
    pg.start()
    assert_exactly_once(pg, mp, first + later)


def test_postgresql_killed_mid_run_and_restarted(mp_factory, pg):
    mp = mp_factory(**db_overrides(pg.uri(pg.db)))
    calls = Calls(mp)
    before = calls.calls_removed(3)
    baseline = calls.take_latencies()
    assert_exactly_once(pg, mp, before)
    pg.kill()
    during = calls.calls_removed(5)
    assert_latency_unchanged(baseline, calls.take_latencies(), "database killed")
    wait_until(lambda: "accounting backend database failed" in mp.stderr_text(), 20,
               "the log says the database failed")
    pg.start()
    after = calls.calls_removed(2)
    assert_exactly_once(pg, mp, before + during + after)


def test_postgresql_slow_lock_held(mp_factory, pg):
    # A short statement_timeout from the URI (libpq `options`): an insert
    # behind the lock gives up after 2 s instead of the default 10 s.
    uri = pg.uri(pg.db, options="-c%20statement_timeout%3D2000")
    mp = mp_factory(**db_overrides(uri))
    calls = Calls(mp)
    before = calls.calls_removed(3)
    baseline = calls.take_latencies()
    assert_exactly_once(pg, mp, before)
    with pg.lock_table(pg.db, "media_sessions"):
        during = calls.calls_removed(5)
        assert_latency_unchanged(baseline, calls.take_latencies(), "table locked")
        wait_until(lambda: "statement timeout" in mp.stderr_text(), 20,
                   "the log says an insert timed out behind the lock")
        during += calls.calls_removed(2)
        assert_latency_unchanged(baseline, calls.take_latencies(), "table locked")
    assert_exactly_once(pg, mp, before + during)


def test_postgresql_journal_survives_restart_while_down(mp_factory, pg):
    pg.stop()
    mp = mp_factory(**db_overrides(pg.uri(pg.db)))
    calls = Calls(mp)
    dialogs = calls.calls_removed(4)
    for c in mp._clients:
        c.close()
    assert mp.stop() == 0, "mediaproxy did not stop cleanly with the database down"
    journal = os.path.join(mp.runtime_dir, "accounting-database.journal")
    with open(journal, "rb") as f:
        assert len(f.read().splitlines()) == 4, "the journal should hold the 4 records"
    pg.start()
    mp.start()
    assert_exactly_once(pg, mp, dialogs)


def test_postgresql_operator_table_and_a_refused_value(mp_factory, pg):
    """A table the operator made (no unique key, a short call_id column,
    jsonb info): rows go in; a call-id too long for the column is refused
    by the server, so that one record is set aside in the rejected file and
    the records behind it are not held up."""
    pg.query(pg.db, "CREATE TABLE media_sessions (id SERIAL PRIMARY KEY, "
                    "call_id VARCHAR(40) NOT NULL, from_tag TEXT NOT NULL, to_tag TEXT, "
                    "info JSONB)")
    mp = mp_factory(**db_overrides(pg.uri(pg.db)))
    calls = Calls(mp)
    ok1 = calls.calls_removed(1, call_id="short-1@host")
    bad = calls.calls_removed(1, call_id="x" * 60 + "@host")
    ok2 = calls.calls_removed(1, call_id="short-2@host")
    rejected = os.path.join(mp.runtime_dir, "accounting-database.rejected")
    wait_until(lambda: os.path.exists(rejected) and os.path.getsize(rejected) > 0, ARRIVAL,
               f"the refused record in {rejected}")
    assert_exactly_once(pg, mp, ok1 + ok2)
    with open(rejected) as f:
        lines = f.read().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["call_id"] == bad[0].call_id
    assert "refused the record" in mp.stderr_text()
    assert pg.query(pg.db, "SELECT info->>'call_id' FROM media_sessions ORDER BY id") == [
        ["short-1@host"], ["short-2@host"]]


def test_postgresql_latin1_database(mp_factory, pg):
    """A database whose encoding cannot hold every character: the record is
    stored with its non-ASCII bytes as \\xhh (sql_engine.h), not refused."""
    db = pg.db + "_latin1"
    pg.query("postgres", f"CREATE DATABASE {db} ENCODING 'LATIN1' TEMPLATE template0 "
                         "LC_COLLATE 'C' LC_CTYPE 'C'")
    pg.db = db
    mp = mp_factory(**db_overrides(pg.uri(db)))
    calls = Calls(mp)
    dialogs = calls.calls_removed(1, call_id="euro-\u20ac@host")
    plain = calls.calls_removed(1, call_id="caf\u00e9@host")
    wait_until(lambda: len(pg_rows(pg)) == 2, ARRIVAL, "2 rows in the LATIN1 database")
    got = sorted(r[0] for r in pg_rows(pg))
    # é exists in LATIN1 and is stored as itself; € does not: its bytes as \xhh.
    assert got == sorted(["euro-\\xe2\\x82\\xac@host", plain[0].call_id]), got
    assert dialogs


def test_postgresql_hung_server_does_not_hold_the_worker(mp_factory, pg):
    """A server that accepts nothing and answers nothing (every process
    stopped): the insert is given up after statement_timeout + 5 s, the
    connection dropped, reconnecting gives up after connect_timeout; calls
    are unaffected, and once the server answers again the records arrive
    once."""
    uri = pg.uri(pg.db, options="-c%20statement_timeout%3D1000")
    mp = mp_factory(**db_overrides(uri))
    calls = Calls(mp)
    before = calls.calls_removed(2)
    baseline = calls.take_latencies()
    assert_exactly_once(pg, mp, before)
    pg.freeze()
    try:
        during = calls.calls_removed(3)
        wait_until(lambda: "no answer from the server" in mp.stderr_text(), 30,
                   "the log says the server did not answer")
        during += calls.calls_removed(2)
        assert_latency_unchanged(baseline, calls.take_latencies(), "server hung")
    finally:
        pg.thaw()
    assert_exactly_once(pg, mp, before + during)
