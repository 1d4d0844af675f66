"""mediaproxy started the way systemd starts a Type=notify service (issue 15).

The test plays systemd: it binds its own NOTIFY_SOCKET (a UNIX datagram
socket with SO_PASSCRED, so every message carries the sender's pid) and
starts the binary *without* --foreground. It checks that

* the process stays in the foreground (the READY=1 comes from the pid the
  test started) and READY=1 is the first message;
* when READY=1 is sent every listener accepts: the module socket, the
  management port, the metrics port and the rtpproxy UDP socket answer
  while the daemon is held inside that very send (the test fills the
  notify socket's queue first, so sd_notify blocks until it reads);
* STATUS= lines follow the calls (a call set up shows within one status
  interval), SIGHUP (ExecReload=) shows the halt at once, and the process
  says STOPPING=1 before it exits;
* WATCHDOG=1 arrives at half of WATCHDOG_USEC, from the event loop;
* with JOURNAL_STREAM naming its stderr, log lines carry sd-daemon
  priority prefixes (<6> info, <4> warning) instead of time stamps;
* without any of these variables a start still daemonises as before.
"""

import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time

import pytest

from mpclient import Dialog, ModuleClient, free_tcp_port
from mpharness import render_config, require_binary

SERVICE_VARS = ("NOTIFY_SOCKET", "INVOCATION_ID", "WATCHDOG_USEC", "WATCHDOG_PID",
                "JOURNAL_STREAM")
STATUS_INTERVAL = 5.0  # ServiceNotifier::kStatusIntervalMs


class NotifySocket:
    """The service manager's end: datagrams with the sender's credentials."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(path)

    def recv(self, timeout):
        """(fields dict, sender pid) of the next message, or None."""
        ready, _, _ = select.select([self.sock], [], [], timeout)
        if not ready:
            return None
        data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        pid = None
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("iII", payload[:12])[0]
        fields = {}
        for line in data.decode().split("\n"):
            if "=" in line:
                key, value = line.split("=", 1)
                fields[key] = value
        return fields, pid

    def wait_for(self, predicate, timeout, what):
        """Messages until one satisfies predicate(fields); returns it."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            left = deadline - time.monotonic()
            got = self.recv(max(left, 0)) if left > 0 else None
            if got is None:
                raise AssertionError(f"no {what} within {timeout}s; got {seen}")
            seen.append(got[0])
            if predicate(got[0]):
                return got

    def close(self):
        self.sock.close()


