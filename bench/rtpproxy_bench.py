#!/usr/bin/env python3
"""Control-plane benchmark over the rtpproxy control protocol: mediaproxy vs rtpengine 10.5.

See bench/README.md, section "rtpproxy control plane". Everything runs on loopback in the
current network namespace; no root needed (root lets it raise the priority of its processes).

    bench/rtpproxy_bench.py [--trials 3] [--calls 20000] [--clients 8] [--out FILE.json]

Per trial a fresh server process: rtpengine (`--listen-udp`, the rtpproxy-compatible control
listener) or mediaproxy (`[Rtpproxy] listen = udp:...`), alternating (rtpengine, mediaproxy,
rtpengine, mediaproxy, ...). The load generator bench/rtpp_load.c (compiled here with cc -O2)
drives it with --clients Kamailio-like clients doing U + L + D per call. Server CPU is the
utime + stime delta of /proc/<pid>/stat around the load generator's run (all threads), divided
by the calls that succeeded. Standard library only.
"""

import argparse
import json
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
NCPU = os.cpu_count() or 1
CLK_TCK = os.sysconf("SC_CLK_TCK")
E = os.environ

procs = []  # every process we started: killed by pid at exit


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def cleanup(*_):
    for p in procs:
        if p.poll() is None:
            try:
                p.kill()
                p.wait(timeout=2)
            except Exception:
                pass


def stop(p, wait=5.0):
    if p is None or p.poll() is not None:
        return
    try:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def free_udp_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def free_tcp_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def proc_cpu(pid):
    """utime + stime of the whole process (every thread, live or exited), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_runtime(pid):
    """Sum of the live threads' exact run time (schedstat), in seconds: a cross-check."""
    total = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            pass
    return total / 1e9


