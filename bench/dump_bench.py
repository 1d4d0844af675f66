#!/usr/bin/env python3
"""Management dumps versus call set-up: how long a `sessions` dump delays the proxy module's
`update` requests (issue 14 part 4).

See bench/README.md, section "Management dumps". Everything runs on loopback; no root needed.

    bench/dump_bench.py --binary old=/work/main/build-bench/mediaproxy \\
                        --binary new=build-rel/mediaproxy [--sessions 1000,2000,4000]
                        [--mode combined|distributed] [--seconds 6] [--rate 200] [--out FILE.json]

--mode distributed: one `--role dispatcher` process and K `--role relay` processes (K =
sessions / --per-relay), relay k on 127.0.0.(k+2) over TLS with certs/ (see
start_distributed); every probe and fill reply is checked, and the table's size after each
phase. The rest of this text describes the combined mode; both measure the same way.

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

Reported per phase: offer latency p50/p99/max (ms); the server's event-loop turns (the
dispatcher's, in the distributed mode) from its metrics endpoint: how many kept the loop busy
longer than 5 ms and the bucket of the longest (a turn is what an offer can wait behind; an
offer's latency also holds the time the server was not running at all, which no turn shows),
the same for the turns' CPU time (`turn_cpu = yes`: a turn long in wall time but short in CPU
time waited for a CPU, one long in both is the server's own work),
and how often the server was preempted (involuntary context switches: a turn during which it
was is partly the machine's doing, not the server's);
for the dumps: how many completed, their
mean time and size, the server's CPU per dump (CPU of the dump phase minus that of the quiet
phase, divided by the dumps), and the server's RSS growth (highest RSS sampled every 5 ms
during the phase minus RSS before it). Every loop is bounded in count and time. Standard
library only.
"""

import argparse
import json
import multiprocessing as mpr
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
SERVER_NICE = 0  # --server-nice
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


def proc_preempted(pid):
    """Times the server was taken off the CPU while it wanted to run (involuntary context
    switches, all threads): a loop turn that contains one was partly not the server's work."""
    n = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("nonvoluntary_ctxt_switches:"):
                        n += int(line.split()[1])
        except OSError:
            pass
    return n


def proc_rss(pid):
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE


class Module:
    """One module connection (spec A.2): requests, one reply line each."""

    def __init__(self, path, timeout=5):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
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


UA = "Bench/1.0"  # --ua-pad lengthens it (it is in every session record twice)


def update(call, typ, to_tag="", cseq=1):
    port = 2 * (call % 30000) + 2000
    media = f"audio:127.1.0.2:{port}:sendrecv:ice=no" if typ == "request" else \
        f"audio:127.1.0.3:{port}:sendrecv:ice=no"
    return [("type", typ), ("dialog_id", f"{call}:1"), ("call_id", f"bench-{call}"),
            ("cseq", str(cseq)), ("from_uri", f"sip:alice{call}@example.com"),
            ("to_uri", f"sip:bob{call}@example.net"), ("from_tag", f"ft{call}"),
            ("to_tag", to_tag), ("user_agent", UA), ("signaling_ip", "127.1.0.2"),
            ("media_relay", ""), ("media", media)]


def _fill_slice(path, calls, batch):
    """Offers then answers for `calls`, `batch` calls at a time on one connection. A reply
    line carries no request id and the dispatcher writes replies in the order relays answer,
    so a call's answer is sent only once every offer of its batch is answered (otherwise it
    could reach the dispatcher before the call exists and be placed on another relay)."""
    m = Module(path, timeout=30)
    for start in range(0, len(calls), batch):
        chunk = calls[start:start + batch]
        for typ in ("request", "reply"):
            for i in chunk:
                m.send("update", update(i, typ, f"tt{i}" if typ == "reply" else ""))
            for _ in chunk:
                r = m.reply()
                if not r.startswith("127."):
                    raise RuntimeError(f"filling: {typ} answered {r[:60]!r}")
    m.sock.close()


def _fill_child(queue, *a):
    try:
        _fill_slice(*a)
        queue.put(None)
    except Exception as e:  # reported by fill()
        queue.put(repr(e))


