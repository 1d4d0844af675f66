#!/usr/bin/env python3
"""Management dumps versus call set-up: how long a `sessions` dump delays the proxy module's
`update` requests (issue 14 part 4).

See bench/README.md, section "Management dumps". Everything runs on loopback; no root needed.

    bench/dump_bench.py --binary old=/work/main/build-bench/mediaproxy \\
                        --binary new=build-rel/mediaproxy [--sessions 1000,10000,50000]
                        [--seconds 6] [--rate 200] [--out FILE.json]

Per binary and table size, one fresh server in the combined role (plain-TCP management on
127.0.0.1, log level warning, userspace forwarding, the default state file, stream_timeout one
hour). The table is filled through the module socket with answered audio calls (offer and
answer, ~900 bytes of JSON each); every call holds four relay ports, so the relay needs a
wide --ports range and four descriptors: with the usual limit of 20,000 open files, one
process holds ~4,900 calls at most (larger tables need several relays, hence the default sizes).
So that those ports never meet anyone else's, the bench runs in a network namespace of its own
(it re-executes itself under `unshare --net` with loopback up; root needed). The dumper runs
at nice 19 and the probe, as root, under SCHED_FIFO, so that on a small machine the probe's
own wait for a CPU does not count as the server's delay.
Then two phases of --seconds each:

  quiet   a probe process sends --rate offers per second on its own module connection (a new
          call each, removed right after, so the table keeps its size) and times each offer
          from send to reply;
  dumps   the same probe, while a dumper process asks `sessions` on one management connection
          over and over (at most --max-dumps), reading each answer as fast as it can.

Reported per phase: offer latency p50/p99/max (ms); for the dumps: how many completed, their
mean time and size, the server's CPU per dump (CPU of the dump phase minus that of the quiet
phase, divided by the dumps), and the server's RSS growth (highest RSS sampled every 5 ms
during the phase minus RSS before it). Every loop is bounded in count and time. Standard
library only.
"""

import argparse
import json
import multiprocessing as mpr
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
procs = []


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def free_tcp_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def proc_cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss(pid):
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE


class Module:
    """One module connection (spec A.2): requests, one reply line each."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect(path)
        self.buf = b""

    def send(self, command, headers):
        out = command + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
        self.sock.sendall(out.encode())

    def reply(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("module socket closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode()


def update(call, typ, to_tag="", cseq=1):
    port = 2 * (call % 30000) + 2000
    media = f"audio:127.0.0.2:{port}:sendrecv:ice=no" if typ == "request" else \
        f"audio:127.0.0.3:{port}:sendrecv:ice=no"
    return [("type", typ), ("dialog_id", f"{call}:1"), ("call_id", f"bench-{call}"),
            ("cseq", str(cseq)), ("from_uri", f"sip:alice{call}@example.com"),
            ("to_uri", f"sip:bob{call}@example.net"), ("from_tag", f"ft{call}"),
            ("to_tag", to_tag), ("user_agent", "Bench/1.0"), ("signaling_ip", "127.0.0.2"),
            ("media_relay", ""), ("media", media)]


def fill(path, n, window=200):
    """n answered calls, `window` requests in flight on one connection."""
    m = Module(path)
    reqs = []
    for i in range(n):
        reqs.append(("update", update(i, "request")))
        reqs.append(("update", update(i, "reply", f"tt{i}")))
    sent = answered = 0
    while answered < len(reqs):
        while sent < len(reqs) and sent - answered < window:
            m.send(*reqs[sent])
            sent += 1
        r = m.reply()
        if r == "error":
            raise RuntimeError(f"filling: request {answered} answered error")
        answered += 1
    m.sock.close()


def dumper(port, seconds, max_dumps, queue):
    """Asks `sessions` again and again; puts (seconds, bytes) of each complete answer."""
    os.nice(19)
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    deadline = time.monotonic() + seconds
    results = []
    while time.monotonic() < deadline and len(results) < max_dumps:
        t0 = time.perf_counter()
        s.sendall(b"sessions\r\n")
        size, tail = 0, b""
        while True:
            chunk = s.recv(1 << 20)
            if not chunk:
                raise ConnectionError("management connection closed")
            size += len(chunk)
            tail = (tail + chunk)[-2:]
            if tail == b"\r\n":
                break
        results.append((time.perf_counter() - t0, size))
    s.close()
    queue.put(results)


def probe(path, pid, seconds, rate, first_call):
    """Offers at `rate`/s for `seconds` (each call removed afterwards): latencies in seconds,
    the highest RSS sampled (every 5 ms, between probes)."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except (PermissionError, AttributeError, OSError):
        pass
    m = Module(path)
    lat, peak = [], proc_rss(pid)
    interval = 1.0 / rate
    start = time.monotonic()
    deadline = start + seconds
    nxt = start
    call = first_call
    while time.monotonic() < deadline and len(lat) < rate * seconds + 1:
        while time.monotonic() < nxt:
            peak = max(peak, proc_rss(pid))
            time.sleep(min(0.005, max(0.0, nxt - time.monotonic())))
        nxt += interval
        t0 = time.perf_counter()
        m.send("update", update(call, "request"))
        r = m.reply()
        lat.append(time.perf_counter() - t0)
        if r == "error":
            raise RuntimeError("probe offer answered error")
        m.send("remove", [("call_id", f"bench-{call}"), ("from_tag", f"ft{call}"),
                          ("to_tag", "")])
        m.reply()
        call += 1
    m.sock.close()
    return lat, max(peak, proc_rss(pid))


