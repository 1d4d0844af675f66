"""In-kernel forwarding of the relay, with real nftables in network namespaces.

A call goes through `mediaproxy --role combined` running in the relay
namespace with `forwarding = kernel`; real UDP phones in the caller and
callee namespaces. What is asserted is what an operator or a phone observes:
packets received (and their source), the nftables map the relay programs
(`nft -j list map`), the statistics record the dispatcher logs at session
end, the table's presence after exit, and the start-up decision in `auto`
mode without CAP_NET_ADMIN. Needs root; skipped otherwise.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration"))
sys.path.insert(0, str(HERE))

from mpclient import ModuleClient, rtp_packet  # noqa: E402
from netns import CALLEE_IP, CALLER_IP, RELAY_IP, Hosts, sh  # noqa: E402

REPO = HERE.parent.parent
BIN = os.environ.get("MEDIAPROXY_BIN", str(REPO / "build" / "mediaproxy"))

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(shutil.which("nft") is None, reason="needs the nft tool to inspect tables"),
]


@pytest.fixture
def hosts():
    h = Hosts(f"mpk{os.getpid() % 100000}").up()
    try:
        yield h
    finally:
        h.close()


class Relay:
    """The binary running in the relay namespace."""

    def __init__(self, hosts, tmp, table, forwarding="kernel", wrapper=(), extra_args=(),
                 **relay_opts):
        self.hosts, self.table = hosts, table
        self.dir = Path(tmp)
        self.sock = str(self.dir / "run" / "dispatcher.sock")
        self.log_path = self.dir / f"mediaproxy-{time.monotonic_ns()}.log"
        opts = {"relay_ip": RELAY_IP, "port_range": "40000:40100", "forwarding": forwarding,
                "nft_table": table, **relay_opts}
        ini = self.dir / "mp.ini"
        ini.write_text("[General]\nrole = combined\nruntime_dir = %s\nlog_level = debug\n"
                       "[Relay]\n%s\n" % (self.dir / "run",
                                           "\n".join(f"{k} = {v}" for k, v in opts.items())))
        self.log = open(self.log_path, "w")
        cmd = ["ip", "netns", "exec", hosts.relay, *wrapper, BIN, "--foreground",
               *extra_args, "--config", str(ini)]
        self.proc = subprocess.Popen(cmd, stderr=self.log, stdout=self.log)

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
        return self.log_path.read_text()

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)
        self.log.close()
        return self.proc.returncode

    def session_records(self):
        out = []
        for line in self.text().splitlines():
            m = re.search(r"session ended: (\{.*\})$", line)
            if m:
                out.append(json.loads(m.group(1)))
        return out

    def fwd_elements(self):
        r = self.hosts.nft_json("list", "map", "netdev", self.table, "fwd_map")
        if r.returncode != 0:
            return None
        elems = []
        for obj in json.loads(r.stdout)["nftables"]:
            if "map" in obj:
                elems = obj["map"].get("elem", [])
        return elems

    def table_exists(self):
        r = sh("ip", "netns", "exec", self.hosts.relay, "nft", "list", "tables")
        return f"table netdev {self.table}" in r.stdout


def wait_until(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)  # polling interval
    raise AssertionError(f"timed out waiting for {what}")


def elem_counters(elem):
    """(packets, bytes) of one element of `nft -j list map` output."""
    text = json.dumps(elem)
    m = re.search(r'"counter": \{"packets": (\d+), "bytes": (\d+)\}', text)
    assert m, f"element without counter: {text}"
    return int(m.group(1)), int(m.group(2))


def recv_count(sock, expect_src, limit, timeout=1.0):
    n = 0
    sock.settimeout(timeout)
    try:
        while n < limit:
            data, src = sock.recvfrom(4096)
            assert src == expect_src, f"packet from {src}, expected {expect_src}"
            n += 1
    except socket.timeout:
        pass
    return n


class Call:
    def __init__(self, relay, hosts, call_id="k1", caller_port=5000, callee_port=6000):
        self.client = ModuleClient(relay.sock)
        self.call_id = call_id
        self.caller = hosts.udp(hosts.caller, CALLER_IP, caller_port)
        self.callee = hosts.udp(hosts.callee, CALLEE_IP, callee_port)
        self.seq = 0

    def update(self, type_, cseq, from_tag, to_tag, media):
        reply = self.client.update(type=type_, call_id=self.call_id, cseq=cseq,
                                   from_uri="a@x", to_uri="b@y", from_tag=from_tag,
                                   to_tag=to_tag, user_agent="test", signaling_ip=CALLER_IP,
                                   media=media)
        ip, port = reply.split()
        assert ip == RELAY_IP
        return int(port)

    def setup(self):
        self.p = self.update("request", 1, "A", "",
                             f"audio:{CALLER_IP}:{self.caller.getsockname()[1]}:sendrecv:ice=no")
        self.q = self.update("reply", 1, "A", "B",
                             f"audio:{CALLEE_IP}:{self.callee.getsockname()[1]}:sendrecv:ice=no")
        return self

    def pkt(self):
        self.seq += 1
        return rtp_packet(8, self.seq, self.seq * 160, 0x1234)

    def prime(self):
        """First packets both ways: latching, then the kernel hand-over."""
        self.callee.sendto(self.pkt(), (RELAY_IP, self.p))
        self.caller.sendto(self.pkt(), (RELAY_IP, self.q))
        assert recv_count(self.callee, (RELAY_IP, self.p), 1) == 1

    def blast(self, n, pace_every=50):
        for i in range(n):
            self.caller.sendto(self.pkt(), (RELAY_IP, self.q))
            self.callee.sendto(self.pkt(), (RELAY_IP, self.p))
            if i % pace_every == pace_every - 1:
                time.sleep(0.002)  # pacing so socket buffers never overflow


def test_call_is_forwarded_in_the_kernel_with_exact_counters(hosts, tmp_path):
    relay = Relay(hosts, tmp_path, "mpk_t1").wait_ready()
    try:
        assert "kernel forwarding" in relay.text()
        call = Call(relay, hosts).setup()
        call.prime()
        wait_until(lambda: len(relay.fwd_elements() or []) == 2, 5, "two fwd elements after hand-over")
        n = 300
        call.blast(n)
        got_callee = recv_count(call.callee, (RELAY_IP, call.p), n)
        got_caller = recv_count(call.caller, (RELAY_IP, call.q), n)
        assert got_callee == n and got_caller == n, (got_callee, got_caller)
        # Every packet after the hand-over went through the kernel rule.
        counters = sorted(elem_counters(e) for e in relay.fwd_elements())
        assert counters == [(n, n * 200), (n, n * 200)], counters
        # A third source towards the caller-facing port is not forwarded.
        intruder = hosts.udp(hosts.caller, CALLER_IP, 5002)
        for _ in range(5):
            intruder.sendto(call.pkt(), (RELAY_IP, call.q))
        assert recv_count(call.callee, (RELAY_IP, call.p), 5, timeout=0.5) == 0
        assert call.client.remove("k1", "B", "A") == "removed"
        assert relay.fwd_elements() == []
        rec = relay.session_records()[-1]
        st = rec["streams"][0]
        # caller: 1 userspace packet (the priming one) + n in the kernel;
        # callee: its priming packet found no learned caller and was dropped.
        assert (st["caller_packets"], st["caller_kernel_packets"]) == (n + 1, n), st
        assert (st["callee_packets"], st["callee_kernel_packets"]) == (n, n), st
        assert st["caller_kernel_bytes"] == n * 200 and st["caller_bytes"] == (n + 1) * 200
        assert st["forwarding"] == "kernel"
    finally:
        assert relay.stop() == 0
    assert not relay.table_exists(), "clean exit must delete the nftables table"


def test_fragmented_datagram_of_a_latched_peer_still_arrives(hosts, tmp_path):
    """Fragments bypass the kernel rule (later ones have no UDP header): the
    relay's IP stack reassembles them and userspace forwards the datagram."""
    relay = Relay(hosts, tmp_path, "mpk_t6").wait_ready()
    try:
        call = Call(relay, hosts).setup()
        call.prime()
        wait_until(lambda: len(relay.fwd_elements() or []) == 2, 5, "hand-over")
        big = call.pkt() + bytes(1600)  # more than the 1500-byte MTU: sent in two fragments
        call.caller.sendto(big, (RELAY_IP, call.q))
        call.callee.settimeout(2.0)
        data, src = call.callee.recvfrom(4096)
        assert (len(data), src) == (len(big), (RELAY_IP, call.p))
        # The kernel rule counted none of it.
        assert sorted(elem_counters(e) for e in relay.fwd_elements()) == [(0, 0), (0, 0)]
    finally:
        assert relay.stop() == 0


