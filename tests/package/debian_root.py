"""A fresh Debian 12 root for the package test, made with debootstrap.

The base root (minbase plus systemd and dbus, enough to boot under
systemd-nspawn) is made once from the package registry and kept in
CACHE_DIR; every test run works on a copy of it, so what one run installs or
purges never leaks into the next. Standard library only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time

CACHE_DIR = os.environ.get("MEDIAPROXY_TEST_CACHE", "/var/cache/mediaproxy-tests")
BASE_ROOT = os.path.join(CACHE_DIR, "debian12-systemd-root")
MIRROR = os.environ.get("MEDIAPROXY_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# What the base root has beyond minbase: an init to boot, a bus for systemctl.
BASE_PACKAGES = ["systemd", "systemd-sysv", "dbus"]
# Marks a base root that debootstrap finished (an interrupted one is redone).
DONE_MARK = ".mediaproxy-base-complete"


def base_root(log) -> str:
    """The cached base root, made now if missing (2-4 minutes)."""
    if os.path.exists(os.path.join(BASE_ROOT, DONE_MARK)):
        return BASE_ROOT
    shutil.rmtree(BASE_ROOT, ignore_errors=True)
    os.makedirs(CACHE_DIR, exist_ok=True)
    started = time.monotonic()
    tmp = BASE_ROOT + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run(
        ["debootstrap", "--variant=minbase", "--include=" + ",".join(BASE_PACKAGES),
         "bookworm", tmp, MIRROR],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=900)
    # A machine id of its own at first boot; no login prompt on the console.
    open(os.path.join(tmp, "etc/machine-id"), "w").close()
    open(os.path.join(tmp, DONE_MARK), "w").close()
    os.rename(tmp, BASE_ROOT)
    log(f"debootstrap made {BASE_ROOT} in {time.monotonic() - started:.0f} s")
    return BASE_ROOT


def working_copy(base: str) -> str:
    """A private copy of `base` under /var/tmp (removed with remove_root)."""
    parent = tempfile.mkdtemp(prefix="mediaproxy-pkg-root-", dir="/var/tmp")
    root = os.path.join(parent, "root")
    subprocess.run(["cp", "-a", base, root], check=True, timeout=300)
    os.unlink(os.path.join(root, DONE_MARK))
    return root


def remove_root(root: str) -> None:
    shutil.rmtree(os.path.dirname(root), ignore_errors=True)


def chroot_run(root: str, *command: str, timeout: float = 600) -> str:
    """Runs a command in the root (not booted) with the host's network."""
    shutil.copy("/etc/resolv.conf", os.path.join(root, "etc/resolv.conf"))
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive",
           "LC_ALL": "C"}
    out = subprocess.run(["chroot", root, *command], env=env, capture_output=True, text=True,
                         timeout=timeout)
    if out.returncode != 0:
        raise AssertionError(f"in the Debian root, {' '.join(command)} failed "
                             f"({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out.stdout


if __name__ == "__main__":
    # tools/dev test makes the base root in the background while it compiles.
    import sys

    print(base_root(lambda msg: print(msg, file=sys.stderr)))
