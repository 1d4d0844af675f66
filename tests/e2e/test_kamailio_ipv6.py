"""End to end over IPv6 (issue 17): stock Kamailio 5.6 with rtpproxy.so,
sipp phones and mediaproxy's rtpproxy front end, in network namespaces.

The relay namespace (tests/netns/dualstack.py) holds 10.200.0.1 and
fd00:200::1 on its lo: Kamailio listens for SIP on both
(kamailio-rtpproxy6.cfg, run with -DD), mediaproxy (combined role,
`relay_ip = 10.200.0.1, fd00:200::1`) relays media on both and takes
rtpproxy commands on udp:127.0.0.1:22222 and udp6:[::1]:22222. Two calls:

* ipv6: caller fd00:200:1::2 and callee fd00:200:2::2, both IPv6-only, SIP
  over IPv6, rtpproxy_offer()/rtpproxy_answer() without flags (Kamailio adds
  the 6 modifier itself) over the udp6 control socket;
* bridge: caller 10.200.1.2 IPv4-only, callee fd00:200:2::2 IPv6-only,
  rtpproxy_offer("x")/rtpproxy_answer("x") (Kamailio sends UIE and LEI6).

Each runs with forwarding = userspace and = kernel. The phones are sipp
(uac6.xml, uas6.xml), each playing 60 RTP packets (a pcap this test writes)
to the address its SDP names. What is asserted is what the phones and an
operator observe: the call completes; the SDP each phone received names the
relay in the phone's own family (`c=IN IP6 fd00:200::1` at an IPv6 phone,
`c=IN IP4 10.200.0.1` at an IPv4 phone) and a relay port; tcpdump on the
relay's veths shows the phones' RTP going to those relay ports and the relay
forwarding it to the other phone, both ways, from the port that phone was
given, and no RTP bypassing the relay; Kamailio's rtpproxy functions
returned 1; mediaproxy logged the call's session record.

Environment: MP_BIN or MEDIAPROXY_BIN (default build/mediaproxy). Needs root,
kamailio, sipp and tcpdump; skipped otherwise. Artefacts of a failed call
stay in pytest's tmp_path.
"""

import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO / "tests" / "netns"))

from dualstack import RELAY_IP, RELAY_IP6, DualStack  # noqa: E402

BIN = os.environ.get("MP_BIN") or os.environ.get("MEDIAPROXY_BIN") or str(REPO / "build" /
                                                                        "mediaproxy")
PORT_LO, PORT_HI = 40000, 40100
PACKETS = 60  # RTP packets each phone plays, 20 ms apart
MIN_FORWARDED = 50  # of them relayed: the first may arrive before the peer is latched

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(any(shutil.which(t) is None for t in ("kamailio", "sipp", "tcpdump")),
                       reason="needs kamailio, sipp and tcpdump"),
]


