"""A Debian root booted with systemd-nspawn, and commands run inside it.

The host here has no systemd as PID 1, so the container is not registered
with machined (--register=no --keep-unit) and commands reach it with nsenter
into its namespaces rather than with machinectl. It has a network of its own
(--private-network: only lo), so whatever the package starts cannot meet
other tests' ports. Standard library only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Optional


class Container:
    def __init__(self, root: str, name: str = "mediaproxy-pkg"):
        self.root = root
        self.name = name
        self.proc: Optional[subprocess.Popen] = None
        self.leader = 0
        self.console = os.path.join(os.path.dirname(root), "console.log")

    def boot(self, timeout: float = 60) -> None:
        """Boots the root and waits until systemd reports the boot finished."""
        self.proc = subprocess.Popen(
            ["systemd-nspawn", "--quiet", "--boot", "--directory", self.root,
             "--machine", self.name, "--register=no", "--keep-unit", "--private-network",
             "--console=read-only"],
            stdin=subprocess.DEVNULL, stdout=open(self.console, "w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not self.leader:
            assert self.proc.poll() is None, (
                f"systemd-nspawn exited ({self.proc.returncode}):\n{self.console_text()}")
            assert time.monotonic() < deadline, "the container's init did not appear"
            self.leader = self._find_init()
            if not self.leader:
                time.sleep(0.05)
        # Until its manager listens, systemctl cannot connect; then --wait
        # returns once start-up has finished.
        state = None
        while time.monotonic() < deadline:
            state = self.run("systemctl", "is-system-running", "--wait", check=False,
                             timeout=max(1.0, deadline - time.monotonic()))
            if state.stdout.strip() in ("running", "degraded"):
                return
            time.sleep(0.1)
        raise AssertionError(f"the container did not finish booting: {state.stdout!r} "
                             f"{state.stderr!r}\n{self.console_text()}")

    def _find_init(self) -> int:
        """The container's PID 1 as the host sees it: nspawn's child 'systemd'."""
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                with open(f"/proc/{entry}/comm") as f:
                    comm = f.read().strip()
            except OSError:
                continue
            if int(fields[1]) == self.proc.pid and comm == "systemd":
                return int(entry)
        return 0

    def console_text(self) -> str:
        try:
            with open(self.console, errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def host_path(self, path: str) -> str:
        """A path inside the running container, as the host reaches it."""
        return f"/proc/{self.leader}/root{path}"

    def nsenter(self, net_only: bool = False) -> list:
        if net_only:
            return ["nsenter", "--target", str(self.leader), "--net"]
        return ["nsenter", "--target", str(self.leader), "--mount", "--uts", "--ipc", "--net",
                "--pid", "--root", "--wd"]

    def run(self, *command: str, check: bool = True, timeout: float = 120,
            input: Optional[str] = None) -> subprocess.CompletedProcess:
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C",
               "DEBIAN_FRONTEND": "noninteractive", "SYSTEMD_PAGER": "", "TERM": "dumb"}
        out = subprocess.run([*self.nsenter(), *command], env=env, capture_output=True,
                             text=True, timeout=timeout, input=input)
        if check and out.returncode != 0:
            raise AssertionError(f"in the container, {' '.join(command)} failed "
                                 f"({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
        return out

    def poweroff(self, timeout: float = 30) -> None:
        if not self.proc or self.proc.poll() is not None:
            return
        # SIGTERM to nspawn asks the container's systemd to shut down cleanly.
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
