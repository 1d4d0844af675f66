"""Test hosts made of network namespaces, and sockets that live in them.

Owns the three-host layout of shared/notes/platform-findings.md (caller,
relay, callee; the relay's public address on its loopback, caller and callee
routed through the relay namespace), process start-up inside a namespace,
and creating UDP sockets inside a namespace from this (root namespace)
process with setns(2) around socket(2): a socket stays in the namespace it
was created in. Everything is removed again by Hosts.close().
"""

import ctypes
import os
import socket
import subprocess
from contextlib import contextmanager

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)

CALLER_IP = "10.200.1.2"
CALLEE_IP = "10.200.2.2"
RELAY_IP = "10.200.0.1"


def sh(*args, check=True):
    return subprocess.run(args, check=check, capture_output=True, text=True)


@contextmanager
def in_netns(name):
    """Runs the body with this thread in namespace `name`."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns({name}) failed")
        yield
    finally:
        _libc.setns(own, CLONE_NEWNET)
        os.close(own)
        os.close(target)


class Hosts:
    def __init__(self, prefix):
        self.caller = f"{prefix}-caller"
        self.relay = f"{prefix}-relay"
        self.callee = f"{prefix}-callee"
        self._made = []

    def up(self):
        for ns in (self.caller, self.relay, self.callee):
            sh("ip", "netns", "add", ns)
            self._made.append(ns)
        for side, ns, net in (("c", self.caller, "10.200.1"), ("e", self.callee, "10.200.2")):
            a, b = f"mpk{side}{os.getpid() % 10000}a", f"mpk{side}{os.getpid() % 10000}b"
            sh("ip", "link", "add", a, "netns", self.relay, "type", "veth", "peer", "name", b,
               "netns", ns)
            sh("ip", "-n", self.relay, "addr", "add", f"{net}.1/24", "dev", a)
            sh("ip", "-n", self.relay, "link", "set", a, "up")
            sh("ip", "-n", ns, "addr", "add", f"{net}.2/24", "dev", b)
            sh("ip", "-n", ns, "link", "set", b, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "route", "add", "default", "via", f"{net}.1")
        sh("ip", "-n", self.relay, "link", "set", "lo", "up")
        sh("ip", "-n", self.relay, "addr", "add", f"{RELAY_IP}/32", "dev", "lo")
        sh("ip", "netns", "exec", self.relay, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        return self

    def add_host(self, name, net, side):
        """One more host routed through the relay namespace, like caller and
        callee: namespace `<prefix>-<name>`, address `<net>.2/24`, gateway
        `<net>.1` in the relay. `side` is one letter naming its veth pair.
        Call after up() and before the relay starts (kernel forwarding hooks
        the interfaces present at start). Removed by close(). Returns
        (namespace, address)."""
        ns = f"{self.caller.rsplit('-', 1)[0]}-{name}"
        sh("ip", "netns", "add", ns)
        self._made.append(ns)
        a, b = f"mpk{side}{os.getpid() % 10000}a", f"mpk{side}{os.getpid() % 10000}b"
        sh("ip", "link", "add", a, "netns", self.relay, "type", "veth", "peer", "name", b,
           "netns", ns)
        sh("ip", "-n", self.relay, "addr", "add", f"{net}.1/24", "dev", a)
        sh("ip", "-n", self.relay, "link", "set", a, "up")
        sh("ip", "-n", ns, "addr", "add", f"{net}.2/24", "dev", b)
        sh("ip", "-n", ns, "link", "set", b, "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "route", "add", "default", "via", f"{net}.1")
        return ns, f"{net}.2"

    def udp(self, ns, ip, port=0, timeout=1.0):
        with in_netns(ns):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # Room for a burst: tests send first and read afterwards.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        s.bind((ip, port))
        s.settimeout(timeout)
        return s

    def nft_json(self, *args):
        r = sh("ip", "netns", "exec", self.relay, "nft", "-j", *args, check=False)
        return r

    def close(self):
        for ns in self._made:
            pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            sh("ip", "netns", "del", ns, check=False)
        self._made = []
