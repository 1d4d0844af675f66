"""IPv6 media and IPv4-IPv6 bridging through the relay (issue 17), driven
over the dispatcher's rtpproxy control socket exactly as Kamailio's
rtpproxy.so drives it, with real UDP phones in network namespaces.

Topology (dualstack.py): the relay namespace runs `mediaproxy --role
combined` with `relay_ip = 10.200.0.1, fd00:200::1` and `[Rtpproxy] listen =
udp:127.0.0.1:22222`; IPv4-only and IPv6-only callers and callees and a
dual-stack intruder are routed through it. Every test runs with
`forwarding = userspace` and `forwarding = kernel`.

The commands are those Kamailio 5.6 sends (observed against rtpengine 10.5):
`U6`/`L6` for IPv6 parties, `UIE` + `LEI6` (rtpproxy_offer("ie") /
rtpproxy_answer("ei"), or the `x` flag) for an IPv4 caller and an IPv6
callee, `UEI6` + `LIE` the other way round. What is asserted is what
Kamailio and the phones observe:

* the reply names the relay address of the receiving party's family:
  `<port> <relay IPv6> 6` for an IPv6 side (Kamailio reads IPv6 only from
  that trailing `6`), `<port> <relay IPv4>` (optionally ` 4`) for an IPv4 side;
* RTP and RTCP cross the relay both ways, every datagram counted, each
  phone receiving from exactly the relay address and port it was given;
* with kernel forwarding the call works all the same; for the IPv6-only
  call no map keyed by IPv4 addresses gets an element, and if the relay's
  nftables table has a map keyed by IPv6 addresses, that map carries the
  call's elements;
* an intruder scanning the relay's ports on both addresses gets no media
  and injects none, in an IPv6 call and in a bridged one (the IPv6 version
  of test_latching.py's checks), and the session record names the real
  parties and counts the refused datagrams;
* over the module socket protocol, IPv6 media items (`audio:[addr]:port:...`,
  this relay's extension which the plugin shim uses) and the `families`
  header's bridging get replies and media of the right family, and a
  dual-stack relay still serves a plain IPv4 call of the stock modules;
* a relay with an IPv4 address only refuses IPv6 media and bridges with
  E71 (no relay for it) and still serves IPv4.

Needs root (network namespaces); skipped otherwise.
"""

import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration"))
sys.path.insert(0, str(HERE))

from mpclient import ModuleClient, stun_packet  # noqa: E402
from dualstack import RELAY_IP, RELAY_IP6, DualStack  # noqa: E402
from netns import in_netns  # noqa: E402

REPO = HERE.parent.parent
BIN = os.environ.get("MEDIAPROXY_BIN", str(REPO / "build" / "mediaproxy"))

PORT_LO, PORT_HI = 40000, 40100
RTPP = ("127.0.0.1", 22222)  # the front end, inside the relay namespace
N = 100  # datagrams each way per exchange

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]


# ---------------------------------------------------------------------------
# Hosts and the relay


@pytest.fixture
def net():
    d = DualStack(f"mpv6n{os.getpid() % 100000}").up()
    try:
        d.caller4 = d.add("caller4", 1, v6=False)
        d.callee6 = d.add("callee6", 2, v4=False)
        d.caller6 = d.add("caller6", 3, v4=False)
        d.intruder = d.add("intruder", 4)
        d.callee4 = d.add("callee4", 5, v6=False)
        yield d
    finally:
        d.close()


