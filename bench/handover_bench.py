#!/usr/bin/env python3
"""Kernel hand-over burst benchmark (issue 14): answer many calls at once while
other streams carry media, and measure what the burst does to that media.

Three network namespaces (caller, relay, callee; tests/netns/netns.py), one
`mediaproxy --role combined` with `forwarding = kernel` in the relay. First
RUNNING calls carry RTP shaped as phones send it (one packet per stream
every 20 ms, interleaved) from the caller namespace to a callee on the relay
host itself, which the kernel cannot forward to (a local address): their
packets go through the relay's userspace media path, the one a hand-over
burst could stall. Then NEW calls are set up over the module socket and
their media starts within --spread seconds (one datagram each way per call,
evenly spread; 0: all in the same instant): every one of them is handed to
the kernel. Reported, for the running streams, the
one-way delay of every packet (receive time minus the send time written
into the packet; same host clock) before the burst (the baseline of the
same run) and from the burst's first packet to one second after the last
hand-over; the time until all new calls are in the kernel; the netlink
transactions that carried them (metrics); the relay's CPU time.

Sender and receiver are child processes of their own (no shared
interpreter lock with the set-up). Needs root. Bounded: RUNNING x 50 pps
for a few seconds, NEW calls once.

    sudo bench/handover_bench.py --mediaproxy build-bench/mediaproxy \\
        --running 200 --new 1000
"""

import argparse
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
sys.path.insert(0, os.path.join(ROOT, "tests", "netns"))
from mpclient import ModuleClient  # noqa: E402
from netns import CALLEE_IP, CALLER_IP, RELAY_IP, Hosts, in_netns, sh  # noqa: E402

LOCAL_CALLEE_IP = "10.200.0.7"
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
TICK = 0.020
PKT = struct.Struct("!BBHIQI")  # RTP-ish header: V/PT, seq, ts-ish, send_ns, stream


