#!/usr/bin/python3
"""Helpers for run_opensips_e2e.sh (stdlib only, runs under /usr/bin/python3).

Sub-commands:
  mi SOCK TIMEOUT METHOD [PARAMS_JSON]
        send one JSON-RPC 2.0 request to OpenSIPS's mi_datagram UNIX socket
        from a datagram socket of our own (so the reply can come back), print
        the reply and exit 0 if one came
  metrics HOST:PORT TIMEOUT
        GET /metrics from our mediaproxy's Prometheus endpoint, print the body
  snoop LISTEN TARGET LOG SECONDS
        UNIX stream proxy LISTEN -> TARGET that writes every byte both ways to
        LOG (repr per chunk, per connection): shows what OpenSIPS's mediaproxy
        module sends our dispatcher. Exits after SECONDS.
  check DIR MODE STREAM_TIMEOUT
        evaluate one mode's artefacts (mode call, hangup or mi), print the
        figures and exit 1 on any failed assertion

Generic sipp/pcap/socket helpers come from ../e2e_util.py (the Kamailio e2e).
"""

import json
import os
import re
import select
import socket
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import e2e_util  # noqa: E402  (tests/e2e/e2e_util.py)

RELAY_IP = "10.201.0.1"
CALLER_IP = "10.201.1.2"
CALLEE_IP = "10.201.2.2"
PORT_MIN, PORT_MAX = 40000, 40999
MIN_FORWARDED = 200
STATS_TOLERANCE = int(os.environ.get("MPOS_STATS_TOL", "10"))


# --------------------------------------------------------------------------
# OpenSIPS MI over mi_datagram

def mi_request(sock_path, timeout, method, params=None, req_id=None):
    """One JSON-RPC request; returns (request_bytes, reply_bytes or None)."""
    req = {"jsonrpc": "2.0", "id": req_id or f"{os.getpid():x}{int(time.time() * 1000) % 100000:x}",
           "method": method}
    if params is not None:
        req["params"] = params
    raw = json.dumps(req).encode()
    me = f"/tmp/mpos-mi-{os.getpid()}-{threading.get_ident()}.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        if os.path.exists(me):
            os.unlink(me)
        s.bind(me)
        s.settimeout(timeout)
        s.sendto(raw, sock_path)
        try:
            reply, _ = s.recvfrom(65535)
        except socket.timeout:
            reply = None
    finally:
        s.close()
        try:
            os.unlink(me)
        except OSError:
            pass
    return raw, reply


def cmd_mi(argv):
    sock_path, timeout, method = argv[0], float(argv[1]), argv[2]
    params = json.loads(argv[3]) if len(argv) > 3 else None
    try:
        raw, reply = mi_request(sock_path, timeout, method, params)
    except OSError as e:
        print(f"mi error: {e}", file=sys.stderr)
        return 1
    if reply is None:
        print(f"no reply from {sock_path} within {timeout}s to {raw!r}", file=sys.stderr)
        return 1
    sys.stdout.write(reply.decode(errors="replace") + "\n")
    return 0


# --------------------------------------------------------------------------
# metrics

def http_get(hostport, timeout, path="/metrics"):
    host, port = hostport.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=timeout)
    try:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n".encode())
        buf = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    finally:
        s.close()
    head, _, body = buf.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0]
    if b" 200 " not in status:
        raise OSError(f"HTTP status line {status!r}")
    return body.decode(errors="replace")


def cmd_metrics(argv):
    try:
        sys.stdout.write(http_get(argv[0], float(argv[1])))
    except OSError as e:
        print(f"metrics error: {e}", file=sys.stderr)
        return 1
    return 0


