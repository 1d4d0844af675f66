"""Latching against RTP hijacking, in network namespaces (issue 11, item 1).

Four hosts: caller (10.200.1.2), callee (10.200.2.2) and an ATTACKER
(10.200.3.2), each routed through the relay namespace, where
`mediaproxy --role combined` runs with `forwarding = userspace` or
`forwarding = kernel` (every test runs in both). Calls are made over the
module socket from this (root namespace) process exactly as the Kamailio
module does, with the parties' real addresses in the SDP and as
signaling_ip, so latching rule 1 of mediaproxy(8) applies to them.

What is asserted is what a user observes:

* the attacker's sockets receive nothing, whatever and whenever it sends
  (RTP with a random SSRC, RTCP, STUN binding requests, to every relay port);
* each party receives only datagrams its peer sent (payloads are tagged), from
  the relay port it sends to, on the socket it currently uses, and every one
  of them once latching is done;
* the session record logged at the end ("session ended: {...}") names the
  real parties as remotes and counts the refused datagrams
  (caller_foreign_packets / callee_foreign_packets);
* a NAT rebinding (the caller's source port changes, same SSRC) is followed
  after rebind_silence (0.5 s), in both directions; a new port with another
  SSRC is not.

Media is paced at 20 ms like a phone. Needs root; skipped otherwise.
"""

import json
import os
import re
import select
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

from mpclient import Dialog, ModuleClient, media_item, parse_ports, stun_packet  # noqa: E402
from netns import CALLEE_IP, CALLER_IP, RELAY_IP, Hosts  # noqa: E402

REPO = HERE.parent.parent
BIN = os.environ.get("MEDIAPROXY_BIN", str(REPO / "build" / "mediaproxy"))

PORT_LO, PORT_HI = 40000, 40040  # [Relay] port_range; the attacker scans all of it
ATTACKER_NET = "10.200.3"
INTERVAL = 0.02  # one packet per party every 20 ms, like a phone
# How long after the old source falls silent the relay follows a NAT
# rebinding: rebind_silence (0.5 s) plus margin. With kernel forwarding the
# silence is measured from the kernel counters, read once a second, so the
# last reading can be up to 1 s late.
FOLLOW_LIMIT = {"userspace": 1.0, "kernel": 2.0}

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]


# ---------------------------------------------------------------------------
# Hosts and the relay


@pytest.fixture
def net():
    h = Hosts(f"mpl{os.getpid() % 100000}").up()
    try:
        h.attacker, h.attacker_ip = h.add_host("attacker", ATTACKER_NET, "x")
        yield h
    finally:
        h.close()


class Relay:
    """The binary in the relay namespace; its log is kept for the records."""

    def __init__(self, hosts, tmp, forwarding):
        self.hosts, self.forwarding = hosts, forwarding
        self.table = f"mpl_{forwarding}"
        self.dir = Path(tmp)
        self.sock = str(self.dir / "run" / "dispatcher.sock")
        self.log_path = self.dir / "mediaproxy.log"
        opts = {"relay_ip": RELAY_IP, "port_range": f"{PORT_LO}:{PORT_HI}",
                "forwarding": forwarding, "nft_table": self.table}
        ini = self.dir / "mp.ini"
        ini.write_text("[General]\nrole = combined\nruntime_dir = %s\nlog_level = debug\n"
                       "[Relay]\n%s\n" % (self.dir / "run",
                                           "\n".join(f"{k} = {v}" for k, v in opts.items())))
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(["ip", "netns", "exec", hosts.relay, BIN, "--foreground",
                                      "--config", str(ini)], stdout=self.log, stderr=self.log)

    def wait_ready(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"mediaproxy exited {self.proc.returncode}:\n{self.text()}")
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

    def latch_log(self):
        """The relay's latching and hand-over lines, for failure messages."""
        keep = ("latched", "moved", "handed", "relearning", "stays in userspace")
        return "\n".join(l for l in self.text().splitlines() if any(k in l for k in keep))

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

    def session_records(self):
        out = []
        for line in self.text().splitlines():
            m = re.search(r"session ended: (\{.*\})$", line)
            if m:
                out.append(json.loads(m.group(1)))
        return out

    def fwd_count(self):
        """Elements of the kernel forwarding map (directions in the kernel)."""
        r = self.hosts.nft_json("list", "map", "netdev", self.table, "fwd_map")
        if r.returncode != 0:
            return 0
        for obj in json.loads(r.stdout)["nftables"]:
            if "map" in obj:
                return len(obj["map"].get("elem", []))
        return 0


