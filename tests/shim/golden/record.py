#!/usr/bin/python3
"""record.py - records (or re-checks) the shim's golden files with a real
Kamailio 5.6 and its stock mediaproxy.so.

For every case directory below this file (NN-name/, holding the hand-written
inputs) it makes one SIP call on loopback through Kamailio
(kamailio-record.cfg, use_media_proxy() mode): a small built-in UAC sends the
INVITE with the case's SDP, a built-in UAS answers (optionally with a 183
first) and the call ends with ACK and BYE. A built-in recording dispatcher on
the module's UNIX socket stores every request the module sends and answers it
with the reply line the case prescribes. The UAs use raw sockets so that the
bodies go out byte-exact (sipp would turn every line end into CRLF).

Inputs of a case (all optional except params):
  params         key = value lines: ice (X-Ice -> $avp(s:ice_candidate)),
                 media_relay, signaling_ip (AVPs), content_type,
                 answer_content_type, user_agent, server, from (From header
                 without tag; "-" = leave the header out where allowed),
                 invite_reply, early_reply, answer_reply (the dispatcher's
                 reply lines; default: "192.0.2.5" and one port per stream)
  invite.sdp     body of the INVITE (none: INVITE without body)
  early.sdp      body of a 183 sent before the 200 (none: no 183)
  answer.sdp     body of the 200 OK (none: 200 without body)

Recorded outputs, per message M in invite/early/answer:
  M.msg          what the proxy knows about the message, as mpshim_message
                 fields (the input of the shim in the golden test)
  M.rc           use_media_proxy()'s return code in Kamailio
  M.request      the exact `update` the module sent (absent: none sent)
  M.reply        the reply line the dispatcher gave (absent: none)
  M.out          the body Kamailio forwarded (absent: no body)
and bye.request (the `remove` of end_media_session()).

Usage:
  record.py [CASE...]          re-record (all cases by default)
  record.py --check [CASE...]  record into a temporary directory and compare
                               with the committed files; exit 1 on a
                               difference, 77 when kamailio is missing
Needs kamailio (with mediaproxy.so); no root, no network namespaces.
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CFG = os.path.join(HERE, "kamailio-record.cfg")
KAMAILIO = shutil.which("kamailio") or "/usr/sbin/kamailio"
MODULE = "/usr/lib/x86_64-linux-gnu/kamailio/modules/mediaproxy.so"
OUTPUT_SUFFIXES = (".msg", ".rc", ".request", ".reply", ".out")
TIMEOUT = 5.0


def case_dirs(names):
    all_cases = sorted(d for d in os.listdir(HERE)
                       if os.path.isfile(os.path.join(HERE, d, "params")))
    if not names:
        return all_cases
    missing = [n for n in names if n not in all_cases]
    if missing:
        sys.exit(f"unknown case(s): {' '.join(missing)}")
    return names


def read_params(path):
    params = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            key, _, value = line.partition("=")
            params[key.strip()] = value.strip()
    return params


def read_bytes(path):
    if not os.path.exists(path):
        return None
    with open(path, "rb") as f:
        return f.read()


def free_udp_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# --------------------------------------------------------------------------
# recording dispatcher

class Dispatcher(threading.Thread):
    """Answers the module's requests; remembers them per call and message."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(16)
        self.replies = {}   # call_id -> {kind: reply line}
        self.seen = {}      # call_id -> {kind: (request bytes, reply line)}
        self.lock = threading.Lock()
        self.stop = False

    def run(self):
        self.sock.settimeout(0.2)
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn):
        buf = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buf:
                    try:
                        chunk = conn.recv(65536)
                    except OSError:
                        return
                    if not chunk:
                        return
                    buf += chunk
                req, _, buf = buf.partition(b"\r\n\r\n")
                req += b"\r\n\r\n"
                conn.sendall(self.answer(req).encode() + b"\r\n")

    def answer(self, req):
        lines = req.decode("latin-1").split("\r\n")
        command = lines[0]
        headers = {}
        for line in lines[1:]:
            if ": " in line:
                k, _, v = line.partition(": ")
                headers[k] = v
        call_id = headers.get("call_id", "")
        if command == "remove":
            kind, reply = "bye", "removed"
        elif headers.get("type") == "request":
            kind = "invite"
        elif headers.get("to_tag"):
            kind = "answer"
        else:
            kind = "early"
        if command == "update":
            streams = [m for m in headers.get("media", "").split(",") if m]
            base = 40002 if kind == "invite" else 40000
            default = " ".join(["192.0.2.5"] + [str(base + 4 * i) for i in range(len(streams))])
            with self.lock:
                reply = self.replies.get(call_id, {}).get(kind) or default
        with self.lock:
            self.seen.setdefault(call_id, {})[kind] = (req, reply)
        return reply

    def close(self):
        self.stop = True
        self.sock.close()


