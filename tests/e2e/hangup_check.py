#!/usr/bin/python3
"""Evaluates one run of run_e2e.sh's `hangup` mode (stdlib only):

    hangup_check.py DIR WITH_MP

The phones (uac-hangup.xml, uas-hangup.xml) play ~7 s of RTP through the
relay, fall silent and never hang up. The relay ends the stream after its
stream_timeout (3 s), the dispatcher asks Kamailio over its jsonrpcs datagram
socket to end the dialog (dlg.end_dlg h_entry h_id), and Kamailio's dialog
module sends BYE to both phones, which answer 200 OK. Asserted from the
artefacts in DIR: the call was set up through the relay and carried media,
each phone received a BYE from the proxy (10.200.0.1) and answered it, no
phone sent a BYE, the BYEs came after the media had been silent for the
stream_timeout, mediaproxy logged the hang-up as answered by Kamailio and its
metrics (metrics.txt) count it once as ok and nothing else, the session's
statistics report the stream timed out, the module's `remove` at the end of
the dialog was answered `removed`, and the session is gone afterwards.
Prints figures and exits 1 on any failed assertion.
"""

import datetime
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_util as u  # noqa: E402  (the shared e2e helpers)

STREAM_TIMEOUT = 3.0
# g711a.pcap lasts ~7.05 s from the ACK; the BYE cannot come before the media
# stopped plus the stream_timeout (minus slack for clocks and start-up).
MIN_BYE_AFTER_ACK = 7.0 + STREAM_TIMEOUT - 1.0
MAX_BYE_AFTER_ACK = 7.0 + STREAM_TIMEOUT + 6.0

STAMP = re.compile(r"^-{20,} (\d{4}-\d\d-\d\d\t?\s*\d\d:\d\d:\d\d\.\d+)", re.M)