@pytest.fixture(params=["userspace", "kernel"])
def relay(request, net, tmp_path):
    if request.param == "kernel" and shutil.which("nft") is None:
        pytest.skip("needs the nft tool to see the kernel hand-over")
    r = Relay(net, tmp_path, request.param).wait_ready()
    try:
        yield r
    finally:
        rc = r.stop()
        assert rc == 0, f"mediaproxy exited {rc}"


def wait_until(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)  # polling interval
    raise AssertionError(f"timed out waiting for {what}")


# ---------------------------------------------------------------------------
# Parties and the attacker


def rtp(ssrc, seq, tag):
    body = (tag + b"#" + str(seq).encode()).ljust(160, b".")
    return struct.pack("!BBHII", 0x80, 8, seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF, ssrc) + body


def rtcp(ssrc, seq, tag):
    # Receiver report with one report block (32 bytes); the block carries the tag.
    block = (tag + b"#" + str(seq).encode()).ljust(24, b".")[:24]
    return struct.pack("!BBHI", 0x81, 201, 7, ssrc) + block


class Host:
    """Sockets in one namespace and everything they received (in `inbox`)."""

    def __init__(self, hosts, ns, ip):
        self.hosts, self.ns, self.ip = hosts, ns, ip
        self.socks = {}  # label -> socket
        self.inbox = []  # (label, data, src, monotonic time)

    def open(self, label, port=0):
        s = self.hosts.udp(self.ns, self.ip, port)
        s.setblocking(False)
        self.socks[label] = s
        return s

    def drain(self):
        for label, s in self.socks.items():
            while True:
                try:
                    data, src = s.recvfrom(65536)
                except BlockingIOError:
                    break
                except ConnectionRefusedError:  # an ICMP error, not a datagram
                    continue
                self.inbox.append((label, data, src, time.monotonic()))

    def close(self):
        for s in self.socks.values():
            s.close()


def pump(hosts, until):
    """Collect what arrives at these hosts' sockets until `until` (monotonic)."""
    socks = [s for h in hosts for s in h.socks.values()]
    while True:
        for h in hosts:
            h.drain()
        remaining = until - time.monotonic()
        if remaining <= 0:
            return
        select.select(socks, [], [], remaining)


class Party(Host):
    """A phone: RTP and RTCP sockets on port, port+1; can move to new sockets."""

    def __init__(self, hosts, ns, ip, name, port, ssrc):
        super().__init__(hosts, ns, ip)
        self.name, self.ssrc, self.seq = name, ssrc, 0
        self.sent = {}  # datagram -> label of the socket that sent it
        self.use(port)

    def use(self, port):
        """Media from now on from (and SDP naming) these new sockets."""
        self.port = port
        self.open(f"rtp{port}", port)
        self.open(f"rtcp{port + 1}", port + 1)

    def sdp(self):
        return media_item("audio", self.ip, self.port)

    def send_rtp(self, relay_port, port=None, ssrc=None):
        port = self.port if port is None else port
        self.seq += 1
        pkt = rtp(self.ssrc if ssrc is None else ssrc, self.seq,
                  f"{self.name}/{port}".encode())
        self.socks[f"rtp{port}"].sendto(pkt, (RELAY_IP, relay_port))
        self.sent[pkt] = f"rtp{port}"
        return pkt

    def send_rtcp(self, relay_port, port=None):
        port = self.port if port is None else port
        self.seq += 1
        pkt = rtcp(self.ssrc, self.seq, f"{self.name}/{port + 1}".encode())
        self.socks[f"rtcp{port + 1}"].sendto(pkt, (RELAY_IP, relay_port))
        self.sent[pkt] = f"rtcp{port + 1}"
        return pkt


