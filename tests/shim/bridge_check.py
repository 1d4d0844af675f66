#!/usr/bin/python3
"""bridge_check.py - evaluates one IPv6 run of run_shim_e2e.sh (the modes
bridge, bridge-engage and ipv6) from its artefacts, printing each assertion
and exiting 1 if any failed:

  bridge_check.py DIR MODE

What the phones saw: the callee's INVITE names the relay's IPv6 address
(`c=IN IP6 fd00:200::1`) and the caller's 200 the relay's address of the
caller's family (`c=IN IP4 10.200.0.1` when bridged, IPv6 in ipv6 mode),
with different relay ports. In bridge-engage mode also the callee's
re-INVITE as the caller received it (`IN IP4`, the caller's port of the
first 200) and its 200 as the callee received it (`IN IP6`, the callee's
port of the INVITE): the relay kept the stream, which it only does when the
shim sent the re-INVITE with `families: 6,4`.

What the relay did: tcpdump on the relay namespace's two veths counts RTP
from each phone to the relay and from the relay to each phone (>= 200 each
way, of the right family, to the phone's media address, from the port its
SDP named; nothing phone to phone), and the session record the dispatcher
logs when the call ends ("session ended: {json}") has one stream whose
caller_local/callee_local are the relay addresses the phones got
(`[fd00:200::1]:port` for the IPv6 side) and whose packet counters match
tcpdump; a `remove` after the BYE is answered `error`.

What the shim sent: the dispatcher-tap.log of the socat between the shim
and the dispatcher: the INVITE's update with `families: 4,6` and a
bracketed IPv6 media item in the 200's (`families: 6,4`), in bridge-engage
the callee's re-INVITE with `families: 6,4` and its 200 with `4,6`; in ipv6
mode no `families` header at all (both parties IPv6, nothing to say). And
Kamailio's script calls all returned 1 (engage: one answered `remove`), the
dispatcher's `sessions` listing the call during it and nothing after
(bridge-engage).
"""

import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
import e2e_util  # noqa: E402  (sipp log parsing, the stats record)

RELAY4, RELAY6 = "10.200.0.1", "fd00:200::1"
CALLER4, CALLER6 = "10.200.1.2", "fd00:200:1::2"
CALLEE6 = "fd00:200:2::2"
PORT_MIN, PORT_MAX = 40000, 40999
MIN_FORWARDED = 200
TOL = int(os.environ.get("MPE2E_STATS_TOL", "10"))


class Checker:
    def __init__(self):
        self.failures = 0

    def ok(self, cond, what):
        print(("  ok    " if cond else "  FAIL  ") + what)
        self.failures += not cond
        return cond


def audio(body):
    """(address type, address, port) of the first audio stream of an SDP."""
    kind = addr = port = None
    seen_m = in_audio = False
    for line in body.split("\n"):
        line = line.strip()
        if line.startswith("m="):
            if in_audio:
                break
            seen_m, in_audio = True, line.split()[0] == "m=audio"
            if in_audio:
                port = int(line.split()[1])
        elif line.startswith("c=") and (not seen_m or in_audio):
            toks = line[2:].split()
            kind, addr = toks[1], toks[2]
    return kind, addr, port


def received(path, pred):
    """The (start line, headers, body) of every message sipp received that
    pred(start, headers) accepts."""
    out = []
    for direction, text in e2e_util.sipp_messages(path):
        if direction == "recv":
            start, headers, body = e2e_util.split_msg(text)
            if pred(start, headers):
                out.append((start, headers, body))
    return out


PKT = re.compile(r"IP6? (\S+)\.(\d+) > (\S+)\.(\d+): UDP")


def udp_packets(pcap):
    """(src, sport, dst, dport) of each UDP packet (IPv4 or IPv6) in a pcap."""
    if not os.path.exists(pcap):
        return []
    out = subprocess.run(["tcpdump", "-r", pcap, "-nn", "-q", "udp"], capture_output=True,
                         text=True, timeout=20).stdout
    return [(m[1], int(m[2]), m[3], int(m[4])) for m in map(PKT.search, out.splitlines()) if m]