def _probe_child(queue, *a):
    queue.put(probe(*a))


def probe_in_process(*a):
    """probe() in a process of its own (its scheduling class is its own)."""
    q = mpr.Queue()
    pr = mpr.Process(target=_probe_child, args=(q,) + a)
    pr.start()
    res = q.get(timeout=a[2] + 60)
    pr.join(timeout=10)
    return res


def raise_fd_limit():
    """Room for four sockets per call (root may raise the hard limit; others keep theirs)."""
    import resource
    want = 4 * 16384 + 4096
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), max(hard, want)))
    except (ValueError, OSError):
        pass


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def run_one(name, binary, n, args):
    work = tempfile.mkdtemp(prefix="mp-dump-", dir="/tmp")
    port = free_tcp_port()
    ini = os.path.join(work, "mediaproxy.ini")
    with open(ini, "w") as f:
        f.write(f"[General]\nrole = combined\nruntime_dir = {work}\nlog_level = warning\n\n"
                f"[Dispatcher]\nsocket_path = dispatcher.sock\n"
                f"listen_management = 127.0.0.1:{port}\nmanagement_use_tls = no\n\n"
                f"[Relay]\nrelay_ip = {args.relay_ip}\nport_range = {args.ports}\n"
                "forwarding = userspace\nstream_timeout = 3600\n")
    err = open(os.path.join(work, "stderr.log"), "w")
    p = subprocess.Popen([binary, "--foreground", "--config", ini], stdout=err, stderr=err,
                         preexec_fn=raise_fd_limit)
    procs.append(p)
    path = os.path.join(work, "dispatcher.sock")
    deadline = time.monotonic() + 10
    while not os.path.exists(path):
        if p.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not start; see {work}/stderr.log")
        time.sleep(0.05)
    try:
        t0 = time.monotonic()
        fill(path, n)
        log(f"  {name} n={n}: table filled in {time.monotonic() - t0:.1f} s")
        res = {"binary": name, "sessions": n}
        rss0 = proc_rss(p.pid)
        cpu0 = proc_cpu(p.pid)
        lat, peak = probe_in_process(path, p.pid, args.seconds, args.rate, 10_000_000)
        cpu_quiet = proc_cpu(p.pid) - cpu0
        res["quiet"] = {"p50_ms": pct(lat, .5) * 1e3, "p99_ms": pct(lat, .99) * 1e3,
                        "max_ms": max(lat) * 1e3, "offers": len(lat),
                        "rss_growth_mb": (peak - rss0) / 2**20}
        q = mpr.Queue()
        d = mpr.Process(target=dumper, args=(port, args.seconds, args.max_dumps, q))
        rss0 = proc_rss(p.pid)
        cpu0 = proc_cpu(p.pid)
        d.start()
        lat, peak = probe_in_process(path, p.pid, args.seconds, args.rate, 20_000_000)
        dumps = q.get(timeout=120)
        d.join(timeout=10)
        cpu_dumps = proc_cpu(p.pid) - cpu0
        res["dumps"] = {"p50_ms": pct(lat, .5) * 1e3, "p99_ms": pct(lat, .99) * 1e3,
                        "max_ms": max(lat) * 1e3, "offers": len(lat),
                        "rss_growth_mb": (peak - rss0) / 2**20,
                        "dumps": len(dumps),
                        "dump_ms": statistics.mean(t for t, _ in dumps) * 1e3 if dumps else None,
                        "dump_mb": statistics.mean(b for _, b in dumps) / 2**20 if dumps else None,
                        "cpu_ms_per_dump": (cpu_dumps - cpu_quiet) * 1e3 / len(dumps)
                        if dumps else None}
        return res
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", action="append", required=True, help="NAME=PATH, repeatable")
    ap.add_argument("--sessions", default="1000,2000,4000")
    ap.add_argument("--seconds", type=float, default=6.0, help="length of each phase")
    ap.add_argument("--rate", type=int, default=200, help="offers per second of the probe")
    ap.add_argument("--max-dumps", type=int, default=1000)
    ap.add_argument("--relay-ip", default="127.0.0.1", help="the relay's loopback address")
    ap.add_argument("--ports", default="10000:65000", help="the relay's port_range")
    ap.add_argument("--no-netns", action="store_true", help="run in the current namespace")
    ap.add_argument("--out", help="write the results as JSON here too")
    args = ap.parse_args()
    if not args.no_netns and os.environ.get("MP_DUMP_BENCH_NETNS") != "1":
        # Our own network namespace: nobody else's ports, loopback only.
        env = dict(os.environ, MP_DUMP_BENCH_NETNS="1")
        cmd = "ip link set lo up && exec \"$@\""
        os.execvpe("unshare", ["unshare", "--net", "sh", "-c", cmd, "sh", sys.executable,
                               os.path.abspath(__file__)] + sys.argv[1:], env)
    bins = [(n, os.path.abspath(b)) for n, b in (x.split("=", 1) for x in args.binary)]
    results = []
    try:
        for n in [int(x) for x in args.sessions.split(",")]:
            for name, path in bins:  # old and new alternate at every size
                results.append(run_one(name, path, n, args))
                r = results[-1]
                log(f"  {name} n={n}: quiet p99 {r['quiet']['p99_ms']:.2f} ms; dumps p99 "
                    f"{r['dumps']['p99_ms']:.2f} max {r['dumps']['max_ms']:.2f} ms")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    hdr = (f"{'binary':8} {'sessions':>8} | {'quiet p50/p99/max ms':>22} | "
           f"{'during dumps p50/p99/max ms':>28} | {'dumps':>5} {'ms/dump':>8} {'MB/dump':>8} "
           f"{'CPU ms/dump':>11} {'RSS +MB':>8}")
    print(hdr)
    print("-" * len(hdr))
    for r in results:
        q, d = r["quiet"], r["dumps"]
        print(f"{r['binary']:8} {r['sessions']:>8} | {q['p50_ms']:6.2f} {q['p99_ms']:6.2f} "
              f"{q['max_ms']:7.2f} | {d['p50_ms']:7.2f} {d['p99_ms']:8.2f} {d['max_ms']:9.2f} | "
              f"{d['dumps']:>5} {d['dump_ms'] or 0:8.1f} {d['dump_mb'] or 0:8.2f} "
              f"{d['cpu_ms_per_dump'] or 0:11.1f} {d['rss_growth_mb']:8.1f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