class Attacker(Host):
    """A fourth host that knows the relay's address and scans its ports."""

    def __init__(self, hosts):
        super().__init__(hosts, hosts.attacker, hosts.attacker_ip)
        self.sent_to = {}  # relay port -> datagrams sent to it
        self.n = 0

    def burst(self, ports, label=None):
        """RTP with a random SSRC and a STUN binding request to every port,
        plus an RTCP report to every odd port; from a fresh source port
        unless `label` names one of the attacker's sockets."""
        if label is None:
            self.n += 1
            label = f"a{self.n}"
            self.open(label)
        s = self.socks[label]
        for port in ports:
            pkts = [rtp(int.from_bytes(os.urandom(4), "big"), self.n, b"ATTACK"),
                    stun_packet(0x0001)]
            if port % 2:
                pkts.append(rtcp(int.from_bytes(os.urandom(4), "big"), self.n, b"ATTACK"))
            for p in pkts:
                s.sendto(p, (RELAY_IP, port))
            self.sent_to[port] = self.sent_to.get(port, 0) + len(pkts)

    def received(self):
        self.drain()
        return self.inbox


ALL_PORTS = range(PORT_LO, PORT_HI)


def stream_ports(p, q):
    return (p, p + 1, q, q + 1)


# ---------------------------------------------------------------------------
# A call


class Call:
    """One dialog over the module socket: caller tag A, callee tag B."""

    def __init__(self, relay, net, call_id):
        self.relay = relay
        self.client = ModuleClient(relay.sock)
        self.dialog = Dialog(self.client, call_id=call_id, from_tag="A", to_tag="B",
                             caller_ip=CALLER_IP, callee_ip=CALLEE_IP)
        self.caller = Party(net, net.caller, CALLER_IP, "caller", 5000, 0x11111111)
        self.callee = Party(net, net.callee, CALLEE_IP, "callee", 6000, 0x22222222)
        self.p = self.q = None  # relay ports the callee / the caller send to
        self.attacked = {}  # relay port -> attacker datagrams sent to it during talk()

    @staticmethod
    def port(reply):
        return parse_ports(reply, 1, relay_ip=RELAY_IP, port_range=(PORT_LO, PORT_HI))[0]

    def offer(self, cseq=1):
        r = (self.dialog.invite if cseq == 1 else self.dialog.reinvite)(self.caller.sdp(), cseq)
        self.p = self.port(r)

    def answer(self, cseq=1):
        self.q = self.port(self.dialog.answer(self.callee.sdp(), cseq))

    def callee_reinvite(self, cseq):
        self.q = self.port(self.dialog.callee_reinvite(self.callee.sdp(), cseq))

    def caller_answer(self, cseq):
        self.p = self.port(self.dialog.caller_answer(self.caller.sdp(), cseq))

    def remove(self):
        assert self.dialog.remove() == "removed"
        return wait_until(lambda: [r for r in self.relay.session_records()
                                   if r.get("call_id") == self.dialog.call_id],
                          5, "the session record")[-1]

    def close(self):
        self.client.close()
        self.caller.close()
        self.callee.close()

    # -- media ---------------------------------------------------------------
    def check_inboxes(self, what):
        """Each party got only its peer's datagrams, from the relay port it
        sends to, on the sockets it uses now."""
        for me, peer, relay_port in ((self.caller, self.callee, self.q),
                                     (self.callee, self.caller, self.p)):
            for label, data, src, _ in me.inbox:
                assert data in peer.sent, (
                    f"{what}: the {me.name} received a datagram its peer never sent "
                    f"(injected) on {label} from {src}: {data[:40]!r}\n{self.relay.latch_log()}")
                want = relay_port + (1 if label.startswith("rtcp") else 0)
                assert src == (RELAY_IP, want), (
                    f"{what}: the {me.name} received from {src}, expected {RELAY_IP}:{want}")

    def prime(self, what, attacker=None):
        """First packets both ways (RTP and RTCP) until each party got its
        peer's: latching (and, in the kernel mode, the hand-over)."""
        c, e = self.caller, self.callee
        for h in (c, e):
            h.drain()
            h.inbox.clear()
        for _ in range(25):
            c.send_rtp(self.q)
            c.send_rtcp(self.q + 1)
            e.send_rtp(self.p)
            e.send_rtcp(self.p + 1)
            pump([c, e], time.monotonic() + 0.04)
            kinds = lambda me, port: {l[:3] for l, *_ in me.inbox if l.endswith(str(port)) or
                                      l.endswith(str(port + 1))}
            if kinds(c, c.port) == {"rtp", "rtc"} and kinds(e, e.port) == {"rtp", "rtc"}:
                break
        else:
            got = attacker.received() if attacker else []
            foreign = lambda me, peer: len([1 for _, d, *_ in me.inbox if d not in peer.sent])
            raise AssertionError(
                f"{what}: media never flowed after 25 rounds from both parties: the caller "
                f"received {len(c.inbox)} datagram(s) ({foreign(c, e)} not from the callee), "
                f"the callee {len(e.inbox)} ({foreign(e, c)} not from the caller); the "
                f"attacker received {len(got)}\n{self.relay.latch_log()}")
        self.check_inboxes(what)
        if self.relay.forwarding == "kernel":
            # RTP and RTCP, both directions: the only stream in the kernel.
            wait_until(lambda: self.relay.fwd_count() == 4, 5, f"{what}: kernel hand-over")

    def talk(self, what, n=100, attacker=None):
        """After prime(): n RTP packets each way at 20 ms (RTCP every 10th);
        the attacker (if any) bursts to the stream's four ports every 10th
        tick. Every datagram must arrive, on the current sockets."""
        c, e = self.caller, self.callee
        for h in (c, e):
            h.drain()
            h.inbox.clear()
        want = {c: set(), e: set()}  # what each party must receive
        t0 = time.monotonic()
        for i in range(n):
            want[e].add(c.send_rtp(self.q))
            want[c].add(e.send_rtp(self.p))
            if i % 10 == 0:
                want[e].add(c.send_rtcp(self.q + 1))
                want[c].add(e.send_rtcp(self.p + 1))
            if attacker is not None and i % 10 == 5:
                before = dict(attacker.sent_to)
                attacker.burst(stream_ports(self.p, self.q), label="after")
                for port, k in attacker.sent_to.items():
                    self.attacked[port] = self.attacked.get(port, 0) + k - before.get(port, 0)
            pump([c, e], t0 + (i + 1) * INTERVAL)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and not all(
                want[h] <= {d for _, d, *_ in h.inbox} for h in (c, e)):
            pump([c, e], time.monotonic() + 0.05)
        self.check_inboxes(what)
        for me, peer in ((c, e), (e, c)):
            got = {d for _, d, *_ in me.inbox}
            missing = want[me] - got
            assert not missing, (
                f"{what}: of {len(want[me])} datagrams the {peer.name} sent, the {me.name} "
                f"is missing {len(missing)}\n{self.relay.latch_log()}")
            for label, *_ in me.inbox:
                assert label in (f"rtp{me.port}", f"rtcp{me.port + 1}"), (
                    f"{what}: the {me.name} received on its old socket {label}")
        return time.monotonic() - t0