def fill(path, n, conns=1, batch=100):
    """n answered calls over `conns` module connections (one process each)."""
    conns = max(1, min(conns, n))
    q = mpr.Queue()
    kids = [mpr.Process(target=_fill_child, args=(q, path, list(range(k, n, conns)), batch))
            for k in range(conns)]
    for k in kids:
        k.start()
    errors = [q.get(timeout=600) for _ in kids]
    for k in kids:
        k.join(timeout=10)
    errors = [e for e in errors if e]
    if errors:
        raise RuntimeError(f"filling failed: {errors[0]}")


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
    the highest RSS sampled (every 5 ms, between probes), and every reply that was not an
    offer's media ("127....") or a remove's "removed"."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except (PermissionError, AttributeError, OSError):
        pass
    m = Module(path)
    lat, peak, errors = [], proc_rss(pid), []
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
        if not r.startswith("127."):
            errors.append(f"offer {call}: {r[:60]!r}")
        else:
            m.send("remove", [("call_id", f"bench-{call}"), ("from_tag", f"ft{call}"),
                              ("to_tag", "")])
            r = m.reply()
            if r != "removed":  # the call stays: the table grows (checked after the phase)
                errors.append(f"remove {call}: {r[:60]!r}")
        call += 1
    m.sock.close()
    return lat, max(peak, proc_rss(pid)), errors


def _probe_child(queue, *a):
    try:
        queue.put(probe(*a))
    except Exception as e:  # e.g. the module socket timed out: reported by the parent
        queue.put(e)


def probe_in_process(*a):
    """probe() in a process of its own (its scheduling class is its own)."""
    q = mpr.Queue()
    pr = mpr.Process(target=_probe_child, args=(q,) + a)
    pr.start()
    res = q.get(timeout=a[2] + 60)
    pr.join(timeout=10)
    if isinstance(res, Exception):
        raise RuntimeError(f"probe: {res!r}")
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


def management(port, command, timeout=60):
    """One management command, its one reply line (bounded in size and time)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(command.encode() + b"\r\n")
    buf = b""
    deadline = time.monotonic() + timeout
    while not buf.endswith(b"\r\n"):
        if time.monotonic() > deadline or len(buf) > 1 << 30:
            raise RuntimeError(f"management {command}: no complete answer")
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        buf += chunk
    s.close()
    return buf.decode(errors="replace").strip()


def table_size(port):
    """Sessions as the relays count them (`summary`), and how many relays answer."""
    summary = json.loads(management(port, "summary"))
    return sum(r.get("session_count", 0) for r in summary), len(summary)


def wait_file(path, procs_, what, seconds=10):
    deadline = time.monotonic() + seconds
    while not os.path.exists(path):
        if any(p.poll() is not None for p in procs_) or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.05)  # polling interval


def ports_for(calls, spare=2000):
    """A port_range for `calls` calls: four ports each and `spare` for the probe. The
    width bounds the relay's descriptors (live and parked sockets alike are bound to a port
    of the range), which must stay under the open-file limit: a relay keeps the sockets of
    ended calls for reuse (up to half that limit, whatever the live calls hold), so a range
    much wider than the table lets the probe's calls pile up parked sockets until EMFILE."""
    width = 4 * calls + spare
    if width > 19000:
        raise SystemExit(f"{calls} calls need {width} ports (4 per call, {spare} spare), more "
                         "than the 19,000 descriptors a relay may use here: more relays")
    return f"10000:{10000 + width}"


def start(binary, ini_text, work, name):
    ini = os.path.join(work, f"{name}.ini")
    with open(ini, "w") as f:
        f.write(ini_text)
    err = open(os.path.join(work, f"{name}.log"), "w")
    def prepare():
        raise_fd_limit()
        if SERVER_NICE:
            os.setpriority(os.PRIO_PROCESS, 0, SERVER_NICE)

    p = subprocess.Popen([binary, "--foreground", "--config", ini], stdout=err, stderr=err,
                         preexec_fn=prepare)
    procs.append(p)
    return p


