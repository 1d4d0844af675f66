"""IPv6 media and IPv4-IPv6 bridging on loopback (issue 17).

The relay has an IPv4 and an IPv6 media address (`relay_ip = 127.0.0.1, ::1`).
Phones are real UDP sockets: IPv4 ones on 127.0.0.2/127.0.0.3, IPv6 ones on
::1 (loopback has no other IPv6 address; the namespace tests in tests/netns
use separate hosts). What is asserted is what a proxy and a phone observe:
the relay address each reply gives (its family decides whether a phone can
reach it), RTP and RTCP arriving intact from the relay port of the phone's
own family, the bracket forms in session records, and refusals.
"""

import json
import os
import socket

import pytest

from mpclient import Dialog, MediaPort, assert_media_flows, parse_ports
from pgserver import wait_until
from test_rtpproxy import Rtpp, free_udp_port

V6 = "::1"
V4 = "127.0.0.1"
DUAL = {"Relay.relay_ip": f"{V4}, {V6}"}


def have_ipv6_loopback() -> bool:
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.bind((V6, 0))
        s.close()
        return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not have_ipv6_loopback(), reason="no IPv6 on loopback")


def cross_exchange(caller, caller_dst, callee, callee_dst, n):
    """RTP both ways, each phone sending to the relay address of its own
    family. The relay forwards only to latched parties (loopback is not
    routable), so both first send one packet and wait for the other's."""
    callee.rtp.send(callee.next_rtp(), callee_dst)
    caller.rtp.send(caller.next_rtp(), caller_dst)
    caller.rtp.recv_all(0.5, until=lambda g: len(g) >= 1)
    callee.rtp.send(callee.next_rtp(), callee_dst)
    assert len(caller.rtp.recv_all(2.0, until=lambda g: len(g) >= 1)) >= 1
    callee.rtp.drain()
    caller.rtp.drain()
    for _ in range(n):
        caller.rtp.send(caller.next_rtp(), caller_dst)
        callee.rtp.send(callee.next_rtp(), callee_dst)
    got_callee = callee.rtp.recv_all(2.0, until=lambda g: len(g) >= n)
    got_caller = caller.rtp.recv_all(2.0, until=lambda g: len(g) >= n)
    assert len(got_callee) == n and len(got_caller) == n, (len(got_callee), len(got_caller))
    assert {src for _, src in got_callee} == {callee_dst}
    assert {src for _, src in got_caller} == {caller_dst}
    assert {data for data, _ in got_callee} <= caller.sent
    assert {data for data, _ in got_caller} <= callee.sent


def ended_records(mp):
    """The statistics records the dispatcher logged at session end."""
    out = []
    for line in mp.stderr_text().splitlines():
        if "session ended: " in line:
            out.append(json.loads(line.split("session ended: ", 1)[1]))
    return out


def test_ipv6_call_relayed_from_the_ipv6_address(mp_factory):
    mp = mp_factory(**DUAL)
    c = mp.client()
    caller, callee = MediaPort(V6), MediaPort(V6)
    d = Dialog(c)
    p = parse_ports(d.invite(caller.sdp()), 1, relay_ip=V6, port_range=mp.port_range)[0]
    q = parse_ports(d.answer(callee.sdp()), 1, relay_ip=V6, port_range=mp.port_range)[0]
    assert_media_flows(caller, q, callee, p, n=20, rtcp=True, relay_ip=V6)
    assert d.remove() == "removed"
    rec = ended_records(mp)[-1]["streams"][0]
    assert rec["caller_local"] == f"[::1]:{q}" and rec["callee_local"] == f"[::1]:{p}", rec
    assert rec["caller_remote"] == f"[::1]:{caller.port}", rec
    assert rec["caller_packets"] >= 20 and rec["callee_packets"] >= 20, rec