def assert_attacker_got_nothing(attacker, relay, what):
    got = attacker.received()
    assert not got, (
        f"{what}: the attacker received {len(got)} datagram(s), e.g. from {got[0][2]} on "
        f"{got[0][0]}: {got[0][1][:40]!r}\n{relay.latch_log()}")


# ---------------------------------------------------------------------------
# 1. The attacker gets nothing


def test_attacker_before_between_after_and_on_reinvite_gets_nothing(relay, net):
    """The attacker scans every relay port (RTP with a random SSRC, RTCP, STUN)
    between offer and answer, after the answer before the parties send, after
    latching (during the call, to the stream's four ports), and around two
    re-INVITEs that move the caller: one where the caller offers a new port
    (new relay ports), one where the callee re-INVITEs and the caller answers
    with a new port (the same relay ports learn the caller again).

    Each scan before latching comes from a fresh source port and the parties
    send right after it: an unknown source that sends again more than
    latch_window later, before the party, may latch by rule 2 (see
    test_attacker_spraying_through_ringing_gets_nothing)."""
    call = Call(relay, net, "latch-1")
    attacker = Attacker(net)
    attacker.open("after")
    try:
        call.offer()
        attacker.burst(ALL_PORTS)  # between offer and answer
        call.answer()
        attacker.burst(ALL_PORTS)  # before the parties
        call.prime("initial call", attacker)
        call.talk("initial call", attacker=attacker)
        assert_attacker_got_nothing(attacker, relay, "initial call")
        first = (call.p, call.q)

        # Re-INVITE from the caller with a new media port.
        call.caller.use(5002)
        call.offer(cseq=2)
        attacker.burst(ALL_PORTS)  # between re-offer and answer
        call.answer(cseq=2)
        attacker.burst(ALL_PORTS)  # right after the re-INVITE
        call.prime("after the caller's re-INVITE", attacker)
        call.talk("after the caller's re-INVITE", attacker=attacker)
        assert_attacker_got_nothing(attacker, relay, "after the caller's re-INVITE")
        second = (call.p, call.q)

        # Re-INVITE from the callee; the caller answers with a new port.
        call.caller.use(5004)
        call.callee_reinvite(cseq=1)
        attacker.burst(ALL_PORTS)  # between re-offer and answer
        call.caller_answer(cseq=1)
        attacker.burst(ALL_PORTS)  # right after the re-INVITE
        call.prime("after the callee's re-INVITE", attacker)
        call.talk("after the callee's re-INVITE", attacker=attacker)
        assert_attacker_got_nothing(attacker, relay, "after the callee's re-INVITE")
        third = (call.p, call.q)

        rec = call.remove()
        assert_attacker_got_nothing(attacker, relay, "whole call")
        streams = rec["streams"]
        for st in streams:
            assert st["caller_foreign_packets"] > 0 and st["callee_foreign_packets"] > 0, st
            for side in ("caller_remote", "callee_remote"):
                assert not st[side].startswith(net.attacker_ip), st
            # At least what the attacker sent to this stream's ports during
            # the call was refused (its scans also hit ports not in use).
            for side in ("caller", "callee"):
                port = int(st[f"{side}_local"].rsplit(":", 1)[1])
                sent = call.attacked.get(port, 0) + call.attacked.get(port + 1, 0)
                assert sent > 0, (side, port, call.attacked)
                assert st[f"{side}_foreign_packets"] >= sent, (side, sent, st)
        last = streams[-1]
        assert last["caller_remote"] == f"{CALLER_IP}:5004", last
        assert last["callee_remote"] == f"{CALLEE_IP}:6000", last
        if relay.forwarding == "kernel":
            assert last["forwarding"] == "kernel", last
        print(f"relay ports (p, q): {first} -> {second} -> {third}; "
              f"{len(streams)} stream record(s)")
    finally:
        call.close()
        attacker.close()