def write_pcap(path, n, interval=0.02):
    """n RTP packets (PT 8, 160 bytes of payload) in an Ethernet/IPv4 pcap;
    sipp's play_pcap_audio keeps the payload and timing and sends it from
    the phone's media address, IPv4 or IPv6."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for i in range(n):
        rtp = struct.pack("!BBHII", 0x80, 8, i + 1, 160 * (i + 1), 0x0ABC0001) + b"\xd5" * 160
        udp = struct.pack("!HHHH", 5000, 2006, 8 + len(rtp), 0) + rtp
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0,
                         bytes([10, 1, 3, 143]), bytes([10, 1, 6, 18]))
        s = sum(struct.unpack("!10H", ip))
        s = (s >> 16) + (s & 0xFFFF)
        s += s >> 16
        ip = ip[:10] + struct.pack("!H", ~s & 0xFFFF) + ip[12:]
        frame = bytes(6) + bytes(6) + b"\x08\x00" + ip + udp
        t = i * interval
        out.append(struct.pack("<IIII", 1000 + int(t), int(round((t % 1) * 1e6)),
                               len(frame), len(frame)) + frame)
    Path(path).write_bytes(b"".join(out))


def wait_until(cond, timeout, what, proc=None, log=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: the process exited {proc.returncode}\n"
                                 + (Path(log).read_text(errors="replace")[-3000:] if log else ""))
        time.sleep(0.05)  # polling interval
    raise AssertionError(f"timed out waiting for {what}")


def udp_listening(net, ns, addr):
    return addr in net.run(ns, "ss", "-Hnlu").stdout


# ---------------------------------------------------------------------------
# Reading the artefacts

SEP = re.compile(r"^-{20,} .*$", re.M)


def received_sdp(path, start):
    """Body of the first message received whose first line starts with
    `start`, from a sipp -trace_msg log."""
    text = Path(path).read_text(encoding="latin-1") if Path(path).exists() else ""
    for block in SEP.split(text):
        first, _, rest = block.lstrip("\n").partition("\n")
        if "message received" not in first:
            continue
        msg = rest.strip("\n").replace("\r\n", "\n")
        if msg.startswith(start):
            return msg.partition("\n\n")[2]
    return None


def sdp_audio(body):
    """(net type, address, port) of the first audio stream."""
    conn, port = None, None
    for line in body.splitlines():
        line = line.strip()
        if line.startswith("c=") and (conn is None or port is not None):
            conn = tuple(line[2:].split()[1:3])
        elif line.startswith("m=audio"):
            port = int(line.split()[1])
    return (*conn, port) if conn else (None, None, port)


LINE = re.compile(r"IP6? (\S+)\.(\d+) > (\S+)\.(\d+): UDP")


def udp_packets(pcap):
    out = subprocess.run(["tcpdump", "-r", str(pcap), "-nn", "-q", "udp"], capture_output=True,
                         text=True, timeout=20).stdout
    return [(m.group(1), int(m.group(2)), m.group(3), int(m.group(4)))
            for m in map(LINE.search, out.splitlines()) if m]


def check_relayed(caller_pcap, callee_pcap, caller, callee, relay_for_caller, p_caller,
                  relay_for_callee, p_callee, diag):
    """What tcpdump saw on the relay's two veths: every RTP packet of each
    phone (media port 6000; SIP excluded) went to the relay port it was
    given, at least MIN_FORWARDED reached the other phone from its relay
    port, and nothing went phone to phone. `caller`/`callee` are (address,
    port 6000) owners' addresses. Returns the counts as text for logs."""
    pc, pe = udp_packets(caller_pcap), udp_packets(callee_pcap)
    c2r = [p for p in pc if p[:2] == (caller, 6000) and p[3] != 5060]
    r2c = [p for p in pc if p[2:] == (caller, 6000)]
    e2r = [p for p in pe if p[:2] == (callee, 6000) and p[3] != 5060]
    r2e = [p for p in pe if p[2:] == (callee, 6000)]
    figures = (f"caller->relay {len(c2r)}, relay->callee {len(r2e)}, "
               f"callee->relay {len(e2r)}, relay->caller {len(r2c)}")
    assert set(c2r) == {(caller, 6000, relay_for_caller, p_caller)}, f"{figures}{diag()}"
    assert set(e2r) == {(callee, 6000, relay_for_callee, p_callee)}, f"{figures}{diag()}"
    assert len(c2r) == PACKETS and len(e2r) == PACKETS, f"{figures}{diag()}"
    assert set(r2e) == {(relay_for_callee, p_callee, callee, 6000)}, f"{figures}{diag()}"
    assert set(r2c) == {(relay_for_caller, p_caller, caller, 6000)}, f"{figures}{diag()}"
    assert MIN_FORWARDED <= len(r2e) <= PACKETS, f"caller->callee: {figures}{diag()}"
    assert MIN_FORWARDED <= len(r2c) <= PACKETS, f"callee->caller: {figures}{diag()}"
    return figures


