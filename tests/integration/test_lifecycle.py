"""Start-up, signals and configuration errors (spec A.1, B.8, E.4)."""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from mpclient import RELAY_IP, Dialog, MediaPort, assert_media_flows, parse_ports
from mpharness import EXIT_TIMEOUT, PORT_BASE, render_config, require_binary, run_expect_exit


def new_call_reply(c):
    d = Dialog(c, caller_ip="127.0.0.9")
    return d, d.invite("audio:127.0.0.9:7000:sendrecv:ice=no")


def test_sighup_graceful_shutdown(mp):
    c = mp.client()
    caller, callee = MediaPort("127.0.0.2"), MediaPort("127.0.0.3")
    d = Dialog(c)
    p, q = d.setup(caller, callee)
    assert_media_flows(caller, q, callee, p, n=20)
    mp.send_signal(signal.SIGHUP)
    # The signal is handled asynchronously: probe with new calls until one is
    # refused (removing any accepted before the signal took effect).
    deadline = time.monotonic() + 3.0
    while True:
        probe, r = new_call_reply(c)
        if r == "error":
            break
        parse_ports(r, 1)
        assert probe.remove() == "removed"
        assert time.monotonic() < deadline, "new calls still accepted 3 s after SIGHUP"
        time.sleep(0.02)  # probing interval
    mp.assert_alive()
    # The existing call is still served: media, re-INVITE with the same ports.
    assert_media_flows(caller, q, callee, p, n=50)
    assert d.reinvite(caller.sdp(), cseq=2) == f"{RELAY_IP} {p}"
    assert d.answer(callee.sdp(), cseq=2) == f"{RELAY_IP} {q}"
    assert_media_flows(caller, q, callee, p, n=20)
    _, r = new_call_reply(c)
    assert r == "error", "new call accepted while halting"
    mp.assert_alive()
    # Removing the last session ends the process by itself - after answering.
    try:
        r = d.remove()
    except AssertionError as e:
        rc = mp.wait_exit(EXIT_TIMEOUT)  # it is shutting down: let it finish
        raise AssertionError(
            f"the remove of the last session while halting was not answered ({e}); "
            f"the process then exited with {rc}") from None
    assert r == "removed"
    rc = mp.wait_exit(EXIT_TIMEOUT)
    assert rc is not None, "process did not exit after its last session was removed"
    assert rc == 0
    assert not os.path.exists(mp.socket_path), "dispatcher socket left behind"


def test_sighup_without_sessions_exits(mp):
    mp.send_signal(signal.SIGHUP)
    rc = mp.wait_exit(EXIT_TIMEOUT)
    assert rc == 0, f"expected exit code 0 after SIGHUP with no sessions, got {rc}"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_terminate_with_active_call(mp, sig):
    c = mp.client()
    caller, callee = MediaPort("127.0.0.2"), MediaPort("127.0.0.3")
    d = Dialog(c)
    p, q = d.setup(caller, callee)
    assert_media_flows(caller, q, callee, p, n=10)
    idle = mp.client()  # an idle module connection must not delay the exit
    assert os.path.exists(mp.socket_path)
    rc = mp.stop(sig, EXIT_TIMEOUT)
    assert rc is not None, f"no exit within {EXIT_TIMEOUT}s of {sig.name}"
    assert rc == 0
    assert not os.path.exists(mp.socket_path), "dispatcher socket file not removed"
    idle.close()