def loop_turns(metrics_port):
    """The server's event-loop turn histograms: {"wall": {le: cumulative count}, "cpu": ...}
    (mediaproxy_event_loop_turn_seconds and, with turn_cpu, ..._turn_cpu_seconds; {} for a
    histogram the binary does not export)."""
    try:
        with socket.create_connection(("127.0.0.1", metrics_port), timeout=10) as s:
            s.sendall(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    except OSError:
        return {"wall": {}, "cpu": {}}
    out = {"wall": {}, "cpu": {}}
    prefixes = {"wall": 'mediaproxy_event_loop_turn_seconds_bucket{le="',
                "cpu": 'mediaproxy_event_loop_turn_cpu_seconds_bucket{le="'}
    for line in data.decode(errors="replace").splitlines():
        for kind, prefix in prefixes.items():
            if line.startswith(prefix):
                le, count = line[len(prefix):].split('"} ')
                out[kind][float(le)] = int(float(count))
    return out


def turns_between(before, after):
    """Turns of a phase longer than 5 ms, and the upper bound (ms) of the longest one's
    bucket (inf: above the last bound; None: no histogram)."""
    if not before or not after:
        return None, None
    delta = {le: after[le] - before.get(le, 0) for le in after}
    total = delta[float("inf")]
    over_5ms = total - delta.get(0.005, 0)
    longest = min((le for le, c in delta.items() if c == total), default=float("inf"))
    return over_5ms, longest * 1e3


def metrics_extra(args):
    """The servers' [Metrics] lines beyond listen: each turn's CPU time too, unless the binary
    predates turn_cpu (--no-turn-cpu)."""
    return "" if args.no_turn_cpu else "turn_cpu = yes\n"


def start_combined(binary, n, args, work, port):
    ports = args.ports or ports_for(n, args.spare_ports)
    p = start(binary, f"[General]\nrole = combined\nruntime_dir = {work}/run\nlog_level = warning\n\n"
              f"[Metrics]\nlisten = 127.0.0.1:{port + 1}\n{metrics_extra(args)}\n"
              f"[Dispatcher]\nsocket_path = dispatcher.sock\n"
              f"listen_management = 127.0.0.1:{port}\nmanagement_use_tls = no\n\n"
              f"[Relay]\nrelay_ip = {args.relay_ip}\nport_range = {ports}\n"
              "forwarding = userspace\nstream_timeout = 3600\n", work, "combined")
    path = os.path.join(work, "run", "dispatcher.sock")
    wait_file(path, [p], f"combined server (see {work})")
    return p, [], path


def start_distributed(binary, n, args, work, port):
    """One dispatcher and K relays, each its own process (its own descriptor budget), on
    loopback: relay k on 127.0.0.(k+2). The dispatcher names a relay by the source address
    of its TLS connection, so relay k dials the dispatcher at its own address (the dispatcher
    listens on any; the address, added to lo, is then also the connection's source)."""
    k = args.relays or -(-n // args.per_relay)
    per = -(-n // k)
    ports = args.ports or ports_for(per, args.spare_ports)
    certs = os.path.abspath(args.certs)
    rpc = os.path.join(work, "proxy-rpc.sock")  # nobody listens: hang-up notices go nowhere
    disp = start(binary, f"[General]\nrole = dispatcher\nruntime_dir = {work}/disp\n"
                 "log_level = warning\n\n"
                 f"[Metrics]\nlisten = 127.0.0.1:{port + 1}\n{metrics_extra(args)}\n"
                 f"[Dispatcher]\nsocket_path = dispatcher.sock\nlisten = any:{args.relay_port}\n"
                 + (f"relay_timeout = {args.relay_timeout}\n" if args.relay_timeout else "") +
                 f"listen_management = 127.0.0.1:{port}\nmanagement_use_tls = no\n\n"
                 f"[OpenSIPS]\nsocket_path = none\n[Kamailio]\nsocket_path = {rpc}\n\n"
                 f"[TLS]\ncerts_path = {certs}\n", work, "dispatcher")
    path = os.path.join(work, "disp", "dispatcher.sock")
    wait_file(path, [disp], f"dispatcher (see {work})")
    relays = []
    for i in range(k):
        ip = f"127.0.0.{i + 2}"
        subprocess.run(["ip", "addr", "replace", f"{ip}/32", "dev", "lo"], check=True)
        relays.append(start(binary, f"[General]\nrole = relay\nruntime_dir = {work}/r{i}\n"
                            "log_level = warning\n\n"
                            f"[Relay]\nrelay_ip = {ip}\ndispatchers = {ip}:{args.relay_port}\n"
                            f"port_range = {ports}\nforwarding = userspace\n"
                            "stream_timeout = 3600\n\n"
                            f"[TLS]\ncerts_path = {certs}\n", work, f"relay{i}"))
    deadline = time.monotonic() + 30
    while table_size(port)[1] < k:
        if time.monotonic() > deadline or any(p.poll() is not None for p in [disp] + relays):
            raise RuntimeError(f"only {table_size(port)[1]} of {k} relays joined (see {work})")
        time.sleep(0.2)  # polling interval
    return disp, relays, path


def stop(ps):
    for p in ps:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in ps:
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def cpu_of(ps):
    return sum(proc_cpu(p.pid) for p in ps)


def run_one(name, binary, n, args):
    # Runtime directories on tmpfs, like /run in a deployment: the relays' state journals on
    # a busy disk stall their loops past the dispatcher's relay_timeout.
    work = tempfile.mkdtemp(prefix="mp-dump-", dir="/dev/shm" if os.path.isdir("/dev/shm")
                            else "/tmp")
    port = free_tcp_port()
    starter = start_distributed if args.mode == "distributed" else start_combined
    disp, relays, path = starter(binary, n, args, work, port)
    p = disp
    try:
        t0 = time.monotonic()
        fill(path, n, args.fill_conns, args.fill_batch)
        fill_s = time.monotonic() - t0
        size, nrelays = table_size(port)
        log(f"  {name} n={n}: table of {size} filled in {fill_s:.1f} s on {nrelays} relay(s)")
        if size != n:
            raise RuntimeError(f"{name}: {size} sessions after filling {n}")
        res = {"binary": name, "mode": args.mode, "sessions": n, "relays": nrelays,
               "fill_s": fill_s}
        rss0 = proc_rss(p.pid)
        cpu0, rcpu0 = proc_cpu(p.pid), cpu_of(relays)
        turns0, pre0 = loop_turns(port + 1), proc_preempted(p.pid)
        lat, peak, errs = probe_in_process(path, p.pid, args.seconds, args.rate, 10_000_000)
        cpu_quiet, rcpu_quiet = proc_cpu(p.pid) - cpu0, cpu_of(relays) - rcpu0
        turns1 = loop_turns(port + 1)
        over, longest = turns_between(turns0["wall"], turns1["wall"])
        over_cpu, longest_cpu = turns_between(turns0["cpu"], turns1["cpu"])
        res["quiet"] = {"p50_ms": pct(lat, .5) * 1e3, "p99_ms": pct(lat, .99) * 1e3,
                        "turns_over_5ms": over, "longest_turn_le_ms": longest,
                        "cpu_turns_over_5ms": over_cpu, "longest_cpu_turn_le_ms": longest_cpu,
                        "preempted": proc_preempted(p.pid) - pre0,
                        "max_ms": max(lat) * 1e3, "offers": len(lat),
                        "rss_growth_mb": (peak - rss0) / 2**20, "errors": errs,
                        "table_after": table_size(port)[0]}
        q = mpr.Queue()
        d = mpr.Process(target=dumper, args=(port, args.seconds, args.max_dumps, q))
        rss0 = proc_rss(p.pid)
        cpu0, rcpu0 = proc_cpu(p.pid), cpu_of(relays)
        turns0, pre0 = loop_turns(port + 1), proc_preempted(p.pid)
        d.start()
        lat, peak, errs = probe_in_process(path, p.pid, args.seconds, args.rate, 20_000_000)
        dumps = q.get(timeout=600)
        d.join(timeout=10)
        cpu_dumps, rcpu_dumps = proc_cpu(p.pid) - cpu0, cpu_of(relays) - rcpu0
        turns1 = loop_turns(port + 1)
        over, longest = turns_between(turns0["wall"], turns1["wall"])
        over_cpu, longest_cpu = turns_between(turns0["cpu"], turns1["cpu"])
        res["dumps"] = {"p50_ms": pct(lat, .5) * 1e3, "p99_ms": pct(lat, .99) * 1e3,
                        "turns_over_5ms": over, "longest_turn_le_ms": longest,
                        "cpu_turns_over_5ms": over_cpu, "longest_cpu_turn_le_ms": longest_cpu,
                        "preempted": proc_preempted(p.pid) - pre0,
                        "max_ms": max(lat) * 1e3, "offers": len(lat),
                        "rss_growth_mb": (peak - rss0) / 2**20,
                        "dumps": len(dumps),
                        "dump_ms": statistics.mean(t for t, _ in dumps) * 1e3 if dumps else None,
                        "dump_mb": statistics.mean(b for _, b in dumps) / 2**20 if dumps else None,
                        "cpu_ms_per_dump": (cpu_dumps - cpu_quiet) * 1e3 / len(dumps)
                        if dumps else None,
                        "relays_cpu_ms_per_dump": (rcpu_dumps - rcpu_quiet) * 1e3 / len(dumps)
                        if dumps and relays else None, "errors": errs,
                        "table_after": table_size(port)[0]}
        # One more dump, parsed: does it list the whole table?
        try:
            res["listed"] = len(json.loads(management(port, "sessions", timeout=120)))
        except (ValueError, RuntimeError, OSError) as e:
            res["listed"] = f"unreadable: {e!r}"[:120]
        res["errors_logged"] = sum(1 for f in os.listdir(work) if f.endswith(".log")
                                   for line in open(os.path.join(work, f), errors="replace")
                                   if " error " in line or "too many" in line.lower())
        for phase in ("quiet", "dumps"):
            if res[phase]["errors"]:
                log(f"  {name} n={n}: {len(res[phase]['errors'])} probe errors in the {phase} "
                    f"phase, first: {res[phase]['errors'][0]}")
            if res[phase]["table_after"] != n:
                log(f"  {name} n={n}: {res[phase]['table_after']} sessions after the {phase} "
                    f"phase, not {n}")
        if res["listed"] != n:
            log(f"  {name} n={n}: the last dump listed {res['listed']} sessions, not {n}")
        return res
    finally:
        stop([disp] + relays)
        for d in os.listdir(work):  # the state files go; the logs stay
            if os.path.isdir(os.path.join(work, d)):
                shutil.rmtree(os.path.join(work, d), ignore_errors=True)
        log(f"  {name} n={n}: logs in {work}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", action="append", required=True, help="NAME=PATH, repeatable")
    ap.add_argument("--mode", choices=("combined", "distributed"), default="combined",
                    help="one combined-role process, or a dispatcher and K relay processes")
    ap.add_argument("--sessions", default="1000,2000,4000")
    ap.add_argument("--seconds", type=float, default=6.0, help="length of each phase")
    ap.add_argument("--rate", type=int, default=200, help="offers per second of the probe")
    ap.add_argument("--max-dumps", type=int, default=1000)
    ap.add_argument("--relay-ip", default="127.0.0.1", help="the combined relay's address")
    ap.add_argument("--ports", help="every relay's port_range (default: 4 ports per call of "
                    "that relay + --spare-ports)")
    ap.add_argument("--spare-ports", type=int, default=2000,
                    help="ports of each relay's range beyond 4 per call (the probe's calls)")
    ap.add_argument("--relays", type=int, default=0,
                    help="distributed: number of relays (default: sessions / --per-relay)")
    ap.add_argument("--per-relay", type=int, default=4200,
                    help="distributed: most calls per relay when --relays is not given")
    ap.add_argument("--relay-timeout", type=float, default=0,
                    help="distributed: the dispatcher's relay_timeout (default: its own, 0.2 s)")
    ap.add_argument("--relay-port", type=int, default=25060, help="the dispatcher's relay port")
    ap.add_argument("--certs", default=os.path.join(os.path.dirname(__file__), "..", "certs"))
    ap.add_argument("--fill-conns", type=int, default=2,
                    help="module connections (processes) filling the table")
    ap.add_argument("--fill-batch", type=int, default=25,
                    help="calls in flight per filling connection (more, and relays of a busy "
                    "machine miss the dispatcher's relay_timeout of 0.2 s)")
    ap.add_argument("--ua-pad", type=int, default=0,
                    help="bytes added to the calls' user agent (larger session records)")
    ap.add_argument("--server-nice", type=int, default=0,
                    help="nice value of the mediaproxy processes (negative: root; so that other "
                    "users' builds on a shared machine do not starve them)")
    ap.add_argument("--no-turn-cpu", action="store_true",
                    help="do not ask the servers for each turn's CPU time (binaries older than "
                    "[Metrics] turn_cpu refuse the option)")
    ap.add_argument("--no-netns", action="store_true", help="run in the current namespace")
    ap.add_argument("--out", help="write the results as JSON here too")
    args = ap.parse_args()
    if args.mode == "distributed" and args.no_netns:
        raise SystemExit("--mode distributed adds loopback addresses: it needs its own namespace")
    if not args.no_netns and os.environ.get("MP_DUMP_BENCH_NETNS") != "1":
        # Our own network namespace: nobody else's ports, loopback only.
        env = dict(os.environ, MP_DUMP_BENCH_NETNS="1")
        cmd = "ip link set lo up && exec \"$@\""
        os.execvpe("unshare", ["unshare", "--net", "sh", "-c", cmd, "sh", sys.executable,
                               os.path.abspath(__file__)] + sys.argv[1:], env)
    global UA, SERVER_NICE
    SERVER_NICE = args.server_nice
    UA = "Bench/1.0" + (f" ({'x' * args.ua_pad})" if args.ua_pad > 0 else "")
    bins = [(n, os.path.abspath(b)) for n, b in (x.split("=", 1) for x in args.binary)]
    results = []
    try:
        for n in [int(x) for x in args.sessions.split(",")]:
            for name, path in bins:  # old and new alternate at every size
                try:
                    results.append(run_one(name, path, n, args))
                except Exception as e:  # one failed run does not lose the others
                    log(f"  {name} n={n}: FAILED: {e!r}")
                    results.append({"binary": name, "mode": args.mode, "sessions": n,
                                    "failed": repr(e)[:300]})
                    continue
                r = results[-1]
                log(f"  {name} n={n}: quiet p99 {r['quiet']['p99_ms']:.2f} ms; dumps p99 "
                    f"{r['dumps']['p99_ms']:.2f} max {r['dumps']['max_ms']:.2f} ms")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    hdr = (f"{'binary':8} {'sessions':>8} {'relays':>6} | {'quiet p50/p99/max ms':>22} | "
           f"{'during dumps p50/p99/max ms':>28} | {'dumps':>5} {'ms/dump':>8} {'MB/dump':>8} "
           f"{'CPU ms/dump':>11} {'RSS +MB':>8} {'listed':>7} {'errors':>6} | "
           f"{'turns >5ms quiet/dumps':>22} {'longest turn <= ms q/d':>22} "
           f"{'CPU turns >5ms q/d':>18} {'longest CPU turn <= ms q/d':>26} "
           f"{'preempted q/d':>13}")
    print(hdr)
    print("-" * len(hdr))
    for r in results:
        if "failed" in r:
            print(f"{r['binary']:8} {r['sessions']:>8} FAILED: {r['failed']}")
            continue
        q, d = r["quiet"], r["dumps"]
        print(f"{r['binary']:8} {r['sessions']:>8} {r['relays']:>6} | {q['p50_ms']:6.2f} "
              f"{q['p99_ms']:6.2f} {q['max_ms']:7.2f} | {d['p50_ms']:7.2f} {d['p99_ms']:8.2f} "
              f"{d['max_ms']:9.2f} | {d['dumps']:>5} {d['dump_ms'] or 0:8.1f} "
              f"{d['dump_mb'] or 0:8.2f} {d['cpu_ms_per_dump'] or 0:11.1f} "
              f"{d['rss_growth_mb']:8.1f} {str(r['listed'])[:7]:>7} "
              f"{len(q['errors']) + len(d['errors']):>6} | "
              f"{str(q['turns_over_5ms']):>10}/{str(d['turns_over_5ms']):<11} "
              f"{str(q['longest_turn_le_ms']):>10}/{str(d['longest_turn_le_ms']):<11} "
              f"{str(q['cpu_turns_over_5ms']):>8}/{str(d['cpu_turns_over_5ms']):<9} "
              f"{str(q['longest_cpu_turn_le_ms']):>12}/{str(d['longest_cpu_turn_le_ms']):<13} "
              f"{q['preempted']:>6}/{d['preempted']:<6}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