def timed_messages(path):
    """(seconds since epoch or None, direction, text) for each sipp -trace_msg entry."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="latin-1") as f:
        content = f.read()
    out = []
    parts = re.split(r"^(-{20,} .*)$", content, flags=re.M)
    # parts: [before, sep1, body1, sep2, body2, ...]
    for sep, block in zip(parts[1::2], parts[2::2]):
        block = block.lstrip("\n")
        first, _, rest = block.partition("\n")
        head = sep + " " + first
        direction = "recv" if "message received" in head else "sent" if "message sent" in head else None
        if direction is None:
            continue
        when = None
        m = re.search(r"(\d{4}-\d\d-\d\d)\s+(\d\d:\d\d:\d\d(?:\.\d+)?)", sep)
        if m:
            try:
                when = datetime.datetime.fromisoformat(f"{m.group(1)} {m.group(2)}").timestamp()
            except ValueError:
                when = None
        text = (rest if "message" in first else block).strip("\n").replace("\r\n", "\n")
        out.append((when, direction, text))
    return out


def bye_exchange(path):
    """(BYE received?, its Via, its time, 200 OK sent for it?, BYE sent?, ACK time)."""
    got_bye = sent_ok = sent_bye = False
    via = ""
    bye_at = ack_at = None
    for when, direction, text in timed_messages(path):
        start, headers, _ = u.split_msg(text)
        cseq = headers.get("cseq", "")
        if direction == "recv" and start.startswith("BYE "):
            if not got_bye:
                via, bye_at = headers.get("via", ""), when
            got_bye = True
        elif direction == "sent" and start.startswith("SIP/2.0 200") and cseq.endswith("BYE"):
            sent_ok = True
        elif direction == "sent" and start.startswith("BYE "):
            sent_bye = True
        elif start.startswith("ACK ") and ack_at is None:
            ack_at = when
    return got_bye, via, bye_at, sent_ok, sent_bye, ack_at


def main(argv):
    if len(argv) != 3:
        print(__doc__)
        return 2
    d, with_mp = argv[1], argv[2] == "1"
    c = u.Checker()
    if not c.ok(with_mp, "mode hangup runs with mediaproxy"):
        return 1

    # ---- call set-up through the relay ----------------------------------
    inv_start, inv_h, inv_body = u.find_sdp(os.path.join(d, "uas_messages.log"), "invite")
    ok_start, ok_h, ok_body = u.find_sdp(os.path.join(d, "uac_messages.log"), "invite-200")
    c.ok(inv_start is not None, "callee received the INVITE")
    c.ok(ok_start is not None, "caller received a 200 OK to INVITE")
    callee_got = u.sdp_audio(inv_body) if inv_start else (None, None)
    caller_got = u.sdp_audio(ok_body) if ok_start else (None, None)
    c.ok(callee_got[0] == u.RELAY_IP and caller_got[0] == u.RELAY_IP,
         f"both SDPs name the relay {u.RELAY_IP} (callee {callee_got}, caller {caller_got})")
    call_id = ok_h.get("call-id") or inv_h.get("call-id") or ""
    print(f"  dialog: call_id={call_id}")

    pc = u.udp_packets(os.path.join(d, "to-caller.pcap"))
    pe = u.udp_packets(os.path.join(d, "to-callee.pcap"))
    r2e = [p for p in pe if p[0] == u.RELAY_IP and u.in_range(p[1]) and p[2] == u.CALLEE_IP]
    r2c = [p for p in pc if p[0] == u.RELAY_IP and u.in_range(p[1]) and p[2] == u.CALLER_IP]
    print(f"  tcpdump: relay->callee {len(r2e)}, relay->caller {len(r2c)}")
    c.ok(len(r2e) >= u.MIN_FORWARDED and len(r2c) >= u.MIN_FORWARDED,
         f"the relay forwarded media both ways before it died (>= {u.MIN_FORWARDED})")

    # ---- the BYEs Kamailio sent ------------------------------------------
    for who, log in (("caller", "uac_messages.log"), ("callee", "uas_messages.log")):
        got, via, bye_at, sent_ok, sent_bye, ack_at = bye_exchange(os.path.join(d, log))
        c.ok(got, f"{who} received a BYE")
        c.ok(u.RELAY_IP in via, f"{who}'s BYE came from the proxy (Via: {via})")
        c.ok(sent_ok, f"{who} answered the BYE 200 OK")
        c.ok(not sent_bye, f"{who} did not hang up itself")
        if bye_at is not None and ack_at is not None:
            after = bye_at - ack_at
            print(f"  {who}: BYE {after:.2f} s after the ACK")
            c.ok(MIN_BYE_AFTER_ACK <= after <= MAX_BYE_AFTER_ACK,
                 f"{who}'s BYE came after the media stopped plus stream_timeout "
                 f"({MIN_BYE_AFTER_ACK:.0f}..{MAX_BYE_AFTER_ACK:.0f} s after the ACK: {after:.2f})")

    # ---- mediaproxy's log, statistics and counters -----------------------
    mplog = os.path.join(d, "mediaproxy.log")
    text = open(mplog, encoding="utf-8", errors="replace").read() if os.path.exists(mplog) else ""
    ended = [ln for ln in text.splitlines() if "hang-up: Kamailio ended dialog" in ln]
    for ln in ended:
        print("  log: " + ln.strip())
    c.ok(len(ended) == 1 and f"(call {call_id})" in ended[0],
         "mediaproxy logged once that Kamailio ended the call's dialog")
    bad = [ln for ln in text.splitlines()
           if "hang-up:" in ln and ("did not end" in ln or "no answer" in ln or "not sent" in ln)]
    c.ok(not bad, "no failed hang-up in the log" + ("".join("\n    " + b for b in bad)))
    st = u.find_stats(mplog, call_id)
    if c.ok(st is not None, "mediaproxy logged session statistics JSON for the call"):
        statuses = [s.get("status") for s in st.get("streams") or []]
        print(f"  stream statuses: {statuses}, timed_out={st.get('timed_out')}")
        c.ok(statuses and all("timeout" in (s or "") for s in statuses),
             "every stream ended by timeout")
        forwarding = os.environ.get("MPE2E_FORWARDING", "userspace")
        if forwarding == "kernel":  # the silence was seen through the kernel's counters
            fw = [s.get("forwarding") for s in st.get("streams") or []]
            c.ok(fw and all(f == "kernel" for f in fw),
                 f"forwarding=kernel: the streams were forwarded in the kernel ({fw})")

    metrics = open(os.path.join(d, "metrics.txt")).read() if os.path.exists(
        os.path.join(d, "metrics.txt")) else ""
    counts = dict(re.findall(
        r'^mediaproxy_hangup_requests_total\{proxy="kamailio",result="(\w+)"\} (\d+)', metrics,
        re.M))
    print(f"  metrics: mediaproxy_hangup_requests_total{{proxy=\"kamailio\"}} {counts}")
    c.ok(counts.get("ok") == "1", "metrics: one hang-up answered ok")
    c.ok(all(counts.get(r) == "0" for r in ("error", "timeout", "unsent")),
         "metrics: no hang-up error, timeout or unsent")
    c.ok('proxy="opensips"' not in metrics, "metrics: no OpenSIPS line ([OpenSIPS] socket_path = none)")
    # Spec B.5: the expired record is kept, so the `remove` that Kamailio's
    # module sends when the dialog ends is answered `removed` (result ok);
    # the one `error` is run_e2e.sh's own remove afterwards.
    removes = dict(re.findall(
        r'^mediaproxy_dispatcher_requests_total\{command="remove",result="(\w+)"\} (\d+)', metrics,
        re.M))
    print(f"  metrics: remove requests {removes}")
    c.ok(removes.get("ok") == "1", "the module's remove at the dialog's end was answered removed")

    # ---- Kamailio: the module engaged, the session is gone ---------------
    klog = open(os.path.join(d, "kamailio.log"), encoding="utf-8", errors="replace").read()
    # the stock module, or libmediaproxy-shim's engage mode (tests/shim)
    c.ok("E2E engage_media_proxy() rc=1" in klog or "E2E dialog_request(INVITE) rc=1" in klog,
         "engage_media_proxy() (or the shim's dialog_request() on the INVITE) returned 1")
    rr = os.path.join(d, "remove_after_bye.txt")
    txt = open(rr).read() if os.path.exists(rr) else ""
    c.ok("reply bytes: b'error\\r\\n'" in txt,
         "remove sent after the hang-up is answered 'error' (session already gone)")

    if c.failures:
        print(f"  {len(c.failures)} assertion(s) failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
