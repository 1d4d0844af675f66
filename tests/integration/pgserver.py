"""A private PostgreSQL server for the accounting tests.

PgServer runs the Debian PostgreSQL 15 server binaries
(/usr/lib/postgresql/15/bin, package postgresql-15) on a data directory and
a UNIX socket directory of its own in /tmp and a private TCP port on
127.0.0.1 (trust authentication, no fsync: a throw-away cluster). initdb
refuses to run as root, so as root every server command runs as the
`postgres` user (`runuser -u postgres --`). Queries go through `psql`, so
the tests need nothing beyond the standard library and pytest.

    pg = PgServer(port=43990)      # skips the test if the binaries are missing
    pg.init(); pg.start()
    pg.create_database("acct")
    pg.query("acct", "select count(*) from media_sessions")
    with pg.lock_table("acct", "media_sessions"):   # ACCESS EXCLUSIVE, held
        ...
    pg.kill(); pg.start()          # crash (immediate shutdown) and restart
    pg.freeze(); pg.thaw()         # SIGSTOP / SIGCONT: a server that hangs
    pg.destroy()                   # stop and remove everything
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator, List

import pytest

PG_BIN = Path(os.environ.get("MEDIAPROXY_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_USER = "postgres"
# psql talks UTF-8 whatever the database's encoding (runuser keeps it).
_ENV = dict(os.environ, PGCLIENTENCODING="UTF8")


def require_postgres() -> None:
    """Skip the calling test when the server binaries are not installed."""
    missing = [b for b in ("initdb", "pg_ctl", "postgres", "psql")
               if not os.access(PG_BIN / b, os.X_OK)]
    if missing:
        pytest.skip(f"PostgreSQL server binaries {', '.join(missing)} not found in {PG_BIN} "
                    "(Debian package postgresql-15, or set MEDIAPROXY_TEST_PG_BIN)")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(PG_USER)
        except KeyError:
            pytest.skip(f"running as root and there is no '{PG_USER}' user to run "
                        "PostgreSQL as (initdb refuses root)")


class PgServer:
    def __init__(self, port: int):
        require_postgres()
        self.port = port
        self.root = tempfile.mkdtemp(prefix="mp-pg-", dir="/tmp")
        self.datadir = os.path.join(self.root, "data")
        self.sockdir = os.path.join(self.root, "sock")
        self.logfile = os.path.join(self.root, "server.log")
        os.mkdir(self.sockdir)
        self._as_root = os.geteuid() == 0
        if self._as_root:
            pw = pwd.getpwnam(PG_USER)
            for p in (self.root, self.sockdir):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        os.chmod(self.root, 0o755)

    # -- commands -----------------------------------------------------------
    def _cmd(self, binary: str, *args: str) -> List[str]:
        cmd = [str(PG_BIN / binary), *args]
        return (["runuser", "-u", PG_USER, "--"] + cmd) if self._as_root else cmd

    def _run(self, binary: str, *args: str, timeout: float = 60,
             check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run(self._cmd(binary, *args), stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=timeout, env=_ENV)
        if check and r.returncode != 0:
            raise AssertionError(
                f"{binary} {' '.join(args)} failed ({r.returncode}):\n"
                f"{r.stdout.decode(errors='replace')}{r.stderr.decode(errors='replace')}\n"
                f"--- server log ---\n{self.log_tail()}")
        return r

    def init(self) -> "PgServer":
        self._run("initdb", "-D", self.datadir, "-U", PG_USER, "-A", "trust", "-E", "UTF8",
                  "--locale=C", "--no-sync")
        with open(os.path.join(self.datadir, "postgresql.conf"), "a") as f:
            f.write(f"\nport = {self.port}\n"
                    "listen_addresses = '127.0.0.1'\n"
                    f"unix_socket_directories = '{self.sockdir}'\n"
                    # No fsync: the machine does not crash, the server
                    # does (kill); synchronous_commit stays on, or a
                    # crash would lose commits it had acknowledged.
                    "fsync = off\nfull_page_writes = off\n"
                    "max_connections = 20\nshared_buffers = 16MB\n")
        return self

    def start(self, timeout: float = 60) -> "PgServer":
        self._run("pg_ctl", "-D", self.datadir, "-l", self.logfile, "-w", "-t", str(int(timeout)),
                  "start", timeout=timeout + 10)
        return self

    def stop(self) -> None:
        """Clean (fast) shutdown: sessions are ended, the server exits."""
        self._run("pg_ctl", "-D", self.datadir, "-m", "fast", "-w", "stop", check=False)

    def kill(self) -> None:
        """Immediate shutdown: every process quits at once, as in a crash;
        the next start runs crash recovery."""
        self._run("pg_ctl", "-D", self.datadir, "-m", "immediate", "-w", "stop", check=False)

    def _pids(self) -> List[int]:
        """The postmaster and its children."""
        with open(os.path.join(self.datadir, "postmaster.pid")) as f:
            master = int(f.readline())
        pids = [master]
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                except (OSError, ValueError, IndexError):
                    continue
                if ppid == master:
                    pids.append(int(entry))
        return pids

    def freeze(self) -> None:
        """SIGSTOP to every server process: connections stay open, nothing
        answers (a hung server, or one behind a dead network path)."""
        for pid in self._pids():
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                pass  # a backend that ended between the listing and the signal

    def thaw(self) -> None:
        for pid in self._pids():
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass  # woken by its postmaster's own SIGCONT and gone already

    def running(self) -> bool:
        r = self._run("pg_ctl", "-D", self.datadir, "status", check=False)
        return r.returncode == 0

    def destroy(self) -> None:
        if os.path.isdir(self.datadir) and self.running():
            self.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        try:
            with open(self.logfile, "rb") as f:
                return "\n".join(f.read().decode(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no server log)"

    # -- SQL ----------------------------------------------------------------
    def uri(self, dbname: str, **params: str) -> str:
        q = "&".join(f"{k}={v}" for k, v in params.items())
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/{dbname}" + (f"?{q}" if q else "")

    def _psql_args(self, dbname: str) -> List[str]:
        return ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", self.sockdir, "-p", str(self.port),
                "-U", PG_USER, "-d", dbname]

    def query(self, dbname: str, sql: str, timeout: float = 20) -> List[List[str]]:
        """Rows of `sql` (unaligned, fields separated by the unit separator)."""
        r = self._run("psql", *self._psql_args(dbname), "-A", "-t", "-F", "\x1f", "-c", sql,
                      timeout=timeout)
        out = r.stdout.decode("utf-8")
        return [line.split("\x1f") for line in out.splitlines() if line != ""]

    def create_database(self, dbname: str) -> None:
        self.query("postgres", f"CREATE DATABASE {dbname}")

    @contextlib.contextmanager
    def lock_table(self, dbname: str, table: str, timeout: float = 20) -> Iterator[None]:
        """Holds ACCESS EXCLUSIVE on `table` in another session until the
        block ends."""
        proc = subprocess.Popen(self._cmd("psql", *self._psql_args(dbname)), env=_ENV,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        try:
            proc.stdin.write(f"BEGIN;\nLOCK TABLE {table} IN ACCESS EXCLUSIVE MODE;\n"
                             "\\echo locked\n".encode())
            proc.stdin.flush()
            line = _readline_with_deadline(proc, timeout)
            if line.strip() != b"locked":
                raise AssertionError(f"could not lock {table}: {line!r} "
                                     f"{proc.stderr.read1(4096)!r}")
            yield
            proc.stdin.write(b"COMMIT;\n\\q\n")
            proc.stdin.flush()
            proc.wait(timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)


def _readline_with_deadline(proc: subprocess.Popen, timeout: float) -> bytes:
    import selectors
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    buf = b""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0 or not sel.select(left):
            break
        chunk = os.read(proc.stdout.fileno(), 4096)
        if not chunk:
            break
        buf += chunk
    sel.close()
    return buf


def wait_until(predicate, timeout: float, what: str, step: float = 0.1):
    """Polls `predicate` until it returns a true value (returned) or
    `timeout` seconds pass (AssertionError naming `what`)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not the case after {timeout:.0f}s")
        time.sleep(step)  # polling interval