def ask(port, cmd, timeout=0.3):
    """One rtpproxy command; the reply without cookie, or None."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    cookie = f"probe{os.getpid()}_{time.monotonic_ns()}"
    try:
        s.sendto(f"{cookie} {cmd}".encode(), ("127.0.0.1", port))
        while True:
            data = s.recv(512).decode(errors="replace")
            c, _, body = data.partition(" ")
            if c == cookie:
                return body
    except OSError:
        return None
    finally:
        s.close()


class Server:
    """One server process for one trial."""

    def __init__(self, name, argv, port, workdir, cpu, nice, rt):
        self.name, self.argv, self.port, self.dir = name, argv, port, workdir
        self.cpu, self.nice, self.rt = cpu, nice, rt
        self.errlog = os.path.join(workdir, "stderr.log")
        self.proc = None

    def start(self):
        err = open(self.errlog, "w")
        pre = ["taskset", "-c", self.cpu] if self.cpu != "" else []
        pre += ["chrt", "-f", str(self.rt)] if self.rt else []
        self.proc = subprocess.Popen(pre + self.argv, stdout=err, stderr=err,
                                     preexec_fn=lambda: set_nice(self.nice))
        procs.append(self.proc)
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.proc.poll() is not None:
                return f"exited with status {self.proc.returncode}: {self.tail()}"
            if ask(self.port, "V") is not None:
                return None
            time.sleep(0.1)
        return f"did not answer V within 10 s: {self.tail()}"

    def tail(self, n=3):
        try:
            with open(self.errlog) as f:
                lines = [line.strip() for line in f if line.strip()]
            return " | ".join(lines[-n:]) or "(no output)"
        except OSError:
            return "(no log)"

    def stop(self):
        stop(self.proc)


def set_nice(n):
    if n:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, n)
        except OSError:
            pass


def rtpengine_argv(binary, port, pmin, pmax, threads):
    return [binary, "--config-file=none", "--table=-1", "--interface=127.0.0.1",
            f"--listen-udp=127.0.0.1:{port}", "--delete-delay=0", "--foreground",
            f"--port-min={pmin}", f"--port-max={pmax}", f"--num-threads={threads}",
            "--timeout=600", "--log-stderr", "--log-level=3"]


def mediaproxy_argv(binary, port, pmin, pmax, workdir, metrics_port=None, state=True,
                    receive=None):
    """metrics_port set: the `mediaproxy+sqlite` variant, with accounting into an SQLite file
    in the runtime directory and the metrics endpoint to watch its queue drain. state False:
    the `mediaproxy-nostate` variant, without the relay state file (sessions not kept across
    a restart), the baseline of what journalling every session costs. receive: a
    media_receive value (the `mediaproxy-sockets` variant: per-port sockets, the baseline of
    what the default's transparent port sockets cost a set-up); None: the default."""
    ini = os.path.join(workdir, "mediaproxy.ini")
    acct = ("accounting = database\n\n[Database]\ndburi = sqlite:accounting.db\n\n"
            f"[Metrics]\nlisten = 127.0.0.1:{metrics_port}\n\n") if metrics_port else "\n"
    with open(ini, "w") as f:
        f.write("[General]\nrole = combined\n"
                f"runtime_dir = {workdir}\nlog_level = warning\n\n"
                "[Dispatcher]\nlisten_management = none\n" + acct +
                f"[Relay]\nrelay_ip = 127.0.0.1\nport_range = {pmin}:{pmax}\n"
                "forwarding = userspace\nstream_timeout = 600\n" +
                ("" if state else "state_file = none\n") +
                (f"media_receive = {receive}\n" if receive else "") + "\n"
                f"[Rtpproxy]\nlisten = udp:127.0.0.1:{port}\n")
    return [binary, "--foreground", "--config", ini]


def accounted(metrics_port):
    """Records the accounting backend has stored (or found already stored), from /metrics."""
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return None
    n = 0
    for line in text.splitlines():
        if line.startswith("mediaproxy_accounting_records_total{") and (
                'result="stored"' in line or 'result="duplicate"' in line):
            n += int(float(line.rsplit(" ", 1)[1]))
    return n


def install_rtpengine():
    """Like run.sh: installs rtpengine-daemon while a policy-rc.d refuses service starts, so the
    system service never runs (we start our own instances). Root only; NO_INSTALL=1 skips it."""
    if os.geteuid() != 0 or E.get("NO_INSTALL", "0") == "1":
        return
    log("installing rtpengine-daemon (service start refused by policy-rc.d) ...")
    policy = "/usr/sbin/policy-rc.d"
    created = False
    if not os.path.exists(policy):
        with open(policy, "w") as f:
            f.write("#!/bin/sh\nexit 101\n")
        os.chmod(policy, 0o755)
        created = True
    try:
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "rtpengine-daemon"],
                       env=dict(E, DEBIAN_FRONTEND="noninteractive"), stdout=sys.stderr)
    finally:
        if created:
            os.remove(policy)


def build_mediaproxy(build_dir):
    log(f"building mediaproxy into {build_dir} ...")
    if not os.path.isdir(build_dir):
        subprocess.run(["meson", "setup", build_dir, "-Dbuildtype=release"], cwd=ROOT,
                       check=True, stdout=sys.stderr)
    subprocess.run(["ninja", "-C", build_dir, "mediaproxy"], cwd=ROOT, check=True,
                   stdout=sys.stderr)
    return os.path.join(build_dir, "mediaproxy")