def test_attacker_spraying_through_ringing_gets_nothing(relay, net):
    """A persistent attacker: one source sprays every relay port every 100 ms
    from the offer on, through 1 s of ringing, the answer and the call. The
    parties start right after the answer, as phones do."""
    call = Call(relay, net, "latch-2")
    attacker = Attacker(net)
    attacker.open("spray")
    attacker.open("after")  # talk() bursts from this socket during the call
    try:
        call.offer()
        t_end = time.monotonic() + 1.0
        for _ in range(10):  # ringing: 10 bursts, 100 ms apart
            attacker.burst(ALL_PORTS, label="spray")
            pump([attacker], min(t_end, time.monotonic() + 0.1))
        call.answer()
        attacker.burst(ALL_PORTS, label="spray")
        call.prime("after ringing", attacker)
        call.talk("after ringing", n=50, attacker=attacker)
        assert_attacker_got_nothing(attacker, relay, "after ringing")
        rec = call.remove()
        st = rec["streams"][0]
        assert (st["caller_remote"], st["callee_remote"]) == (
            f"{CALLER_IP}:5000", f"{CALLEE_IP}:6000"), st
    finally:
        call.close()
        attacker.close()


# ---------------------------------------------------------------------------
# 2. NAT rebinding


def established(relay, net, call_id):
    call = Call(relay, net, call_id)
    call.offer()
    call.answer()
    call.prime("call set-up")
    call.talk("call set-up", n=25)
    return call


