#!/usr/bin/python3
"""Helpers for run_e2e.sh (stdlib only, runs under /usr/bin/python3).

Sub-commands:
  wait-unix SOCK TIMEOUT [PID]    poll until SOCK accepts a connection
                                  (fail early if PID exits)
  request SOCK TIMEOUT CMD [K=V..] send one module-protocol request, print the
                                  reply line (repr) and exit 0 if a line came
  dialog DIR                      print call_id, from_tag, to_tag of the call
  check DIR MODE WITH_MP          evaluate one mode's artefacts, print figures
                                  and exit 1 on any failed assertion
"""

import json
import os
import re
import socket
import subprocess
import sys
import time

RELAY_IP = "10.200.0.1"
CALLER_IP = "10.200.1.2"
CALLEE_IP = "10.200.2.2"
PORT_MIN, PORT_MAX = 40000, 40999
PCAP_RTP_PACKETS = 236          # /usr/share/sip-tester/g711a.pcap
MIN_FORWARDED = 200
STATS_TOLERANCE = int(os.environ.get("MPE2E_STATS_TOL", "10"))


# --------------------------------------------------------------------------
# UNIX socket helpers

def wait_unix(path, timeout, pid=None):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if pid and not os.path.exists(f"/proc/{pid}"):
            print(f"process {pid} exited before {path} accepted connections", file=sys.stderr)
            return 1
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(0.5)
        try:
            s.connect(path)
            return 0
        except OSError as e:
            last = e
        finally:
            s.close()
        time.sleep(0.05)
    print(f"socket {path} not accepting after {timeout}s: {last}", file=sys.stderr)
    return 1


def request(path, timeout, command, headers):
    data = command + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    raw = data.encode()
    print("request bytes: " + repr(raw))
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    buf = b""
    try:
        s.connect(path)
        s.sendall(raw)
        deadline = time.monotonic() + timeout
        while b"\r\n" not in buf and time.monotonic() < deadline:
            chunk = s.recv(8192)
            if not chunk:
                break
            buf += chunk
    except OSError as e:
        print(f"socket error: {e}")
    finally:
        s.close()
    print("reply bytes: " + repr(buf))
    return 0 if b"\r\n" in buf else 1


# --------------------------------------------------------------------------
# sipp -trace_msg parsing

SEP = re.compile(r"^-{20,} .*$", re.M)


def sipp_messages(path):
    """Yield (direction, text) for each message of a sipp -trace_msg log."""
    with open(path, encoding="latin-1") as f:
        content = f.read()
    for block in SEP.split(content):
        block = block.lstrip("\n")
        if not block.strip():
            continue
        first, _, rest = block.partition("\n")
        if "message received" in first:
            direction = "recv"
        elif "message sent" in first:
            direction = "sent"
        else:
            continue
        yield direction, rest.strip("\n").replace("\r\n", "\n")


def split_msg(text):
    head, _, body = text.partition("\n\n")
    lines = head.split("\n")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers.setdefault(k.strip().lower(), v.strip())
    return lines[0], headers, body


def tag_of(value):
    m = re.search(r";\s*tag=([^;>\s]+)", value)
    return m.group(1) if m else ""


def sdp_audio(body):
    """Return (ip, port) of the first audio stream of an SDP body."""
    session_ip = None
    media_ip = None
    port = None
    in_audio = False
    seen_m = False
    for line in body.split("\n"):
        line = line.strip()
        if line.startswith("m="):
            if in_audio:
                break
            seen_m = True
            toks = line[2:].split()
            in_audio = toks[0] == "audio"
            if in_audio:
                port = int(toks[1].split("/")[0])
        elif line.startswith("c="):
            ip = line.split()[-1]
            if not seen_m:
                session_ip = ip
            elif in_audio:
                media_ip = ip
    return (media_ip or session_ip), port


def find_sdp(path, want):
    """want='invite' (first received INVITE) or 'invite-200' (received 200 to INVITE)."""
    for direction, text in sipp_messages(path):
        if direction != "recv":
            continue
        start, headers, body = split_msg(text)
        cseq = headers.get("cseq", "")
        if want == "invite" and start.startswith("INVITE "):
            return start, headers, body
        if want == "invite-200" and start.startswith("SIP/2.0 200") and cseq.endswith("INVITE"):
            return start, headers, body
    return None, {}, ""


def dialog_ids(d):
    """(call_id, from_tag, to_tag) of the call, from the caller's message log."""
    _, h, _ = find_sdp(os.path.join(d, "uac_messages.log"), "invite-200")
    return h.get("call-id", ""), tag_of(h.get("from", "")), tag_of(h.get("to", ""))