def run_trial(a, kind, threads, binary, loadgen, work, trial_no):
    port = free_udp_port()
    wd = tempfile.mkdtemp(prefix=f"{kind}-{trial_no}-", dir=work)
    if kind == "rtpengine":
        argv = rtpengine_argv(binary, port, a.pmin, a.pmax, threads)
        name = f"rtpengine/{threads}t"
    else:
        metrics_port = free_tcp_port() if kind == "mediaproxy+sqlite" else None
        argv = mediaproxy_argv(binary, port, a.pmin, a.pmax, wd, metrics_port,
                               state=kind != "mediaproxy-nostate",
                               receive="sockets" if kind == "mediaproxy-sockets" else None)
        name = kind
    srv = Server(name, argv, port, wd, a.server_cpu, a.nice, a.rt)
    why = srv.start()
    if why:
        srv.stop()
        return {"server": name, "error": f"did not start: {why}", "server_argv": argv}
    lg = [loadgen, "--server", f"127.0.0.1:{port}", "--clients", str(a.clients),
          "--calls", str(a.calls), "--max-time", str(a.max_time),
          "--port-range", f"{a.pmin}:{a.pmax}", "--expect-ip", "127.0.0.1",
          "--codecs", a.codecs]
    pre = ["taskset", "-c", a.load_cpu] if a.load_cpu != "" else []
    pre += ["chrt", "-f", str(a.rt)] if a.rt else []
    pid = srv.proc.pid
    time.sleep(a.settle)
    cpu0, rt0, t0 = proc_cpu(pid), proc_runtime(pid), time.monotonic()
    p = subprocess.Popen(pre + lg, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         preexec_fn=lambda: set_nice(a.nice))
    procs.append(p)
    try:
        out, err = p.communicate(timeout=a.max_time + 60)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    t1 = time.monotonic()
    drain_s = None
    if kind == "mediaproxy+sqlite":
        # Every answered call leaves one record: wait (bounded) until the backend has them
        # all, so that the CPU below includes the accounting worker's share.
        try:
            want = json.loads(out)["calls_ok"]
        except (ValueError, KeyError):
            want = None
        deadline = time.monotonic() + 120
        while want is not None and time.monotonic() < deadline:
            if (accounted(metrics_port) or 0) >= want:
                drain_s = round(time.monotonic() - t1, 3)
                break
            time.sleep(0.05)  # polling the metrics endpoint
    alive = srv.proc.poll() is None
    cpu1 = proc_cpu(pid) if alive else cpu0
    rt1 = proc_runtime(pid) if alive else rt0
    srv.stop()
    try:
        r = json.loads(out)
    except ValueError:
        return {"server": name, "error": f"load generator failed ({p.returncode}): "
                f"{err.decode(errors='replace').strip()[-300:]}", "server_argv": argv,
                "loadgen_argv": lg}
    ok = max(r["calls_ok"], 1)
    r.update({"server": name, "trial": trial_no, "server_argv": argv, "loadgen_argv": pre + lg,
              "server_alive_after": alive, "server_log_tail": srv.tail(),
              "server_cpu_s": round(cpu1 - cpu0, 3),
              "server_cpu_us_per_setup": round((cpu1 - cpu0) * 1e6 / ok, 1),
              "server_schedstat_us_per_setup": round((rt1 - rt0) * 1e6 / ok, 1),
              "server_cpu_share": round((cpu1 - cpu0) / max(t1 - t0, 1e-9), 3),
              "accounting_drain_s": drain_s,
              "loadgen_cpu_share": round(r["loadgen_cpu_s"] / max(r["elapsed_s"], 1e-9), 3)})
    return r


def med(xs):
    return statistics.median(xs) if xs else None


def summarise(trials):
    by = {}
    for t in trials:
        if "error" not in t:
            by.setdefault(t["server"], []).append(t)
    out = {}
    for name, ts in by.items():
        out[name] = {
            "trials": len(ts),
            "setups_per_s": med([t["setups_per_s"] for t in ts]),
            "setups_per_s_range": [min(t["setups_per_s"] for t in ts),
                                   max(t["setups_per_s"] for t in ts)],
            "u_p50_us": med([t["U"]["p50_us"] for t in ts]),
            "u_p99_us": med([t["U"]["p99_us"] for t in ts]),
            "u_p99_us_range": [min(t["U"]["p99_us"] for t in ts),
                               max(t["U"]["p99_us"] for t in ts)],
            "u_max_us": max(t["U"]["max_us"] for t in ts),
            "cpu_us_per_setup": med([t["server_cpu_us_per_setup"] for t in ts]),
            "cpu_us_per_setup_range": [min(t["server_cpu_us_per_setup"] for t in ts),
                                       max(t["server_cpu_us_per_setup"] for t in ts)],
            "calls_ok": sum(t["calls_ok"] for t in ts),
            "calls_failed": sum(t["calls_failed"] for t in ts),
            "errors": sum(t["errors"] for t in ts),
            "timeouts": sum(t["timeouts"] for t in ts),
            "retransmissions": sum(t["retransmissions"] for t in ts),
            "stale_replies": sum(t["stale_replies"] for t in ts),
            "replies_without_newline": sum(t["replies_without_newline"] for t in ts),
            "l_port_equals_u_port": sum(t["l_port_equals_u_port"] for t in ts),
            "handshake": ts[0]["handshake"],
            "codecs_modifier": ts[0]["codecs"],
            "first_commands": ts[0]["first_commands"],
            "bad_replies": [b for t in ts for b in t["bad_replies"]][:12],
            "server_argv": ts[0]["server_argv"],
            "loadgen_argv": ts[0]["loadgen_argv"],
        }
    return out


