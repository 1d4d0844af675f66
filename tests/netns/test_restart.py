"""A relay killed under load and started again keeps its calls (issue 13).

`mediaproxy --role combined` with `forwarding = kernel` in the relay
namespace carries calls with real RTP shaped as phones send it: one packet
per stream every 20 ms each way, interleaved across calls. Half the calls go
to a callee in the caller/callee namespaces (their streams are handed to the
kernel); the other half to a callee on the relay host itself, which the
kernel cannot forward to (a local address), so they stay in userspace.
While the traffic runs, the relay gets SIGKILL and is started again at once.
Asserted, as the phones and the operator see it:
  * kernel-forwarded streams lose no packet at all (the nftables table and
    its elements outlive the process and the new one adopts them);
  * userspace streams lose at most what arrived while no process ran, plus
    a 20 ms tick, and then flow again;
  * the module's `remove` for every call works after the restart and each
    final record counts exactly the packets the other phone received;
  * a state file of another relay (here: another port range) is refused and
    the table of the previous process is not adopted.
Needs root; skipped otherwise.
"""

import os
import re
import shutil
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration"))
sys.path.insert(0, str(HERE))

from mpclient import ModuleClient, rtp_packet  # noqa: E402
from netns import CALLEE_IP, CALLER_IP, RELAY_IP, Hosts, in_netns, sh  # noqa: E402
from test_kernel_forwarding import Relay, wait_until  # noqa: E402

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(shutil.which("nft") is None, reason="needs the nft tool"),
]

LOCAL_CALLEE_IP = "10.200.0.7"  # on the relay host: the kernel cannot forward there
CALLS = 200                     # half kernel, half userspace
TICK = 0.020                    # one packet per stream and direction every 20 ms
RUN_S = 4.0
KILL_AT_S = 1.5


@pytest.fixture
def hosts():
    h = Hosts(f"mpr{os.getpid() % 100000}").up()
    sh("ip", "-n", h.relay, "addr", "add", f"{LOCAL_CALLEE_IP}/32", "dev", "lo")
    try:
        yield h
    finally:
        h.close()


