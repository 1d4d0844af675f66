#!/usr/bin/env python3
"""Soak test: sustained call set-up load against one mediaproxy, watching for leaks.

Starts the mediaproxy binary (role = combined, forwarding = userspace, everything on loopback,
a temporary runtime directory), then for --duration seconds sets up --rate calls per second the
way the proxy module does it, and every --interval seconds prints the server's resident memory
(VmRSS) and open file descriptors next to the load actually achieved. At the end it says whether
both stayed flat (see "Verdict" below) and exits 0 (flat, no errors) or 1.

Per call:
  offer   `update` with `type: request` (caller SDP, no to_tag)         -> "127.0.0.1 <port>"
  answer  `update` with `type: reply` and the to_tag (callee SDP)       -> "127.0.0.1 <port>"
  media   on every --media-every'th call: the caller (a UDP socket on 127.0.0.2) and the callee
          (127.0.0.3), each sending from its SDP address and port, send --media-packets RTP
          packets 20 ms apart to their relay port (the callee to the offer's port, the caller to
          the answer's); every packet but each side's first (latching race) must arrive, intact,
          from the relay port the receiver sends to
  remove  `remove` after --hold seconds                                  -> "removed"
A share of the calls (--rtpproxy-share) goes through the rtpproxy front end over UDP instead
(U / L / D, as Kamailio's rtpproxy module sends them), media included on the same terms.

Load model: --connections persistent connections to the module socket (the proxy has one per
SIP worker), each with one request in flight at a time, as the module does; rtpproxy calls use
--rtpproxy-clients UDP sockets with one command in flight each (resent after 1 s, 3 sends).
New calls start on a fixed schedule (rate x elapsed); answers and removes go first. If the client
falls more than 1 s behind the schedule the backlog is dropped (counted as "skipped"), so the
achieved rate is what the server and this client really sustain.

Verdict (all must hold; every figure is printed):
  rss     VmRSS at the end of the load <= VmRSS after the warm-up (--warmup, 60 s) x (1 + --tolerance)
  fds     open fds at the end of the load <= fds after the warm-up x (1 + --tolerance) (fds follow
          the number of live calls, 4 per call, so the tolerance also absorbs that)
  drain   after the last remove and --settle seconds: open fds <= fds of the idle server (measured
          before the load, with the same module connections open) + the relay's idle sockets
          (a closed port's socket stays bound for the port's next stream, at most
          min(ports in port_range, half the open-file limit); mediaproxy(8)) + 2, and the
          metrics show 0 dispatcher sessions, 0 relay sessions, 0 rtpproxy calls
  errors  no error reply, no timeout, no bad reply, no media failure (<= --max-errors in all)
  rate    achieved set-ups/s >= 95% of --rate
Also printed, not judged: the least-squares slope of RSS and fds over the samples after the
warm-up (per minute), RSS after the drain, and the CPU of the server and of this client.

Standard library only. Everything is bounded: --duration (<= 7200 s), request timeouts, the
drain (hold + 30 s), the server's start-up (10 s) and shutdown (10 s, then SIGKILL).
"""

from __future__ import annotations

import argparse
import heapq
import http.client
import os
import random
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RELAY_IP = "127.0.0.1"
CALLER_IP = "127.0.0.2"
CALLEE_IP = "127.0.0.3"
RTPP_CLIENT_IP = "127.0.0.4"
MAX_DURATION = 7200.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
MAGIC = b"SOAK"
UPDATE_HEADERS = ("type", "dialog_id", "call_id", "cseq", "from_uri", "to_uri", "from_tag",
                  "to_tag", "user_agent", "signaling_ip", "media_relay", "media")


def log(msg: str) -> None:
    print(msg, flush=True)


# ---------------------------------------------------------------------------
# The server


def free_port(kind: int, lo: int = 20000, hi: int = 32000) -> int:
    """A free port on 127.0.0.1 below the ephemeral range and outside the relay's port range."""
    for _ in range(200):
        port = random.randrange(lo, hi)
        s = socket.socket(socket.AF_INET, kind)
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    raise RuntimeError("no free port found")