# --------------------------------------------------------------------------
# pcap analysis (tcpdump -r)

LINE = re.compile(r"IP (\d+\.\d+\.\d+\.\d+)\.(\d+) > (\d+\.\d+\.\d+\.\d+)\.(\d+): UDP")


def udp_packets(pcap):
    if not os.path.exists(pcap):
        return []
    out = subprocess.run(["tcpdump", "-r", pcap, "-nn", "-q", "udp"],
                         capture_output=True, text=True, timeout=20).stdout
    pkts = []
    for line in out.splitlines():
        m = LINE.search(line)
        if m:
            pkts.append((m.group(1), int(m.group(2)), m.group(3), int(m.group(4))))
    return pkts


def in_range(p):
    return PORT_MIN <= p <= PORT_MAX


# --------------------------------------------------------------------------
# mediaproxy statistics line

def find_stats(logfile, call_id):
    """Return the last session-statistics JSON object for call_id from the log."""
    found = None
    if not os.path.exists(logfile):
        return None
    with open(logfile, encoding="utf-8", errors="replace") as f:
        for line in f:
            if "caller_packets" not in line:
                continue
            i = line.find("{")
            while i >= 0:
                try:
                    obj, _ = json.JSONDecoder().raw_decode(line[i:])
                except ValueError:
                    i = line.find("{", i + 1)
                    continue
                if isinstance(obj, dict) and obj.get("call_id") == call_id:
                    found = obj
                break
    return found


# --------------------------------------------------------------------------

class Checker:
    def __init__(self):
        self.failures = []

    def ok(self, cond, what):
        print(("  ok    " if cond else "  FAIL  ") + what)
        if not cond:
            self.failures.append(what)
        return cond