def tapped_requests(path):
    """The requests the shim sent (socat -v's "> " blocks joined, split at
    the blank line ending each), as lists of header lines."""
    text, out = [], False
    for line in open(path, encoding="latin-1"):
        if re.match(r"^[<>] \d{4}/\d\d/\d\d ", line):
            out = line.startswith(">")
            continue
        # socat -v glues the next direction marker to a line without \n
        marker = re.search(r"[<>] \d{4}/\d\d/\d\d \S+\s+length=", line)
        if marker:
            if out:
                text.append(line[:marker.start()])
            out = line[marker.start()] == ">"
            continue
        if out:
            text.append(line)
    reqs = "".join(text).replace("\\r\n", "\n").split("\n\n")
    return [r.split("\n") for r in reqs if r.strip()]


def header(req, name):
    for line in req[1:]:
        if line.startswith(name + ": "):
            return line[len(name) + 2:]
    return None


def main(d, mode):
    c = Checker()
    bridged = mode in ("bridge", "bridge-engage")
    engage = mode == "bridge-engage"
    caller_ip = CALLER4 if bridged else CALLER6
    caller_relay, caller_type = (RELAY4, "IP4") if bridged else (RELAY6, "IP6")
    uac_log = os.path.join(d, "uac_messages.log")
    uas_log = os.path.join(d, "uas_messages.log")

    # ---- SDP as the phones received it ---------------------------------
    is_invite = lambda s, h: s.startswith("INVITE ")
    ok_invite = lambda s, h: s.startswith("SIP/2.0 200") and h.get("cseq", "").endswith("INVITE")
    callee_invites = received(uas_log, is_invite)
    caller_200s = received(uac_log, ok_invite)
    c.ok(len(callee_invites) >= 1 and len(caller_200s) >= 1,
         "callee received the INVITE, caller its 200 OK")
    if not (callee_invites and caller_200s):
        return 1
    e_kind, e_addr, e_port = audio(callee_invites[0][2])
    r_kind, r_addr, r_port = audio(caller_200s[0][2])
    print(f"  callee's INVITE: c=IN {e_kind} {e_addr} m=audio {e_port}")
    print(f"  caller's 200:    c=IN {r_kind} {r_addr} m=audio {r_port}")
    c.ok((e_kind, e_addr) == ("IP6", RELAY6), f"callee got c=IN IP6 {RELAY6}")
    c.ok((r_kind, r_addr) == (caller_type, caller_relay),
         f"caller got c=IN {caller_type} {caller_relay}")
    c.ok(all(p is not None and PORT_MIN <= p <= PORT_MAX for p in (e_port, r_port))
         and e_port != r_port, "two different relay ports from the port range")
    call_id = caller_200s[0][1].get("call-id", "")
    from_tag = e2e_util.tag_of(caller_200s[0][1].get("from", ""))
    to_tag = e2e_util.tag_of(caller_200s[0][1].get("to", ""))
    print(f"  dialog: call_id={call_id} from_tag={from_tag} to_tag={to_tag}")

    if engage:
        # the callee's re-INVITE at the caller and its 200 at the callee
        reinv = received(uac_log, is_invite)
        reinv_200 = received(uas_log, ok_invite)
        c.ok(reinv and reinv_200, "caller received the callee's re-INVITE, callee its 200")
        # (retransmissions, if any, must say the same)
        got = {audio(m[2]) for m in reinv}
        c.ok(got == {("IP4", RELAY4, r_port)},
             f"re-INVITE at the caller: c=IN IP4 {RELAY4} m=audio {r_port} as in "
             f"the first 200 (got {got})")
        got = {audio(m[2]) for m in reinv_200}
        c.ok(got == {("IP6", RELAY6, e_port)},
             f"its 200 at the callee: c=IN IP6 {RELAY6} m=audio {e_port} as in the "
             f"INVITE (got {got})")

    # ---- RTP on the relay namespace's veths ----------------------------
    pc = udp_packets(os.path.join(d, "to-caller.pcap"))
    pe = udp_packets(os.path.join(d, "to-callee.pcap"))
    rng = lambda port: PORT_MIN <= port <= PORT_MAX
    c2r = [p for p in pc if p[0] == caller_ip and p[2] == caller_relay and rng(p[3])]
    r2c = [p for p in pc if p[0] == caller_relay and rng(p[1]) and p[2] == caller_ip]
    e2r = [p for p in pe if p[0] == CALLEE6 and p[2] == RELAY6 and rng(p[3])]
    r2e = [p for p in pe if p[0] == RELAY6 and rng(p[1]) and p[2] == CALLEE6]
    phones = {CALLER4, CALLER6, "10.200.2.2", CALLEE6}
    direct = [p for p in pc + pe if p[0] in phones and p[2] in phones]
    print(f"  tcpdump: caller->relay {len(c2r)}, relay->callee {len(r2e)}, "
          f"callee->relay {len(e2r)}, relay->caller {len(r2c)}, phone to phone {len(direct)}")
    for n, what in ((c2r, "caller->relay"), (r2e, "relay->callee"), (e2r, "callee->relay"),
                    (r2c, "relay->caller")):
        c.ok(len(n) >= MIN_FORWARDED, f"{what} RTP >= {MIN_FORWARDED} ({len(n)})")
    c.ok(len(r2e) <= len(c2r) and len(r2c) <= len(e2r), "relay sent no more than it got")
    c.ok(not direct, "no packet went phone to phone")
    c.ok(all(p[2:] == (CALLEE6, 6000) and p[1] == e_port for p in r2e),
         f"relay->callee from [{RELAY6}]:{e_port} to [{CALLEE6}]:6000")
    c.ok(all(p[2:] == (caller_ip, 6000) and p[1] == r_port for p in r2c),
         f"relay->caller from {caller_relay}:{r_port} to {caller_ip}:6000")
    c.ok(all(p[3] == r_port for p in c2r) and all(p[3] == e_port for p in e2r),
         "each phone sent to the port its SDP named")

    # ---- the session record ---------------------------------------------
    st = e2e_util.find_stats(os.path.join(d, "mediaproxy.log"), call_id)
    if c.ok(st is not None, "dispatcher logged the session record of the call"):
        print("  record: " + json.dumps(st))
        streams = st.get("streams") or []
        c.ok(len(streams) == 1, f"one stream in one session ({len(streams)})")
        s0 = streams[0] if streams else {}
        v6 = lambda a, p: f"[{a}]:{p}"
        want_caller_local = f"{RELAY4}:{r_port}" if bridged else v6(RELAY6, r_port)
        want_caller_remote = f"{CALLER4}:6000" if bridged else v6(CALLER6, 6000)
        for key, want in (("caller_local", want_caller_local),
                          ("callee_local", v6(RELAY6, e_port)),
                          ("caller_remote", want_caller_remote),
                          ("callee_remote", v6(CALLEE6, 6000))):
            c.ok(s0.get(key) == want, f"{key} {s0.get(key)} == {want}")
        cp, ep = int(s0.get("caller_packets", -1)), int(s0.get("callee_packets", -1))
        near = lambda v, ref: abs(v - ref) <= TOL
        c.ok(near(cp, len(c2r)) or near(cp, len(r2e)),
             f"caller_packets {cp} within {TOL} of tcpdump ({len(c2r)}/{len(r2e)})")
        c.ok(near(ep, len(e2r)) or near(ep, len(r2c)),
             f"callee_packets {ep} within {TOL} of tcpdump ({len(e2r)}/{len(r2c)})")
        c.ok(st.get("from_tag") == from_tag and st.get("to_tag") == to_tag,
             "record tags match the dialog")
    rr = os.path.join(d, "remove_after_bye.txt")
    txt = open(rr).read() if os.path.exists(rr) else ""
    c.ok("reply bytes: b'error\\r\\n'" in txt, "a remove after the BYE is answered error")

    # ---- the shim's requests (the socat tap) -----------------------------
    reqs = tapped_requests(os.path.join(d, "dispatcher-tap.log"))
    updates = [r for r in reqs if r[0] == "update" and header(r, "call_id") == call_id]
    print("  shim's updates: " + "; ".join(
        f"{header(r, 'type')} cseq {header(r, 'cseq')} from_tag {header(r, 'from_tag')} "
        f"media {header(r, 'media')} families {header(r, 'families')}" for r in updates))
    fam = [(header(r, "type"), header(r, "from_tag"), header(r, "families"), header(r, "media"))
           for r in updates]
    if bridged:
        c.ok(any(f[:3] == ("request", from_tag, "4,6") and f[3].startswith(f"audio:{CALLER4}:")
                 for f in fam), "INVITE: update with families: 4,6 and the caller's IPv4 item")
        c.ok(any(f[:3] == ("reply", from_tag, "6,4") and f[3].startswith(f"audio:[{CALLEE6}]:")
                 for f in fam), "its 200: update with families: 6,4 and a bracketed IPv6 item")
        if engage:
            c.ok(any(f[:3] == ("request", to_tag, "6,4") for f in fam),
                 "callee's re-INVITE: update with families: 6,4 (from tag the callee's)")
            c.ok(any(f[:3] == ("reply", to_tag, "4,6") for f in fam),
                 "its 200: update with families: 4,6")
    else:
        c.ok(len(fam) >= 2 and all(f[2] is None and f[3].startswith("audio:[")
                                   for f in fam),
             "IPv6 both sides: bracketed media items, no families header")

    # ---- Kamailio's script and the dispatcher's sessions -----------------
    klog = open(os.path.join(d, "kamailio.log"), encoding="utf-8", errors="replace").read()
    rcs = re.findall(r"E2E (\S+\(.*?\)) rc=(-?\d+)", klog)
    print("  kamailio script calls: " + ", ".join(f"{f}={r}" for f, r in rcs))
    if engage:
        # >= 2: Kamailio may retransmit the INVITE to the callee, and a
        # retransmitted 200 (or in-dialog request) is reported again
        c.ok(rcs.count(("dialog_request(INVITE)", "1")) >= 2,
             "INVITE and the callee's re-INVITE relayed (rc 1)")
        c.ok(rcs.count(("dialog_reply(reply 200)", "1")) >= 2, "both 200s relayed (rc 1)")
        ends = [r for f, r in rcs if f in ("dialog_request(BYE)", "dialog_end(dialog:end)")]
        c.ok(ends.count("1") == 1, f"one answered remove at the end ({ends})")
        c.ok(all(r in ("1", "0", "-2") for _, r in rcs), "no script call failed")

        def ids(name):
            try:
                return [s.get("call_id") for s in json.load(open(os.path.join(d, name)))]
            except (OSError, ValueError) as e:
                return [f"unreadable: {e}"]
        during, after = ids("sessions_during.json"), ids("sessions_after.json")
        c.ok(call_id in during, f"dispatcher's sessions list the call during it ({during})")
        c.ok(not after, f"no session after the BYE ({after})")
    else:
        want = [("use_media_proxy(INVITE)", "1"), ("use_media_proxy(reply 200)", "1"),
                ("end_media_session(BYE)", "1")]
        c.ok(all(w in rcs for w in want) and all(r == "1" for _, r in rcs),
             "use_media_proxy on INVITE and 200, end_media_session on BYE: all rc 1")
    if c.failures:
        print(f"  {c.failures} assertion(s) failed")
    return 1 if c.failures else 0


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[2] not in ("bridge", "bridge-engage", "ipv6"):
        print(__doc__)
        sys.exit(2)
    sys.exit(main(sys.argv[1], sys.argv[2]))