class Server:
    def __init__(self, args):
        self.binary = Path(args.bin)
        if not (self.binary.is_file() and os.access(self.binary, os.X_OK)):
            sys.exit(f"soak: mediaproxy binary not found at {self.binary} (build it: "
                     "meson setup build && ninja -C build mediaproxy, or pass --bin)")
        self.workdir = tempfile.mkdtemp(prefix="mp-soak-", dir="/tmp")
        self.runtime_dir = os.path.join(self.workdir, "run")
        os.mkdir(self.runtime_dir)
        self.socket_path = os.path.join(self.runtime_dir, "dispatcher.sock")
        self.metrics_port = free_port(socket.SOCK_STREAM)
        self.rtpp_port = free_port(socket.SOCK_DGRAM) if args.rtpproxy_share > 0 else None
        lo, hi = (int(x) for x in args.port_range.split(":"))
        self.port_range = (lo, hi)
        cfg = [
            "[General]", "role = combined", f"runtime_dir = {self.runtime_dir}",
            f"log_level = {args.log_level}", "",
            "[Dispatcher]", "socket_path = dispatcher.sock", "",
            "[Relay]", f"relay_ip = {RELAY_IP}", f"port_range = {args.port_range}",
            "stream_timeout = 90", "on_hold_timeout = 7200", "answer_timeout = 300",
            "forwarding = userspace", "",
            "[Metrics]", f"listen = 127.0.0.1:{self.metrics_port}", "",
        ]
        if self.rtpp_port:
            cfg += ["[Rtpproxy]", f"listen = udp:127.0.0.1:{self.rtpp_port}", ""]
        self.config_path = os.path.join(self.workdir, "mediaproxy.ini")
        with open(self.config_path, "w") as f:
            f.write("\n".join(cfg))
        self.log_path = os.path.join(self.workdir, "mediaproxy.log")
        self.proc = None
        self.keep = args.keep

    def start(self) -> None:
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [str(self.binary), "--foreground", "--config", self.config_path],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        deadline = time.monotonic() + 10.0
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mediaproxy exited with code {self.proc.returncode} at "
                                   f"start-up:\n{self.log_tail()}")
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(self.socket_path)
                s.close()
                self.metrics()  # the endpoint answers too
                return
            except OSError:
                s.close()
            if time.monotonic() > deadline:
                raise RuntimeError(f"mediaproxy not ready after 10 s:\n{self.log_tail()}")
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()

    def cleanup(self) -> None:
        if self.keep:
            log(f"kept {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, n: int = 30) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(0, os.path.getsize(self.log_path) - 200 * n))
                lines = f.read().decode("utf-8", "replace").splitlines()[-n:]
                return "\n".join(line[:200] for line in lines)
        except OSError:
            return ""

    def log_size(self) -> int:
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    # -- what we watch ---------------------------------------------------------
    def rss_kb(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def threads(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
        return 0

    def nofile(self) -> int:
        """The server's soft open-file limit (it raises it to the hard one at start)."""
        with open(f"/proc/{self.pid}/limits") as f:
            for line in f:
                if line.startswith("Max open files"):
                    return int(line.split()[3])
        return 1024

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def cpu_s(self) -> float:
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime, all threads

    def metrics(self) -> dict:
        """GET /metrics -> {name: value} with label sets summed, plus 'name{labels}' keys."""
        conn = http.client.HTTPConnection("127.0.0.1", self.metrics_port, timeout=2.0)
        try:
            conn.request("GET", "/metrics")
            resp = conn.getresponse()
            body = resp.read().decode("utf-8", "replace")
        finally:
            conn.close()
        out: dict = {}
        for line in body.splitlines():
            if not line or line.startswith("#"):
                continue
            try:
                key, value = line.rsplit(" ", 1)
                v = float(value)
            except ValueError:
                continue
            out[key] = v
            name = key.split("{", 1)[0]
            out[name] = out.get(name, 0.0) + v if "{" in key else v
        return out


# ---------------------------------------------------------------------------
# Calls and media


class Call:
    __slots__ = ("n", "call_id", "from_tag", "to_tag", "rtpp", "media", "caller_port",
                 "callee_port", "p", "q", "answered_at", "media_done", "remove_due", "state")

    def __init__(self, n: int, run: str, rtpp: bool):
        self.n = n
        self.call_id = f"soak-{run}-{n}@{CALLER_IP}"
        self.from_tag = f"A{run}{n}"
        self.to_tag = f"B{run}{n}"
        self.rtpp = rtpp
        self.media = None
        self.caller_port = 10000 + 2 * (n % 20000)   # SDP ports when no media is sent
        self.callee_port = 50000 + 2 * (n % 5000)
        self.p = self.q = 0
        self.answered_at = 0.0
        self.media_done = True
        self.remove_due = False
        self.state = "new"


def rtp(ssrc: int, seq: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, seq * 160, ssrc) + MAGIC + bytes(156)


class Media:
    """Caller and callee RTP sockets of one call; sends from the SDP addresses, checks delivery."""

    def __init__(self, soak: "Soak", call: Call):
        self.soak = soak
        self.call = call
        self.a = self._sock(CALLER_IP)   # caller
        self.b = self._sock(CALLEE_IP)   # callee
        call.caller_port = self.a.getsockname()[1]
        call.callee_port = self.b.getsockname()[1]
        self.ssrc_a = (call.n * 2) & 0xFFFFFFFF
        self.ssrc_b = (call.n * 2 + 1) & 0xFFFFFFFF
        self.got_a: set = set()   # seqs of the callee's packets the caller got
        self.got_b: set = set()
        self.wrong = 0            # datagrams from an unexpected source or with a foreign payload
        self.sent = 0
        self.started = False
        self.done = False
        soak.sel.register(self.a, selectors.EVENT_READ, ("media", self, "a"))
        soak.sel.register(self.b, selectors.EVENT_READ, ("media", self, "b"))
        soak.media_sockets += 2

    @staticmethod
    def _sock(ip: str) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((ip, 0))
        s.setblocking(False)
        return s

    def start(self) -> None:
        self.started = True
        self.call.media_done = False
        self.tick()

    def tick(self) -> None:
        if self.done:
            return
        c = self.call
        seq = self.sent
        try:
            self.a.sendto(rtp(self.ssrc_a, seq), (RELAY_IP, c.q))
            self.b.sendto(rtp(self.ssrc_b, seq), (RELAY_IP, c.p))
        except OSError:
            pass  # a stale ICMP error; the missing packet is found by the check
        self.sent += 1
        now = time.monotonic()
        if self.sent < self.soak.args.media_packets:
            self.soak.timer(now + 0.02, self.tick)
        else:
            self.soak.timer(now + 1.0, self.finish)

    def on_read(self, side: str) -> None:
        sock = self.a if side == "a" else self.b
        want_src = (RELAY_IP, self.call.q if side == "a" else self.call.p)
        want_ssrc = self.ssrc_b if side == "a" else self.ssrc_a
        got = self.got_a if side == "a" else self.got_b
        while True:
            try:
                data, src = sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                continue
            if (src != want_src or len(data) != 172 or data[12:16] != MAGIC
                    or struct.unpack_from("!I", data, 8)[0] != want_ssrc):
                self.wrong += 1
                continue
            got.add(struct.unpack_from("!H", data, 2)[0])
        n = self.soak.args.media_packets
        if self.sent >= n and len(self.got_a) >= n - 1 and len(self.got_b) >= n - 1:
            need = set(range(1, n))
            if need <= self.got_a and need <= self.got_b:
                self.finish()

    def finish(self) -> None:
        if self.done:
            return
        self.done = True
        if not self.started:   # the call failed before its answer: nothing to judge
            self.close()
            return
        n = self.soak.args.media_packets
        need = set(range(1, n))
        st = self.soak.st
        lost = len(need - self.got_a) + len(need - self.got_b)
        if lost or self.wrong:
            st["media_fail"] += 1
            if st["media_fail"] <= 5:
                log(f"  media failure, call {self.call.n}: {len(need - self.got_a)} of {n - 1} "
                    f"callee->caller and {len(need - self.got_b)} of {n - 1} caller->callee "
                    f"packets missing, {self.wrong} unexpected datagrams (relay ports "
                    f"{self.call.p}/{self.call.q})")
        else:
            st["media_ok"] += 1
        st["media_pkts"] += len(self.got_a) + len(self.got_b)
        self.close()
        self.call.media_done = True
        if self.call.remove_due:
            self.soak.queue_remove(self.call)

    def close(self) -> None:
        for s in (self.a, self.b):
            self.soak.sel.unregister(s)
            s.close()
        self.soak.media_sockets -= 2


# ---------------------------------------------------------------------------
# Control connections


class ModuleConn:
    """One persistent module-socket connection, one request in flight (a SIP worker)."""

    kind = "mp"

    def __init__(self, soak: "Soak", idx: int):
        self.soak = soak
        self.idx = idx
        self.sock = None
        self.connect()

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(2.0)
        s.connect(self.soak.server.socket_path)
        s.setblocking(False)
        self.sock = s
        self.buf = b""
        self.op = None       # (what, call)
        self.sent_at = 0.0
        self.soak.sel.register(s, selectors.EVENT_READ, ("conn", self))

    def reconnect(self) -> None:
        self.soak.sel.unregister(self.sock)
        self.sock.close()
        self.connect()

    def busy(self) -> bool:
        return self.op is not None

    def send(self, what: str, call: Call) -> None:
        if what == "remove":
            data = (f"remove\r\ncall_id: {call.call_id}\r\nfrom_tag: {call.from_tag}\r\n"
                    f"to_tag: {call.to_tag}\r\n\r\n")
        else:
            offer = what == "offer"
            vals = {
                "type": "request" if offer else "reply", "dialog_id": "",
                "call_id": call.call_id, "cseq": "1", "from_uri": "alice@example.com",
                "to_uri": "bob@example.net", "from_tag": call.from_tag,
                "to_tag": "" if offer else call.to_tag,
                "user_agent": "soak caller" if offer else "soak callee",
                "signaling_ip": CALLER_IP if offer else CALLEE_IP, "media_relay": "",
                "media": (f"audio:{CALLER_IP}:{call.caller_port}:sendrecv:ice=no" if offer else
                          f"audio:{CALLEE_IP}:{call.callee_port}:sendrecv:ice=no"),
            }
            data = "update\r\n" + "".join(f"{h}: {vals[h]}\r\n" for h in UPDATE_HEADERS) + "\r\n"
        self.op = (what, call)
        self.sent_at = time.monotonic()
        try:
            self.sock.send(data.encode())  # < 1 KB into an empty socket buffer: never partial
        except OSError as e:
            self.fail(f"send: {e}")

    def on_read(self) -> None:
        try:
            chunk = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            self.fail("connection closed by the server")
            return
        self.buf += chunk
        if b"\r\n" not in self.buf:
            return
        line, _, rest = self.buf.partition(b"\r\n")
        self.buf = b""
        op, self.op = self.op, None
        if rest or op is None:
            self.soak.error("unsolicited", f"conn {self.idx}: unexpected data {rest[:80]!r}")
        if op is not None:
            self.soak.reply(self, op[0], op[1], line.decode("utf-8", "replace"),
                            time.monotonic() - self.sent_at)

    def check_timeout(self, now: float) -> None:
        if self.op is not None and now - self.sent_at > self.soak.args.timeout:
            self.fail(f"no reply within {self.soak.args.timeout} s", timeout=True)

    def fail(self, why: str, timeout: bool = False) -> None:
        """Like the module: give up on the request and reconnect."""
        op, self.op = self.op, None
        self.soak.failed(self, op, why, timeout)
        self.reconnect()


class RtppConn:
    """One rtpproxy-protocol UDP client, one command in flight (Kamailio's rtpproxy module)."""

    kind = "rtpp"

    def __init__(self, soak: "Soak", idx: int):
        self.soak = soak
        self.idx = idx
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((RTPP_CLIENT_IP, 0))
        s.connect((RELAY_IP, soak.server.rtpp_port))
        s.setblocking(False)
        self.sock = s
        self.seq = 0
        self.op = None
        self.cookie = ""
        self.data = b""
        soak.sel.register(s, selectors.EVENT_READ, ("conn", self))

    def busy(self) -> bool:
        return self.op is not None

    def send(self, what: str, call: Call) -> None:
        if what == "offer":
            cmd = f"U {call.call_id} {CALLER_IP} {call.caller_port} {call.from_tag};1"
        elif what == "answer":
            cmd = (f"L {call.call_id} {CALLEE_IP} {call.callee_port} {call.from_tag};1 "
                   f"{call.to_tag};1")
        else:
            cmd = f"D {call.call_id} {call.from_tag} {call.to_tag}"
        self.seq += 1
        self.cookie = f"{os.getpid()}_{self.idx}_{self.seq}"
        self.data = f"{self.cookie} {cmd}".encode()
        self.op = (what, call)
        self.sent_at = self.last_send = time.monotonic()
        self.sends = 0
        self._send()

    def _send(self) -> None:
        self.sends += 1
        self.last_send = time.monotonic()
        try:
            self.sock.send(self.data)
        except OSError:
            pass

    def on_read(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            text = data.decode("utf-8", "replace").strip()
            cookie, _, reply = text.partition(" ")
            if self.op is None or cookie != self.cookie:
                continue  # late reply to a resent command: Kamailio drops it too
            op, self.op = self.op, None
            self.soak.reply(self, op[0], op[1], reply.strip(), time.monotonic() - self.sent_at)

    def check_timeout(self, now: float) -> None:
        if self.op is None or now - self.last_send < 1.0:
            return
        if self.sends < 3:
            self.soak.st["rtpp_resends"] += 1
            self._send()
        else:
            op, self.op = self.op, None
            self.soak.failed(self, op, "3 sends unanswered", True)


# ---------------------------------------------------------------------------
# The load


def pct(sorted_vals, q):
    if not sorted_vals:
        return 0.0
    return sorted_vals[min(len(sorted_vals) - 1, int(q * len(sorted_vals)))]


def slope_per_min(points):
    """Least-squares slope of (seconds, value) points, per minute."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    sxx = sum((t - mx) ** 2 for t, _ in points)
    if sxx == 0:
        return 0.0
    return sum((t - mx) * (v - my) for t, v in points) / sxx * 60.0


class Soak:
    def __init__(self, args, server: Server):
        self.args = args
        self.server = server
        self.sel = selectors.DefaultSelector()
        self.run = f"{os.getpid():x}{int(time.time()) & 0xFFFF:x}"
        self.timers: list = []
        self.tseq = 0
        self.calls: dict = {}          # live calls (offer sent, remove not yet answered)
        self.media_sockets = 0
        self.hi = {"mp": deque(), "rtpp": deque()}   # answers and removes, before new calls
        self.st = dict(started=0, setups=0, removed=0, skipped=0, err_reply=0, bad_reply=0,
                       timeouts=0, conn_fail=0, unsolicited=0, remove_err=0, slow=0,
                       media_ok=0, media_fail=0, media_pkts=0, rtpp_resends=0, rtpp_calls=0,
                       mp_calls=0)
        self.lat: list = []            # request latencies (s) of the current interval
        self.lat_max = 0.0
        self.lat_all_buckets: dict = {}
        self.samples: list = []
        self.errors_shown = 0

    # -- plumbing ----------------------------------------------------------
    def timer(self, when: float, fn) -> None:
        self.tseq += 1
        heapq.heappush(self.timers, (when, self.tseq, fn))

    def error(self, key: str, msg: str) -> None:
        self.st[key] += 1
        self.errors_shown += 1
        if self.errors_shown <= 20:
            log(f"  error ({key}): {msg}")

    def n_errors(self) -> int:
        s = self.st
        return (s["err_reply"] + s["bad_reply"] + s["timeouts"] + s["conn_fail"]
                + s["unsolicited"] + s["media_fail"])

    # -- call life ---------------------------------------------------------
    def new_call(self, rtpp: bool) -> Call:
        n = self.st["started"]
        self.st["started"] += 1
        call = Call(n, self.run, rtpp)
        front = "rtpp_calls" if rtpp else "mp_calls"
        if self.args.media_every and self.st[front] % self.args.media_every == 0:
            call.media = Media(self, call)
        self.st[front] += 1
        self.calls[n] = call
        return call

    def queue_remove(self, call: Call) -> None:
        if call.state in ("removing", "gone"):
            return
        call.state = "removing"
        self.hi["rtpp" if call.rtpp else "mp"].append(("remove", call))

    def remove_due(self, call: Call) -> None:
        call.remove_due = True
        if call.media_done:
            self.queue_remove(call)
        # else Media.finish() queues it

    def forget(self, call: Call) -> None:
        call.state = "gone"
        if call.media is not None and not call.media.done:
            call.media.finish()
        self.calls.pop(call.n, None)

    def reply(self, conn, what: str, call: Call, line: str, elapsed: float) -> None:
        self.lat.append(elapsed)
        self.lat_max = max(self.lat_max, elapsed)
        b = min(int(elapsed * 10000), 20000)   # 0.1 ms buckets up to 2 s
        self.lat_all_buckets[b] = self.lat_all_buckets.get(b, 0) + 1
        if elapsed > 0.5:
            self.st["slow"] += 1
        if what == "remove":
            ok = line == ("0" if conn.kind == "rtpp" else "removed")
            if ok:
                self.st["removed"] += 1
            else:
                self.error("remove_err" if line in ("error", "E50") else "bad_reply",
                           f"remove of call {call.n} ({conn.kind}): {line!r}")
            self.forget(call)
            return
        port = self.parse_port(conn.kind, line)
        if port is None:
            self.error("err_reply" if line.startswith(("error", "E")) else "bad_reply",
                       f"{what} of call {call.n} ({conn.kind}): {line!r}")
            # The offer may have created state (an answer certainly has): remove it anyway.
            self.queue_remove(call)
            return
        if what == "offer":
            call.p = port
            call.state = "offered"
            self.hi[conn.kind].append(("answer", call))
        else:
            call.q = port
            call.state = "up"
            call.answered_at = time.monotonic()
            self.st["setups"] += 1
            if call.media is not None:
                call.media.start()
            self.timer(call.answered_at + self.args.hold, lambda c=call: self.remove_due(c))

    def parse_port(self, kind: str, line: str):
        parts = line.split()
        if kind == "rtpp":
            if len(parts) != 2 or parts[1] != RELAY_IP:
                return None
            port_s = parts[0]
        else:
            if len(parts) != 2 or parts[0] != RELAY_IP:
                return None
            port_s = parts[1]
        if not port_s.isdigit():
            return None
        port = int(port_s)
        lo, hi = self.server.port_range
        if not (lo <= port < hi) or port % 2:
            return None
        return port

    def failed(self, conn, op, why: str, timeout: bool) -> None:
        if op is None:
            self.error("conn_fail", f"{conn.kind} conn {conn.idx}: {why}")
            return
        what, call = op
        self.error("timeouts" if timeout else "conn_fail",
                   f"{what} of call {call.n} ({conn.kind} conn {conn.idx}): {why}")
        if what == "remove":
            self.forget(call)   # the session may stay on the server: the drain check shows it
        else:
            self.queue_remove(call)

    # -- sampling ------------------------------------------------------------
    def sample(self, t: float, label: str = "") -> dict:
        srv = self.server
        cpu = srv.cpu_s()
        cli = sum(os.times()[:2])
        try:
            m = srv.metrics()
        except (OSError, http.client.HTTPException) as e:
            m = {}
            self.error("conn_fail", f"metrics: {e}")
        lat = sorted(self.lat)
        s = dict(t=t, label=label, setups=self.st["setups"], rss=srv.rss_kb(), fds=srv.fds(),
                 threads=srv.threads(), cpu=cpu, cli=cli, live=len(self.calls),
                 disp=m.get("mediaproxy_dispatcher_sessions", -1),
                 relay=m.get("mediaproxy_relay_sessions", -1),
                 rtpp=m.get("mediaproxy_rtpproxy_calls", -1),
                 pairs=m.get('mediaproxy_relay_port_pairs{state="used"}', -1),
                 srv_err=m.get("mediaproxy_dispatcher_errors_total", 0),
                 p50=pct(lat, 0.5), p99=pct(lat, 0.99), lmax=lat[-1] if lat else 0.0,
                 errors=self.n_errors(), timeouts=self.st["timeouts"],
                 media_fail=self.st["media_fail"], log=srv.log_size())
        prev = self.samples[-1] if self.samples else None
        dt = (t - prev["t"]) if prev else 0
        s["rate"] = (s["setups"] - prev["setups"]) / dt if prev and dt > 0 else 0.0
        s["cpu_pct"] = 100 * (cpu - prev["cpu"]) / dt if prev and dt > 0 else 0.0
        s["cli_pct"] = 100 * (cli - prev["cli"]) / dt if prev and dt > 0 else 0.0
        self.lat = []
        self.samples.append(s)
        log(f"{t:6.0f} {s['setups']:8d} {s['rate']:7.1f} {s['live']:6d} {s['disp']:6.0f} "
            f"{s['relay']:6.0f} {s['rss'] / 1024:8.1f} {s['fds']:6d} {s['cpu_pct']:6.1f} "
            f"{s['cli_pct']:6.1f} {s['p50'] * 1000:6.2f} {s['p99'] * 1000:7.2f} "
            f"{s['lmax'] * 1000:7.1f} {s['errors']:6d} {s['timeouts']:5d} "
            f"{s['media_fail']:5d} {label}")
        return s

    HEADER = ("     t   setups  rate/s   live   disp  relay  RSS(MB)    fds srvCPU cliCPU "
              " p50ms   p99ms   maxms errors tmout mfail")

    # -- main loop -----------------------------------------------------------
    def run_load(self) -> None:
        a = self.args
        conns = [ModuleConn(self, i) for i in range(a.connections)]
        rconns = ([RtppConn(self, i) for i in range(a.rtpproxy_clients)]
                  if a.rtpproxy_share > 0 else [])
        allconns = conns + rconns
        time.sleep(0.5)
        t0 = time.monotonic()
        nofile = self.server.nofile()
        lo, hi = self.server.port_range
        # The relay keeps a closed port's socket bound for the port's next stream, at most
        # min(ports in port_range, half the open-file limit) of them (mediaproxy(8)).
        self.idle_cap = min(hi - lo, nofile // 2)
        idle_fds = self.server.fds()
        log(f"idle server: RSS {self.server.rss_kb() / 1024:.1f} MB, {idle_fds} fds "
            f"(with {len(conns)} module connections open); open-file limit {nofile}, of which "
            f"up to {self.idle_cap} for idle relay sockets: room for about "
            f"{(nofile - self.idle_cap - idle_fds) // 4} live calls (4 sockets each)")
        self.nofile = nofile
        log(self.HEADER)
        self.idle = self.sample(0.0, "idle")
        next_sample = t0 + a.interval
        end = t0 + a.duration
        hard_end = end + a.hold + 30.0
        share = a.rtpproxy_share
        target_base = 0      # calls dropped from the schedule (client > 1 s behind)
        self.end_sample = None
        draining = False
        while True:
            now = time.monotonic()
            if not self.server.alive():
                raise RuntimeError(f"mediaproxy died (exit code {self.server.proc.returncode}):\n"
                                   f"{self.server.log_tail()}")
            if not draining and now >= end:
                draining = True
                self.end_sample = self.sample(now - t0, "end of load")
                next_sample = now + a.interval
            while self.timers and self.timers[0][0] <= now:
                heapq.heappop(self.timers)[2]()
            # Dispatch: answers and removes first, then new calls on schedule.
            target = 0 if draining else int((now - t0) * a.rate) - target_base
            behind = target - self.st["started"]
            if behind > a.rate:
                drop = behind - int(a.rate)
                target_base += drop
                target -= drop
                self.st["skipped"] += drop
            progress = True
            while progress:
                progress = False
                for c in allconns:
                    if c.busy():
                        continue
                    q = self.hi[c.kind]
                    if q:
                        what, call = q.popleft()
                        c.send(what, call)
                        progress = True
                        continue
                    if self.st["started"] < target:
                        n = self.st["started"]
                        rtpp = share > 0 and int((n + 1) * share) > int(n * share)
                        if rtpp != (c.kind == "rtpp"):
                            continue
                        c.send("offer", self.new_call(rtpp))
                        progress = True
            now = time.monotonic()
            for c in allconns:
                c.check_timeout(now)
            if now >= next_sample:
                self.sample(now - t0, "drain" if draining else "")
                next_sample += a.interval
            if draining and not self.calls:
                break
            if now > hard_end:
                self.error("conn_fail", f"drain not finished {a.hold + 30:.0f} s after the "
                           f"load: {len(self.calls)} calls still live")
                break
            # Sleep until the next event: a timer, the next scheduled call, a sample.
            wake = next_sample
            if self.timers:
                wake = min(wake, self.timers[0][0])
            if not draining and self.st["started"] >= target:
                wake = min(wake, t0 + (self.st["started"] + target_base + 1) / a.rate)
            if any(c.busy() for c in allconns):
                wake = min(wake, now + 0.05)     # timeout checks
            timeout = max(0.0, wake - time.monotonic())
            for key, _ in self.sel.select(timeout):
                d = key.data
                if d[0] == "conn":
                    d[1].on_read()
                else:
                    d[1].on_read(d[2])
        self.load_end = time.monotonic() - t0
        # Drain: nothing live; let the server settle, then look again.
        deadline = time.monotonic() + a.settle
        while time.monotonic() < deadline:
            self.sel.select(0.1)
        self.drained = self.sample(time.monotonic() - t0, "drained")
        for c in allconns:
            self.sel.unregister(c.sock)
            c.sock.close()

    # -- verdict ---------------------------------------------------------------
    def verdict(self) -> bool:
        a = self.args
        st = self.st
        end = self.end_sample or self.samples[-1]
        warm = next((s for s in self.samples if s["t"] >= a.warmup and s["label"] == ""), None)
        if warm is None or warm is end:
            warm = self.idle
            log(f"(no sample after the {a.warmup:.0f} s warm-up: comparing with the idle server)")
        after = [(s["t"], s) for s in self.samples
                 if warm["t"] <= s["t"] <= end["t"] and s["label"] in ("", "end of load")]
        rss_slope = slope_per_min([(t, s["rss"]) for t, s in after])
        fds_slope = slope_per_min([(t, s["fds"]) for t, s in after])
        achieved = end["setups"] / end["t"] if end["t"] > 0 else 0.0
        tol = a.tolerance
        checks = []

        def check(name, ok, text):
            checks.append(ok)
            log(f"  {'ok  ' if ok else 'FAIL'}  {name:6s} {text}")

        log("")
        log(f"Summary: {end['setups']} set-ups in {end['t']:.0f} s = {achieved:.1f}/s "
            f"(target {a.rate:.0f}/s; {st['skipped']} skipped by the client), "
            f"{st['mp_calls']} via the module socket, {st['rtpp_calls']} via rtpproxy; "
            f"{st['removed']} removed")
        log(f"  media: {st['media_ok']} calls ok, {st['media_fail']} failed, "
            f"{st['media_pkts']} packets received")
        tot = sum(self.lat_all_buckets.values())

        def bucket_pct(q):
            acc = 0
            for b in sorted(self.lat_all_buckets):
                acc += self.lat_all_buckets[b]
                if acc >= q * tot:
                    return b / 10.0
            return 0.0
        log(f"  requests: {tot}, latency p50 {bucket_pct(0.5):.1f} ms, p99 {bucket_pct(0.99):.1f} ms, "
            f"max {self.lat_max * 1000:.1f} ms, {st['slow']} over 500 ms; rtpproxy resends "
            f"{st['rtpp_resends']}")
        log(f"  errors: {st['err_reply']} error replies, {st['bad_reply']} bad replies, "
            f"{st['timeouts']} timeouts, {st['conn_fail']} connection/metrics failures, "
            f"{st['unsolicited']} unsolicited data, {st['media_fail']} media failures; "
            f"{st['remove_err']} remove errors (not judged: follow earlier failures); server "
            f"counted {end['srv_err']:.0f} error replies")
        busy = [s for s in self.samples if s["label"] == "" and s["t"] > 0]
        if busy:
            srv = sum(s["cpu_pct"] for s in busy) / len(busy)
            cli = sum(s["cli_pct"] for s in busy) / len(busy)
            log(f"  CPU (mean of the 10 s intervals under load, % of one core): server {srv:.0f}%, "
                f"this client {cli:.0f}%; {os.cpu_count()} CPUs")
        log(f"  server log: {self.server.log_size() / 1e6:.1f} MB, threads {end['threads']}")
        log(f"  RSS: idle {self.idle['rss'] / 1024:.1f} MB, at {warm['t']:.0f} s "
            f"{warm['rss'] / 1024:.1f} MB, end {end['rss'] / 1024:.1f} MB, drained "
            f"{self.drained['rss'] / 1024:.1f} MB; slope after warm-up {rss_slope:+.0f} KB/min")
        log(f"  fds: idle {self.idle['fds']}, at {warm['t']:.0f} s {warm['fds']}, end {end['fds']}, "
            f"drained {self.drained['fds']}; slope after warm-up {fds_slope:+.1f}/min; most in a "
            f"sample {max(s['fds'] for s in self.samples)} of the limit {self.nofile}")
        log("")
        log(f"Verdict (tolerance {tol * 100:.0f}% against the sample at {warm['t']:.0f} s):")
        # The allocator keeps what a peak of live calls took: show the peaks next to RSS.
        peak_before = max(s["disp"] for s in self.samples if s["t"] <= warm["t"])
        peak_after = max(s["disp"] for s in self.samples if warm["t"] <= s["t"] <= end["t"])
        check("rss", end["rss"] <= warm["rss"] * (1 + tol),
              f"{warm['rss']} -> {end['rss']} KB "
              f"({(end['rss'] / warm['rss'] - 1) * 100:+.1f}%; peak live calls in the samples "
              f"{peak_before:.0f} up to {warm['t']:.0f} s, {peak_after:.0f} after)")
        check("fds", end["fds"] <= warm["fds"] * (1 + tol),
              f"{warm['fds']} -> {end['fds']} ({(end['fds'] / warm['fds'] - 1) * 100:+.1f}%; "
              f"live calls {warm['disp']:.0f} -> {end['disp']:.0f})")
        d = self.drained
        fd_max = self.idle["fds"] + self.idle_cap + 2
        check("drain", d["fds"] <= fd_max and d["disp"] == 0 and d["relay"] == 0
              and d["rtpp"] in (0, -1),
              f"fds {d['fds']} (at most {fd_max}: idle server {self.idle['fds']} + up to "
              f"{self.idle_cap} idle relay sockets + 2), dispatcher sessions {d['disp']:.0f}, "
              f"relay sessions {d['relay']:.0f}, rtpproxy calls {d['rtpp']:.0f}")
        nerr = self.n_errors()
        check("errors", nerr <= a.max_errors, f"{nerr} (allowed {a.max_errors})")
        check("rate", achieved >= 0.95 * a.rate, f"{achieved:.1f}/s of {a.rate:.0f}/s")
        ok = all(checks)
        log(f"RESULT: {'PASS' if ok else 'FAIL'}")
        return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=str(REPO / "build" / "mediaproxy"),
                    help="mediaproxy binary (default build/mediaproxy)")
    ap.add_argument("--duration", type=float, default=600.0, help="seconds of load (600, max 7200)")
    ap.add_argument("--rate", type=float, default=500.0, help="call set-ups per second (500)")
    ap.add_argument("--hold", type=float, default=4.0,
                    help="seconds from answer to remove (4: ~2,000 live calls at 500/s)")
    ap.add_argument("--connections", type=int, default=8, help="module-socket connections (8)")
    ap.add_argument("--media-every", type=int, default=20,
                    help="media on every Nth call of each front end (20; 0: none)")
    ap.add_argument("--media-packets", type=int, default=10,
                    help="RTP packets each way per media call, 20 ms apart (10)")
    ap.add_argument("--rtpproxy-share", type=float, default=0.1,
                    help="share of calls through the rtpproxy front end (0.1; 0: off)")
    ap.add_argument("--rtpproxy-clients", type=int, default=2,
                    help="rtpproxy UDP clients, one command in flight each (2)")
    ap.add_argument("--timeout", type=float, default=2.0,
                    help="module request timeout, s (2; replies over 0.5 s are counted as slow)")
    ap.add_argument("--interval", type=float, default=10.0, help="seconds between samples (10)")
    ap.add_argument("--warmup", type=float, default=60.0, help="baseline sample time, s (60)")
    ap.add_argument("--tolerance", type=float, default=0.10,
                    help="allowed growth of RSS and fds after the warm-up (0.10)")
    ap.add_argument("--settle", type=float, default=5.0, help="seconds after the drain (5)")
    ap.add_argument("--max-errors", type=int, default=0, help="errors allowed (0)")
    ap.add_argument("--port-range", default="40000:60000", help="relay port_range (40000:60000)")
    ap.add_argument("--log-level", default="info", help="server log level (info)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (log)")
    args = ap.parse_args()
    if not 0 < args.duration <= MAX_DURATION:
        ap.error(f"--duration must be in (0, {MAX_DURATION:.0f}]")
    if args.rate <= 0 or args.hold < 0 or args.connections < 1 or args.timeout <= 0:
        ap.error("--rate, --connections and --timeout must be positive, --hold >= 0")
    if not 0 <= args.rtpproxy_share < 1:
        ap.error("--rtpproxy-share must be in [0, 1)")
    if args.media_packets < 2:
        ap.error("--media-packets must be >= 2")
    args.rtpproxy_clients = max(1, args.rtpproxy_clients)

    def on_signal(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)

    server = Server(args)
    ok = False
    try:
        server.start()
        log(f"mediaproxy {server.binary} pid {server.pid}: combined role, userspace forwarding, "
            f"port_range {args.port_range}, metrics 127.0.0.1:{server.metrics_port}"
            + (f", rtpproxy udp:127.0.0.1:{server.rtpp_port}" if server.rtpp_port else "")
            + f", log level {args.log_level}")
        log(f"load: {args.rate:.0f} set-ups/s for {args.duration:.0f} s, hold {args.hold:g} s, "
            f"{args.connections} module connections"
            + (f", {args.rtpproxy_share * 100:g}% via rtpproxy ({args.rtpproxy_clients} clients)"
               if args.rtpproxy_share > 0 else "")
            + (f", media on every {args.media_every}th call ({args.media_packets} packets each way)"
               if args.media_every else ""))
        soak = Soak(args, server)
        soak.run_load()
        ok = soak.verdict()
    except KeyboardInterrupt:
        log("interrupted")
    except RuntimeError as e:
        log(f"soak: {e}")
    finally:
        server.stop()
        if not ok:
            log(f"server log tail:\n{server.log_tail(10)}")
        server.cleanup()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
