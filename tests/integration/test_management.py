"""Management interface (spec C) over plain TCP on loopback, and the
`mediaproxy sessions` / `mediaproxy summary` commands that read it.

Asserts what an operator or an AG tool sees: one JSON line per command with
the spec's keys in the spec's order, counters that match the packets sent,
readable tables naming every stream, and that bad input on the management
port never disturbs calls. Over TLS: only a management certificate
(certs/management.crt) reads the calls by default, never a relay's or the
dispatcher's, and the CLI presents it without being told.
"""

import json
import os
import random
import socket
import subprocess
import time

import pytest

from mpclient import free_tcp_port, Dialog, MediaPort, RELAY_IP, assert_media_flows


MGMT_PORT = free_tcp_port()
MGMT = dict(listen_management=f"127.0.0.1:{MGMT_PORT}", management_use_tls="no")


class Mgmt:
    def __init__(self, port=MGMT_PORT):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=2)
        self.buf = b""

    def ask(self, command):
        self.sock.sendall(command.encode() + b"\r\n")
        return self.line()

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("management connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode()

    def closed(self, timeout=2.0):
        self.sock.settimeout(timeout)
        try:
            while True:
                if not self.sock.recv(65536):
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False


def cli(mp, *args):
    return subprocess.run([str(mp.binary), *args, "--plain", "--management",
                           f"127.0.0.1:{MGMT_PORT}"],
                          capture_output=True, text=True, timeout=10)


def established_call(mp, packets=20):
    c = mp.client()
    caller, callee = MediaPort("127.0.0.2"), MediaPort("127.0.0.3", pt=8)
    d = Dialog(c)
    p, q = d.setup(caller, callee)
    assert_media_flows(caller, q, callee, p, n=packets, rtcp=False)
    return d, caller, callee, p, q


@pytest.mark.mediaproxy_config(**MGMT)
def test_summary_sessions_version(mp):
    m = Mgmt()
    assert json.loads(m.ask("sessions")) == []
    d, caller, callee, p, q = established_call(mp)
    summary = json.loads(m.ask("summary"))
    assert len(summary) == 1
    relay = summary[0]
    assert list(relay) == ["ip", "version", "status", "uptime", "session_count", "stream_count",
                           "bps_relayed"]
    assert relay["ip"] == RELAY_IP and relay["status"] == "active"
    assert relay["session_count"] == 1 and relay["stream_count"] == {"audio": 1}
    sessions = json.loads(m.ask("sessions"))
    assert len(sessions) == 1
    s = sessions[0]
    assert s["call_id"] == d.call_id and s["from_tag"] == d.from_tag and s["to_tag"] == d.to_tag
    st = s["streams"][0]
    assert st["status"] == "active"
    assert st["caller_local"] == f"{RELAY_IP}:{q}" and st["callee_local"] == f"{RELAY_IP}:{p}"
    assert st["caller_remote"] == f"{caller.ip}:{caller.port}"
    assert st["callee_codec"] == "G711a"
    # What the phones sent and the relay forwarded, counted by the relay.
    assert st["caller_packets"] >= 20 and st["callee_packets"] >= 20
    assert st["caller_bytes"] == st["caller_packets"] * (172 + 28)
    assert m.ask("version") == mp_version(mp)
    assert m.ask("bogus") == "error"
    m.sock.sendall(b"quit\r\n")
    assert m.closed()


def mp_version(mp):
    out = subprocess.run([str(mp.binary), "--version"], capture_output=True, text=True).stdout
    return out.split()[-1]


@pytest.mark.mediaproxy_config(**MGMT)
def test_command_line_views(mp):
    d, caller, callee, p, q = established_call(mp)
    r = cli(mp, "sessions")
    assert r.returncode == 0, r.stderr
    assert d.call_id in r.stdout and "audio" in r.stdout and f"{RELAY_IP}:{p}" in r.stdout
    r = cli(mp, "sessions", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)[0]["call_id"] == d.call_id
    r = cli(mp, "summary")
    assert r.returncode == 0 and RELAY_IP in r.stdout and "audio=1" in r.stdout
    r = cli(mp, "summary", "--json")
    assert json.loads(r.stdout)[0]["session_count"] == 1


def test_command_line_reports_a_dispatcher_that_is_down():
    binary = os.environ.get("MEDIAPROXY_BIN", os.path.join(os.path.dirname(__file__), "..", "..",
                                                           "build", "mediaproxy"))
    if not os.access(binary, os.X_OK):
        pytest.skip("binary not built")
    port = free_tcp_port()
    r = subprocess.run([binary, "sessions", "--plain", "--management", f"127.0.0.1:{port}"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 1
    assert f"management interface at 127.0.0.1:{port}" in r.stderr, r.stderr
    assert "refused" in r.stderr.lower(), r.stderr
    r = subprocess.run([binary, "sessions", "--watch", "x"], capture_output=True, text=True)
    assert r.returncode == 2


def test_plain_tcp_refused_off_loopback(tmp_path):
    binary = os.environ.get("MEDIAPROXY_BIN", os.path.join(os.path.dirname(__file__), "..", "..",
                                                           "build", "mediaproxy"))
    ini = tmp_path / "mp.ini"
    ini.write_text(f"[General]\nruntime_dir = {tmp_path}\n[Dispatcher]\n"
                   "listen_management = 10.0.0.1:25061\nmanagement_use_tls = no\n"
                   "[Relay]\nrelay_ip = 127.0.0.1\nport_range = 42000:42010\n"
                   "forwarding = userspace\n")
    r = subprocess.run([binary, "--foreground", "--config", str(ini)], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 1
    assert "not a loopback address" in r.stderr


@pytest.mark.mediaproxy_config(**MGMT)
def test_bad_input_on_the_management_port_leaves_calls_alone(mp):
    d, caller, callee, p, q = established_call(mp)
    m = Mgmt()
    assert m.ask("no-such-command") == "error"
    big = Mgmt()
    try:
        big.sock.sendall(b"x" * (1024 * 1024))
    except (BrokenPipeError, ConnectionResetError):
        pass  # closed by the server before the whole megabyte was sent
    assert big.closed(), "a 1 MB line must close the connection"
    rng = random.Random(7)
    junk = Mgmt()
    junk.sock.sendall(bytes(rng.getrandbits(8) for _ in range(4096)).replace(b"\n", b" ") + b"\r\n")
    assert junk.line() == "error"
    # A client that asks and never reads: the dispatcher must not stall.
    lazy = Mgmt()
    for _ in range(200):
        try:
            lazy.sock.sendall(b"sessions\r\n")
        except OSError:
            break
    assert_media_flows(caller, q, callee, p, n=10, rtcp=False)
    assert json.loads(Mgmt().ask("summary"))[0]["session_count"] == 1
    assert d.remove() == "removed"


# --- TLS (the default: management_use_tls = yes) ---------------------------

import ssl  # noqa: E402
from pathlib import Path  # noqa: E402

CERTS = Path(__file__).resolve().parents[2] / "certs"
TLS_PORT = free_tcp_port()
TLS = {"listen_management": f"127.0.0.1:{TLS_PORT}", "TLS.certs_path": str(CERTS)}


def tls_client(cert="management"):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(CERTS / "ca.pem"))
    ctx.check_hostname = False
    ctx.load_cert_chain(str(CERTS / f"{cert}.crt"), str(CERTS / f"{cert}.key"))
    raw = socket.create_connection(("127.0.0.1", TLS_PORT), timeout=3)
    return ctx.wrap_socket(raw)


def tls_ask(sock, command):
    sock.sendall(command.encode() + b"\r\n")
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data.split(b"\r\n", 1)[0].decode()


@pytest.mark.mediaproxy_config(**TLS)
def test_tls_management_with_python_ssl_and_the_cli(mp):
    d, caller, callee, p, q = established_call(mp)
    s = tls_client()
    assert s.version() in ("TLSv1.2", "TLSv1.3")
    assert json.loads(tls_ask(s, "summary"))[0]["session_count"] == 1
    assert json.loads(tls_ask(s, "sessions"))[0]["call_id"] == d.call_id
    s.close()
    r = subprocess.run([str(mp.binary), "sessions", "--tls", "--certs", str(CERTS),
                        "--management", f"127.0.0.1:{TLS_PORT}"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    assert d.call_id in r.stdout


@pytest.mark.mediaproxy_config(**TLS)
def test_tls_management_refuses_foreign_certificates_and_plain_tcp(mp):
    d, caller, callee, p, q = established_call(mp)
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        s = tls_client("relay-otherca")
        tls_ask(s, "summary")
    plain = Mgmt(TLS_PORT)
    plain.sock.sendall(b"summary\r\n")
    assert plain.closed(), "a plain TCP client on the TLS port must be disconnected"
    assert_media_flows(caller, q, callee, p, n=10, rtcp=False)
    assert json.loads(tls_ask(tls_client(), "summary"))[0]["session_count"] == 1


# --- Who may read the calls over TLS (management_passport) ------------------

def refused(cert):
    """True if the dispatcher closes a TLS client presenting `cert` without
    answering (a CA-signed certificate that fails the passport completes the
    handshake and is then disconnected)."""
    try:
        s = tls_client(cert)
        tls_ask(s, "summary")
    except (ssl.SSLError, ConnectionError, OSError):
        return True
    s.close()
    return False


def wait_for_log(mp, text, timeout=3.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in mp.stderr_text():
            return True
        time.sleep(0.05)
    return text in mp.stderr_text()


@pytest.mark.parametrize("setting", ["absent", "empty"])
def test_default_passport_admits_only_the_management_certificate(mp_factory, setting):
    extra = {} if setting == "absent" else {"Dispatcher.management_passport": ""}
    mp = mp_factory(**TLS, **extra)
    assert wait_for_log(mp, "client certificates matching 'CN:mediaproxy management*'")
    d, caller, callee, p, q = established_call(mp)
    # A relay's certificate (every relay host has one, signed by the same CA)
    # and the dispatcher's own never read the calls.
    assert refused("relay"), "relay.crt must not read the calls"
    assert wait_for_log(mp, "CN=mediaproxy test relay' does not match the passport "
                            "'CN:mediaproxy management*'")
    assert refused("dispatcher"), "dispatcher.crt must not read the calls"
    assert wait_for_log(mp, "CN=mediaproxy test dispatcher' does not match the passport")
    assert refused("relay-otherca")
    s = tls_client("management")
    assert json.loads(tls_ask(s, "sessions"))[0]["call_id"] == d.call_id
    s.close()
    assert "management_passport = None" not in mp.stderr_text()
    assert_media_flows(caller, q, callee, p, n=10, rtcp=False)


@pytest.mark.mediaproxy_config(**TLS, **{"Dispatcher.management_passport": "None"})
def test_passport_none_admits_any_certificate_of_the_ca_with_a_warning(mp):
    assert wait_for_log(mp, "management_passport = None: every certificate signed by")
    assert "relay and dispatcher certificates included" in mp.stderr_text()
    assert "TLS, any client certificate of the CA" in mp.stderr_text()
    d, caller, callee, p, q = established_call(mp)
    for cert in ("relay", "dispatcher", "management"):
        s = tls_client(cert)
        assert json.loads(tls_ask(s, "summary"))[0]["session_count"] == 1, cert
        s.close()
    assert refused("relay-otherca"), "None still requires the CA"


def cli_config(mp, *args, certs=None):
    extra = ["--certs", str(certs)] if certs else []
    return subprocess.run([str(mp.binary), *args, "--config", mp.config_path, *extra],
                          capture_output=True, text=True, timeout=10)


@pytest.mark.mediaproxy_config(**TLS)
def test_cli_reads_the_calls_with_defaults(mp):
    # Everything from the configuration file: TLS, address, certs_path; the
    # CLI presents management.crt, which the default passport admits.
    d, caller, callee, p, q = established_call(mp)
    r = cli_config(mp, "sessions")
    assert r.returncode == 0, r.stderr
    assert d.call_id in r.stdout and f"{RELAY_IP}:{p}" in r.stdout
    r = cli_config(mp, "summary", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[0]["session_count"] == 1


def certs_without_management(tmp_path):
    d = tmp_path / "certs-old"
    d.mkdir()
    for f in ("ca.pem", "crl.pem", "dispatcher.crt", "dispatcher.key"):
        (d / f).write_bytes((CERTS / f).read_bytes())
    return d


@pytest.mark.mediaproxy_config(**TLS)
def test_cli_without_management_certificate_says_what_to_do(mp, tmp_path):
    old = certs_without_management(tmp_path)
    r = cli_config(mp, "sessions", certs=old)
    assert r.returncode == 1
    assert "no management.crt in " + str(old) in r.stderr, r.stderr
    assert "dispatcher.crt" in r.stderr and "certs/make-certs.sh" in r.stderr, r.stderr
    assert wait_for_log(mp, "CN=mediaproxy test dispatcher' does not match the passport")


@pytest.mark.mediaproxy_config(**TLS, **{"Dispatcher.management_passport": "None"})
def test_cli_falls_back_to_the_dispatcher_certificate(mp, tmp_path):
    # A set made before management.crt existed still works where the operator
    # chose to admit every certificate of the CA.
    r = cli_config(mp, "summary", certs=certs_without_management(tmp_path))
    assert r.returncode == 0, r.stderr
    assert RELAY_IP in r.stdout


@pytest.mark.mediaproxy_config(**TLS, **{"Dispatcher.management_passport": "CN:noc*"})
def test_cli_names_a_passport_its_certificate_does_not_match(mp):
    r = cli_config(mp, "sessions")
    assert r.returncode == 1
    assert "management.crt" in r.stderr and "does not match management_passport 'CN:noc*'" \
        in r.stderr, r.stderr
