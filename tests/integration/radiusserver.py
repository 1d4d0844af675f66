"""A real FreeRADIUS server for the RADIUS accounting tests.

* FreeRadius         - `freeradius -X` with its own minimal configuration in
                       a private directory: one client (127.0.0.1 with a
                       secret), one accounting listener on 127.0.0.1:<port>,
                       the `detail` module writing every Accounting-Request
                       to <dir>/detail. Its dictionary is FreeRADIUS's own
                       plus the shipped etc/radius/dictionary ($INCLUDE), so
                       the test also proves that the server side can decode
                       the mediaproxy attributes with that very file.
* write_client_conf  - a radcli client.conf (+ servers file) pointing at it.
* send_accounting    - a hand-made Accounting-Request (RFC 2866), to check
                       the fixture without mediaproxy.
* parse_detail       - the detail file as a list of {attribute: [values]}.

Skips (pytest.skip) when FreeRADIUS is not installed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import pytest

REPO = Path(__file__).resolve().parents[2]
DICTIONARY = REPO / "etc" / "radius" / "dictionary"
SECRET = "mediaproxy-test-secret"
START_TIMEOUT = 15.0

RADIUSD_CONF = """\
# Minimal FreeRADIUS configuration written by tests/integration/radiusserver.py
prefix = /usr
confdir = {confdir}
logdir = {dir}
run_dir = {dir}
libdir = /usr/lib/freeradius
pidfile = {dir}/radiusd.pid
name = radiusd
max_request_time = 30
hostname_lookups = no
log {{
  destination = stdout
}}
security {{
  allow_core_dumps = no
}}
client mediaproxy {{
  ipaddr = 127.0.0.1
  secret = {secret}
}}
modules {{
  detail acctlog {{
    filename = {dir}/detail
    escape_filenames = no
    permissions = 0600
    header = "%t"
  }}
}}
server default {{
  listen {{
    type = acct
    ipaddr = 127.0.0.1
    port = {port}
  }}
  accounting {{
    acctlog
  }}
}}
"""


def freeradius_binary() -> str:
    path = shutil.which("freeradius") or shutil.which("radiusd")
    if not path:
        for p in ("/usr/sbin/freeradius", "/usr/sbin/radiusd"):
            if os.access(p, os.X_OK):
                path = p
                break
    if not path:
        pytest.skip("FreeRADIUS is not installed (Debian package `freeradius`): "
                    "the RADIUS accounting tests need a real server")
    return path


def udp_port_free(port: int) -> bool:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


class FreeRadius:
    """One FreeRADIUS process with a private configuration in `directory`."""

    def __init__(self, directory: str, port: int, secret: str = SECRET):
        self.binary = freeradius_binary()
        self.dir = Path(directory)
        self.confdir = self.dir / "raddb"
        self.port = port
        self.secret = secret
        self.detail_path = self.dir / "detail"
        self.log_path = self.dir / "freeradius.log"
        self.proc: Optional[subprocess.Popen] = None
        self.confdir.mkdir(parents=True, exist_ok=True)
        (self.confdir / "radiusd.conf").write_text(RADIUSD_CONF.format(
            confdir=self.confdir, dir=self.dir, secret=secret, port=port))
        # Read after FreeRADIUS's own dictionaries (/usr/share/freeradius).
        (self.confdir / "dictionary").write_text(f"$INCLUDE {DICTIONARY}\n")

    def start(self) -> "FreeRadius":
        assert udp_port_free(self.port), f"UDP port {self.port} is taken: cannot start FreeRADIUS"
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([self.binary, "-X", "-d", str(self.confdir)],
                                     stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while b"Ready to process requests" not in self.log_path.read_bytes():
            rc = self.proc.poll()
            if rc is not None:
                raise AssertionError(f"freeradius exited with code {rc} at start:\n"
                                     f"{self.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"freeradius not ready after {START_TIMEOUT}s:\n"
                                     f"{self.log_tail()}")
            time.sleep(0.05)  # readiness polling interval
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        if getattr(self, "_log", None):
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def records(self) -> List[Dict[str, List[bytes]]]:
        """Complete records (FreeRADIUS writes Timestamp last)."""
        try:
            recs = parse_detail(self.detail_path.read_bytes())
        except FileNotFoundError:
            return []
        return [r for r in recs if "Timestamp" in r]

    def wait_records(self, count: int, timeout: float) -> List[Dict[str, List[bytes]]]:
        deadline = time.monotonic() + timeout
        while True:
            recs = self.records()
            if len(recs) >= count or time.monotonic() > deadline:
                return recs
            time.sleep(0.1)  # polling interval for the detail file


def write_client_conf(directory: str, port: int, secret: str = SECRET,
                      timeout: int = 1, retries: int = 1,
                      acctserver: Optional[str] = None) -> str:
    """A radcli client.conf for a server on 127.0.0.1:port (or the given
    acctserver list); returns its path.

    radcli requires authserver (never used for accounting), dictionary,
    radius_timeout and radius_retries; the secret comes from the servers
    file, looked up by host, as in AG MediaProxy's setups.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    servers = d / "servers"
    servers.write_text(f"127.0.0.1\t{secret}\n")
    conf = d / "client.conf"
    conf.write_text(
        f"authserver\t127.0.0.1:{port - 1}\n"
        f"acctserver\t{acctserver or f'127.0.0.1:{port}'}\n"
        f"servers\t{servers}\n"
        "dictionary\t/etc/radcli/dictionary\n"
        f"radius_timeout\t{timeout}\n"
        f"radius_retries\t{retries}\n"
        "bindaddr\t*\n")
    return str(conf)