def udp_in(ns, ip, port=0):
    with in_netns(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
    s.bind((ip, port))
    return s


def payload(stream, seq):
    head = PKT.pack(0x80, 0, seq & 0xFFFF, 0, time.time_ns(), stream)
    return head + bytes(160 - len(head) + 12)


# ---- child processes -----------------------------------------------------------

def run_sender(args):
    """Every 20 ms one packet to each running stream's relay port, until the deadline."""
    ports = json.loads(args.ports)
    with in_netns(args.ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((args.ip, args.port))
    # The streams' packets spread over the 20 ms: SLOTS groups, one every
    # TICK / SLOTS, as independent phones would send them.
    slots = 10
    seq, t = 1, time.monotonic()
    end = t + args.seconds
    while t < end:
        for slot in range(slots):
            for i in range(slot, len(ports), slots):
                s.sendto(payload(i, seq), (RELAY_IP, ports[i]))
            t += TICK / slots
            time.sleep(max(0.0, t - time.monotonic()))
        seq += 1
    print(seq - 1)


def run_receiver(args):
    """Records (send_ns, delay_ns) of every packet until `seconds` without any.
    The arrival time is the kernel's (SO_TIMESTAMPNS, when the datagram
    reached the socket), so the receiver's own lag is not counted."""
    with in_netns(args.ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024 * 1024)
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    s.bind((args.ip, args.port))
    s.settimeout(args.seconds)
    out = []
    try:
        while True:
            data, anc, _, _ = s.recvmsg(2048, 64)
            now = time.time_ns()
            for level, kind, value in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
                    sec, nsec = struct.unpack("qq", value[:16])
                    now = sec * 1_000_000_000 + nsec
            if len(data) >= PKT.size:
                sent = PKT.unpack_from(data)[4]
                out.append((sent, now - sent))
    except socket.timeout:
        pass
    with open(args.out, "w") as f:
        json.dump(out, f)


# ---- orchestration ---------------------------------------------------------------

def kernel_elements(hosts):
    """fwd_map elements, for a binary without the hand-over metrics."""
    r = sh("ip", "netns", "exec", hosts.relay, "nft", "list", "map", "netdev", "mph_bench",
           "fwd_map", check=False)
    return r.stdout.count("counter packets")


def metric(hosts, port, name):
    with in_netns(hosts.relay):
        c = socket.create_connection(("127.0.0.1", port), timeout=2)
    c.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
    text = b""
    while True:
        chunk = c.recv(65536)
        if not chunk:
            break
        text += chunk
    c.close()
    for line in text.decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values, p):
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(p / 100 * len(v)))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mediaproxy", default=os.path.join(ROOT, "build-bench", "mediaproxy"))
    ap.add_argument("--running", type=int, default=200)
    ap.add_argument("--new", type=int, default=1000)
    ap.add_argument("--spread", type=float, default=1.0,
                    help="seconds over which the new calls' media starts (0: all at once)")
    ap.add_argument("--child", choices=["sender", "receiver"])
    ap.add_argument("--ns"), ap.add_argument("--ip"), ap.add_argument("--port", type=int)
    ap.add_argument("--ports"), ap.add_argument("--seconds", type=float)
    ap.add_argument("--out")
    a = ap.parse_args()
    if a.child == "sender":
        return run_sender(a)
    if a.child == "receiver":
        return run_receiver(a)
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces)")

    hosts = Hosts(f"mph{os.getpid() % 100000}").up()
    work = tempfile.mkdtemp(prefix="handover-bench.")
    mp = None
    children = []
    try:
        sh("ip", "-n", hosts.relay, "addr", "add", f"{LOCAL_CALLEE_IP}/32", "dev", "lo")
        pairs = 2 * (a.running + a.new) + 64
        metrics_port = 9109
        ini = os.path.join(work, "mp.ini")
        with open(ini, "w") as f:
            f.write(f"[General]\nrole = combined\nruntime_dir = {work}/run\nlog_level = info\n"
                    f"[Dispatcher]\nlisten_management = none\n"
                    f"[Metrics]\nlisten = 127.0.0.1:{metrics_port}\n"
                    f"[Relay]\nrelay_ip = {RELAY_IP}\nforwarding = kernel\n"
                    f"port_range = 40000:{40000 + 2 * pairs}\nstream_timeout = 600\n"
                    f"nft_table = mph_bench\nstate_file = none\n")
        log = open(os.path.join(work, "mediaproxy.log"), "w")
        mp = subprocess.Popen(["ip", "netns", "exec", hosts.relay, a.mediaproxy, "--foreground",
                               "--config", ini], stdout=log, stderr=log)
        sock = os.path.join(work, "run", "dispatcher.sock")
        deadline = time.monotonic() + 10
        while not os.path.exists(sock):
            if time.monotonic() > deadline or mp.poll() is not None:
                sys.exit("mediaproxy did not start: see " + log.name)
            time.sleep(0.02)  # polling for the socket file
        time.sleep(0.1)
        client = ModuleClient(sock, timeout=5)
        pid = mp.pid  # `ip netns exec` runs the binary in its own process

        def setup(cid, caller, callee_ip, callee):
            common = dict(call_id=cid, cseq=1, from_uri="a@x", to_uri="b@y", user_agent="bench")
            r1 = client.update(type="request", from_tag="A", to_tag="", signaling_ip=CALLER_IP,
                               media=f"audio:{CALLER_IP}:{caller}:sendrecv:ice=no", **common)
            r2 = client.update(type="reply", from_tag="A", to_tag="B", signaling_ip=callee_ip,
                               media=f"audio:{callee_ip}:{callee}:sendrecv:ice=no", **common)
            return int(r1.split()[1]), int(r2.split()[1])  # callee sends to p, caller to q

        # Running calls: caller (caller ns, port 7000) -> callee on the relay host (port 7001).
        run_calls = [setup(f"run-{i}", 7000, LOCAL_CALLEE_IP, 7001) for i in range(a.running)]
        callee_run = udp_in(hosts.relay, LOCAL_CALLEE_IP, 7001)
        for p, q in run_calls:
            callee_run.sendto(b"\x80" + bytes(171), (RELAY_IP, p))  # latches the callee
        callee_run.close()
        seconds = 6.0
        rx_out = os.path.join(work, "rx.json")
        me = [sys.executable, os.path.abspath(__file__)]
        receiver = subprocess.Popen(me + ["--child", "receiver", "--ns", hosts.relay, "--ip",
                                          LOCAL_CALLEE_IP, "--port", "7001", "--seconds", "1.5",
                                          "--out", rx_out])
        children.append(receiver)
        time.sleep(0.2)
        sender = subprocess.Popen(me + ["--child", "sender", "--ns", hosts.caller, "--ip",
                                        CALLER_IP, "--port", "7000", "--seconds", str(seconds),
                                        "--ports", json.dumps([q for p, q in run_calls])],
                                  stdout=subprocess.PIPE)
        children.append(sender)
        time.sleep(2.0)  # baseline window

        # The burst: NEW calls answered, their media starting at once.
        new_caller = udp_in(hosts.caller, CALLER_IP, 7100)
        new_callee = udp_in(hosts.callee, CALLEE_IP, 7101)
        before = metric(hosts, metrics_port, "mediaproxy_relay_kernel_handovers_total")
        tx_before = metric(hosts, metrics_port,
                           "mediaproxy_relay_kernel_handover_transactions_total")
        cpu0 = cpu_seconds(pid)
        burst_start = time.time_ns()
        new_calls = [setup(f"new-{i}", 7100, CALLEE_IP, 7101) for i in range(a.new)]
        setup_done = time.time_ns()
        # Their media starts within one second, spread evenly (a call every
        # ms for 1,000): the callee's first datagram, then the caller's.
        media_start = time.time_ns()
        spread = a.spread / max(1, len(new_calls))
        t = time.monotonic()
        for p, q in new_calls:
            new_callee.sendto(b"\x80" + bytes(171), (RELAY_IP, p))
            new_caller.sendto(b"\x80" + bytes(171), (RELAY_IP, q))
            t += spread
            if spread:
                time.sleep(max(0.0, t - time.monotonic()))
        in_kernel_at = None
        while time.time_ns() - media_start < 5e9:
            if before is None:  # an older binary: count the map's elements
                done = kernel_elements(hosts) // 2
            else:
                done = metric(hosts, metrics_port, "mediaproxy_relay_kernel_handovers_total")
                done -= before
            if done >= a.new:
                in_kernel_at = time.time_ns()
                break
            time.sleep(0.005)  # polling the metrics endpoint
        cpu1 = cpu_seconds(pid)
        transactions = metric(hosts, metrics_port,
                              "mediaproxy_relay_kernel_handover_transactions_total")
        transactions = None if transactions is None else transactions - tx_before
        sent_rounds = int(sender.communicate(timeout=seconds + 10)[0].decode().strip() or 0)
        receiver.wait(timeout=30)
        with open(rx_out) as f:
            samples = json.load(f)
        window_end = (in_kernel_at or media_start) + 1e9
        base = [d / 1e6 for s, d in samples if s < burst_start]
        burst = [d / 1e6 for s, d in samples if media_start <= s <= window_end]
        report = {
            "command": " ".join(sys.argv),
            "running_streams": a.running, "new_calls": a.new,
            "packets_sent": sent_rounds * a.running, "packets_received": len(samples),
            "setup_s": round((setup_done - burst_start) / 1e9, 3),
            "spread_s": a.spread,
            "all_new_in_kernel_s": (round((in_kernel_at - media_start) / 1e9, 3)
                                    if in_kernel_at else None),
            "handover_transactions": transactions,
            "relay_cpu_s_burst": round(cpu1 - cpu0, 3),
            "baseline_delay_ms": {"p50": round(pct(base, 50), 3), "p99": round(pct(base, 99), 3),
                                  "max": round(max(base), 3) if base else None, "n": len(base)},
            "burst_delay_ms": {"p50": round(pct(burst, 50), 3), "p99": round(pct(burst, 99), 3),
                               "max": round(max(burst), 3) if burst else None, "n": len(burst)},
        }
        print(json.dumps(report, indent=2))
    finally:
        for c in children:
            if c.poll() is None:
                c.kill()
        if mp and mp.poll() is None:
            mp.terminate()
            try:
                mp.wait(10)
            except subprocess.TimeoutExpired:
                mp.kill()
        hosts.close()


if __name__ == "__main__":
    main()