def check(d, mode, with_mp):
    c = Checker()
    fig = {}

    # ---- SIP / SDP as seen by the phones --------------------------------
    inv_start, inv_h, inv_body = find_sdp(os.path.join(d, "uas_messages.log"), "invite")
    ok_start, ok_h, ok_body = find_sdp(os.path.join(d, "uac_messages.log"), "invite-200")
    c.ok(inv_start is not None, "callee received the INVITE")
    c.ok(ok_start is not None, "caller received a 200 OK to INVITE")
    callee_got = sdp_audio(inv_body) if inv_start else (None, None)
    caller_got = sdp_audio(ok_body) if ok_start else (None, None)
    print(f"  SDP received by callee (INVITE): c={callee_got[0]} m=audio {callee_got[1]}")
    print(f"  SDP received by caller (200 OK): c={caller_got[0]} m=audio {caller_got[1]}")
    fig["callee_sdp"] = callee_got
    fig["caller_sdp"] = caller_got

    call_id = ok_h.get("call-id") or inv_h.get("call-id") or ""
    from_tag = tag_of(ok_h.get("from", "")) or tag_of(inv_h.get("from", ""))
    to_tag = tag_of(ok_h.get("to", ""))
    with open(os.path.join(d, "dialog.txt"), "w") as f:
        f.write(f"{call_id}\n{from_tag}\n{to_tag}\n")
    print(f"  dialog: call_id={call_id} from_tag={from_tag} to_tag={to_tag}")

    if with_mp:
        for who, (ip, port) in (("callee", callee_got), ("caller", caller_got)):
            c.ok(ip == RELAY_IP, f"{who}'s SDP c= names the relay {RELAY_IP} (got {ip})")
            c.ok(port is not None and in_range(port),
                 f"{who}'s SDP m=audio port in {PORT_MIN}-{PORT_MAX} (got {port})")
        c.ok(callee_got[1] != caller_got[1],
             "caller-facing and callee-facing relay ports differ")
    else:
        c.ok(callee_got == (CALLER_IP, 6000), "plumbing: callee got caller's own SDP address")
        c.ok(caller_got == (CALLEE_IP, 6000), "plumbing: caller got callee's own SDP address")

    # ---- packets on the relay namespace's veths -------------------------
    pc = udp_packets(os.path.join(d, "to-caller.pcap"))
    pe = udp_packets(os.path.join(d, "to-callee.pcap"))
    sip = lambda p: p[1] == 5060 or p[3] == 5060
    c2r = [p for p in pc if p[0] == CALLER_IP and p[2] == RELAY_IP and in_range(p[3])]
    r2c = [p for p in pc if p[0] == RELAY_IP and in_range(p[1]) and p[2] == CALLER_IP]
    e2r = [p for p in pe if p[0] == CALLEE_IP and p[2] == RELAY_IP and in_range(p[3])]
    r2e = [p for p in pe if p[0] == RELAY_IP and in_range(p[1]) and p[2] == CALLEE_IP]
    direct_ce = [p for p in pe if p[0] == CALLER_IP and p[2] == CALLEE_IP and not sip(p)]
    direct_ec = [p for p in pc if p[0] == CALLEE_IP and p[2] == CALLER_IP and not sip(p)]
    fig.update(c2r=len(c2r), r2e=len(r2e), e2r=len(e2r), r2c=len(r2c),
               direct_ce=len(direct_ce), direct_ec=len(direct_ec))
    print(f"  tcpdump: caller->relay {len(c2r)}, relay->callee {len(r2e)}, "
          f"callee->relay {len(e2r)}, relay->caller {len(r2c)}, "
          f"direct caller->callee {len(direct_ce)}, direct callee->caller {len(direct_ec)}")

    if with_mp:
        c.ok(len(c2r) >= MIN_FORWARDED, f"caller->relay RTP >= {MIN_FORWARDED} ({len(c2r)})")
        c.ok(len(e2r) >= MIN_FORWARDED, f"callee->relay RTP >= {MIN_FORWARDED} ({len(e2r)})")
        c.ok(len(r2e) >= MIN_FORWARDED,
             f"relay forwarded caller->callee >= {MIN_FORWARDED} ({len(r2e)})")
        c.ok(len(r2c) >= MIN_FORWARDED,
             f"relay forwarded callee->caller >= {MIN_FORWARDED} ({len(r2c)})")
        c.ok(len(r2e) <= len(c2r), "relay did not send more to callee than caller sent")
        c.ok(len(r2c) <= len(e2r), "relay did not send more to caller than callee sent")
        c.ok(not direct_ce and not direct_ec, "no RTP bypassed the relay")
        # destinations / symmetric source ports
        c.ok(all(p[2:] == (CALLEE_IP, 6000) for p in r2e),
             "relay->callee packets go to callee's media address 10.200.2.2:6000")
        c.ok(all(p[2:] == (CALLER_IP, 6000) for p in r2c),
             "relay->caller packets go to caller's media address 10.200.1.2:6000")
        c.ok(all(p[1] == callee_got[1] for p in r2e),
             f"relay->callee source port == port in callee's SDP ({callee_got[1]}), symmetric")
        c.ok(all(p[1] == caller_got[1] for p in r2c),
             f"relay->caller source port == port in caller's SDP ({caller_got[1]}), symmetric")
        c.ok(all(p[3] == caller_got[1] for p in c2r),
             "caller sent its RTP to the port it received in the 200 OK")
        c.ok(all(p[3] == callee_got[1] for p in e2r),
             "callee sent its RTP to the port it received in the INVITE")
    else:
        c.ok(len(direct_ce) == PCAP_RTP_PACKETS,
             f"plumbing: direct caller->callee RTP == {PCAP_RTP_PACKETS} ({len(direct_ce)})")
        c.ok(len(direct_ec) == PCAP_RTP_PACKETS,
             f"plumbing: direct callee->caller RTP == {PCAP_RTP_PACKETS} ({len(direct_ec)})")

    # ---- Kamailio script return codes -----------------------------------
    klog = open(os.path.join(d, "kamailio.log"), encoding="utf-8", errors="replace").read()
    rcs = re.findall(r"E2E (\S+\(.*?\)) rc=(-?\d+)", klog)
    print("  kamailio script calls: " + (", ".join(f"{f}={r}" for f, r in rcs) or "none"))
    if with_mp:
        if mode in ("use", "rtpproxy", "manage", "shim-engage"):
            offer, answer, end = {"use": ("use_media_proxy",) * 2 + ("end_media_session",),
                                  # the end: checked by tests/shim (BYE or dialog:end)
                                  "shim-engage": ("dialog_request", "dialog_reply", None),
                                  "rtpproxy": ("rtpproxy_offer", "rtpproxy_answer",
                                               "unforce_rtp_proxy"),
                                  "manage": ("rtpproxy_manage",) * 3}[mode]
            c.ok((f"{offer}(INVITE)", "1") in rcs, f"{offer}() on INVITE returned 1")
            c.ok((f"{answer}(reply 200)", "1") in rcs, f"{answer}() on 200 OK returned 1")
            if end:
                c.ok((f"{end}(BYE)", "1") in rcs, f"{end}() on BYE returned 1")
        else:
            c.ok(("engage_media_proxy()", "1") in rcs, "engage_media_proxy() returned 1")
        # shim engage mode: 0 (nothing to send) and -2 (no SDP: 180, ACK)
        # are not failures
        fine = ("1", "0", "-2") if mode == "shim-engage" else ("1",)
        c.ok(not any(r not in fine for _, r in rcs), "no mediaproxy script call failed")

    # ---- mediaproxy's own statistics ------------------------------------
    if with_mp:
        st = find_stats(os.path.join(d, "mediaproxy.log"), call_id)
        if c.ok(st is not None, "mediaproxy logged session statistics JSON for the call"):
            streams = st.get("streams") or []
            print("  stats JSON: " + json.dumps(st))
            if c.ok(len(streams) >= 1, "stats have at least one stream"):
                s0 = streams[0]
                cp = sum(int(s.get("caller_packets", 0)) for s in streams)
                ep = sum(int(s.get("callee_packets", 0)) for s in streams)
                fig.update(stats_caller_packets=cp, stats_callee_packets=ep)
                print(f"  mediaproxy stats: caller_packets {cp}, callee_packets {ep}")
                near = lambda v, ref: abs(v - ref) <= STATS_TOLERANCE
                c.ok(near(cp, len(r2e)) or near(cp, len(c2r)),
                     f"caller_packets {cp} within {STATS_TOLERANCE} of tcpdump "
                     f"(caller->relay {len(c2r)}, relay->callee {len(r2e)})")
                c.ok(near(ep, len(r2c)) or near(ep, len(e2r)),
                     f"callee_packets {ep} within {STATS_TOLERANCE} of tcpdump "
                     f"(callee->relay {len(e2r)}, relay->caller {len(r2c)})")
                forwarding = os.environ.get("MPE2E_FORWARDING", "userspace")
                kp = sum(int(s.get("caller_kernel_packets", 0)) for s in streams)
                if forwarding == "kernel":
                    c.ok(s0.get("forwarding") == "kernel" and kp >= cp - 5,
                         f"forwarding=kernel: {kp} of {cp} caller packets went through "
                         f"the kernel (stream reports {s0.get('forwarding')})")
                else:
                    c.ok(kp == 0, f"forwarding={forwarding}: no packet in the kernel ({kp})")
                c.ok(s0.get("media_type") == "audio", "stream media_type audio")
                c.ok(s0.get("caller_local") == f"{RELAY_IP}:{caller_got[1]}",
                     f"caller_local {s0.get('caller_local')} == caller's SDP address")
                c.ok(s0.get("callee_local") == f"{RELAY_IP}:{callee_got[1]}",
                     f"callee_local {s0.get('callee_local')} == callee's SDP address")
                c.ok(s0.get("caller_remote") == f"{CALLER_IP}:6000",
                     f"caller_remote {s0.get('caller_remote')} == {CALLER_IP}:6000")
                c.ok(s0.get("callee_remote") == f"{CALLEE_IP}:6000",
                     f"callee_remote {s0.get('callee_remote')} == {CALLEE_IP}:6000")
                c.ok(s0.get("caller_codec") == "G711a" and s0.get("callee_codec") == "G711a",
                     f"codecs G711a/G711a (got {s0.get('caller_codec')}/{s0.get('callee_codec')})")
            c.ok(st.get("from_tag") == from_tag and st.get("to_tag") == to_tag,
                 f"stats tags {st.get('from_tag')}/{st.get('to_tag')} match the dialog")

    # ---- session gone after BYE (socket check done by run_e2e.sh) -------
    if with_mp:
        rr = os.path.join(d, "remove_after_bye.txt")
        txt = open(rr).read() if os.path.exists(rr) else ""
        print("  remove after BYE: " + " | ".join(txt.strip().splitlines()))
        c.ok("reply bytes: b'error\\r\\n'" in txt,
             "remove sent after BYE is answered 'error' (session already gone)")

    with open(os.path.join(d, "figures.json"), "w") as f:
        json.dump(fig, f)
    if c.failures:
        print(f"  {len(c.failures)} assertion(s) failed")
        return 1
    return 0


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    cmd = argv[1]
    if cmd == "wait-unix":
        return wait_unix(argv[2], float(argv[3]), argv[4] if len(argv) > 4 else None)
    if cmd == "request":
        hdrs = [a.split("=", 1) for a in argv[5:]]
        return request(argv[2], float(argv[3]), argv[4], hdrs)
    if cmd == "dialog":
        call_id, from_tag, to_tag = dialog_ids(argv[2])
        print(call_id)
        print(from_tag)
        print(to_tag)
        return 0 if call_id and from_tag and to_tag else 1
    if cmd == "check":
        return check(argv[2], argv[3], argv[4] == "1")
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