class Service:
    """One binary started as systemd would start the shipped unit."""

    def __init__(self, overrides=None, env=None, args=("--config",)):
        self.binary = require_binary()
        self.workdir = tempfile.mkdtemp(prefix="mp-sd-", dir="/tmp")
        self.runtime_dir = os.path.join(self.workdir, "run")
        self.config = os.path.join(self.workdir, "mediaproxy.ini")
        with open(self.config, "w") as f:
            f.write(render_config(self.runtime_dir, overrides or {}))
        self.socket_path = os.path.join(self.runtime_dir, "dispatcher.sock")
        self.notify = NotifySocket(os.path.join(self.workdir, "notify"))
        self.stderr_path = os.path.join(self.workdir, "stderr.log")
        self.env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARS}
        self.env["NOTIFY_SOCKET"] = self.notify.path
        self.env.update(env or {})
        self.proc = None

    def start(self, journal=False):
        self._err = open(self.stderr_path, "wb")
        if journal:
            st = os.fstat(self._err.fileno())
            self.env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        # No --foreground: being started by a service manager is enough.
        self.proc = subprocess.Popen([str(self.binary), "--config", self.config],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self._err, env=self.env)
        return self

    def log(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def close(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.notify.close()
        self._err.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


@pytest.fixture
def service():
    made = []

    def make(overrides=None, env=None):
        s = Service(overrides, env)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def blocked_in_sendmsg(pid):
    """Whether the main thread of `pid` sits in sendmsg(2) (x86_64: 46)."""
    with open(f"/proc/{pid}/syscall") as f:
        return f.read().split()[0] == "46"


def test_ready_comes_from_the_process_itself_once_every_listener_accepts(service):
    mgmt, metrics, rtpproxy = free_tcp_port(), free_tcp_port(), free_tcp_port()
    svc = service({"listen_management": f"127.0.0.1:{mgmt}", "management_use_tls": "no",
                   "Metrics.listen": f"127.0.0.1:{metrics}",
                   "Rtpproxy.listen": f"udp:127.0.0.1:{rtpproxy}"})
    # Fill the notify socket's queue: the daemon's first message, READY=1,
    # then blocks in sendmsg(2) (sd_notify sends blocking) until the test
    # reads. While it is held there, every listener must already accept;
    # a READY=1 sent any earlier would leave one of them closed.
    filler = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    filler.setblocking(False)
    filler.connect(svc.notify.path)
    queued = 0
    while True:
        try:
            filler.send(b"FILLER=1")
            queued += 1
        except BlockingIOError:
            break
    svc.start()
    deadline = time.monotonic() + 10
    while not blocked_in_sendmsg(svc.proc.pid):
        assert svc.proc.poll() is None, f"exited during start-up:\n{svc.log()}"
        assert time.monotonic() < deadline, f"never sent its first message:\n{svc.log()}"
        time.sleep(0.005)  # no signal exists for "blocked in sendmsg"
    probes = {"module socket": svc.socket_path, "management": mgmt, "metrics": metrics}
    for name, where in probes.items():
        try:
            if isinstance(where, str):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(where)
            else:
                s = socket.create_connection(("127.0.0.1", where), timeout=2)
            s.close()
        except OSError as e:
            raise AssertionError(f"{name} not accepting when READY=1 was sent: {e}")
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(5)
    u.sendto(b"c1 V", ("127.0.0.1", rtpproxy))  # read once the daemon runs on
    for _ in range(queued):
        fields, pid = svc.notify.recv(5)
        assert fields == {"FILLER": "1"} and pid == os.getpid()
    got = svc.notify.recv(5)
    assert got is not None, f"no message after the filler:\n{svc.log()}"
    fields, pid = got
    assert fields.get("READY") == "1", f"first message is not READY=1: {fields}"
    assert pid == svc.proc.pid, "READY=1 from another process: it forked away from systemd"
    assert fields.get("STATUS") == "0 sessions, userspace forwarding", fields
    assert u.recv(100).startswith(b"c1 "), "rtpproxy listener did not answer"
    u.close()
    filler.close()
    assert svc.proc.poll() is None


def test_status_follows_calls_then_reload_halts_and_stopping_is_said(service):
    svc = service().start()
    svc.notify.wait_for(lambda f: f.get("READY") == "1", 10, "READY=1")
    client = ModuleClient(svc.socket_path)
    call = Dialog(client)
    assert call.invite(["audio:127.0.0.2:6000:sendrecv"]).startswith("127.0.0.1 ")
    svc.notify.wait_for(lambda f: f.get("STATUS", "").startswith("1 session,"),
                        STATUS_INTERVAL + 3, "STATUS with the call")
    # systemctl reload: SIGHUP is the relay's graceful halt, shown at once.
    svc.proc.send_signal(signal.SIGHUP)
    fields, _ = svc.notify.wait_for(lambda f: "STATUS" in f, 2, "STATUS after SIGHUP")
    assert fields["STATUS"] == "halting (SIGHUP): 1 session left, exits when the last ends"
    assert svc.proc.poll() is None, "the halt must wait for the call"
    assert call.remove() == "removed"
    client.close()
    svc.notify.wait_for(lambda f: f.get("STOPPING") == "1", 5, "STOPPING=1")
    assert svc.proc.wait(10) == 0


def test_watchdog_pings_at_half_the_interval(service):
    svc = service(env={"WATCHDOG_USEC": "400000"}).start()
    svc.notify.wait_for(lambda f: f.get("READY") == "1", 10, "READY=1")
    t0 = time.monotonic()
    for _ in range(4):
        svc.notify.wait_for(lambda f: f.get("WATCHDOG") == "1", 1.0, "WATCHDOG=1")
    # The first comes with readiness, then one every 200 ms.
    assert time.monotonic() - t0 < 1.5


def test_no_watchdog_when_it_is_meant_for_another_process(service):
    svc = service(env={"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}).start()
    svc.notify.wait_for(lambda f: f.get("READY") == "1", 10, "READY=1")
    assert svc.notify.recv(0.6) is None


def test_journal_stream_gets_priority_prefixes(service):
    svc = service({"Relay.dns_check_interval": "60"}).start(journal=True)
    svc.notify.wait_for(lambda f: f.get("READY") == "1", 10, "READY=1")
    lines = svc.log().splitlines()
    assert any(l.startswith("<4>") and "dns_check_interval" in l for l in lines), lines
    assert any(l.startswith("<6>mediaproxy ") and "started" in l for l in lines), lines
    assert all(l[:1] == "<" for l in lines), lines


def test_without_journal_stream_lines_keep_their_time_stamps(service):
    svc = service().start()
    svc.notify.wait_for(lambda f: f.get("READY") == "1", 10, "READY=1")
    first = svc.log().splitlines()[0]
    assert first[:4].isdigit() and first[10] == "T", first


def test_a_plain_start_still_daemonises():
    binary = require_binary()
    workdir = tempfile.mkdtemp(prefix="mp-sd-", dir="/tmp")
    try:
        run = os.path.join(workdir, "run")
        config = os.path.join(workdir, "mediaproxy.ini")
        with open(config, "w") as f:
            f.write(render_config(run, {}))
        env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARS}
        # The original process exits once the daemon is ready.
        r = subprocess.run([str(binary), "--config", config], env=env,
                           capture_output=True, timeout=10)
        assert r.returncode == 0, r.stderr
        with open(os.path.join(run, "mediaproxy.pid")) as f:
            pid = int(f.read())
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(os.path.join(run, "dispatcher.sock"))
        s.close()
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while os.path.exists(os.path.join(run, "mediaproxy.pid")):
            assert time.monotonic() < deadline, "daemon did not exit on SIGTERM"
            time.sleep(0.02)  # no child to wait for: it is not ours
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