def udp_in(ns, ip):
    with in_netns(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    s.bind((ip, 0))
    s.setblocking(False)
    return s


class Call:
    def __init__(self, client, hosts, n, local):
        self.cid = f"restart-{n}"
        self.kernel = not local
        self.caller = udp_in(hosts.caller, CALLER_IP)
        self.callee = udp_in(hosts.relay, LOCAL_CALLEE_IP) if local else \
            udp_in(hosts.callee, CALLEE_IP)
        callee_ip = LOCAL_CALLEE_IP if local else CALLEE_IP
        common = dict(call_id=self.cid, cseq=1, from_uri="a@x", to_uri="b@y",
                      user_agent="test")
        r1 = client.update(type="request", from_tag="A", to_tag="", signaling_ip=CALLER_IP,
                           media=f"audio:{CALLER_IP}:{self.caller.getsockname()[1]}:"
                                 "sendrecv:ice=no", **common)
        r2 = client.update(type="reply", from_tag="A", to_tag="B", signaling_ip=callee_ip,
                           media=f"audio:{callee_ip}:{self.callee.getsockname()[1]}:"
                                 "sendrecv:ice=no", **common)
        self.p = int(r1.split()[1])  # the callee sends here
        self.q = int(r2.split()[1])  # the caller sends here
        self.sent = {"caller": 0, "callee": 0}
        self.got = {"caller": set(), "callee": set()}

    def send(self, who, seq):
        sock, port = (self.caller, self.q) if who == "caller" else (self.callee, self.p)
        try:
            sock.sendto(rtp_packet(0, seq & 0xFFFF, seq * 160, 0x5000 + (who == "callee")),
                        (RELAY_IP, port))
        except (BlockingIOError, ConnectionRefusedError):
            pass  # nothing listens for a moment (userspace, relay down): lost
        self.sent[who] += 1

    def drain(self):
        for who, sock in (("caller", self.caller), ("callee", self.callee)):
            while True:
                try:
                    data, _ = sock.recvfrom(2048)
                except (BlockingIOError, ConnectionRefusedError):
                    break
                self.got[who].add(int.from_bytes(data[2:4], "big"))


def prime(calls, relay):
    """Latching both ways (the callee first, whose datagram is dropped)."""
    for c in calls:
        c.send("callee", 0)
    time.sleep(0.05)  # ordering: callee latched before the caller's first packet
    for c in calls:
        c.send("caller", 0)
    wait_until(lambda: len(relay.fwd_elements() or []) == CALLS, 5,
               "the kernel calls handed over (two elements each)")
    time.sleep(0.05)
    for c in calls:
        c.drain()


@pytest.mark.parametrize("receive", ["sockets", "tproxy"])
@pytest.mark.parametrize("how", ["kill", "upgrade"])
def test_restart_under_load_loses_no_kernel_packet(hosts, tmp_path, how, receive):
    """how = kill: SIGKILL and a new start. how = upgrade: `mediaproxy
    --upgrade` takes the sockets over from the running process, so that no
    stream loses a packet, in the kernel or in userspace. receive = tproxy:
    userspace media arrives through the one tproxy socket (media_receive),
    which an upgrade hands over too (same port, what it queued read by the
    new process) and a new start replaces; a clean exit deletes its table."""
    relay = Relay(hosts, tmp_path, "mpr_t1", port_range="40000:41000",
                  media_receive=receive).wait_ready()
    steered = "media receive: every media port through one socket per IP family"
    assert (steered in relay.text()) == (receive == "tproxy"), relay.text()
    client = ModuleClient(relay.sock)
    calls = [Call(client, hosts, n, local=n % 2 == 1) for n in range(CALLS)]
    prime(calls, relay)
    sent_before = {c.cid: dict(c.sent) for c in calls}

    stop = threading.Event()

    def traffic():
        seq, t = 1, time.monotonic()
        while not stop.is_set():
            for c in calls:
                c.send("caller", seq)
                c.send("callee", seq)
            seq += 1
            t += TICK
            time.sleep(max(0.0, t - time.monotonic()))  # the 20 ms RTP clock

    th = threading.Thread(target=traffic)
    th.start()
    try:
        time.sleep(KILL_AT_S)  # media flowing in both paths
        down_at = time.monotonic()
        if how == "kill":
            relay.stop(signal.SIGKILL)
            again = Relay(hosts, tmp_path, "mpr_t1", port_range="40000:41000",
                          media_receive=receive)
            again.wait_ready()
        else:
            again = Relay(hosts, tmp_path, "mpr_t1", port_range="40000:41000",
                          media_receive=receive, extra_args=("--upgrade",))
            assert relay.proc.wait(timeout=10) == 0, relay.text()
            wait_until(lambda: "started: role" in again.text(), 10, "the new process started")
        downtime = time.monotonic() - down_at
        time.sleep(RUN_S - KILL_AT_S)
    finally:
        stop.set()
        th.join()
    time.sleep(0.3)  # the last packets in flight
    for c in calls:
        c.drain()
    try:
        assert f"{CALLS} session(s) restored, 0 not; {CALLS} kernel rule(s) kept" in again.text(), \
            again.text()
        assert downtime < 1.0, f"restart took {downtime:.2f} s"
        # What arrived while no process ran, what the old process had not
        # read yet, and a tick either side.
        per_stream_budget = int(downtime / TICK) + 3
        lost = {c.cid: {w: c.sent[w] - sent_before[c.cid][w] - len(c.got[o] - {0})
                        for w, o in (("caller", "callee"), ("callee", "caller"))} for c in calls}
        print(f"{how}: restart in {downtime * 1000:.0f} ms; lost per stream, kernel: "
              f"{max(max(v.values()) for k, v in lost.items() if int(k.split('-')[1]) % 2 == 0)}"
              f", userspace: max "
              f"{max(max(v.values()) for k, v in lost.items() if int(k.split('-')[1]) % 2 == 1)}"
              f" of {min(c.sent['caller'] for c in calls) - 1} sent each way")
        for c in calls:
            for who, other in (("caller", "callee"), ("callee", "caller")):
                sent = c.sent[who] - sent_before[c.cid][who]
                got = len(c.got[other] - {0})  # without the priming datagram
                if c.kernel or how == "upgrade":
                    assert got == sent, f"{c.cid} {who}: {sent - got} of {sent} lost ({how})"
                else:
                    assert sent - got <= per_stream_budget, \
                        f"{c.cid} {who} (userspace): {sent - got} of {sent} lost"
                    assert max(c.got[other]) == max(range(c.sent[who])), \
                        f"{c.cid} {who}: userspace media did not resume"
        client = ModuleClient(again.sock)
        for c in calls:
            assert client.remove(c.cid, "A", "B") == "removed"
        records = {r["call_id"]: r for r in again.session_records()}
        for c in calls:
            st = records[c.cid]["streams"][0]
            # The priming datagrams included: the caller's reached the callee,
            # the callee's came before the caller was latched.
            assert st["caller_packets"] == len(c.got["callee"]), (c.cid, st)
            assert st["callee_packets"] == len(c.got["caller"]), (c.cid, st)
            assert st["forwarding"] == ("kernel" if c.kernel else "userspace"), st
        if receive == "tproxy":
            assert steered in again.text(), again.text()
            if how == "upgrade":  # the same socket, handed over
                port = re.search(steered + r".* steers them to [0-9.]+:(\d+)", relay.text())[1]
                assert re.search(steered + r".* steers them to [0-9.]+:" + port + r"\)",
                                 again.text()), again.text()
    finally:
        assert again.stop() == 0
    assert not again.table_exists()
    assert sh("ip", "netns", "exec", hosts.relay, "nft", "list", "table", "inet", "mpr_t1",
              check=False).returncode != 0, "the tproxy table is deleted at a clean exit"


def test_state_file_of_another_port_range_is_refused(hosts, tmp_path):
    relay = Relay(hosts, tmp_path, "mpr_t2", port_range="40000:41000").wait_ready()
    client = ModuleClient(relay.sock)
    calls = [Call(client, hosts, n, local=False) for n in range(2)]
    for c in calls:
        c.send("callee", 0)
    time.sleep(0.05)
    for c in calls:
        c.send("caller", 0)
    wait_until(lambda: len(relay.fwd_elements() or []) == 4, 5, "hand-over")
    relay.stop(signal.SIGKILL)
    again = Relay(hosts, tmp_path, "mpr_t2", port_range="40000:40500").wait_ready()
    try:
        text = again.text()
        assert re.search(r"state file .* ignored, starting without sessions: .*another relay",
                         text), text
        assert "restored" not in text
        assert again.fwd_elements() == [], "the previous process's rules are not adopted"
    finally:
        assert again.stop() == 0


def test_table_of_another_relay_instance_is_never_touched(hosts, tmp_path):
    """Two relay instances on one host with the same nft_table by mistake:
    the second neither deletes nor adopts the first one's table."""
    (tmp_path / "a").mkdir()
    first = Relay(hosts, tmp_path / "a", "mpr_t3", state_file="none").wait_ready()
    client = ModuleClient(first.sock)
    call = Call(client, hosts, 0, local=False)
    call.send("callee", 0)
    time.sleep(0.05)
    call.send("caller", 0)
    wait_until(lambda: len(first.fwd_elements() or []) == 2, 5, "hand-over")
    try:
        (tmp_path / "b").mkdir()
        second = Relay(hosts, tmp_path / "b", "mpr_t3", relay_ip=LOCAL_CALLEE_IP)
        assert second.proc.wait(timeout=10) != 0, "forwarding = kernel must refuse to start"
        text = second.text()
        assert f"belongs to the relay at {RELAY_IP}" in text and "set a different nft_table" \
            in text, text
        assert len(first.fwd_elements() or []) == 2, "the first instance's rules are intact"
        call.send("caller", 1)

        def forwarded():
            call.drain()
            return 1 in call.got["callee"]
        wait_until(forwarded, 2, "the first instance still forwarding")
    finally:
        assert first.stop() == 0