def test_route_change_moves_kernel_forwarding(hosts, tmp_path):
    """A stream handed over while the callee's route pointed at a dead gateway
    (its packets lost) is moved to the new route once the route changes."""
    sh("ip", "-n", hosts.relay, "route", "add", f"{CALLEE_IP}/32", "via", "10.200.2.9")
    relay = Relay(hosts, tmp_path, "mpk_t7").wait_ready()
    try:
        call = Call(relay, hosts).setup()
        # Priming by hand: the callee's first packet reaches the relay, but
        # the relay's answers towards the callee go to the dead gateway.
        call.callee.sendto(call.pkt(), (RELAY_IP, call.p))
        call.caller.sendto(call.pkt(), (RELAY_IP, call.q))
        wait_until(lambda: len(relay.fwd_elements() or []) == 2, 5, "hand-over")
        call.caller.sendto(call.pkt(), (RELAY_IP, call.q))
        assert recv_count(call.callee, (RELAY_IP, call.p), 1, timeout=0.5) == 0
        sh("ip", "-n", hosts.relay, "route", "del", f"{CALLEE_IP}/32")

        def arrives():
            call.caller.sendto(call.pkt(), (RELAY_IP, call.q))
            return recv_count(call.callee, (RELAY_IP, call.p), 1, timeout=0.2) == 1
        wait_until(arrives, 5, "media to the callee after the route change")
        assert "moved to a changed route" in relay.text()
        # Still in the kernel: the caller's element counts what arrives now.
        before = sorted(elem_counters(e)[0] for e in relay.fwd_elements())
        call.blast(20)
        assert recv_count(call.callee, (RELAY_IP, call.p), 20) == 20
        after = sorted(elem_counters(e)[0] for e in relay.fwd_elements())
        assert sum(after) - sum(before) == 40, (before, after)
    finally:
        sh("ip", "-n", hosts.relay, "route", "del", f"{CALLEE_IP}/32", check=False)
        assert relay.stop() == 0