def test_bridged_call_ipv4_caller_ipv6_callee(mp_factory):
    """The offer asks for the other family (`families: 4,6`): the INVITE's
    reply gives the IPv6 address the callee can reach, the 200 OK's the IPv4
    one the caller can; media crosses families both ways."""
    mp = mp_factory(**DUAL)
    c = mp.client()
    caller, callee = MediaPort("127.0.0.2"), MediaPort(V6)
    d = Dialog(c)
    p = parse_ports(d.invite(caller.sdp(), families="4,6"), 1, relay_ip=V6,
                    port_range=mp.port_range)[0]
    q = parse_ports(d.answer(callee.sdp(), families="6,4"), 1, relay_ip=V4,
                    port_range=mp.port_range)[0]
    cross_exchange(caller, (V4, q), callee, (V6, p), 20)
    assert d.remove() == "removed"
    rec = ended_records(mp)[-1]["streams"][0]
    assert rec["caller_local"] == f"127.0.0.1:{q}" and rec["callee_local"] == f"[::1]:{p}", rec


def test_stock_module_bare_ipv6_gets_the_relay_ipv6_address(mp_factory):
    """Kamailio's stock mediaproxy module writes an IPv6 party's address
    without brackets and rewrites `c=IN IP6` with whatever address the reply
    gives: an IPv6 call through it is relayed from the IPv6 address."""
    mp = mp_factory(**DUAL)
    c = mp.client()
    caller, callee = MediaPort(V6), MediaPort(V6)
    d = Dialog(c)
    p = parse_ports(d.invite(f"audio:{V6}:{caller.port}:sendrecv:ice=no"), 1, relay_ip=V6)[0]
    q = parse_ports(d.answer(f"audio:{V6}:{callee.port}:sendrecv:ice=no"), 1, relay_ip=V6)[0]
    assert_media_flows(caller, q, callee, p, n=10, rtcp=False, relay_ip=V6)
    assert d.remove() == "removed"


def test_relay_without_ipv6_refuses_ipv6_media(mp_factory):
    mp = mp_factory()  # relay_ip = 127.0.0.1 only
    c = mp.client()
    d = Dialog(c)
    assert d.invite(MediaPort(V6).sdp()) == "error"
    d2 = Dialog(c)
    assert d2.invite(MediaPort("127.0.0.2").sdp(), families="4,6") == "error"
    # An IPv4 call still works.
    d3 = Dialog(c)
    parse_ports(d3.invite(MediaPort("127.0.0.2").sdp()), 1, port_range=mp.port_range)


def test_bad_ipv6_media_and_families_are_refused(mp_factory):
    mp = mp_factory(**DUAL)
    c = mp.client()
    for media in ("audio:[127.0.0.2]:4000:sendrecv:ice=no",  # brackets around IPv4
                  "audio:[::1:4000:sendrecv:ice=no",  # unterminated
                  "audio:[fe80::1%eth0]:4000:sendrecv:ice=no"):  # zone index
        assert Dialog(c).invite(media) == "error", media
    for families in ("4", "4,5", "6;4", "46"):
        assert Dialog(c).invite(MediaPort("127.0.0.2").sdp(), families=families) == "error"