class Relay:
    """The binary in the relay namespace; its log is kept for the records."""

    def __init__(self, net, tmp, forwarding, relay_ip=f"{RELAY_IP}, {RELAY_IP6}"):
        self.net, self.forwarding, self.relay_ip = net, forwarding, relay_ip
        self.table = f"mp6_{forwarding}"
        self.dir = Path(tmp)
        self.sock = str(self.dir / "run" / "dispatcher.sock")
        self.log_path = self.dir / "mediaproxy.log"
        ini = self.dir / "mp.ini"
        ini.write_text(
            "[General]\nrole = combined\nruntime_dir = %s\nlog_level = debug\n\n"
            "[Relay]\nrelay_ip = %s\nport_range = %d:%d\nforwarding = %s\nnft_table = %s\n\n"
            "[Rtpproxy]\nlisten = udp:%s:%d\n"
            % (self.dir / "run", relay_ip, PORT_LO, PORT_HI, forwarding, self.table, *RTPP))
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(["ip", "netns", "exec", net.relay, BIN, "--foreground",
                                      "--config", str(ini)], stdout=self.log, stderr=self.log)

    def wait_ready(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"mediaproxy with relay_ip = {self.relay_ip} exited "
                    f"{self.proc.returncode} at start-up:\n{self.text()}")
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(self.sock)
                s.close()
                return self
            except OSError:
                time.sleep(0.02)  # polling interval
        raise AssertionError("mediaproxy socket never came up:\n" + self.text())

    def text(self):
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode

    def session_records(self, call_id):
        out = []
        for line in self.text().splitlines():
            m = re.search(r"session ended: (\{.*\})$", line)
            if m:
                rec = json.loads(m.group(1))
                if rec.get("call_id") == call_id:
                    out.append(rec)
        return out

    def nft_maps(self):
        """{name: map object} of the relay's nftables table, whatever its
        family; {} while it has none."""
        r = self.net.run(self.net.relay, "nft", "-j", "list", "tables", check=False)
        if r.returncode != 0:
            return {}
        fam = [o["table"]["family"] for o in json.loads(r.stdout)["nftables"]
               if "table" in o and o["table"]["name"] == self.table]
        if not fam:
            return {}
        r = self.net.run(self.net.relay, "nft", "-j", "list", "table", fam[0], self.table,
                         check=False)
        if r.returncode != 0:
            return {}
        return {o["map"]["name"]: o["map"] for o in json.loads(r.stdout)["nftables"]
                if "map" in o}

    @staticmethod
    def key_family(m):
        """"ipv4_addr" or "ipv6_addr": the type of the first field of a map's
        key (the source address; later fields may be other types)."""
        t = m["type"]
        return t[0] if isinstance(t, list) else t

    def ipv6_maps(self):
        """The maps whose key holds an IPv6 address."""
        return {n: m for n, m in self.nft_maps().items() if self.key_family(m) == "ipv6_addr"}


@pytest.fixture(params=["userspace", "kernel"])
def relay(request, net, tmp_path):
    if request.param == "kernel" and shutil.which("nft") is None:
        pytest.skip("needs the nft tool to see the kernel hand-over")
    r = Relay(net, tmp_path, request.param)
    try:
        r.wait_ready()
    except AssertionError:
        r.stop()
        raise
    try:
        yield r
    finally:
        rc = r.stop()
        assert rc == 0, f"mediaproxy exited {rc}:\n{r.text()[-3000:]}"


def wait_until(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)  # polling interval
    raise AssertionError(f"timed out waiting for {what}")


# ---------------------------------------------------------------------------
# The rtpproxy control client (Kamailio's UDP form: "<cookie> <command>")


class Rtpp:
    def __init__(self, net):
        with in_netns(net.relay):
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(2.0)
        self.seq = 0
        self.log = []  # (command, reply), for failure messages

    def cmd(self, text):
        self.seq += 1
        cookie = f"{os.getpid()}_{self.seq}"
        self.sock.sendto(f"{cookie} {text}".encode(), RTPP)
        try:
            reply = self.sock.recv(65536).decode()
        except socket.timeout:
            raise AssertionError(f"no reply to {text!r} within 2 s (earlier: {self.log})")
        assert reply.startswith(cookie + " ") and reply.endswith("\n"), repr(reply)
        reply = reply[len(cookie) + 1:-1]
        self.log.append((text, reply))
        return reply

    def close(self):
        self.sock.close()


def relay_side(reply, want_ip, what):
    """The port of a U/L reply naming the relay address `want_ip`, in the
    form Kamailio's rtpproxy.so reads: '<port> <ip> 6' for IPv6, '<port> <ip>'
    or '<port> <ip> 4' for IPv4."""
    parts = reply.split()
    if ":" in want_ip:
        ok = len(parts) == 3 and parts[1] == want_ip and parts[2] == "6"
        form = f"'<port> {want_ip} 6'"
    else:
        ok = len(parts) in (2, 3) and parts[1] == want_ip and parts[2:] in ([], ["4"])
        form = f"'<port> {want_ip}' (or with ' 4')"
    assert ok and parts[0].isdigit(), f"{what}: reply {reply!r}, expected {form}"
    port = int(parts[0])
    assert PORT_LO <= port < PORT_HI and port % 2 == 0, f"{what}: port {port} in {reply!r}"
    return port