def fmt(v, nd=0):
    if v is None:
        return "-"
    return f"{v:,.{nd}f}"


def print_report(meta, trials, summary, ours, base):
    p = print
    p(f"rtpproxy control plane {meta['date']}  kernel {meta['kernel']}  {meta['ncpu']} CPUs  "
      f"load generator on CPU {meta['load_cpu'] or 'any'}, server on CPU "
      f"{meta['server_cpu'] or 'any'}; {meta['clients']} clients, U + L + D per call, "
      f"{meta['calls']} calls per trial, fresh server per trial")
    p(f"command: {meta['command']}")
    p(f"mediaproxy: {meta['mediaproxy']} (tree {meta['tree']}); rtpengine "
      f"{meta['rtpengine_version']}; {meta['priority']}")
    p("")
    hdr = (f"{'trial':>5} {'server':<13} {'calls ok':>9} {'setups/s':>9} {'U p50 us':>9} "
           f"{'U p99 us':>9} {'U max us':>9} {'L p99 us':>9} {'D p99 us':>9} {'CPU us/setup':>12} "
           f"{'srv CPU%':>8} {'gen CPU%':>8} {'err':>4} {'tmo':>4} {'rtx':>4}")
    p(hdr)
    p("-" * len(hdr))
    for t in trials:
        if "error" in t:
            p(f"{t.get('trial', '-'):>5} {t['server']:<13} {t['error']}")
            continue
        p(f"{t['trial']:>5} {t['server']:<13} {t['calls_ok']:>9,} {fmt(t['setups_per_s']):>9} "
          f"{fmt(t['U']['p50_us']):>9} {fmt(t['U']['p99_us']):>9} {fmt(t['U']['max_us']):>9} "
          f"{fmt(t['L']['p99_us']):>9} {fmt(t['D']['p99_us']):>9} "
          f"{fmt(t['server_cpu_us_per_setup'], 1):>12} {100 * t['server_cpu_share']:>8.0f} "
          f"{100 * t['loadgen_cpu_share']:>8.0f} {t['errors']:>4} {t['timeouts']:>4} "
          f"{t['retransmissions']:>4}")
    p("")
    p("Summary (medians over trials; U max is the maximum over trials)")
    hdr = (f"{'server':<13} {'trials':>6} {'setups/s':>9} {'(range)':>17} {'U p50 us':>9} "
           f"{'U p99 us':>9} {'U max us':>9} {'CPU us/setup':>12} {'(range)':>15} "
           f"{'failed':>6} {'tmo':>4} {'rtx':>4}")
    p(hdr)
    p("-" * len(hdr))
    for name, s in summary.items():
        r = s["setups_per_s_range"]
        c = s["cpu_us_per_setup_range"]
        p(f"{name:<13} {s['trials']:>6} {fmt(s['setups_per_s']):>9} "
          f"{fmt(r[0]) + '-' + fmt(r[1]):>17} {fmt(s['u_p50_us']):>9} {fmt(s['u_p99_us']):>9} "
          f"{fmt(s['u_max_us']):>9} {fmt(s['cpu_us_per_setup'], 1):>12} "
          f"{fmt(c[0], 0) + '-' + fmt(c[1], 0):>15} {s['calls_failed']:>6} {s['timeouts']:>4} "
          f"{s['retransmissions']:>4}")
    if ours in summary:
        o = summary[ours]
        for b_name in [n for n in summary if n.startswith("rtpengine")]:
            b = summary[b_name]
            rate = o["setups_per_s"] / b["setups_per_s"]
            p99 = o["u_p99_us"] / b["u_p99_us"]
            cpu = o["cpu_us_per_setup"] / b["cpu_us_per_setup"]
            p("")
            p(f"{ours} / {b_name}: setups/s x{rate:.2f}, U p50 x{o['u_p50_us'] / b['u_p50_us']:.2f}"
              f", U p99 x{p99:.2f}, CPU per setup x{cpu:.2f}")
            if b_name == base:
                p(f"  Targets against the faster rtpengine ({base}, by median setups/s):")
                p(f"  setups/s >= 2 x {base}: {'met' if rate >= 2 else 'NOT met'} ({rate:.2f})")
                p(f"  U p99 lower than {base}: {'met' if p99 < 1 else 'NOT met'} "
                  f"({fmt(o['u_p99_us'])} vs {fmt(b['u_p99_us'])} us)")
                p(f"  issue 14: setups/s >= 3 x {base}: {'met' if rate >= 3 else 'NOT met'} "
                  f"({rate:.2f})")
                cps = o["cpu_us_per_setup"]
                p(f"  issue 14: CPU per setup <= 40 us: {'met' if cps <= 40 else 'NOT met'} "
                  f"({cps:.1f} us)")
    for other, what in (("mediaproxy-baseline", "--baseline binary"),
                        ("mediaproxy-nostate", "the relay state file journalling every session"),
                        ("mediaproxy-sockets", "media_receive = sockets, not the default")):
        if ours in summary and other in summary:
            o, b = summary[ours], summary[other]
            p("")
            p(f"{ours} / {other} ({what}, same run): setups/s "
              f"x{o['setups_per_s'] / b['setups_per_s']:.2f}, CPU per setup "
              f"x{o['cpu_us_per_setup'] / b['cpu_us_per_setup']:.2f} "
              f"({o['cpu_us_per_setup'] - b['cpu_us_per_setup']:+.1f} us per call set-up)")
            # Trial k of each ran seconds apart: the ratio within a pair cancels most of the
            # VM's drift, which the ratio of two medians does not.
            def by_trial(name):
                return {t["trial"]: t for t in trials if t.get("server") == name
                        and "error" not in t and t.get("server_cpu_us_per_setup")}
            mine, theirs = by_trial(ours), by_trial(other)
            pairs = [mine[k]["server_cpu_us_per_setup"] / theirs[k]["server_cpu_us_per_setup"]
                     for k in sorted(mine) if k in theirs]
            if pairs:
                p(f"  per trial pair, CPU per setup: median x{statistics.median(pairs):.2f} "
                  f"(x{min(pairs):.2f}-x{max(pairs):.2f}), lower in {sum(r < 1 for r in pairs)} "
                  f"of {len(pairs)} pairs")
    if ours in summary and "mediaproxy+sqlite" in summary:
        o, w = summary[ours], summary["mediaproxy+sqlite"]
        drains = [t["accounting_drain_s"] for t in trials
                  if t.get("server") == "mediaproxy+sqlite" and "error" not in t]
        p("")
        p(f"mediaproxy+sqlite / {ours} (accounting every call into SQLite, same run): "
          f"setups/s x{w['setups_per_s'] / o['setups_per_s']:.2f}, "
          f"U p99 x{w['u_p99_us'] / o['u_p99_us']:.2f}, CPU per setup "
          f"x{w['cpu_us_per_setup'] / o['cpu_us_per_setup']:.2f} "
          f"(+{w['cpu_us_per_setup'] - o['cpu_us_per_setup']:.1f} us per record, worker included); "
          f"queue drained {', '.join('never' if d is None else f'{d:.2f} s' for d in drains)} "
          "after the load ended")
    p("")
    for name, s in summary.items():
        hs = ", ".join(f"{k} -> {v!r}" for k, v in s["handshake"].items())
        p(f"{name}: handshake {hs}; payload-type modifier {'sent' if s['codecs_modifier'] else 'not sent'}")
        for c in s["first_commands"]:
            p(f"  e.g. {c}")
        flags = []
        for k in ("replies_without_newline", "l_port_equals_u_port", "stale_replies"):
            if s[k]:
                flags.append(f"{k} {s[k]}")
        if flags:
            p("  note: " + ", ".join(flags))
        for b in s["bad_replies"]:
            p(f"  bad: {b!r}")
        p(f"  server: {shlex.join(s['server_argv'])}")
        p(f"  load:   {shlex.join(s['loadgen_argv'])}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=3, help="trials per server (alternating)")
    ap.add_argument("--calls", type=int, default=20000, help="calls per trial")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--max-time", type=float, default=60, help="wall-time cap of one trial, s")
    ap.add_argument("--servers", default="rtpengine,mediaproxy")
    ap.add_argument("--rtpengine-threads", default="1,2",
                    help="rtpengine --num-threads; each value of the list is a server of its own")
    ap.add_argument("--rtpengine", default=E.get("RTPENGINE", "") or "/usr/bin/rtpengine",
                    help="if missing (and root), rtpengine-daemon is installed as run.sh does")
    ap.add_argument("--mediaproxy", default=E.get("MEDIAPROXY", ""))
    ap.add_argument("--baseline", default="",
                    help="another mediaproxy binary (an older build) run as server "
                         "`mediaproxy-baseline`, alternating with the others: a same-run "
                         "before/after ratio")
    ap.add_argument("--build", action="store_true",
                    help="build the current sources into --build-dir first (meson release)")
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build-bench"))
    ap.add_argument("--loadgen", default="", help="prebuilt rtpp_load (default: cc -O2 here)")
    ap.add_argument("--port-range", default="23000:29998",
                    help="media ports of both servers (below the ephemeral range)")
    ap.add_argument("--codecs", default="auto", choices=["auto", "always", "never"],
                    help="payload-type modifier on U/L: as Kamailio (after VF 20081102), or forced")
    ap.add_argument("--server-cpu", default=E.get("SERVER_CPU", "1" if NCPU > 1 else ""))
    ap.add_argument("--load-cpu", default=E.get("LOAD_CPU", "0" if NCPU > 1 else ""))
    ap.add_argument("--no-pin", action="store_true", help="pin neither server nor generator")
    ap.add_argument("--nice", type=int, default=int(E.get("NICE", "-15")),
                    help="niceness of our session's autogroup and processes (root only)")
    ap.add_argument("--rt", type=int, default=0, metavar="PRIO",
                    help="run server and generator SCHED_FIFO at PRIO (chrt; root): other load "
                         "on the machine then no longer preempts them")
    ap.add_argument("--settle", type=float, default=0.3, help="pause after start-up, s")
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    a.pmin, a.pmax = (int(x) for x in a.port_range.split(":"))
    if a.no_pin:
        a.server_cpu = a.load_cpu = ""

    # Like bench.py: a session of our own whose autogroup gets the niceness, otherwise other
    # sessions' compiles on the same machine take our CPU time whatever the process niceness.
    try:
        os.setsid()
    except OSError:
        pass
    prio = "default priorities"
    if a.nice:
        try:
            with open("/proc/self/autogroup", "w") as f:
                f.write(str(a.nice))
            prio = f"autogroup nice {a.nice}"
        except OSError as e:
            prio = f"autogroup nice not set ({e.strerror})"
    signal.signal(signal.SIGTERM, lambda *_: (cleanup(), sys.exit(143)))
    signal.signal(signal.SIGINT, lambda *_: (cleanup(), sys.exit(130)))

    work = tempfile.mkdtemp(prefix="rtppbench.")
    try:
        loadgen = a.loadgen
        if not loadgen:
            loadgen = os.path.join(work, "rtpp_load")
            subprocess.run(["cc", "-O2", "-Wall", "-o", loadgen,
                            os.path.join(HERE, "rtpp_load.c")], check=True)
        servers = [s.strip() for s in a.servers.split(",") if s.strip()]
        if "rtpengine" in servers and not os.access(a.rtpengine, os.X_OK):
            install_rtpengine()
        mp_bin = a.mediaproxy
        if any(s.startswith("mediaproxy") for s in servers):
            if a.build:
                mp_bin = build_mediaproxy(a.build_dir)
            elif not mp_bin:
                for cand in (os.path.join(a.build_dir, "mediaproxy"),
                             os.path.join(ROOT, "build", "mediaproxy")):
                    if os.access(cand, os.X_OK):
                        mp_bin = cand
                        break
        variants = []
        for s in servers:
            if s == "rtpengine":
                variants += [("rtpengine", int(n), a.rtpengine)
                             for n in a.rtpengine_threads.split(",")]
            elif s in ("mediaproxy", "mediaproxy+sqlite", "mediaproxy-nostate",
                       "mediaproxy-sockets"):
                variants.append((s, 0, mp_bin))
            elif s == "mediaproxy-baseline":
                sys.exit("mediaproxy-baseline is added by --baseline BIN")
            else:
                sys.exit(f"unknown server {s}")
        if a.baseline:
            variants.append(("mediaproxy-baseline", 0, a.baseline))
        meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "kernel": os.uname().release,
                "ncpu": NCPU, "load_cpu": a.load_cpu, "server_cpu": a.server_cpu,
                "clients": a.clients, "calls": a.calls, "trials": a.trials,
                "priority": prio + (f", SCHED_FIFO {a.rt}" if a.rt else ""),
                "command": shlex.join([sys.argv[0]] + sys.argv[1:]),
                "mediaproxy": mp_bin, "baseline": a.baseline or None,
                "rtpengine": a.rtpengine}
        try:
            head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                  capture_output=True, text=True, timeout=10).stdout.strip()
            dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "src"],
                                   capture_output=True, text=True, timeout=10).stdout.strip()
            meta["tree"] = head + (" + uncommitted changes in src/" if dirty else "")
        except (OSError, subprocess.TimeoutExpired):
            meta["tree"] = "unknown"
        try:
            meta["rtpengine_version"] = subprocess.run(
                [a.rtpengine, "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True, timeout=10).stdout.strip().replace("Version: ", "")
        except (OSError, subprocess.TimeoutExpired):
            meta["rtpengine_version"] = "not available"
        log(f"{prio}; rtpengine {meta['rtpengine_version']}; mediaproxy {mp_bin or '(none)'}")
        trials = []
        t_begin = time.time()
        for i in range(1, a.trials + 1):
            for kind, threads, binary in variants:
                if not binary or not os.access(binary, os.X_OK):
                    name = f"rtpengine/{threads}t" if kind == "rtpengine" else kind
                    trials.append({"server": name, "trial": i,
                                   "error": f"not available: {binary or 'no binary'}"})
                    continue
                r = run_trial(a, kind, threads, binary, loadgen, work, i)
                r.setdefault("trial", i)
                trials.append(r)
                if "error" in r:
                    log(f"trial {i} {r['server']}: {r['error']}")
                else:
                    log(f"trial {i} {r['server']}: {r['calls_ok']} ok in {r['elapsed_s']:.2f} s, "
                        f"{r['setups_per_s']:.0f} setups/s, U p99 {r['U']['p99_us']:.0f} us, "
                        f"{r['server_cpu_us_per_setup']:.0f} us CPU/setup")
        meta["elapsed_s"] = round(time.time() - t_begin, 1)
        summary = summarise(trials)
        engines = [n for n in summary if n.startswith("rtpengine")]
        base = max(engines, key=lambda n: summary[n]["setups_per_s"]) if engines else None
        meta["baseline_for_targets"] = base
        if base and "mediaproxy" in summary:
            o, b = summary["mediaproxy"], summary[base]
            meta["ratios"] = {
                "setups_per_s": round(o["setups_per_s"] / b["setups_per_s"], 3),
                "u_p50": round(o["u_p50_us"] / b["u_p50_us"], 3),
                "u_p99": round(o["u_p99_us"] / b["u_p99_us"], 3),
                "cpu_us_per_setup": round(o["cpu_us_per_setup"] / b["cpu_us_per_setup"], 3)}
        print_report(meta, trials, summary, "mediaproxy", base)
        print(f"\n{meta['priority']}; elapsed {meta['elapsed_s']} s")
        if a.out:
            with open(a.out, "w") as f:
                json.dump({"meta": meta, "trials": trials, "summary": summary}, f, indent=1)
    finally:
        cleanup()
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