def test_relay_ip_with_two_addresses_of_one_family_is_refused(mp_factory, tmp_path):
    ini = tmp_path / "bad.ini"
    ini.write_text("[Relay]\nrelay_ip = ::1, ::2\n")
    import subprocess
    from mpharness import binary_path
    r = subprocess.run([str(binary_path()), "--check-config", str(ini)], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode != 0 and "more than one IPv6 address" in r.stderr, r.stderr


def rtpproxy_instance(mp_factory):
    port = free_udp_port()
    mp = mp_factory(**DUAL, **{"Rtpproxy.listen": f"udp:127.0.0.1:{port}"})
    client = Rtpp(port)
    client.mp = mp
    return client


def test_rtpproxy_ipv6_call(mp_factory):
    """Kamailio's rtpproxy.so sends `U6`/`L6` for IPv6 parties; the reply
    must be `<port> <v6 address> 6` or Kamailio writes `IN IP4`."""
    rtpp = rtpproxy_instance(mp_factory)
    caller, callee = MediaPort(V6), MediaPort(V6)
    r1 = rtpp.cmd(f"U6 c6@x {V6} {caller.port} ft;1").split()
    assert len(r1) == 3 and r1[1:] == [V6, "6"], r1
    r2 = rtpp.cmd(f"L6 c6@x {V6} {callee.port} ft;1 tt;1").split()
    assert len(r2) == 3 and r2[1:] == [V6, "6"], r2
    assert_media_flows(caller, int(r2[0]), callee, int(r1[0]), n=10, rtcp=True, relay_ip=V6)
    assert rtpp.cmd("D c6@x ft tt") == "0"
    rtpp.close()


def test_rtpproxy_bridge_ie_ei(mp_factory):
    """`UIE` from an IPv4 caller gets the relay's IPv6 side (`... 6`), the
    IPv6 callee's `LEI6` gets the IPv4 side (`... 4`), as rtpengine answers
    Kamailio's `x` flag; media crosses families."""
    rtpp = rtpproxy_instance(mp_factory)
    caller, callee = MediaPort("127.0.0.2"), MediaPort(V6)
    r1 = rtpp.cmd(f"UIE cb@x 127.0.0.2 {caller.port} ft;1").split()
    assert r1[1:] == [V6, "6"], r1
    r2 = rtpp.cmd(f"LEI6 cb@x {V6} {callee.port} ft;1 tt;1").split()
    assert r2[1:] == [V4, "4"], r2
    cross_exchange(caller, (V4, int(r2[0])), callee, (V6, int(r1[0])), 10)
    assert rtpp.cmd("D cb@x ft tt") == "0"
    rtpp.close()


def test_rtpproxy_address_must_match_its_family_modifier(mp_factory):
    rtpp = rtpproxy_instance(mp_factory)
    assert rtpp.cmd("U6 cm@x 127.0.0.2 4000 ft;1") == "E37"
    assert rtpp.cmd(f"U4 cm2@x {V6} 4000 ft;1") == "E37"
    rtpp.close()


def test_ipv6_call_survives_a_restart(mp_factory):
    """The state file keeps each side's family: after kill -9 the IPv6
    call's sockets are bound again on ::1 and media flows."""
    mp = mp_factory(**DUAL)
    c = mp.client()
    caller, callee = MediaPort(V6), MediaPort("127.0.0.3")
    d = Dialog(c)
    p = parse_ports(d.invite(caller.sdp(), families="6,4"), 1, relay_ip=V4,
                    port_range=mp.port_range)[0]
    q = parse_ports(d.answer(callee.sdp()), 1, relay_ip=V6, port_range=mp.port_range)[0]
    # The state file is written when the loop turn ends, after the reply:
    # wait for the answer's record before the kill.
    state = os.path.join(mp.runtime_dir, "relay.state")
    wait_until(lambda: f'"port": {callee.port}' in open(state).read(), 5, "answer recorded")
    mp.kill_and_restart()
    assert "1 session(s) restored, 0 not" in mp.stderr_text()
    cross_exchange(caller, (V6, q), callee, (V4, p), 5)
    d.client = mp.client()
    assert d.remove() == "removed"


def test_upgrade_takes_over_sockets_of_both_families(mp_factory):
    """`mediaproxy --upgrade` hands the IPv6 sockets over as "[v6]:port"
    and the new process takes them: the bridged call goes on."""
    mp = mp_factory(**DUAL)
    c = mp.client()
    caller, callee = MediaPort("127.0.0.2"), MediaPort(V6)
    d = Dialog(c)
    p = parse_ports(d.invite(caller.sdp(), families="4,6"), 1, relay_ip=V6)[0]
    q = parse_ports(d.answer(callee.sdp(), families="6,4"), 1, relay_ip=V4)[0]
    cross_exchange(caller, (V4, q), callee, (V6, p), 5)
    assert mp.upgrade() == 0, "the old process exits cleanly"
    log = mp.stderr_text()
    assert "upgrade: took over 4 media socket(s)" in log, log
    if "media receive: every media port through one socket" in log:  # one per family
        assert "; 2 tproxy receive socket(s)" in log, log
    assert "1 session(s) restored, 0 not" in log
    cross_exchange(caller, (V4, q), callee, (V6, p), 5)
    assert d.remove() == "removed"