# ---------------------------------------------------------------------------
# Phones


def rtp(ssrc, seq, tag):
    body = (tag + b"#" + str(seq).encode()).ljust(160, b".")
    return struct.pack("!BBHII", 0x80, 8, seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF, ssrc) + body


def rtcp(ssrc, seq, tag):
    block = (tag + b"#" + str(seq).encode()).ljust(24, b".")[:24]
    return struct.pack("!BBHI", 0x81, 201, 7, ssrc) + block


class Phone:
    """RTP on `port`, RTCP on port + 1, on the phone's one address; sends to
    one relay address (the one its SDP answer named)."""

    def __init__(self, net, host, name, port, ssrc):
        self.name, self.ip, self.port, self.ssrc = name, host.ip, port, ssrc
        self.rtp = net.udp(host.ns, self.ip, port)
        self.rtcp = net.udp(host.ns, self.ip, port + 1)
        self.relay = None  # (relay address, relay RTP port) it sends to
        self.seq = 0
        self.sent = set()

    def send(self, kind="rtp"):
        self.seq += 1
        if kind == "rtp":
            pkt = rtp(self.ssrc, self.seq, self.name.encode())
            self.rtp.sendto(pkt, self.relay)
        else:
            pkt = rtcp(self.ssrc, self.seq, self.name.encode())
            self.rtcp.sendto(pkt, (self.relay[0], self.relay[1] + 1))
        self.sent.add(pkt)
        return pkt

    def receive(self, kind, limit, timeout):
        """Up to `limit` datagrams within `timeout`: [(data, (ip, port))]."""
        s = self.rtp if kind == "rtp" else self.rtcp
        got = []
        deadline = time.monotonic() + timeout
        while len(got) < limit:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            s.settimeout(remaining)
            try:
                data, src = s.recvfrom(4096)
            except socket.timeout:
                break
            except ConnectionRefusedError:  # an ICMP error, not a datagram
                continue
            got.append((data, tuple(src[:2])))
        return got

    def drain(self):
        return self.receive("rtp", 10 ** 6, 0.001) + self.receive("rtcp", 10 ** 6, 0.001)

    def close(self):
        self.rtp.close()
        self.rtcp.close()


def prime(a, b, kind, relay):
    """First datagrams both ways until each phone got one of its peer's:
    latching (and with kernel forwarding the hand-over)."""
    for _ in range(25):
        a.send(kind)
        b.send(kind)
        got_a = a.receive(kind, 1, 0.1)
        got_b = b.receive(kind, 1, 0.1)
        if got_a and got_b:
            break
    else:
        raise AssertionError(f"{kind}: no media both ways after 25 rounds "
                             f"({a.name} -> relay {a.relay}, {b.name} -> relay {b.relay})\n"
                             + relay.text()[-3000:])
    a.drain()
    b.drain()


def exchange(a, b, kind, relay, n=N):
    """n datagrams each way after priming; every one arrives, once, intact,
    from the relay address and port the receiver sends to."""
    prime(a, b, kind, relay)
    want = {a.name: set(), b.name: set()}
    for i in range(n):
        want[b.name].add(a.send(kind))
        want[a.name].add(b.send(kind))
        if i % 25 == 24:
            time.sleep(0.002)  # pacing so socket buffers never overflow
    for me, peer in ((a, b), (b, a)):
        got = me.receive(kind, n, 2.0)
        srcs = {src for _, src in got}
        expect = (me.relay[0], me.relay[1] + (0 if kind == "rtp" else 1))
        assert srcs <= {expect}, f"{kind} to {me.name} came from {srcs}, expected {expect}"
        data = [d for d, _ in got]
        assert all(d in peer.sent for d in data), f"{me.name} received a foreign datagram"
        assert len(data) == len(set(data)) == n and set(data) == want[me.name], (
            f"{kind} {peer.name} -> {me.name}: {len(set(data) & want[me.name])} of {n} "
            f"arrived ({len(data)} datagrams)")


# ---------------------------------------------------------------------------
# Calls