def metric(text, name, labels=None):
    """Value of one sample (labels: dict that must match exactly), or None."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if (labels or {}) == got:
            return float(m.group(4))
    return None


# --------------------------------------------------------------------------
# snooping proxy (diagnostics: what the module sends)

def cmd_snoop(argv):
    listen, target, logpath, seconds = argv[0], argv[1], argv[2], float(argv[3])
    if os.path.exists(listen):
        os.unlink(listen)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(listen)
    srv.listen(64)
    log = open(logpath, "a", buffering=1)
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    n = 0

    def pump(cid, a, b):
        try:
            while time.monotonic() < deadline:
                r, _, _ = select.select([a, b], [], [], 0.5)
                for s in r:
                    data = s.recv(65536)
                    if not data:
                        return
                    (b if s is a else a).sendall(data)
                    with lock:
                        log.write(f"{time.time():.3f} conn{cid} "
                                  f"{'module->dispatcher' if s is a else 'dispatcher->module'} "
                                  f"{data!r}\n")
        except OSError:
            pass
        finally:
            a.close()
            b.close()

    srv.settimeout(0.5)
    while time.monotonic() < deadline:
        try:
            c, _ = srv.accept()
        except socket.timeout:
            continue
        n += 1
        up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            up.connect(target)
        except OSError as e:
            with lock:
                log.write(f"conn{n}: cannot connect {target}: {e}\n")
            c.close()
            continue
        with lock:
            log.write(f"{time.time():.3f} conn{n} opened\n")
        threading.Thread(target=pump, args=(n, c, up), daemon=True).start()
    srv.close()
    return 0


# --------------------------------------------------------------------------
# artefact evaluation

def session_records(logfile):
    """All 'session ended: {json}' records of our mediaproxy log."""
    out = []
    if not os.path.exists(logfile):
        return out
    with open(logfile, encoding="utf-8", errors="replace") as f:
        for line in f:
            i = line.find("session ended: {")
            if i < 0:
                continue
            try:
                obj, _ = json.JSONDecoder().raw_decode(line[i + len("session ended: "):])
                out.append(obj)
            except ValueError:
                pass
    return out


def reverse_hex(s):
    """OpenSIPS reverse hex (least significant nibble first) -> int."""
    v = 0
    for ch in reversed(s):
        v = v * 16 + int(ch, 16)
    return v


def load_json(path):
    try:
        with open(path) as f:
            return json.loads(f.read() or "null")
    except (OSError, ValueError):
        return None


def dialogs_of(reply):
    if not isinstance(reply, dict):
        return None
    res = reply.get("result")
    if not isinstance(res, dict):
        return None
    return res.get("Dialogs")


def read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def vias(text):
    return [ln for ln in text.split("\n")[1:] if re.match(r"(?i)^(via|v)\s*:", ln)]


def byes(path, direction):
    """(time-ordered) BYE requests in a sipp message log, as (headers, vias)."""
    out = []
    if not os.path.exists(path):
        return out
    for d, text in e2e_util.sipp_messages(path):
        if d == direction and text.startswith("BYE "):
            start, h, _ = e2e_util.split_msg(text)
            out.append((start, h, vias(text.partition("\n\n")[0])))
    return out


def silence_to_bye(pcap):
    """(time of the last RTP packet, time of the first SIP packet proxy->caller
    after it) on the caller-side capture; None where not found."""
    import subprocess
    if not os.path.exists(pcap):
        return None, None
    out = subprocess.run(["tcpdump", "-tt", "-r", pcap, "-nn", "-q", "udp"],
                         capture_output=True, text=True, timeout=20).stdout
    rows = []
    for line in out.splitlines():
        m = re.match(r"^(\d+\.\d+) IP (\d+\.\d+\.\d+\.\d+)\.(\d+) > (\d+\.\d+\.\d+\.\d+)\.(\d+):", line)
        if m:
            rows.append((float(m.group(1)), m.group(2), int(m.group(3)), m.group(4), int(m.group(5))))
    rtp = [r[0] for r in rows if PORT_MIN <= r[2] <= PORT_MAX or PORT_MIN <= r[4] <= PORT_MAX]
    if not rtp:
        return None, None
    last = max(rtp)
    sip = [r[0] for r in rows if r[0] > last and r[1] == RELAY_IP and r[2] == 5060 and r[3] == CALLER_IP]
    return last, (min(sip) if sip else None)


def check(d, mode, stream_timeout):
    c = e2e_util.Checker()
    fig = {"mode": mode}

    # ---- SIP / SDP as seen by the phones --------------------------------
    inv_start, inv_h, inv_body = e2e_util.find_sdp(os.path.join(d, "uas_messages.log"), "invite")
    ok_start, ok_h, ok_body = e2e_util.find_sdp(os.path.join(d, "uac_messages.log"), "invite-200")
    c.ok(inv_start is not None, "callee received the INVITE through OpenSIPS")
    c.ok(ok_start is not None, "caller received a 200 OK to INVITE")
    callee_got = e2e_util.sdp_audio(inv_body) if inv_start else (None, None)
    caller_got = e2e_util.sdp_audio(ok_body) if ok_start else (None, None)
    print(f"  SDP received by callee (INVITE): c={callee_got[0]} m=audio {callee_got[1]}")
    print(f"  SDP received by caller (200 OK): c={caller_got[0]} m=audio {caller_got[1]}")
    call_id = ok_h.get("call-id") or inv_h.get("call-id") or ""
    from_tag = e2e_util.tag_of(ok_h.get("from", "")) or e2e_util.tag_of(inv_h.get("from", ""))
    to_tag = e2e_util.tag_of(ok_h.get("to", ""))
    print(f"  dialog: call_id={call_id} from_tag={from_tag} to_tag={to_tag}")
    for who, (ip, port) in (("callee", callee_got), ("caller", caller_got)):
        c.ok(ip == RELAY_IP, f"{who}'s SDP c= names the relay {RELAY_IP} (got {ip})")
        c.ok(port is not None and PORT_MIN <= port <= PORT_MAX,
             f"{who}'s SDP m=audio port in {PORT_MIN}-{PORT_MAX} (got {port})")

    # ---- OpenSIPS script ----------------------------------------------------
    olog = read(os.path.join(d, "opensips.log"))
    rcs = re.findall(r"E2E engage_media_proxy\(\) rc=(-?\d+)", olog)
    c.ok(rcs == ["1"], f"engage_media_proxy() called once on the INVITE, returned 1 (got {rcs})")
    local_byes = re.findall(r"E2E local BYE to (\S+)", olog)
    print(f"  OpenSIPS local BYEs: {local_byes}")

    # ---- RTP through the relay (tcpdump on the relay namespace's veths) ---
    pc = e2e_util.udp_packets(os.path.join(d, "to-caller.pcap"))
    pe = e2e_util.udp_packets(os.path.join(d, "to-callee.pcap"))
    in_range = lambda p: PORT_MIN <= p <= PORT_MAX
    sip = lambda p: p[1] == 5060 or p[3] == 5060
    c2r = [p for p in pc if p[0] == CALLER_IP and p[2] == RELAY_IP and in_range(p[3])]
    r2c = [p for p in pc if p[0] == RELAY_IP and in_range(p[1]) and p[2] == CALLER_IP]
    e2r = [p for p in pe if p[0] == CALLEE_IP and p[2] == RELAY_IP and in_range(p[3])]
    r2e = [p for p in pe if p[0] == RELAY_IP and in_range(p[1]) and p[2] == CALLEE_IP]
    direct = [p for p in pe + pc if {p[0], p[2]} == {CALLER_IP, CALLEE_IP} and not sip(p)]
    fig.update(c2r=len(c2r), r2e=len(r2e), e2r=len(e2r), r2c=len(r2c), direct=len(direct))
    print(f"  tcpdump: caller->relay {len(c2r)}, relay->callee {len(r2e)}, "
          f"callee->relay {len(e2r)}, relay->caller {len(r2c)}, bypassing the relay {len(direct)}")
    c.ok(len(r2e) >= MIN_FORWARDED, f"relay forwarded caller->callee >= {MIN_FORWARDED} ({len(r2e)})")
    c.ok(len(r2c) >= MIN_FORWARDED, f"relay forwarded callee->caller >= {MIN_FORWARDED} ({len(r2c)})")
    c.ok(len(r2e) <= len(c2r) and len(r2c) <= len(e2r), "relay sent no more than it received")
    c.ok(not direct, "no RTP bypassed the relay")
    c.ok(all(p[2:] == (CALLEE_IP, 6000) for p in r2e) and all(p[1] == callee_got[1] for p in r2e),
         "relay->callee: from the port in the callee's SDP to 10.201.2.2:6000")
    c.ok(all(p[2:] == (CALLER_IP, 6000) for p in r2c) and all(p[1] == caller_got[1] for p in r2c),
         "relay->caller: from the port in the caller's SDP to 10.201.1.2:6000")

    # ---- the dialog in OpenSIPS while up, and after ------------------------
    during = load_json(os.path.join(d, "dlg_list_during.json"))
    after = load_json(os.path.join(d, "dlg_list_after.json"))
    dl = dialogs_of(during)
    print("  dlg_list during the call: " + json.dumps(during)[:600])
    dlg_id = db_id = None
    if c.ok(isinstance(dl, list) and len(dl) == 1 and dl[0].get("callid") == call_id,
            "dlg_list during the call: exactly our dialog"):
        dlg_id, db_id = dl[0].get("ID"), dl[0].get("db_id")
        c.ok(dl[0].get("state") == 4, f"dialog state 4 (confirmed) during the call (got {dl[0].get('state')})")
        m = re.fullmatch(r"([0-9a-f]+)\.([0-9a-f]+)", dlg_id or "")
        if c.ok(m is not None, f"dlg_list ID '{dlg_id}' is <reverse-hex h_entry>.<reverse-hex h_id>"):
            h_entry, h_id = reverse_hex(m.group(1)), reverse_hex(m.group(2))
            print(f"  OpenSIPS dialog: ID {dlg_id} = h_entry {h_entry}, h_id {h_id}; db_id {db_id}")
            c.ok(str(h_entry << 32 | h_id) == db_id, "db_id == h_entry << 32 | h_id")
    dl_after = dialogs_of(after)
    print("  dlg_list after the call: " + json.dumps(after)[:300])
    c.ok(isinstance(dl_after, list) and not any(x.get("callid") == call_id for x in dl_after),
         "the dialog is gone from OpenSIPS after the call (dlg_list)")

    # ---- our mediaproxy: the session record -------------------------------
    recs = [r for r in session_records(os.path.join(d, "mediaproxy.log")) if r.get("call_id") == call_id]
    if c.ok(len(recs) == 1, f"mediaproxy logged exactly one session record for the call ({len(recs)})"):
        r = recs[0]
        print("  session record: " + json.dumps(r))
        print(f"  dialog_id the OpenSIPS module sent (session record): {r.get('dialog_id')!r}")
        c.ok(re.fullmatch(r"[0-9]+", str(r.get("dialog_id"))) is not None,
             "dialog_id from the OpenSIPS module is one decimal number")
        if db_id is not None:
            c.ok(str(r.get("dialog_id")) == db_id,
                 f"dialog_id {r.get('dialog_id')} == OpenSIPS db_id {db_id} (h_entry << 32 | h_id)")
        c.ok(r.get("from_tag") == from_tag and r.get("to_tag") == to_tag, "record tags match the dialog")
        streams = r.get("streams") or []
        if c.ok(len(streams) == 1, f"one stream in the record ({len(streams)})"):
            s0 = streams[0]
            cp, ep = int(s0.get("caller_packets", 0)), int(s0.get("callee_packets", 0))
            near = lambda v, ref: abs(v - ref) <= STATS_TOLERANCE
            c.ok(near(cp, len(r2e)) or near(cp, len(c2r)),
                 f"caller_packets {cp} matches tcpdump ({len(c2r)}/{len(r2e)})")
            c.ok(near(ep, len(r2c)) or near(ep, len(e2r)),
                 f"callee_packets {ep} matches tcpdump ({len(e2r)}/{len(r2c)})")
            print(f"  stream status: {s0.get('status')!r}, timeout_wait {s0.get('timeout_wait')}")
            forwarding = os.environ.get("MPOS_FORWARDING", "userspace")
            kp = int(s0.get("caller_kernel_packets", 0)) + int(s0.get("callee_kernel_packets", 0))
            if forwarding == "kernel":
                c.ok(s0.get("forwarding") == "kernel" and kp >= cp + ep - 10,
                     f"forwarding=kernel: {kp} of {cp + ep} packets went through the kernel "
                     f"(stream reports {s0.get('forwarding')})")
            else:
                c.ok(kp == 0, f"forwarding={forwarding}: no packet in the kernel ({kp})")
        if mode in ("call", "mi"):
            c.ok(r.get("timed_out") is False, f"timed_out false (got {r.get('timed_out')})")
        else:
            c.ok(r.get("timed_out") is True, f"timed_out true (got {r.get('timed_out')})")
            if streams:
                # spec D.9: an established stream that falls idle expires with
                # "conntrack timeout" ("no-traffic timeout" is for no traffic at all)
                c.ok(streams[0].get("status") == "conntrack timeout"
                     and streams[0].get("timeout_wait") == int(stream_timeout),
                     f"stream expired idle: status 'conntrack timeout', timeout_wait "
                     f"{int(stream_timeout)} (got {streams[0].get('status')!r}, "
                     f"{streams[0].get('timeout_wait')})")

    # ---- metrics -------------------------------------------------------------
    m_during = read(os.path.join(d, "metrics_during.txt"))
    m_after = read(os.path.join(d, "metrics_after.txt"))
    ds = metric(m_during, "mediaproxy_dispatcher_sessions")
    rs = metric(m_during, "mediaproxy_relay_sessions")
    c.ok(ds == 1 and rs == 1, f"metrics during the call: dispatcher sessions {ds}, relay sessions {rs} (want 1, 1)")
    req = lambda cmd, res: metric(m_after, "mediaproxy_dispatcher_requests_total",
                                  {"command": cmd, "result": res}) or 0
    fig.update(updates_ok=req("update", "ok"), removes_ok=req("remove", "ok"))
    print(f"  module requests after the call: update ok {req('update', 'ok'):g}, error "
          f"{req('update', 'error'):g}; remove ok {req('remove', 'ok'):g}, error {req('remove', 'error'):g}")
    c.ok(req("update", "ok") == 2 and req("update", "error") == 0,
         "the module's 2 updates (INVITE, 200 OK) answered ok, none error")
    c.ok(req("remove", "ok") == 1 and req("remove", "error") == 0,
         "the module's remove at the dialog's end answered ok (removed), none error")
    c.ok(metric(m_after, "mediaproxy_dispatcher_sessions") == 0, "no session left in the dispatcher")
    expired = metric(m_after, "mediaproxy_relay_sessions_expired_total", {"reason": "conntrack_timeout"}) or 0
    c.ok(expired == (1 if mode == "hangup" else 0),
         f"relay sessions expired idle (conntrack_timeout): {expired:g} "
         f"(want {1 if mode == 'hangup' else 0})")
    hup = {res: metric(m_after, "mediaproxy_hangup_requests_total", {"proxy": "opensips", "result": res})
           for res in ("ok", "error", "timeout", "unsent")}
    print(f"  mediaproxy_hangup_requests_total{{proxy=\"opensips\"}} after: {hup}")
    hlines = [ln.rstrip() for ln in read(os.path.join(d, "mediaproxy.log")).splitlines()
              if re.search(r"hang-up:|dlg_end_dlg", ln)]
    for ln in hlines[-6:]:
        print("  mediaproxy| " + ln[:300])

    # ---- who sent the BYEs ------------------------------------------------------
    uac_sent = byes(os.path.join(d, "uac_messages.log"), "sent")
    uac_recv = byes(os.path.join(d, "uac_messages.log"), "recv")
    uas_recv = byes(os.path.join(d, "uas_messages.log"), "recv")
    print(f"  BYEs: caller sent {len(uac_sent)}, caller received {len(uac_recv)}, callee received {len(uas_recv)}")
    from_proxy = lambda b: len(b[2]) == 1 and RELAY_IP in b[2][0]
    if mode == "call":
        c.ok(len(uac_sent) >= 1 and not uac_recv, "caller hung up itself and got no BYE")
        c.ok(len(uas_recv) >= 1 and len(uas_recv[0][2]) == 2,
             "callee got the caller's BYE relayed by OpenSIPS (2 Via)")
        c.ok(not local_byes, "OpenSIPS generated no BYE of its own")
        c.ok(not any(hup.values()), "no hang-up request sent for a normally ended call")
    else:
        if mode == "mi":
            dec, did = (load_json(os.path.join(d, f)) for f in ("mi_end_decimal.json", "mi_end_did.json"))
            print(f"  dlg_end_dlg with the module's decimal dialog_id -> {json.dumps(dec)}")
            if did is not None:
                print(f"  dlg_end_dlg with the dlg_list ID -> {json.dumps(did)}")
            final = did if did is not None else dec
            c.ok(isinstance(final, dict) and "result" in final,
                 "dlg_end_dlg succeeded (with the decimal id, or else the dlg_list ID)")
            c.ok(not any(hup.values()), "our dispatcher sent no hang-up request of its own")
        c.ok(not uac_sent, "caller never sent a BYE")
        c.ok(len(uac_recv) >= 1 and from_proxy(uac_recv[0]),
             "caller got a BYE generated by OpenSIPS (one Via, 10.201.0.1)")
        c.ok(len(uas_recv) >= 1 and from_proxy(uas_recv[0]),
             "callee got a BYE generated by OpenSIPS (one Via, 10.201.0.1)")
        c.ok(len(local_byes) == 2, f"OpenSIPS log: 2 local BYEs (dlg_end_dlg) ({len(local_byes)})")
    if mode == "hangup":
        c.ok(hup["ok"] == 1, f'mediaproxy_hangup_requests_total{{proxy="opensips",result="ok"}} == 1 '
                             f'(got {hup["ok"]})')
        c.ok(not hup["error"] and not hup["timeout"] and not hup["unsent"],
             "no hang-up request failed (error, timeout, unsent all 0)")
        c.ok(any(re.search(r"hang-up: OpenSIPS ended dialog " + re.escape(str(db_id)), ln) for ln in hlines)
             if db_id else False, "the dispatcher logged that OpenSIPS ended the dialog")
        # timing: the last RTP packet vs the proxy's BYE to the caller
        last_rtp, bye_t = silence_to_bye(os.path.join(d, "to-caller.pcap"))
        if last_rtp and bye_t:
            gap = bye_t - last_rtp
            print(f"  last RTP on the caller side -> OpenSIPS's BYE to the caller: {gap:.2f} s "
                  f"(stream_timeout {stream_timeout:g} s)")
            c.ok(stream_timeout - 0.5 <= gap <= stream_timeout + 5,
                 f"BYE came {gap:.2f} s after the media stopped: stream_timeout "
                 f"{stream_timeout:g} s plus at most 5 s")
        else:
            c.ok(False, "found the last RTP packet and the proxy's BYE to the caller in the capture")

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
    cmd, rest = argv[1], argv[2:]
    if cmd == "mi":
        return cmd_mi(rest)
    if cmd == "metrics":
        return cmd_metrics(rest)
    if cmd == "snoop":
        return cmd_snoop(rest)
    if cmd == "wait-unix":
        return e2e_util.wait_unix(rest[0], float(rest[1]), rest[2] if len(rest) > 2 else None)
    if cmd == "check":
        return check(rest[0], rest[1], float(rest[2]))
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
