"""The Debian packages, built, checked with lintian, installed and run.

What an operator does, in a fresh Debian 12 root booted with a real systemd
(systemd-nspawn): install the packages (the unit is enabled, nothing starts
without certificates and the postinst says what to do), make certificates
with the shipped helper, start mediaproxy@combined (systemctl returns once
the daemon told systemd READY=1), run a call through the module socket with
media both ways, reload (the graceful halt: the call keeps going, the
service exits cleanly once it ends), start and stop again, purge: no file
of ours is left.

Needs root, dpkg-buildpackage, lintian, debootstrap (the first run fetches a
base root from the package registry: 2-4 minutes, cached after) and
systemd-nspawn. MEDIAPROXY_DEB_DIR=DIR uses the .deb files already in DIR
instead of building them.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from container import Container  # noqa: E402
from debian_root import base_root, chroot_run, remove_root, working_copy  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PACKAGES = ("mediaproxy", "libmediaproxy-shim1", "libmediaproxy-shim-dev")
UNIT = "mediaproxy@combined.service"
SOCKET = "/run/mediaproxy/dispatcher.sock"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chroot, nspawn)")


def log(msg: str) -> None:
    print(f"[package] {msg}", file=sys.stderr, flush=True)


@pytest.fixture(scope="module")
def debs():
    given = os.environ.get("MEDIAPROXY_DEB_DIR")
    if given:
        yield given
        return
    work = tempfile.mkdtemp(prefix="mediaproxy-deb-", dir="/var/tmp")
    src = os.path.join(work, "mediaproxy")
    # The tree as git sees it (committed or not), without build directories.
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=REPO, check=True, capture_output=True).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        if not os.path.lexists(os.path.join(REPO, name)):
            continue
        os.makedirs(os.path.dirname(os.path.join(src, name)), exist_ok=True)
        shutil.copy2(os.path.join(REPO, name), os.path.join(src, name), follow_symlinks=False)
    started = time.monotonic()
    out = subprocess.run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=src, capture_output=True,
                         text=True, timeout=1800,
                         env={**os.environ, "DEB_BUILD_OPTIONS": "parallel=2"})
    assert out.returncode == 0, f"dpkg-buildpackage failed:\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}"
    log(f"dpkg-buildpackage: {time.monotonic() - started:.0f} s")
    yield work
    shutil.rmtree(work, ignore_errors=True)


def deb_file(directory: str, package: str) -> str:
    found = glob.glob(os.path.join(directory, f"{package}_*.deb"))
    assert len(found) == 1, f"expected one {package} .deb in {directory}, found {found}"
    return found[0]


def test_lintian_finds_no_error(debs):
    changes = glob.glob(os.path.join(debs, "*.changes"))
    assert changes, f"no .changes file in {debs}"
    out = subprocess.run(["lintian", "--allow-root", "--tag-display-limit", "0", *changes],
                         capture_output=True, text=True, timeout=600)
    errors = [line for line in out.stdout.splitlines() if line.startswith("E:")]
    assert not errors, "lintian errors:\n" + "\n".join(errors)
    for package in PACKAGES:
        deb_file(debs, package)


def runtime_dependencies(paths) -> list:
    """What our packages depend on, minus themselves (first of alternatives)."""
    names = set()
    for path in paths:
        depends = subprocess.run(["dpkg-deb", "-f", path, "Depends"], check=True,
                                 capture_output=True, text=True).stdout
        for item in filter(None, (d.strip() for d in depends.split(","))):
            name = re.split(r"[\s(|:]", item.split("|")[0].strip())[0]
            if name and name not in PACKAGES:
                names.add(name)
    return sorted(names)


# Paths that change whatever a package does (package manager, logs, adduser's
# backups of the account files), left out of the "nothing left" comparison.
VOLATILE = ("/proc", "/sys", "/dev", "/run", "/tmp", "/var/tmp", "/var/log", "/var/cache",
            "/var/lib/dpkg", "/var/lib/apt", "/root/debs")
ACCOUNT_BACKUPS = {"/etc/passwd-", "/etc/group-", "/etc/shadow-", "/etc/gshadow-"}


def file_list(root: str) -> set:
    found = set()
    for top, dirs, files in os.walk(root):
        rel = "/" + os.path.relpath(top, root) if top != root else "/"
        rel = rel.replace("//", "/")
        if any(rel == v or rel.startswith(v + "/") for v in VOLATILE):
            dirs[:] = []
            continue
        for name in dirs + files:
            path = os.path.join(rel, name)
            if path not in ACCOUNT_BACKUPS and path not in VOLATILE:
                found.add(path)
    return found


def unit_state(c: Container, *props: str) -> dict:
    out = c.run("systemctl", "show", UNIT, "--property=" + ",".join(props)).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def wait_for(what: str, predicate, timeout: float, c: Container):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            journal = c.run("journalctl", "--no-pager", "-u", UNIT, "-n", "40", check=False).stdout
            raise AssertionError(f"{what}: not within {timeout} s\n{journal}")
        time.sleep(0.1)


def one_call(c: Container, *args: str) -> str:
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "one_call.py")
    out = subprocess.run([*c.nsenter(net_only=True), sys.executable, script, args[0],
                          c.host_path(SOCKET), *args[1:]],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"one_call.py {args[0]} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout.strip()


def test_install_start_call_reload_stop_purge(debs):
    paths = [deb_file(debs, p) for p in PACKAGES]
    root = working_copy(base_root(log))
    c = Container(root)
    try:
        chroot_run(root, "apt-get", "update", "-qq")
        chroot_run(root, "apt-get", "install", "-y", "-qq", "--no-install-recommends", "openssl",
                   *runtime_dependencies(paths))
        os.makedirs(os.path.join(root, "root/debs"))
        for p in paths:
            shutil.copy(p, os.path.join(root, "root/debs"))
        c.boot()
        before = file_list(root)

        # Installed: enabled, not started, and told what to do.
        out = c.run("dpkg", "-i", *(f"/root/debs/{os.path.basename(p)}" for p in paths))
        assert "enabled (mediaproxy@combined) but not started" in out.stdout, out.stdout
        assert "make-certs.sh" in out.stdout
        assert c.run("systemctl", "is-enabled", UNIT, check=False).stdout.strip() == "enabled"
        assert unit_state(c, "ActiveState")["ActiveState"] == "inactive"
        assert c.run("id", "-u", "mediaproxy", check=False).returncode == 0
        assert c.run("test", "-f", "/usr/include/mediaproxy-shim.h", check=False).returncode == 0

        # What README.Debian asks of the operator.
        c.run("/usr/share/mediaproxy/make-certs.sh", "--org", "Package Test", "/etc/mediaproxy/tls")
        c.run("chgrp", "mediaproxy", "/etc/mediaproxy/tls/dispatcher.key",
              "/etc/mediaproxy/tls/relay.key")
        c.run("chmod", "0640", "/etc/mediaproxy/tls/dispatcher.key", "/etc/mediaproxy/tls/relay.key")
        c.run("sed", "-i", "s/^;relay_ip =$/relay_ip = 127.0.0.1/", "/etc/mediaproxy/mediaproxy.ini")
        assert "relay_ip = 127.0.0.1" in c.run("cat", "/etc/mediaproxy/mediaproxy.ini").stdout

        # Type=notify: systemctl start returns once READY=1 came, so the module
        # socket accepts at once.
        c.run("systemctl", "start", UNIT, timeout=60)
        state = unit_state(c, "ActiveState", "SubState", "StatusText", "MainPID", "User")
        assert state["ActiveState"] == "active" and state["SubState"] == "running", state
        assert state["StatusText"].startswith("0 sessions"), state
        assert state["User"] == "mediaproxy"
        pid = state["MainPID"]
        user = c.run("stat", "-c", "%U", f"/proc/{pid}").stdout.strip()
        assert user == "mediaproxy", f"the daemon runs as {user!r}"

        dialog = json.loads(one_call(c, "setup"))
        wait_for("STATUS= with the call", lambda: unit_state(c, "StatusText")["StatusText"]
                 .startswith("1 session"), 8, c)
        sessions = c.run("mediaproxy", "sessions").stdout
        assert dialog["call_id"] in sessions, sessions

        # Reload = graceful halt: still running with the call, exits 0 after it.
        c.run("systemctl", "reload", UNIT)
        wait_for("halting in STATUS=", lambda: unit_state(c, "StatusText")["StatusText"]
                 .startswith("halting"), 3, c)
        assert unit_state(c, "ActiveState")["ActiveState"] == "active"
        reply = one_call(c, "remove", dialog["call_id"], dialog["from_tag"], dialog["to_tag"])
        assert reply.startswith("{") or reply == "ok" or reply, reply
        wait_for("the service ending after its last call",
                 lambda: unit_state(c, "ActiveState")["ActiveState"] == "inactive", 10, c)
        end = unit_state(c, "Result", "ExecMainStatus", "NRestarts")
        assert end["Result"] == "success" and end["ExecMainStatus"] == "0", end

        # Journal priorities: the start line is info (6).
        c.run("systemctl", "start", UNIT, timeout=60)
        journal = c.run("journalctl", "--no-pager", "-o", "json", "-u", UNIT).stdout
        started = [json.loads(line) for line in journal.splitlines() if "started: role" in line]
        assert started and all(e.get("PRIORITY") == "6" for e in started), started[-1:]
        c.run("systemctl", "stop", UNIT, timeout=60)
        assert unit_state(c, "ActiveState", "Result") == {"ActiveState": "inactive",
                                                          "Result": "success"}

        # Purge while running: prerm stops it, nothing of ours is left.
        c.run("systemctl", "start", UNIT, timeout=60)
        c.run("dpkg", "--purge", *reversed(PACKAGES))
        running = c.run("sh", "-c", "grep -lx mediaproxy /proc/[0-9]*/comm", check=False).stdout
        assert not running, f"mediaproxy still runs after purge: {running}"
        left = file_list(root) - before
        assert not left, f"purge left {sorted(left)}"
        assert c.run("systemctl", "is-enabled", UNIT, check=False).stdout.strip() != "enabled"
    finally:
        c.poweroff()
        remove_root(root)