class Call:
    def __init__(self, relay, net, call_id, caller_host, callee_host):
        self.relay, self.net, self.call_id = relay, net, call_id
        self.rtpp = Rtpp(net)
        self.caller = Phone(net, caller_host, "caller", 5000, 0x11111111)
        self.callee = Phone(net, callee_host, "callee", 6000, 0x22222222)

    def offer(self, mods):
        """U from the caller; the callee is to send to the port in the reply."""
        return self.rtpp.cmd(f"U{mods} {self.call_id} {self.caller.ip} {self.caller.port} ftag;1")

    def answer(self, mods):
        return self.rtpp.cmd(
            f"L{mods} {self.call_id} {self.callee.ip} {self.callee.port} ftag;1 ttag;1")

    def media(self, n=N):
        exchange(self.caller, self.callee, "rtp", self.relay, n)
        exchange(self.caller, self.callee, "rtcp", self.relay, n)

    def delete(self):
        assert self.rtpp.cmd(f"D {self.call_id} ftag ttag") == "0"
        return wait_until(lambda: self.relay.session_records(self.call_id), 5,
                          "the session record")[-1]

    def close(self):
        self.rtpp.close()
        self.caller.close()
        self.callee.close()


def check_record(rec, call):
    st = rec["streams"][0]
    for side, phone in (("caller", call.caller), ("callee", call.callee)):
        assert phone.ip in st[f"{side}_remote"], (side, st)
        assert str(phone.port) in st[f"{side}_remote"], (side, st)
        assert st[f"{side}_packets"] >= N, (side, st)
    return st


# ---------------------------------------------------------------------------
# 1. IPv6 on both sides


def test_ipv6_only_call_relays_rtp_and_rtcp_from_the_relay_ipv6_address(relay, net):
    call = Call(relay, net, "v6only@x", net.caller6, net.callee6)
    try:
        call.callee.relay = (RELAY_IP6, relay_side(call.offer("6"), RELAY_IP6, "U6 offer"))
        call.caller.relay = (RELAY_IP6, relay_side(call.answer("6"), RELAY_IP6, "L6 answer"))
        assert call.callee.relay[1] != call.caller.relay[1]
        call.media()
        if relay.forwarding == "kernel":
            # No IPv4 element may stand for an IPv6 stream.
            v4 = {n: m.get("elem", []) for n, m in relay.nft_maps().items()
                  if relay.key_family(m) == "ipv4_addr"}
            assert not any(v4.values()), f"IPv4 kernel elements during an IPv6-only call: {v4}"
            v6 = relay.ipv6_maps()
            if v6:  # kernel forwarding of IPv6 exists: this call must use it
                wait_until(lambda: sum(len(m.get("elem", [])) for m in relay.ipv6_maps().values())
                           >= 2, 5, f"the call's elements in the IPv6 map(s) {sorted(v6)}")
                call.media(20)  # still flowing after the hand-over
        check_record(call.delete(), call)
        # Gone: its ports relay nothing any more.
        call.caller.send()
        assert call.callee.receive("rtp", 1, 0.3) == []
    finally:
        call.close()


# ---------------------------------------------------------------------------
# 2. Bridging: IPv4 on one side, IPv6 on the other


@pytest.mark.parametrize("direction", ["v4-caller", "v6-caller"])
def test_bridged_call_relays_between_the_families(relay, net, direction):
    if direction == "v4-caller":
        # rtpproxy_offer("ie") / rtpproxy_answer("ei"), or the x flag
        call = Call(relay, net, "bridge4to6@x", net.caller4, net.callee6)
        offer, answer = "IE", "EI6"
        caller_relay, callee_relay = RELAY_IP, RELAY_IP6
    else:
        call = Call(relay, net, "bridge6to4@x", net.caller6, net.callee4)
        offer, answer = "EI6", "IE"
        caller_relay, callee_relay = RELAY_IP6, RELAY_IP
    try:
        # The offer's reply is where the callee sends: the callee's family.
        call.callee.relay = (callee_relay,
                             relay_side(call.offer(offer), callee_relay, f"U{offer} offer"))
        call.caller.relay = (caller_relay,
                             relay_side(call.answer(answer), caller_relay, f"L{answer} answer"))
        call.media()
        st = check_record(call.delete(), call)
        assert RELAY_IP in st["caller_local" if direction == "v4-caller" else "callee_local"], st
        assert RELAY_IP6 in st["callee_local" if direction == "v4-caller" else "caller_local"], st
    finally:
        call.close()


# ---------------------------------------------------------------------------
# 3. RTP bleed over IPv6