def test_nat_rebinding_same_ssrc_is_followed(relay, net):
    """Mid-call the caller's source port changes (its NAT rebinds): same SSRC
    from a new socket, nothing more from the old one. The callee gets the new
    port's packets within FOLLOW_LIMIT, none lost from then on, and its own
    packets go to the new port from then on."""
    call = established(relay, net, "rebind-1")
    c, e = call.caller, call.callee
    try:
        old, new = c.port, 5010
        c.open(f"rtp{new}", new)
        for h in (c, e):
            h.drain()
            h.inbox.clear()
        limit = FOLLOW_LIMIT[relay.forwarding]
        t_switch = time.monotonic()
        sent_new, sent_callee = [], []  # (packet, send time)
        t_follow = None
        after_follow = 0
        for i in range(int((limit + 1.0) / INTERVAL)):
            sent_new.append((c.send_rtp(call.q, port=new), time.monotonic()))
            sent_callee.append((e.send_rtp(call.p), time.monotonic()))
            pump([c, e], t_switch + (i + 1) * INTERVAL)
            if t_follow is None:
                hits = [t for l, d, s, t in e.inbox if c.sent.get(d) == f"rtp{new}"]
                if hits:
                    t_follow = hits[0]
            else:
                after_follow += 1
                if after_follow >= 25:
                    break
        pump([c, e], time.monotonic() + 0.3)  # the last packets in flight
        assert t_follow is not None, (
            f"rebinding not followed within {limit + 1.0:.1f} s\n{relay.latch_log()}")
        latency = t_follow - t_switch
        assert latency <= limit, (
            f"rebinding followed after {latency:.2f} s, limit {limit} s\n{relay.latch_log()}")
        # Caller -> callee: from the first new-port packet that arrived on, none lost.
        got_e = {d for _, d, *_ in e.inbox}
        assert all(d in c.sent for d in got_e), "the callee received a foreign datagram"
        first = next(i for i, (d, _) in enumerate(sent_new) if d in got_e)
        lost = [i for i, (d, _) in enumerate(sent_new) if i >= first and d not in got_e]
        assert not lost, f"lost after the switch: packets {lost} of {len(sent_new)}"
        # Callee -> caller: every packet arrives; those sent once the callee
        # saw the new port arrive at the new port.
        where = {d: l for l, d, *_ in c.inbox}
        missing = [i for i, (d, _) in enumerate(sent_callee) if d not in where]
        assert not missing, f"callee packets lost: {missing}\n{relay.latch_log()}"
        late = [(i, where[d]) for i, (d, t) in enumerate(sent_callee)
                if t > t_follow and where[d] != f"rtp{new}"]
        assert not late, (f"callee packets sent after the switch went to the old port: "
                          f"{late}\n{relay.latch_log()}")
        assert "same SSRC, old source silent" in relay.text()
        print(f"{relay.forwarding}: rebinding followed after {latency:.3f} s "
              f"(first new-port packet #{first} of {len(sent_new)}, old port {old})")
    finally:
        call.close()


def test_nat_rebinding_with_another_ssrc_is_not_followed(relay, net):
    """The caller's old source falls silent and a new port of the caller's
    address sends RTP with a different SSRC: not followed; the callee gets
    none of it and its own packets still go to the old port; the call goes
    on when the old source resumes."""
    call = established(relay, net, "rebind-2")
    c, e = call.caller, call.callee
    try:
        new = 5010
        c.open(f"rtp{new}", new)
        for h in (c, e):
            h.drain()
            h.inbox.clear()
        ticks = int((FOLLOW_LIMIT[relay.forwarding] + 0.5) / INTERVAL)
        t0 = time.monotonic()
        sent_callee = []
        for i in range(ticks):
            c.send_rtp(call.q, port=new, ssrc=c.ssrc ^ 0x00FF00FF)
            sent_callee.append(e.send_rtp(call.p))
            pump([c, e], t0 + (i + 1) * INTERVAL)
        pump([c, e], time.monotonic() + 0.3)
        from_new = [d for _, d, *_ in e.inbox if c.sent.get(d) == f"rtp{new}"]
        assert not from_new, (f"{len(from_new)} of {ticks} packets with another SSRC were "
                              f"forwarded\n{relay.latch_log()}")
        assert not e.inbox, f"the callee received {len(e.inbox)} datagram(s)"
        at_new = [d for l, d, *_ in c.inbox if l == f"rtp{new}"]
        assert not at_new, f"{len(at_new)} callee packets went to the caller's new port"
        got = {d for _, d, *_ in c.inbox}
        assert set(sent_callee) <= got, (
            f"callee -> caller lost {len(set(sent_callee) - got)} of {ticks}")
        # The old source resumes: the call is intact.
        call.talk("after the old source resumed", n=25)
    finally:
        call.close()


