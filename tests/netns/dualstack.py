"""Dual-stack test hosts: a relay namespace with an IPv4 and an IPv6 address,
and phone namespaces that speak IPv4, IPv6 or both (issue 17).

The relay namespace holds the relay's public addresses on its `lo`
(RELAY_IP = 10.200.0.1/32 and RELAY_IP6 = fd00:200::1/128) and routes for
every phone: phone number k sits on its own veth (`to-<name>` in the relay,
`eth0` in the phone) with 10.200.k.2/24 (gateway 10.200.k.1) and/or
fd00:200:k::2/64 (gateway fd00:200:k::1). IPv6 addresses are added with
`nodad`, and every namespace has duplicate-address detection switched off
before its interfaces exist, so addresses (link-local ones too, which
neighbour discovery needs) are usable the moment they exist: no "tentative"
bind failures, no first packets lost while neighbour discovery waits ~1 s.
Sockets are created inside a namespace with netns.in_netns(); the address
family follows the address.
Everything is removed by DualStack.close().
"""

import os
import socket
import subprocess
from dataclasses import dataclass
from typing import Optional

from netns import in_netns, sh

RELAY_IP = "10.200.0.1"
RELAY_IP6 = "fd00:200::1"


def family(ip):
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


@dataclass
class Phone:
    """One host namespace and its addresses (None: that family is absent)."""
    ns: str
    ip4: Optional[str]
    ip6: Optional[str]
    veth: str  # its veth's name in the relay namespace

    @property
    def ip(self):
        """The address a single-stack phone uses (IPv6 when it has one)."""
        return self.ip6 or self.ip4


class DualStack:
    def __init__(self, prefix):
        self.prefix = prefix
        self.relay = f"{prefix}-relay"
        self.phones = {}
        self._made = []

    def up(self):
        sh("ip", "netns", "add", self.relay)
        self._made.append(self.relay)
        self._sysctl(self.relay, {"net/ipv6/conf/all/accept_dad": 0,
                                  "net/ipv6/conf/default/accept_dad": 0,
                                  "net/ipv4/ip_forward": 1,
                                  "net/ipv6/conf/all/forwarding": 1,
                                  "net/ipv6/conf/default/forwarding": 1})
        self._batch(self.relay, ["link set lo up",
                                 f"addr add {RELAY_IP}/32 dev lo",
                                 f"addr add {RELAY_IP6}/128 dev lo nodad"])
        return self

    def add(self, name, k, v4=True, v6=True):
        """Phone namespace `<prefix>-<name>` on subnet number k (1..254).
        Call before the relay starts: kernel forwarding hooks the interfaces
        present at its start."""
        assert v4 or v6
        ns = f"{self.prefix}-{name}"
        sh("ip", "netns", "add", ns)
        self._made.append(ns)
        conf = {"net/ipv6/conf/all/accept_dad": 0, "net/ipv6/conf/default/accept_dad": 0}
        if not v6:
            conf.update({"net/ipv6/conf/all/disable_ipv6": 1,
                         "net/ipv6/conf/default/disable_ipv6": 1})
        self._sysctl(ns, conf)
        veth = f"to-{name}"[:15]
        relay = [f"link add {veth} type veth peer name eth0 netns {ns}"]
        phone = ["link set lo up"]
        ip4 = ip6 = None
        if v4:
            ip4 = f"10.200.{k}.2"
            relay.append(f"addr add 10.200.{k}.1/24 dev {veth}")
            phone.append(f"addr add {ip4}/24 dev eth0")
        if v6:
            ip6 = f"fd00:200:{k}::2"
            relay.append(f"addr add fd00:200:{k}::1/64 dev {veth} nodad")
            phone.append(f"addr add {ip6}/64 dev eth0 nodad")
        relay.append(f"link set {veth} up")
        phone.append("link set eth0 up")
        if v4:
            phone.append(f"route add default via 10.200.{k}.1")
        if v6:
            phone.append(f"route add default via fd00:200:{k}::1")
        self._batch(self.relay, relay)
        self._batch(ns, phone)
        phone = Phone(ns, ip4, ip6, veth)
        self.phones[name] = phone
        return phone

    @staticmethod
    def _sysctl(ns, values):
        """Writes /proc/sys entries as seen from inside namespace ns."""
        with in_netns(ns):
            for key, value in values.items():
                with open(f"/proc/sys/{key}", "w") as f:
                    f.write(str(value))

    @staticmethod
    def _batch(ns, commands):
        """`ip` commands run in namespace ns, in one process."""
        r = subprocess.run(["ip", "-n", ns, "-batch", "-"], input="\n".join(commands) + "\n",
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"ip -n {ns} -batch failed: {r.stderr}\n" + "\n".join(commands))

    def udp(self, ns, ip, port=0, timeout=1.0):
        """A UDP socket bound to ip:port inside namespace ns."""
        with in_netns(ns):
            s = socket.socket(family(ip), socket.SOCK_DGRAM)
        # Room for a burst: tests send first and read afterwards.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        s.bind((ip, port))
        s.settimeout(timeout)
        return s

    def run(self, ns, *args, check=True):
        return sh("ip", "netns", "exec", ns, *args, check=check)

    def close(self):
        for ns in reversed(self._made):
            for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            sh("ip", "netns", "del", ns, check=False)
        self._made = []