class Intruder:
    """A dual-stack host that knows the relay's addresses and scans its ports."""

    def __init__(self, net):
        self.net, self.host = net, net.intruder
        self.socks = []

    def source(self):
        """A fresh source port on each family: {family: socket}."""
        src = {}
        for ip in (self.host.ip4, self.host.ip6):
            sock = self.net.udp(self.host.ns, ip)
            sock.setblocking(False)
            self.socks.append(sock)
            src[":" in ip] = sock
        return src

    def burst(self, targets, src=None):
        """RTP with a random SSRC, RTCP and a STUN request to every (relay
        address, port), from a fresh source port unless given one."""
        src = src or self.source()
        for addr, port in targets:
            for pkt in (rtp(int.from_bytes(os.urandom(4), "big"), 1, b"ATTACK"),
                        rtcp(int.from_bytes(os.urandom(4), "big"), 1, b"ATTACK"),
                        stun_packet(0x0001)):
                src[":" in addr].sendto(pkt, (addr, port))
        return src

    def received(self):
        got = []
        for s in self.socks:
            while True:
                try:
                    got.append(s.recvfrom(4096))
                except BlockingIOError:
                    break
                except ConnectionRefusedError:  # an ICMP error, not a datagram
                    continue
        return got

    def close(self):
        for s in self.socks:
            s.close()


@pytest.mark.parametrize("kind", ["ipv6", "bridge"])
def test_intruder_gets_no_media_and_injects_none(relay, net, kind):
    """The intruder scans every port of both relay addresses between offer
    and answer and after the answer (each time from a fresh source port,
    the parties sending right after it), then hits the call's four ports
    (RTP and RTCP of both sides, on the family of each side) while the
    parties talk."""
    if kind == "ipv6":
        call = Call(relay, net, "v6bleed@x", net.caller6, net.callee6)
        offer, answer, p_ip, q_ip = "6", "6", RELAY_IP6, RELAY_IP6
    else:
        call = Call(relay, net, "bridgebleed@x", net.caller4, net.callee6)
        offer, answer, p_ip, q_ip = "IE", "EI6", RELAY_IP6, RELAY_IP
    intruder = Intruder(net)
    every = [(ip, port) for ip in (RELAY_IP, RELAY_IP6) for port in range(PORT_LO, PORT_HI)]
    try:
        p = relay_side(call.offer(offer), p_ip, f"U{offer} offer")
        intruder.burst(every)  # between offer and answer
        q = relay_side(call.answer(answer), q_ip, f"L{answer} answer")
        intruder.burst(every)  # after the answer, before the phones
        call.callee.relay, call.caller.relay = (p_ip, p), (q_ip, q)
        # The phones talk while the intruder keeps hitting the call's ports;
        # exchange() fails on any datagram the peer did not send.
        ports = [(p_ip, p), (p_ip, p + 1), (q_ip, q), (q_ip, q + 1)]
        during = intruder.burst(ports)
        exchange(call.caller, call.callee, "rtp", relay)
        intruder.burst(ports, src=during)
        exchange(call.caller, call.callee, "rtcp", relay)
        intruder.burst(ports, src=during)
        exchange(call.caller, call.callee, "rtp", relay, 20)
        assert call.caller.drain() == [] and call.callee.drain() == [], "intruder media leaked"
        got = intruder.received()
        assert got == [], f"the intruder received {len(got)} datagram(s), e.g. {got[0]}"
        st = check_record(call.delete(), call)
        for side in ("caller", "callee"):
            for ip in (net.intruder.ip4, net.intruder.ip6):
                assert ip not in st[f"{side}_remote"], st
            # At least the three in-call bursts (3 datagrams each to the RTP
            # and the RTCP port of this side) were refused.
            assert st[f"{side}_foreign_packets"] >= 3 * 6, st
    finally:
        intruder.close()
        call.close()


# ---------------------------------------------------------------------------
# 4. The IPv4 module protocol on a dual-stack relay