def test_reinvite_to_new_address_moves_kernel_forwarding(hosts, tmp_path):
    relay = Relay(hosts, tmp_path, "mpk_t2").wait_ready()
    try:
        call = Call(relay, hosts).setup()
        call.prime()
        wait_until(lambda: len(relay.fwd_elements() or []) == 2, 5, "hand-over")
        new_callee = hosts.udp(hosts.callee, CALLEE_IP, 6002)
        caller_media = f"audio:{CALLER_IP}:5000:sendrecv:ice=no"
        assert call.update("request", 2, "A", "B", caller_media) == call.p
        assert call.update("reply", 2, "A", "B", f"audio:{CALLEE_IP}:6002:sendrecv:ice=no") == call.q
        # The callee moved: its learned address and the kernel rules are gone.
        assert relay.fwd_elements() == []
        # The caller is still latched and has sent media, so the callee's
        # first packet from its new address completes the hand-over.
        new_callee.sendto(call.pkt(), (RELAY_IP, call.p))
        assert recv_count(call.caller, (RELAY_IP, call.q), 1) == 1
        wait_until(lambda: len(relay.fwd_elements() or []) == 2, 5, "hand-over to the new address")
        for _ in range(50):
            call.caller.sendto(call.pkt(), (RELAY_IP, call.q))
        assert recv_count(new_callee, (RELAY_IP, call.p), 50) == 50
        assert recv_count(call.callee, (RELAY_IP, call.p), 1, timeout=0.3) == 0
        counters = sorted(elem_counters(e)[0] for e in relay.fwd_elements())
        assert counters == [0, 50], counters
    finally:
        assert relay.stop() == 0