# --------------------------------------------------------------------------
# SIP user agents (just enough for one call through Kamailio)

def parse_sip(data):
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    clen = None
    for name, value in headers:
        if name.lower() in ("content-length", "l"):
            clen = int(value)
    if clen is not None:
        body = body[:clen]
    return lines[0], headers, body


def header(headers, name):
    for n, v in headers:
        if n.lower() == name.lower():
            return v
    return None


def all_headers(headers, name):
    return [v for n, v in headers if n.lower() == name.lower()]


def recv_until(sock, want, deadline):
    """Receive SIP messages until want(start_line, headers) is true."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timeout waiting for a SIP message")
        sock.settimeout(left)
        data, _ = sock.recvfrom(65535)
        start, headers, body = parse_sip(data)
        if want(start, headers):
            return start, headers, body


def message(start, headers, body=None, content_type=None):
    out = [start]
    out += [f"{n}: {v}" for n, v in headers]
    if body is not None and content_type:
        out.append(f"Content-Type: {content_type}")
    out.append(f"Content-Length: {len(body) if body is not None else 0}")
    data = ("\r\n".join(out) + "\r\n\r\n").encode("latin-1")
    return data + (body or b"")


def run_call(name, case_dir, params, kam, uac, uas, uas_port):
    """One call; returns {kind: received body or None} and the message info."""
    call_id = f"golden-{name}@127.0.0.1"
    ftag = f"ftag-{name}"
    ttag = f"ttag-{name}"
    invite_sdp = read_bytes(os.path.join(case_dir, "invite.sdp"))
    early_sdp = read_bytes(os.path.join(case_dir, "early.sdp"))
    answer_sdp = read_bytes(os.path.join(case_dir, "answer.sdp"))
    from_hdr = params.get("from", '"Golden Caller" <sip:caller@127.0.0.1;user=phone>')
    ua = params.get("user_agent", "golden-uac/1.0")
    server = params.get("server", "golden-uas/1.0")
    ctype = params.get("content_type", "application/sdp")
    actype = params.get("answer_content_type", "application/sdp")
    uac_port = uac.getsockname()[1]
    deadline = time.monotonic() + TIMEOUT
    got = {}

    hdrs = [("Via", f"SIP/2.0/UDP 127.0.0.1:{uac_port};branch=z9hG4bK-{name}-1;rport"),
            ("Max-Forwards", "70"),
            ("From", f"{from_hdr};tag={ftag}"),
            ("To", "<sip:callee@127.0.0.1>"),
            ("Call-ID", call_id),
            ("CSeq", "1 INVITE"),
            ("Contact", f"<sip:caller@127.0.0.1:{uac_port}>")]
    if ua != "-":
        hdrs.append(("User-Agent", ua))
    for key, hname in (("ice", "X-Ice"), ("media_relay", "X-Media-Relay"),
                       ("signaling_ip", "X-Signaling-Ip")):
        if key in params:
            hdrs.append((hname, params[key]))
    uac.sendto(message(f"INVITE sip:callee@127.0.0.1:{uas_port} SIP/2.0", hdrs,
                       invite_sdp, ctype), kam)

    # callee: the INVITE as Kamailio forwarded it
    _, ih, ibody = recv_until(uas, lambda s, h: s.startswith("INVITE "), deadline)
    got["invite"] = ibody if invite_sdp is not None else None
    common = [("Via", v) for v in all_headers(ih, "Via")]
    common += [("Record-Route", v) for v in all_headers(ih, "Record-Route")]
    common += [("From", header(ih, "From")), ("To", f"{header(ih, 'To')};tag={ttag}"),
               ("Call-ID", header(ih, "Call-ID")), ("CSeq", header(ih, "CSeq")),
               ("Contact", f"<sip:callee@127.0.0.1:{uas_port}>")]
    if server != "-":
        common.append(("Server", server))
    if early_sdp is not None:
        uas.sendto(message("SIP/2.0 183 Session Progress", common, early_sdp, actype), kam)
        _, _, ebody = recv_until(uac, lambda s, h: s.startswith("SIP/2.0 183"), deadline)
        got["early"] = ebody
    uas.sendto(message("SIP/2.0 200 OK", common, answer_sdp, actype), kam)
    _, oh, obody = recv_until(uac, lambda s, h: s.startswith("SIP/2.0 200"), deadline)
    got["answer"] = obody if answer_sdp is not None else None

    # ACK and BYE along the route set
    routes = list(reversed(all_headers(oh, "Record-Route")))
    to_hdr = header(oh, "To")
    for cseq, method in ((1, "ACK"), (2, "BYE")):
        h = [("Via", f"SIP/2.0/UDP 127.0.0.1:{uac_port};branch=z9hG4bK-{name}-{method};rport"),
             ("Max-Forwards", "70")]
        h += [("Route", r) for r in routes]
        h += [("From", f"{from_hdr};tag={ftag}"), ("To", to_hdr), ("Call-ID", call_id),
              ("CSeq", f"{cseq} {method}")]
        uac.sendto(message(f"{method} sip:callee@127.0.0.1:{uas_port} SIP/2.0", h), kam)
        if method == "ACK":
            recv_until(uas, lambda s, hh: s.startswith("ACK "), deadline)
    _, bh, _ = recv_until(uas, lambda s, h: s.startswith("BYE "), deadline)
    bye_ok = [("Via", v) for v in all_headers(bh, "Via")]
    bye_ok += [("From", header(bh, "From")), ("To", header(bh, "To")),
               ("Call-ID", header(bh, "Call-ID")), ("CSeq", header(bh, "CSeq"))]
    uas.sendto(message("SIP/2.0 200 OK", bye_ok), kam)
    recv_until(uac, lambda s, h: s.startswith("SIP/2.0 200") and "BYE" in header(h, "CSeq"),
               deadline)

    # what a proxy script would hand to the shim for each message
    uri = re.search(r"<([^>]*)>", from_hdr)
    from_uri = uri.group(1) if uri else from_hdr
    sig = params.get("signaling_ip", "127.0.0.1")
    ice = params.get("ice", "default")
    info = {
        "invite": [("type", "request"), ("status", "0"), ("method", "INVITE"),
                   ("call_id", call_id), ("cseq", "1"), ("from_uri", from_uri),
                   ("to_uri", "sip:callee@127.0.0.1"), ("from_tag", ftag), ("to_tag", ""),
                   ("user_agent", "" if ua == "-" else ua), ("signaling_ip", sig),
                   ("media_relay", params.get("media_relay", "")), ("ice", ice),
                   ("content_type", ctype if invite_sdp is not None else "")],
    }
    for kind, status, body in (("early", "183", early_sdp), ("answer", "200", answer_sdp)):
        info[kind] = [("type", "reply"), ("status", status), ("method", "INVITE"),
                      ("call_id", call_id), ("cseq", "1"), ("from_uri", from_uri),
                      ("to_uri", "sip:callee@127.0.0.1"), ("from_tag", ftag),
                      ("to_tag", ttag), ("user_agent", "" if server == "-" else server),
                      ("signaling_ip", sig), ("media_relay", params.get("media_relay", "")),
                      ("ice", ice), ("content_type", actype if body is not None else "")]
    if early_sdp is None:
        del info["early"]
    return call_id, got, info


# --------------------------------------------------------------------------

def record(names, outdir):
    """Record the cases into outdir/<case>/ (outdir may be HERE)."""
    tmp = tempfile.mkdtemp(prefix="mpshim-golden-")
    sock_path = os.path.join(tmp, "dispatcher.sock")
    disp = Dispatcher(sock_path)
    disp.start()
    kport = free_udp_port()
    uac = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    uac.bind(("127.0.0.1", 0))
    uas = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    uas.bind(("127.0.0.1", 0))
    uas_port = uas.getsockname()[1]
    log_path = os.path.join(tmp, "kamailio.log")
    cmd = [KAMAILIO, "-DD", "-E", "-f", CFG, "-l", f"udp:127.0.0.1:{kport}",
           "-A", f'MP_SOCKET="{sock_path}"', "-A", f'CALLEE="sip:127.0.0.1:{uas_port}"',
           "-P", os.path.join(tmp, "kamailio.pid"), "-Y", tmp, "-w", tmp]
    log = open(log_path, "wb")
    kam = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    failures = []
    try:
        # Kamailio is up when its SIP worker has connected to the dispatcher
        # (child_init) and it answers an OPTIONS (405 from the script)
        deadline = time.monotonic() + 10
        probe = (f"OPTIONS sip:probe@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:"
                 f"{uac.getsockname()[1]};branch=z9hG4bK-probe\r\nFrom: <sip:p@127.0.0.1>;tag=p"
                 f"\r\nTo: <sip:p@127.0.0.1>\r\nCall-ID: probe\r\nCSeq: 1 OPTIONS\r\n"
                 f"Content-Length: 0\r\n\r\n").encode()
        while True:
            if kam.poll() is not None:
                raise RuntimeError(f"kamailio exited (rc {kam.returncode}), see {log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError("kamailio did not start")
            uac.sendto(probe, ("127.0.0.1", kport))
            try:
                uac.settimeout(0.2)
                uac.recvfrom(65535)
                break
            except socket.timeout:
                continue
        for name in names:
            case_dir = os.path.join(HERE, name)
            params = read_params(os.path.join(case_dir, "params"))
            call_id = f"golden-{name}@127.0.0.1"
            with disp.lock:
                disp.replies[call_id] = {
                    k: params[k + "_reply"] for k in ("invite", "early", "answer")
                    if k + "_reply" in params}
            try:
                call_id, got, info = run_call(name, case_dir, params, ("127.0.0.1", kport),
                                              uac, uas, uas_port)
            except Exception as e:  # noqa: BLE001 - report and go on
                failures.append(f"{name}: call failed: {e!r}")
                continue
            time.sleep(0.1)  # let Kamailio write its log lines
            log.flush()
            with open(log_path, encoding="utf-8", errors="replace") as f:
                klog = f.read()
            rcs = dict(re.findall(rf"GOLDEN {re.escape(call_id)} (\S+) rc=(-?\d+)", klog))
            out = os.path.join(outdir, name)
            os.makedirs(out, exist_ok=True)
            for f in os.listdir(out):
                if f.endswith(OUTPUT_SUFFIXES) or f == "bye.request":
                    os.unlink(os.path.join(out, f))
            with disp.lock:
                seen = dict(disp.seen.get(call_id, {}))
            for kind, status in (("invite", "INVITE"), ("early", "183"), ("answer", "200")):
                if kind not in info:
                    continue
                with open(os.path.join(out, kind + ".msg"), "w", encoding="utf-8") as f:
                    f.writelines(f"{k}: {v}\n" for k, v in info[kind])
                with open(os.path.join(out, kind + ".rc"), "w", encoding="utf-8") as f:
                    f.write(rcs.get(status, "missing") + "\n")
                if got.get(kind) is not None:
                    with open(os.path.join(out, kind + ".out"), "wb") as f:
                        f.write(got[kind])
                if kind in seen:
                    with open(os.path.join(out, kind + ".request"), "wb") as f:
                        f.write(seen[kind][0])
                    with open(os.path.join(out, kind + ".reply"), "w", encoding="utf-8") as f:
                        f.write(seen[kind][1] + "\n")
            if "bye" in seen:
                with open(os.path.join(out, "bye.request"), "wb") as f:
                    f.write(seen["bye"][0])
            print(f"recorded {name}: " + ", ".join(f"{k} rc={v}" for k, v in rcs.items()))
    finally:
        kam.terminate()
        try:
            kam.wait(5)
        except subprocess.TimeoutExpired:
            kam.kill()
            kam.wait()
        log.close()
        disp.close()
        uac.close()
        uas.close()
        if failures:
            print(f"kamailio log kept in {log_path}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return failures


def compare(names, recorded):
    diffs = []
    for name in names:
        a_dir, b_dir = os.path.join(HERE, name), os.path.join(recorded, name)
        files = set()
        for d in (a_dir, b_dir):
            if os.path.isdir(d):
                files |= {f for f in os.listdir(d)
                          if f.endswith(OUTPUT_SUFFIXES) or f == "bye.request"}
        for f in sorted(files):
            a = read_bytes(os.path.join(a_dir, f))
            b = read_bytes(os.path.join(b_dir, f))
            if a != b:
                diffs.append(f"{name}/{f}: committed {a!r} != recorded {b!r}")
    return diffs


def main(argv):
    check = "--check" in argv
    names = case_dirs([a for a in argv if not a.startswith("--")])
    if not os.path.exists(KAMAILIO) or not os.path.exists(MODULE):
        print("kamailio or its mediaproxy.so is not installed", file=sys.stderr)
        return 77 if check else 2
    if not check:
        failures = record(names, HERE)
        for f in failures:
            print("FAIL " + f)
        return 1 if failures else 0
    tmp = tempfile.mkdtemp(prefix="mpshim-golden-check-")
    try:
        failures = record(names, tmp)
        diffs = compare(names, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for f in failures + diffs:
        print("FAIL " + f)
    print(f"{len(names)} golden cases re-recorded: "
          f"{'identical' if not failures and not diffs else 'DIFFERENT'}")
    return 1 if failures or diffs else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