def session_record(log, call_id):
    for line in reversed(Path(log).read_text(errors="replace").splitlines()):
        m = re.search(r"session ended: (\{.*\})$", line)
        if m and json.loads(m.group(1)).get("call_id") == call_id:
            return json.loads(m.group(1))
    return None


# ---------------------------------------------------------------------------


@pytest.mark.parametrize("forwarding", ["userspace", "kernel"])
@pytest.mark.parametrize("call", ["ipv6", "bridge"])
def test_kamailio_call_over_ipv6(call, forwarding, tmp_path):
    d = tmp_path
    net = DualStack(f"mpv6e{os.getpid() % 100000}").up()
    procs = []

    def start(name, ns, *cmd):
        log = d / f"{name}.log"
        p = subprocess.Popen(["ip", "netns", "exec", ns, *cmd], cwd=d, stdout=open(log, "w"),
                             stderr=subprocess.STDOUT)
        procs.append(p)
        return p, log

    try:
        caller = net.add("caller", 1, v4=(call == "bridge"), v6=(call == "ipv6"))
        callee = net.add("callee", 2, v4=False)
        caller_relay = RELAY_IP if call == "bridge" else RELAY_IP6
        write_pcap(d / "rtp.pcap", PACKETS)

        # ---- mediaproxy ----
        (d / "mp.ini").write_text(
            f"[General]\nrole = combined\nruntime_dir = {d}/run\nlog_level = debug\n\n"
            f"[Relay]\nrelay_ip = {RELAY_IP}, {RELAY_IP6}\nport_range = {PORT_LO}:{PORT_HI}\n"
            f"forwarding = {forwarding}\nnft_table = mpk6_{forwarding}\n\n"
            "[Rtpproxy]\nlisten = udp:127.0.0.1:22222, udp6:[::1]:22222\n")
        mp, mp_log = start("mediaproxy", net.relay, BIN, "--foreground", "--config",
                           str(d / "mp.ini"))
        wait_until(lambda: udp_listening(net, net.relay, "127.0.0.1:22222"), 10,
                   "mediaproxy's rtpproxy socket", mp, mp_log)

        # ---- packet capture on the relay's veths ----
        dumps = []
        for side in ("caller", "callee"):
            p, log = start(f"tcpdump-{side}", net.relay, "tcpdump", "-i", f"to-{side}", "-nn",
                           "-U", "--immediate-mode", "-w", str(d / f"{side}.pcap"), "udp")
            dumps.append(p)
            wait_until(lambda: "listening on" in log.read_text(), 10, f"tcpdump on to-{side}",
                       p, log)

        # ---- kamailio ----
        kdefs = ["-A", f'CALLEE_URI="sip:[{callee.ip6}]:5060"']
        if call == "bridge":
            kdefs += ["-A", "BRIDGE", "-A", 'RTPP_SOCK="udp:127.0.0.1:22222"']
        else:
            kdefs += ["-A", 'RTPP_SOCK="udp6:::1:22222"']
        (d / "kam-run").mkdir()
        kam, kam_log = start("kamailio", net.relay, "kamailio", "-DD", "-E", "-f",
                             str(HERE / "kamailio-rtpproxy6.cfg"), *kdefs, "-P",
                             str(d / "kamailio.pid"), "-Y", str(d / "kam-run"), "-w", str(d))
        wait_until(lambda: udp_listening(net, net.relay, f"{RELAY_IP}:5060") and
                   udp_listening(net, net.relay, f"[{RELAY_IP6}]:5060"), 10,
                   "kamailio on both families", kam, kam_log)

        # ---- phones ----
        common = ["-p", "5060", "-mp", "6000", "-m", "1", "-nostdin", "-timeout", "15s",
                  "-timeout_error", "-trace_msg", "-trace_err"]
        uas, uas_log = start("uas", callee.ns, "sipp", "-sf", str(HERE / "uas6.xml"),
                             "-i", callee.ip6, "-mi", callee.ip6, *common,
                             "-message_file", str(d / "uas_messages.log"),
                             "-error_file", str(d / "uas_errors.log"))
        wait_until(lambda: udp_listening(net, callee.ns, f"[{callee.ip6}]:5060"), 10,
                   "sipp uas", uas, uas_log)
        proxy = f"{RELAY_IP}:5060" if call == "bridge" else f"[{RELAY_IP6}]:5060"
        uac, uac_log = start("uac", caller.ns, "sipp", "-sf", str(HERE / "uac6.xml"), proxy,
                             "-s", "service", "-i", caller.ip, "-mi", caller.ip, *common,
                             "-message_file", str(d / "uac_messages.log"),
                             "-error_file", str(d / "uac_errors.log"))
        def diag():
            tail = lambda f: f.read_text(errors="replace")[-2500:] if f.exists() else "(none)"
            return "".join(f"\n--- {f.name}:\n{tail(f)}" for f in (
                d / "uac_errors.log", d / "uas_errors.log", kam_log, mp_log)) + \
                f"\nartefacts in {d}"

        try:
            uac_rc, uas_rc = uac.wait(timeout=20), uas.wait(timeout=5)
        except subprocess.TimeoutExpired:
            raise AssertionError("sipp did not finish within 20 s" + diag())
        assert (uac_rc, uas_rc) == (0, 0), f"sipp uac rc={uac_rc}, uas rc={uas_rc}{diag()}"

        call_id = None
        for line in (d / "uac_messages.log").read_text(encoding="latin-1").splitlines():
            if line.lower().startswith("call-id:"):
                call_id = line.split(":", 1)[1].strip()
                break
        wait_until(lambda: session_record(mp_log, call_id) is not None, 5,
                   "mediaproxy's session record after the BYE", mp, mp_log)
        kam.send_signal(signal.SIGTERM)
        kam.wait(timeout=10)
        for p in dumps:
            p.send_signal(signal.SIGINT)
            p.wait(timeout=5)
        mp.send_signal(signal.SIGTERM)
        assert mp.wait(timeout=10) == 0, f"mediaproxy did not exit cleanly{diag()}"

        # ---- what the phones and the operator observe ----
        klog = kam_log.read_text(errors="replace")
        rcs = dict(re.findall(r"E2E (rtpproxy_offer|rtpproxy_answer|unforce_rtp_proxy)\S*"
                              r"(?: \S+)*? rc=(-?\d+)", klog))
        assert rcs == {"rtpproxy_offer": "1", "rtpproxy_answer": "1",
                       "unforce_rtp_proxy": "1"}, f"kamailio script calls: {rcs}{diag()}"

        at_callee = sdp_audio(received_sdp(d / "uas_messages.log", "INVITE ") or "")
        at_caller = sdp_audio(received_sdp(d / "uac_messages.log", "SIP/2.0 200") or "")
        want_caller = ("IP4", RELAY_IP) if call == "bridge" else ("IP6", RELAY_IP6)
        assert at_callee[:2] == ("IP6", RELAY_IP6), (
            f"SDP at the IPv6 callee: {at_callee}{diag()}")
        assert at_caller[:2] == want_caller, f"SDP at the caller: {at_caller}{diag()}"
        p_callee, p_caller = at_callee[2], at_caller[2]  # relay ports each phone sends to
        for p in (p_callee, p_caller):
            assert p is not None and PORT_LO <= p < PORT_HI, (at_callee, at_caller)

        figures = check_relayed(d / "caller.pcap", d / "callee.pcap", caller.ip, callee.ip6,
                                caller_relay, p_caller, RELAY_IP6, p_callee, diag)
        print(f"{call}/{forwarding}: SDP at callee {at_callee}, at caller {at_caller}; "
              f"{figures}")

        rec = session_record(mp_log, call_id)
        st = rec["streams"][0]
        assert caller.ip in st["caller_remote"] and callee.ip6 in st["callee_remote"], st
        assert st["caller_packets"] >= MIN_FORWARDED and st["callee_packets"] >= MIN_FORWARDED, st
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.kill()
                p.wait()
        net.close()