def test_expiry_deletes_kernel_elements(hosts, tmp_path):
    relay = Relay(hosts, tmp_path, "mpk_t3", stream_timeout=2).wait_ready()
    try:
        call = Call(relay, hosts).setup()
        call.prime()
        wait_until(lambda: len(relay.fwd_elements() or []) == 2, 5, "hand-over")
        call.blast(20)
        # Traffic in the kernel keeps the stream alive past stream_timeout...
        t_end = time.monotonic() + 3.0
        while time.monotonic() < t_end:
            call.blast(2, pace_every=2)
            time.sleep(0.1)  # 20 packets/s each way, well inside stream_timeout
        assert relay.session_records() == [], "an active kernel stream must not expire"
        # ...and its silence ends it; the elements go with the session.
        wait_until(relay.session_records, 8, "expiry of the silent call")
        assert relay.fwd_elements() == []
        st = relay.session_records()[-1]["streams"][0]
        assert st["status"] == "conntrack timeout"
        assert st["caller_kernel_packets"] >= 20 + 2 * 20
    finally:
        assert relay.stop() == 0


def test_kill_9_leaves_table_that_next_start_reclaims(hosts, tmp_path):
    # Without a state file (test_restart.py: with one, the table is adopted).
    relay = Relay(hosts, tmp_path, "mpk_t4", state_file="none").wait_ready()
    call = Call(relay, hosts).setup()
    call.prime()
    wait_until(lambda: len(relay.fwd_elements() or []) == 2, 5, "hand-over")
    relay.stop(signal.SIGKILL)
    assert relay.table_exists(), "SIGKILL cannot clean up: the table stays"
    again = Relay(hosts, tmp_path, "mpk_t4", state_file="none").wait_ready()
    try:
        assert again.fwd_elements() == [], "the stale table's elements must be gone"
        assert re.search(r"table netdev mpk_t4 already existed|reclaim", again.text()), again.text()
    finally:
        assert again.stop() == 0
    assert not again.table_exists()


def test_auto_without_cap_net_admin_falls_back_to_userspace(hosts, tmp_path):
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) not available")
    drop = ("setpriv", "--bounding-set=-net_admin", "--inh-caps=-net_admin")
    relay = Relay(hosts, tmp_path, "mpk_t5", forwarding="auto", wrapper=drop).wait_ready()
    try:
        assert "userspace only" in relay.text()
        call = Call(relay, hosts).setup()
        call.prime()
        call.blast(20)
        assert recv_count(call.callee, (RELAY_IP, call.p), 20) == 20
        assert not relay.table_exists()
    finally:
        assert relay.stop() == 0
    strict = Relay(hosts, tmp_path, "mpk_t5", forwarding="kernel", wrapper=drop)
    assert strict.proc.wait(timeout=10) == 1
    assert "forwarding = kernel" in strict.text()
    strict.stop()


def test_hand_overs_of_a_burst_share_transactions(hosts, tmp_path):
    """Forty calls whose media starts in the same instant: their streams go to
    the kernel in a few netlink transactions (one per media pass), not forty
    round trips inside the pass, and every one of them is forwarded."""
    relay = Relay(hosts, tmp_path, "mpk_t8", port_range="40000:40400").wait_ready()
    try:
        calls = [Call(relay, hosts, call_id=f"burst{i}", caller_port=5100 + i,
                      callee_port=6100 + i).setup() for i in range(40)]
        for c in calls:
            c.callee.sendto(c.pkt(), (RELAY_IP, c.p))
        wait_until(lambda: relay.text().count("latched callee") >= 40, 5, "callees latched")
        for c in calls:
            c.caller.sendto(c.pkt(), (RELAY_IP, c.q))
        wait_until(lambda: len(relay.fwd_elements() or []) == 80, 5, "80 fwd elements")
        batches = [int(m) for m in re.findall(
            r"(\d+) sub-stream\(s\) handed over in one transaction", relay.text())]
        assert sum(batches) == 40, batches
        assert len(batches) <= 10, f"{len(batches)} transactions for 40 hand-overs: {batches}"
        for c in calls:
            c.caller.sendto(c.pkt(), (RELAY_IP, c.q))
        for c in calls:
            assert recv_count(c.callee, (RELAY_IP, c.p), 2) == 2
    finally:
        assert relay.stop() == 0