def test_ipv4_module_call_on_a_dual_stack_relay(relay, net):
    client = ModuleClient(relay.sock)
    caller = Phone(net, net.caller4, "caller", 5000, 0x33333333)
    callee = Phone(net, net.callee4, "callee", 6000, 0x44444444)
    try:
        def update(type_, to_tag, phone):
            reply = client.update(type=type_, call_id="mod4@x", cseq=1, from_uri="a@x",
                                  to_uri="b@y", from_tag="A", to_tag=to_tag, user_agent="t",
                                  signaling_ip=phone.ip,
                                  media=f"audio:{phone.ip}:{phone.port}:sendrecv:ice=no")
            ip, port = reply.split()
            assert ip == RELAY_IP, f"module reply {reply!r} must name the IPv4 relay address"
            return int(port)

        callee.relay = (RELAY_IP, update("request", "", caller))
        caller.relay = (RELAY_IP, update("reply", "B", callee))
        exchange(caller, callee, "rtp", relay)
        if relay.forwarding == "kernel":  # IPv4 streams still go to the kernel
            v4_elems = lambda: sum(len(m.get("elem", [])) for m in relay.nft_maps().values()
                                   if relay.key_family(m) == "ipv4_addr")
            wait_until(lambda: v4_elems() >= 2, 5, "the IPv4 call's kernel elements")
            exchange(caller, callee, "rtp", relay, 20)
        assert client.remove("mod4@x", "A", "B") == "removed"
    finally:
        client.close()
        caller.close()
        callee.close()


def module_update(client, call_id, type_, to_tag, phone, families=None):
    """One update as the plugin shim sends it: an IPv6 address in brackets,
    `families: a,b` (this party's family, the reply's) for a bridge."""
    ip = f"[{phone.ip}]" if ":" in phone.ip else phone.ip
    headers = [("type", type_), ("dialog_id", ""), ("call_id", call_id), ("cseq", 1),
               ("from_uri", "a@x"), ("to_uri", "b@y"), ("from_tag", "A"), ("to_tag", to_tag),
               ("user_agent", "t"), ("signaling_ip", phone.ip), ("media_relay", ""),
               ("media", f"audio:{ip}:{phone.port}:sendrecv:ice=no")]
    if families:
        headers.append(("families", families))
    return client.request("update", headers)


def module_port(reply, want_ip, what):
    parts = reply.split()
    assert len(parts) == 2 and parts[0] == want_ip and parts[1].isdigit(), (
        f"{what}: module reply {reply!r}, expected '{want_ip} <port>'")
    return int(parts[1])


@pytest.mark.parametrize("kind", ["ipv6", "bridge"])
def test_ipv6_media_over_the_module_protocol(relay, net, kind):
    client = ModuleClient(relay.sock)
    if kind == "ipv6":
        caller = Phone(net, net.caller6, "caller", 5000, 0x55555555)
        families = (None, None)
        caller_relay = RELAY_IP6
    else:  # an IPv4 caller bridged to an IPv6 callee
        caller = Phone(net, net.caller4, "caller", 5000, 0x55555555)
        families = ("4,6", "6,4")
        caller_relay = RELAY_IP
    callee = Phone(net, net.callee6, "callee", 6000, 0x66666666)
    call_id = f"mod-{kind}@x"
    try:
        callee.relay = (RELAY_IP6, module_port(
            module_update(client, call_id, "request", "", caller, families[0]), RELAY_IP6,
            "the caller's INVITE"))
        caller.relay = (caller_relay, module_port(
            module_update(client, call_id, "reply", "B", callee, families[1]), caller_relay,
            "the callee's 200 OK"))
        exchange(caller, callee, "rtp", relay)
        exchange(caller, callee, "rtcp", relay, 20)
        assert client.remove(call_id, "A", "B") == "removed"
    finally:
        client.close()
        caller.close()
        callee.close()


def test_ipv4_only_relay_refuses_ipv6_media_and_bridges(net, tmp_path):
    relay = Relay(net, tmp_path, "userspace", relay_ip=RELAY_IP)
    try:
        relay.wait_ready()
        rtpp = Rtpp(net)
        caller6, caller4 = net.caller6.ip6, net.caller4.ip4
        assert rtpp.cmd(f"U6 r1@x {caller6} 5000 ftag;1") == "E71"
        assert rtpp.cmd(f"UIE r2@x {caller4} 5000 ftag;1") == "E71"
        # Nothing was left behind, and IPv4 still works.
        assert "active sessions: 0" in rtpp.cmd("I")
        relay_side(rtpp.cmd(f"U r3@x {caller4} 5000 ftag;1"), RELAY_IP, "plain U")
        assert rtpp.cmd("D r3@x ftag") == "0"
        rtpp.close()
    finally:
        rc = relay.stop()
    assert rc == 0, relay.text()[-3000:]