def test_same_ssrc_from_a_new_port_while_the_old_source_sends_is_not_followed(relay, net):
    """Rule 5 asks for the latched source's silence: while the caller keeps
    sending from its latched port, RTP with its SSRC from another port of its
    address (a duplicate path) is not followed, whatever the forwarding mode."""
    call = established(relay, net, "rebind-4")
    c, e = call.caller, call.callee
    try:
        new = 5010
        c.open(f"rtp{new}", new)
        for h in (c, e):
            h.drain()
            h.inbox.clear()
        ticks = int((FOLLOW_LIMIT[relay.forwarding] + 0.5) / INTERVAL)
        t0 = time.monotonic()
        sent_old, sent_callee = set(), set()
        for i in range(ticks):
            sent_old.add(c.send_rtp(call.q))
            c.send_rtp(call.q, port=new)
            sent_callee.add(e.send_rtp(call.p))
            pump([c, e], t0 + (i + 1) * INTERVAL)
        pump([c, e], time.monotonic() + 0.3)
        from_new = [t for _, d, _, t in e.inbox if c.sent.get(d) == f"rtp{new}"]
        assert not from_new, (
            f"followed the new port {from_new[0] - t0:.2f} s after it started although the "
            f"latched source never fell silent: the callee got {len(from_new)} of its {ticks} "
            f"packets and {len(sent_old & {d for _, d, *_ in e.inbox})} of {ticks} from the "
            f"latched port\n{relay.latch_log()}")
        got_e = {d for _, d, *_ in e.inbox}
        assert sent_old <= got_e, f"the callee lost {len(sent_old - got_e)} of {ticks}"
        where = {d: l for l, d, *_ in c.inbox}
        assert all(where.get(d) == f"rtp{c.port}" for d in sent_callee), (
            "callee packets lost or sent to the caller's other port")
    finally:
        call.close()


def test_rtcp_follows_rtp_after_nat_rebinding(relay, net):
    """Like a real NAT rebinding, both the caller's RTP and RTCP source ports
    change. Once RTP has been followed (same SSRC), RTCP from the new port
    reaches the callee and the callee's RTCP goes to the new port
    (mediaproxy(8), Latching, rule 4: RTCP "follows it when RTP moves")."""
    call = established(relay, net, "rebind-3")
    c, e = call.caller, call.callee
    try:
        new = 5010
        c.use(new)
        for h in (c, e):
            h.drain()
            h.inbox.clear()
        limit = FOLLOW_LIMIT[relay.forwarding]
        t0 = time.monotonic()
        ok = None
        for i in range(int((limit + 1.5) / INTERVAL)):
            c.send_rtp(call.q)
            e.send_rtp(call.p)
            if i % 5 == 0:
                c.send_rtcp(call.q + 1)
                e.send_rtcp(call.p + 1)
            pump([c, e], t0 + (i + 1) * INTERVAL)
            rtcp_in = [l for l, d, *_ in e.inbox if c.sent.get(d) == f"rtcp{new + 1}"]
            rtcp_out = [l for l, *_ in c.inbox if l == f"rtcp{new + 1}"]
            if rtcp_in and rtcp_out:
                ok = time.monotonic() - t0
                break
        rtp_in = [l for l, d, *_ in e.inbox if c.sent.get(d) == f"rtp{new}"]
        assert rtp_in, f"RTP rebinding not followed\n{relay.latch_log()}"
        assert ok is not None, (
            f"RTP followed the rebinding, RTCP did not within {limit + 1.5:.1f} s: "
            f"callee got {len(rtcp_in)} RTCP from the caller's new port, the caller's new "
            f"RTCP port got {len(rtcp_out)} from the callee (caller RTCP at the old port: "
            f"{len([1 for l, *_ in c.inbox if l == 'rtcp5001'])})\n{relay.latch_log()}")
        print(f"{relay.forwarding}: RTCP followed after {ok:.3f} s")
    finally:
        call.close()