def test_repeated_sigterm_still_exits_cleanly(mp_factory):
    """A second SIGTERM while shutting down (impatient operator, supervisor)
    must not turn the clean exit into death by signal. SIGTERM is sent
    repeatedly until the process is gone, with several spacings, to hit the
    shutdown window (it is narrow)."""
    for attempt, spacing in enumerate([0.0002, 0.0003, 0.0005, 0.0007] * 3):
        mp = mp_factory()
        c = mp.client()
        for k in range(20):
            parse_ports(Dialog(c).invite(f"audio:127.0.0.2:{5000 + 2 * k}:sendrecv:ice=no"), 1)
        deadline = time.monotonic() + EXIT_TIMEOUT
        while mp.proc.poll() is None and time.monotonic() < deadline:
            try:
                os.kill(mp.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                break
            time.sleep(spacing)  # signal rate, not synchronisation
        rc = mp.wait_exit(EXIT_TIMEOUT)
        if rc != 0:
            mp.expected_nonzero_exit = True  # reported here, not again at teardown
        assert rc == 0, (
            f"attempt {attempt + 1} (SIGTERM every {spacing * 1000:.1f} ms): exit status {rc} "
            f"({'killed by signal ' + str(-rc) if rc and rc < 0 else 'no clean exit'})")
        assert not os.path.exists(mp.socket_path)


def test_sigusr1_toggles_log_level_and_keeps_running(mp):
    c = mp.client()
    for _ in range(2):
        mp.send_signal(signal.SIGUSR1)
        d = Dialog(c)
        parse_ports(d.invite("audio:127.0.0.2:5000:sendrecv:ice=no"), 1)
        assert d.remove() == "removed"
    mp.assert_alive()


def test_stale_socket_file_is_replaced(mp_factory):
    def stale(inst):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(inst.socket_path)  # bound, never listening: connect is refused
        s.close()
    mp = mp_factory(prestart=stale)
    c = mp.client()
    d = Dialog(c)
    parse_ports(d.invite("audio:127.0.0.2:5000:sendrecv:ice=no"), 1)


def test_absolute_socket_path(mp_factory):
    sockdir = tempfile.mkdtemp(prefix="mp-abs-", dir="/tmp")
    path = os.path.join(sockdir, "abs.sock")
    try:
        mp = mp_factory(socket_path=path)
        assert mp.socket_path == path
        c = mp.client()
        d = Dialog(c)
        parse_ports(d.invite("audio:127.0.0.2:5000:sendrecv:ice=no"), 1)
        assert d.remove() == "removed"
        assert mp.stop() == 0
        assert not os.path.exists(path)
    finally:
        shutil.rmtree(sockdir, ignore_errors=True)


# -- configuration errors -------------------------------------------------------

def _config_with(extra_relay_lines=(), extra_text="", replace=None):
    text = render_config("@RUNTIME@", {})
    if replace:
        old, new = replace
        assert old in text
        text = text.replace(old, new)
    if extra_relay_lines:
        text = text.replace("[Relay]\n", "[Relay]\n" + "".join(l + "\n" for l in extra_relay_lines))
    return text + extra_text


def _line_of(text, needle):
    for i, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return i
    raise AssertionError(f"{needle!r} not in config")


def _assert_config_error(text, needle):
    rc, err, path = run_expect_exit(text)
    line = _line_of(text, needle)
    assert rc is not None, f"binary kept running with a bad config (line {line}: {needle!r})"
    assert rc == 1, f"expected exit code 1, got {rc}; stderr:\n{err}"
    assert f"{path}:{line}:" in err, (
        f"stderr should name {path}:{line}: (the offending line {needle!r}); got:\n{err}")


def test_config_unknown_option():
    text = _config_with(extra_relay_lines=["no_such_option = 1"])
    _assert_config_error(text, "no_such_option")


def test_config_unknown_section():
    text = _config_with(extra_text="\n[NoSuchSection]\nfoo = bar\n")
    _assert_config_error(text, "[NoSuchSection]")


@pytest.mark.parametrize("value", [
    f"{PORT_BASE + 1}:{PORT_BASE + 1000}",  # odd start
    f"{PORT_BASE}:{PORT_BASE + 999}",       # odd end (D.1: both even)
    f"{PORT_BASE + 1000}:{PORT_BASE}",      # start > end
    f"{PORT_BASE}:{PORT_BASE}",             # empty
    "1000:2000",                            # below 1024
    "40000-41000",
    "abc:def",
], ids=["odd-start", "odd-end", "reversed", "empty", "below-1024", "dash", "non-numeric"])
def test_config_bad_port_range(value):
    text = _config_with(replace=(f"port_range = {PORT_BASE}:{PORT_BASE + 1000}",
                                 f"port_range = {value}"))
    _assert_config_error(text, "port_range")


@pytest.mark.parametrize("old, new", [
    ("stream_timeout = 90", "stream_timeout = soon"),
    ("stream_timeout = 90", "stream_timeout = -5"),
    ("on_hold_timeout = 7200", "on_hold_timeout = 1.5x"),
    (f"relay_ip = {RELAY_IP}", "relay_ip = 300.1.2.3"),
    ("[Relay]\n", "[Relay]\nthis line has no equals sign\n"),
], ids=["stream_timeout-word", "stream_timeout-negative", "on_hold_timeout-garbage",
        "relay_ip-invalid", "no-equals-sign"])
def test_config_bad_values(old, new):
    text = _config_with(replace=(old, new))
    _assert_config_error(text, new.strip().splitlines()[-1])


def test_config_duplicate_option():
    text = _config_with(replace=("stream_timeout = 90\n", "stream_timeout = 90\nstream_timeout = 91\n"))
    _assert_config_error(text, "stream_timeout = 91")


def test_unsupported_role_refused():
    text = _config_with(replace=("role = combined", "role = dispatcher"))
    rc, err, path = run_expect_exit(text)
    assert rc == 1, f"role = dispatcher: expected exit code 1, got {rc}; stderr:\n{err}"


def test_command_line_usage_error():
    proc = subprocess.run([str(require_binary()), "--no-such-option"], stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=EXIT_TIMEOUT)
    assert proc.returncode == 2, proc.stderr.decode(errors="replace")


def test_version():
    proc = subprocess.run([str(require_binary()), "--version"], stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=EXIT_TIMEOUT)
    assert proc.returncode == 0
    assert proc.stdout.strip() or proc.stderr.strip()


def test_socket_mode_and_pid_file(mp_factory):
    pid_dir = tempfile.mkdtemp(prefix="mp-pid-", dir="/tmp")
    pid_file = os.path.join(pid_dir, "mp.pid")
    try:
        mp = mp_factory(pid_file=pid_file)
        mode = os.stat(mp.socket_path).st_mode & 0o777
        assert mode == 0o660, f"socket mode {mode:o}, documented default 0660"
        with open(pid_file) as f:
            assert int(f.read().strip()) == mp.proc.pid
        assert mp.stop() == 0
        assert not os.path.exists(pid_file), "pid file not removed at exit"
    finally:
        shutil.rmtree(pid_dir, ignore_errors=True)


def test_config_file_missing():
    binary = require_binary()
    proc = subprocess.run([str(binary), "--foreground", "--config", "/nonexistent/mp.ini"],
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=EXIT_TIMEOUT)
    assert proc.returncode == 1, proc.stderr.decode(errors="replace")
    assert b"/nonexistent/mp.ini" in proc.stderr
