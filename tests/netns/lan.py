"""A switched test LAN of network namespaces: one bridge, any number of hosts.

Owns the topology of the distributed-role tests: a namespace holding a Linux
bridge, and one namespace per host (dispatcher, relays, phones) with a veth
into the bridge and one address in 10.201.0.0/24. Sockets are made inside a
host with netns.in_netns(); everything is removed by Lan.close().
"""

import os
import socket

from netns import in_netns, sh

NET = "10.201.0"


class Lan:
    def __init__(self, prefix):
        self.prefix = prefix
        self.switch = f"{prefix}-sw"
        self.hosts = {}
        sh("ip", "netns", "add", self.switch)
        self._made = [self.switch]
        sh("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.switch, "link", "set", "br0", "up")

    def add(self, name, host_number):
        ns = f"{self.prefix}-{name}"
        sh("ip", "netns", "add", ns)
        self._made.append(ns)
        tag = f"{os.getpid() % 1000}{host_number}"
        a, b = f"l{tag}a", f"l{tag}b"
        sh("ip", "link", "add", a, "netns", self.switch, "type", "veth", "peer", "name", b,
           "netns", ns)
        sh("ip", "-n", self.switch, "link", "set", a, "master", "br0")
        sh("ip", "-n", self.switch, "link", "set", a, "up")
        ip = f"{NET}.{host_number}"
        sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", b)
        sh("ip", "-n", ns, "link", "set", b, "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        self.hosts[name] = (ns, ip)
        return ns, ip

    def udp(self, name, port=0, timeout=1.0):
        ns, ip = self.hosts[name]
        with in_netns(ns):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.bind((ip, port))
        s.settimeout(timeout)
        return s

    def close(self):
        for ns in reversed(self._made):
            for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            sh("ip", "netns", "del", ns, check=False)
        self._made = []