def send_accounting(port: int, attrs: Sequence[Tuple[int, bytes]], secret: str = SECRET,
                    timeout: float = 2.0) -> bytes:
    """One Accounting-Request with raw (type, value) attributes; returns the
    reply datagram."""
    body = b"".join(bytes([t, len(v) + 2]) + v for t, v in attrs)
    ident = os.getpid() & 0xFF
    head = struct.pack("!BBH", 4, ident, 20 + len(body))
    auth = hashlib.md5(head + b"\0" * 16 + body + secret.encode()).digest()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(head + auth + body, ("127.0.0.1", port))
        return s.recvfrom(4096)[0]
    finally:
        s.close()


_ESCAPES = {ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t", ord('"'): b'"',
            ord("\\"): b"\\"}


def _unquote(value: bytes) -> bytes:
    """A detail-file value: "..." with FreeRADIUS escapes (\\n \\r \\t \\"
    \\\\ and \\ooo octal for other bytes), or a bare word/number."""
    if not (len(value) >= 2 and value[:1] == b'"' and value[-1:] == b'"'):
        return value
    v = value[1:-1]
    out = bytearray()
    i = 0
    while i < len(v):
        c = v[i]
        if c == 0x5C and i + 1 < len(v):
            n = v[i + 1]
            if n in _ESCAPES:
                out += _ESCAPES[n]
                i += 2
                continue
            if v[i + 1:i + 4].isdigit() and len(v[i + 1:i + 4]) == 3:
                out.append(int(v[i + 1:i + 4], 8))
                i += 4
                continue
        out.append(c)
        i += 1
    return bytes(out)


def parse_detail(data: bytes) -> List[Dict[str, List[bytes]]]:
    """Records of a FreeRADIUS detail file: a date line, then one
    `\\tName = value` line per attribute, then an empty line."""
    records: List[Dict[str, List[bytes]]] = []
    current: Optional[Dict[str, List[bytes]]] = None
    for line in data.split(b"\n"):
        if not line:
            current = None
            continue
        if not line.startswith(b"\t"):
            current = {}
            records.append(current)
            continue
        if current is None:
            continue
        name, sep, value = line.strip(b"\t").partition(b" = ")
        if sep:
            current.setdefault(name.decode(errors="replace"), []).append(_unquote(value))
    return records
