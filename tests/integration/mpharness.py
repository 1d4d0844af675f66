"""Running the real mediaproxy binary (role = combined) for the tests.

* MediaProxy      - one instance: temp config + runtime dir, started with
                    `--foreground --config <file>`, ready once the dispatcher
                    socket accepts a connection.
* render_config   - the INI file, with per-test overrides.
* run_expect_exit - run the binary on a config that must be refused.

Binary: $MEDIAPROXY_BIN, default <repo>/build/mediaproxy.
Relay ports: $MEDIAPROXY_TEST_PORT_BASE (default 42000) .. base+1000; a
process runs one instance at a time, so every instance may use the whole
range. Under pytest-xdist (`-n N`), worker gwK adds K * 1500 to the base:
every port a test uses is derived from PORT_BASE (relays base..base+1000,
RADIUS base+812.., PostgreSQL base+990) or is an ephemeral one.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import pytest

from mpclient import RELAY_IP, ModuleClient

REPO = Path(__file__).resolve().parents[2]
_XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")  # gw0, gw1, ...
PORT_BASE = int(os.environ.get("MEDIAPROXY_TEST_PORT_BASE", "42000")) + (
    1500 * int(_XDIST_WORKER[2:]) if _XDIST_WORKER[2:].isdigit() else 0)
PORT_SPAN = 1000
STARTUP_TIMEOUT = 10.0
EXIT_TIMEOUT = 10.0


def binary_path() -> Path:
    return Path(os.environ.get("MEDIAPROXY_BIN") or REPO / "build" / "mediaproxy")


def require_binary() -> Path:
    path = binary_path()
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.skip(f"mediaproxy binary not found at {path} "
                    "(build with meson/ninja or set MEDIAPROXY_BIN)")
    return path


DEFAULTS: Dict[str, Dict[str, str]] = {
    "General": {"role": "combined", "runtime_dir": "", "log_level": "debug"},
    "Dispatcher": {"socket_path": "dispatcher.sock"},
    "Relay": {
        "relay_ip": RELAY_IP,
        "port_range": f"{PORT_BASE}:{PORT_BASE + PORT_SPAN}",
        "stream_timeout": "90",
        "on_hold_timeout": "7200",
        "answer_timeout": "300",
        # Loopback cannot exercise the kernel path (tests/kernel does, in
        # namespaces); pin userspace so the host's nftables state is irrelevant.
        "forwarding": "userspace",
        # Run as root, the relay receives through an nftables tproxy table
        # (media_receive = auto): one per xdist worker, so that parallel
        # workers' relays on 127.0.0.1 do not find each other's.
        "nft_table": f"mp_it_{PORT_BASE}",
    },
}
OPTION_SECTION = {opt: sec for sec, opts in DEFAULTS.items() for opt in opts}
# Options not in the default file that tests may set by bare name.
OPTION_SECTION.update({
    "pid_file": "General",
    "max_connections": "Dispatcher", "socket_mode": "Dispatcher",
    "relay_timeout": "Dispatcher", "cleanup_expired_sessions_after": "Dispatcher",
    "listen_management": "Dispatcher", "management_use_tls": "Dispatcher",
    "management_allow_remote_plain": "Dispatcher",
    "advertised_ip": "Relay", "routable_private_ranges": "Relay",
    "userspace_transmit_every": "Relay", "traffic_sampling_period": "Relay",
    "media_io": "Relay",
})


def render_config(runtime_dir: str, overrides: Dict[str, object]) -> str:
    """INI text; overrides are option names (section inferred) or
    'Section.option' keys; a value of None removes the option."""
    sections = {sec: dict(opts) for sec, opts in DEFAULTS.items()}
    sections["General"]["runtime_dir"] = runtime_dir
    for key, value in overrides.items():
        if "." in key:
            sec, opt = key.split(".", 1)
        else:
            sec, opt = OPTION_SECTION[key], key
        sections.setdefault(sec, {})
        if value is None:
            sections[sec].pop(opt, None)
        else:
            sections[sec][opt] = str(value)
    lines: List[str] = []
    for sec, opts in sections.items():
        lines.append(f"[{sec}]")
        lines.extend(f"{k} = {v}" for k, v in opts.items())
        lines.append("")
    return "\n".join(lines)


def _short_tmpdir() -> str:
    # UNIX socket paths are limited to 107 bytes: keep the directory short.
    return tempfile.mkdtemp(prefix="mp-it-", dir="/tmp")


class MediaProxy:
    """Handle on one running binary."""

    def __init__(self, overrides: Dict[str, object],
                 prestart: Optional[Callable[["MediaProxy"], None]] = None):
        self.binary = require_binary()
        self.workdir = _short_tmpdir()
        self.runtime_dir = os.path.join(self.workdir, "run")
        os.mkdir(self.runtime_dir)
        self.config_path = os.path.join(self.workdir, "mediaproxy.ini")
        self.config_text = render_config(self.runtime_dir, overrides)
        with open(self.config_path, "w") as f:
            f.write(self.config_text)
        sock = overrides.get("socket_path", DEFAULTS["Dispatcher"]["socket_path"])
        self.socket_path = str(sock) if os.path.isabs(str(sock)) else os.path.join(
            self.runtime_dir, str(sock))
        pr = str(overrides.get("port_range", DEFAULTS["Relay"]["port_range"]))
        lo, hi = pr.split(":")
        self.port_range: Tuple[int, int] = (int(lo), int(hi))
        self.relay_ip = RELAY_IP
        self.stderr_path = os.path.join(self.workdir, "stderr.log")
        self._earlier_stderr: List[str] = []
        self.stdout_path = os.path.join(self.workdir, "stdout.log")
        self.proc: Optional[subprocess.Popen] = None
        self.returncode: Optional[int] = None
        self._clients: List[ModuleClient] = []
        if prestart:
            prestart(self)

    # -- lifecycle ----------------------------------------------------------
    def start(self) -> "MediaProxy":
        self._err = open(self.stderr_path, "wb")
        self._out = open(self.stdout_path, "wb")
        self.proc = subprocess.Popen(
            [str(self.binary), "--foreground", "--config", self.config_path],
            stdin=subprocess.DEVNULL, stdout=self._out, stderr=self._err)
        self.wait_ready()
        return self

    def kill_and_restart(self) -> None:
        """SIGKILL (nothing runs on the way out), then start the same
        configuration and runtime directory again; stderr starts afresh."""
        self.kill()
        self.close()
        self._clients = []
        self.start()

    def upgrade(self, timeout: float = STARTUP_TIMEOUT) -> int:
        """`mediaproxy --upgrade` with the same configuration: the running
        process hands its sockets and calls over and exits (its exit code is
        returned); from then on this handle is the new process."""
        old = self.proc
        self._err.close()
        self._out.close()
        # Its own log file: the old process still writes to the first one.
        self._earlier_stderr.append(self.stderr_path)
        self.stderr_path = self.stderr_path.replace(".log", f"-{len(self._earlier_stderr)}.log")
        self._err = open(self.stderr_path, "wb")
        self._out = open(self.stdout_path, "ab")
        before = len(self.stderr_text())
        self.proc = subprocess.Popen(
            [str(self.binary), "--foreground", "--upgrade", "--config", self.config_path],
            stdin=subprocess.DEVNULL, stdout=self._out, stderr=self._err)
        rc = old.wait(timeout)
        deadline = time.monotonic() + timeout
        while "started: role" not in self.stderr_text()[before:]:
            if self.proc.poll() is not None:
                raise AssertionError(f"mediaproxy --upgrade exited with {self.proc.returncode}:"
                                     f"\n{self.stderr_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"mediaproxy --upgrade not started:\n{self.stderr_tail()}")
            time.sleep(0.01)  # polling the log for the start line
        return rc

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            rc = self.proc.poll()
            if rc is not None:
                self.returncode = rc
                raise AssertionError(
                    f"mediaproxy exited with code {rc} during start-up:\n"
                    f"{self.stderr_tail()}")
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(self.socket_path)
                return
            except OSError:
                pass
            finally:
                s.close()
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"dispatcher socket {self.socket_path} not accepting connections "
                    f"after {timeout}s:\n{self.stderr_tail()}")
            time.sleep(0.01)  # polling interval

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def assert_alive(self) -> None:
        rc = self.proc.poll()
        assert rc is None, f"mediaproxy died (exit code {rc}):\n{self.stderr_tail()}"

    def send_signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait_exit(self, timeout: float = EXIT_TIMEOUT) -> Optional[int]:
        """Exit code, or None if still running after timeout."""
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.returncode

    def stop(self, sig: int = signal.SIGTERM, timeout: float = EXIT_TIMEOUT) -> Optional[int]:
        """Send `sig` (if still running) and wait; None if it did not exit."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait_exit(timeout)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def close(self) -> None:
        for c in self._clients:
            c.close()
        for f in (getattr(self, "_err", None), getattr(self, "_out", None)):
            if f:
                f.close()

    # -- helpers ------------------------------------------------------------
    def client(self) -> ModuleClient:
        c = ModuleClient(self.socket_path)
        self._clients.append(c)
        return c

    def stderr_text(self) -> str:
        """Everything logged, by this process and any it took over from."""
        text = ""
        for path in self._earlier_stderr + [self.stderr_path]:
            try:
                with open(path, "rb") as f:
                    text += f.read().decode("utf-8", "replace")
            except FileNotFoundError:
                pass
        return text

    def stderr_tail(self, lines: int = 60) -> str:
        return "\n".join(self.stderr_text().splitlines()[-lines:])

    def sub_range(self, ports: int) -> str:
        """A port_range value of `ports` ports at the start of the session range."""
        return f"{PORT_BASE}:{PORT_BASE + ports}"



def run_expect_exit(config_text: str, timeout: float = EXIT_TIMEOUT,
                    extra_args: Tuple[str, ...] = ()) -> Tuple[Optional[int], str, str]:
    """Run the binary on `config_text` (written to a fresh file) and wait for
    it to exit. Returns (exit code or None if it kept running, stderr, path)."""
    binary = require_binary()
    workdir = _short_tmpdir()
    path = os.path.join(workdir, "mediaproxy.ini")
    with open(path, "w") as f:
        f.write(config_text.replace("@RUNTIME@", workdir))
    proc = subprocess.Popen([str(binary), "--foreground", "--config", path, *extra_args],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        _, err = proc.communicate(timeout=timeout)
        rc: Optional[int] = proc.returncode
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        rc = None
    shutil.rmtree(workdir, ignore_errors=True)
    return rc, err.decode("utf-8", "replace"), path
