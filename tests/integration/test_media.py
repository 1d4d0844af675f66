"""Call set-up and media relaying (spec A.6, A.11, D.1-D.6, D.9, D.10).

Phones are real UDP sockets: the caller on 127.0.0.2, the callee on
127.0.0.3 (other 127.0.0.x addresses simulate a phone that moved). 127/8 is
not publicly routable, so the relay only sends to a party after latching its
address from the first datagram it sends (D.4, D.5).

Naming: p = callee-facing relay port (reply to the INVITE; the callee sends
there), q = caller-facing relay port (reply to the 200 OK; the caller sends
there).
"""

import time

import pytest

from mpclient import (RELAY_IP, Dialog, MediaPort, assert_media_flows,
                      assert_nothing_relayed, parse_ports)
from mpharness import PORT_BASE


def test_setup_and_media_both_ways(mp):
    c = mp.client()
    caller, callee = MediaPort("127.0.0.2"), MediaPort("127.0.0.3")
    d = Dialog(c)
    p = parse_ports(d.invite(caller.sdp()), 1, port_range=mp.port_range)[0]
    q = parse_ports(d.answer(callee.sdp()), 1, port_range=mp.port_range)[0]
    assert q != p and abs(q - p) >= 2, "caller- and callee-facing pairs must be distinct"
    assert_media_flows(caller, q, callee, p, n=50, rtcp=True)
    assert d.remove() == "removed"


@pytest.mark.parametrize("media_io,logged", [
    ("io_uring", "media I/O: io_uring"),
    ("syscalls", "media I/O: one system call per socket (configured)"),
])
def test_media_both_ways_with_each_media_io(mp_factory, media_io, logged):
    """Both ways of reading and writing media sockets (media_io) relay RTP
    and RTCP of several calls at once, each datagram whole and to its party."""
    mp = mp_factory(media_io=media_io)
    assert logged in mp.stderr_text()
    c = mp.client()
    calls = []
    for i in range(4):
        caller = MediaPort(f"127.0.0.{10 + 2 * i}")
        callee = MediaPort(f"127.0.0.{11 + 2 * i}")
        d = Dialog(c)
        p = parse_ports(d.invite(caller.sdp()), 1, port_range=mp.port_range)[0]
        q = parse_ports(d.answer(callee.sdp()), 1, port_range=mp.port_range)[0]
        calls.append((d, caller, callee, p, q))
    for d, caller, callee, p, q in calls:
        assert_media_flows(caller, q, callee, p, n=30, rtcp=True)
    for d, *_ in calls:
        assert d.remove() == "removed"


def test_worked_example_a11_byte_exact(mp):
    """Spec A.11 / D.1: a fresh relay allocates caller pair first, 4 ports per
    stream, so the INVITE gets base+2 and base+6, the 200 OK base and 0."""
    c = mp.client()
    invite = (b"update\r\ntype: request\r\ndialog_id: 1234:5678\r\n"
              b"call_id: 3c26700d2b0f@10.0.0.23\r\ncseq: 101\r\n"
              b"from_uri: alice@example.com\r\nto_uri: bob@example.net\r\n"
              b"from_tag: 9fxced76sl\r\nto_tag: \r\nuser_agent: Blink 5.1.2\r\n"
              b"signaling_ip: 203.0.113.7\r\nmedia_relay: \r\n"
              b"media: audio:10.0.0.23:49170:sendrecv:ice=no,"
              b"video:10.0.0.23:51372:sendrecv:ice=no\r\n\r\n")
    ok = (b"update\r\ntype: reply\r\ndialog_id: 1234:5678\r\n"
          b"call_id: 3c26700d2b0f@10.0.0.23\r\ncseq: 101\r\n"
          b"from_uri: alice@example.com\r\nto_uri: bob@example.net\r\n"
          b"from_tag: 9fxced76sl\r\nto_tag: 8321234356\r\n"
          b"user_agent: ExamplePhone/2.0\r\nsignaling_ip: 198.51.100.20\r\n"
          b"media_relay: \r\nmedia: audio:198.51.100.20:3456:sendrecv:ice=no,"
          b"video:198.51.100.20:0:sendrecv:ice=no\r\n\r\n")
    remove = (b"remove\r\ncall_id: 3c26700d2b0f@10.0.0.23\r\nfrom_tag: 9fxced76sl\r\n"
              b"to_tag: 8321234356\r\n\r\n")
    c.send_raw(invite)
    assert c.read_line() == f"{RELAY_IP} {PORT_BASE + 2} {PORT_BASE + 6}"
    c.send_raw(ok)
    assert c.read_line() == f"{RELAY_IP} {PORT_BASE} 0"
    c.send_raw(remove)
    assert c.read_line() == "removed"
    c.assert_idle()


def test_retransmitted_updates_get_identical_replies(mp):
    c = mp.client()
    caller, callee = MediaPort("127.0.0.2"), MediaPort("127.0.0.3")
    d = Dialog(c)
    r_inv = d.invite(caller.sdp())
    p = parse_ports(r_inv, 1)[0]
    assert d.invite(caller.sdp()) == r_inv, "retransmitted INVITE"
    r_ok = d.answer(callee.sdp())
    q = parse_ports(r_ok, 1)[0]
    assert d.answer(callee.sdp()) == r_ok, "retransmitted 200 OK"
    assert_media_flows(caller, q, callee, p, n=20)
    # Retransmissions after media is flowing change nothing (no party reset:
    # packets from the same sources must still be relayed).
    assert d.answer(callee.sdp()) == r_ok
    assert d.invite(caller.sdp()) == r_inv
    assert d.answer(callee.sdp()) == r_ok
    assert_media_flows(caller, q, callee, p, n=50)


def test_early_media_183_then_200(mp):
    """A 183 with SDP carries no To tag (A.4); the 200 OK with the same SDP
    gets the same ports and media keeps flowing."""
    c = mp.client()
    caller, callee = MediaPort("127.0.0.2"), MediaPort("127.0.0.3")
    d = Dialog(c)
    p = parse_ports(d.invite(caller.sdp()), 1)[0]
    r183 = d.answer(callee.sdp(), provisional=True)
    q = parse_ports(r183, 1)[0]
    assert_media_flows(caller, q, callee, p, n=20, rtcp=False)
    assert d.answer(callee.sdp()) == r183
    assert_media_flows(caller, q, callee, p, n=50)


def test_hold_and_resume(mp):
    c = mp.client()
    caller, callee = MediaPort("127.0.0.2"), MediaPort("127.0.0.3")
    d = Dialog(c)
    p, q = d.setup(caller, callee)
    assert_media_flows(caller, q, callee, p, n=20)
    inv, ok = f"{RELAY_IP} {p}", f"{RELAY_IP} {q}"

    # Hold with a=sendonly.
    assert d.reinvite(caller.sdp("sendonly"), cseq=2) == inv
    assert d.answer(callee.sdp("recvonly"), cseq=2) == ok
    # Resume.
    assert d.reinvite(caller.sdp("sendrecv"), cseq=3) == inv
    assert d.answer(callee.sdp("sendrecv"), cseq=3) == ok
    assert_media_flows(caller, q, callee, p, n=50)

    # Old-style hold: c=0.0.0.0 with the same port.
    assert d.reinvite(caller.sdp("sendrecv", ip="0.0.0.0"), cseq=4) == inv
    assert d.answer(callee.sdp("sendrecv"), cseq=4) == ok
    # Resume.
    assert d.reinvite(caller.sdp("sendrecv"), cseq=5) == inv
    assert d.answer(callee.sdp("sendrecv"), cseq=5) == ok
    assert_media_flows(caller, q, callee, p, n=50)
    assert d.remove() == "removed"


def test_hold_by_callee(mp):
    """A re-INVITE from the callee is answered with caller-facing ports and
    its reply with callee-facing ones (H.5); callee CSeq space is separate."""
    c = mp.client()
    caller, callee = MediaPort("127.0.0.2"), MediaPort("127.0.0.3")
    d = Dialog(c)
    p, q = d.setup(caller, callee)
    assert_media_flows(caller, q, callee, p, n=10, rtcp=False)
    assert d.callee_reinvite(callee.sdp("inactive"), cseq=7) == f"{RELAY_IP} {q}"
    assert d.caller_answer(caller.sdp("inactive"), cseq=7) == f"{RELAY_IP} {p}"
    assert d.callee_reinvite(callee.sdp("sendrecv"), cseq=8) == f"{RELAY_IP} {q}"
    assert d.caller_answer(caller.sdp("sendrecv"), cseq=8) == f"{RELAY_IP} {p}"
    assert_media_flows(caller, q, callee, p, n=50)
    # And the caller can still re-INVITE afterwards.
    assert d.reinvite(caller.sdp(), cseq=2) == f"{RELAY_IP} {p}"
    assert d.answer(callee.sdp(), cseq=2) == f"{RELAY_IP} {q}"
    assert_media_flows(caller, q, callee, p, n=20, rtcp=False)


def test_reinvite_same_sdp_keeps_ports(mp):
    c = mp.client()
    caller, callee = MediaPort("127.0.0.2"), MediaPort("127.0.0.3")
    d = Dialog(c)
    p, q = d.setup(caller, callee)
    assert_media_flows(caller, q, callee, p, n=20)
    for cseq in (2, 3):
        assert d.reinvite(caller.sdp(), cseq=cseq) == f"{RELAY_IP} {p}"
        assert d.answer(callee.sdp(), cseq=cseq) == f"{RELAY_IP} {q}"
    # Session refresh is transparent: same sources keep being relayed.
    assert_media_flows(caller, q, callee, p, n=50)


def test_reinvite_with_new_caller_address_creates_new_stream(mp):
    c = mp.client()
    caller, callee = MediaPort("127.0.0.2"), MediaPort("127.0.0.3")
    d = Dialog(c)
    p, q = d.setup(caller, callee)
    assert_media_flows(caller, q, callee, p, n=20, rtcp=False)

    moved = MediaPort("127.0.0.4")  # the caller moved (new IP and port)
    p2 = parse_ports(d.reinvite(moved.sdp(), cseq=2), 1, port_range=mp.port_range)[0]
    assert p2 not in (p, q, 0), f"new caller address must get a new stream (got {p2})"
    q2 = parse_ports(d.answer(callee.sdp(), cseq=2), 1, port_range=mp.port_range)[0]
    assert q2 not in (p, q, p2, 0)
    assert_media_flows(moved, q2, callee, p2, n=50)
    # The old stream was closed by the answer (D.10).
    assert_nothing_relayed(caller, q, callee, p)
    # Retransmitting the re-INVITE still yields the new port.
    assert d.reinvite(moved.sdp(), cseq=2) == f"{RELAY_IP} {p2}"


def test_reinvite_with_new_caller_port_only(mp):
    c = mp.client()
    caller, callee = MediaPort("127.0.0.2"), MediaPort("127.0.0.3")
    d = Dialog(c)
    p, q = d.setup(caller, callee)
    assert_media_flows(caller, q, callee, p, n=10, rtcp=False)
    moved = MediaPort("127.0.0.2")  # same IP, new port
    p2 = parse_ports(d.reinvite(moved.sdp(), cseq=2), 1)[0]
    assert p2 not in (p, q, 0)
    q2 = parse_ports(d.answer(callee.sdp(), cseq=2), 1)[0]
    assert q2 not in (p, q, p2, 0)
    assert_media_flows(moved, q2, callee, p2, n=30)


def test_answerer_address_change_relearns(mp):
    """The callee answers a re-INVITE with a new address: same relay ports,
    the callee party is reset and learned again from the new source (D.3, D.4)."""
    c = mp.client()
    caller, callee = MediaPort("127.0.0.2"), MediaPort("127.0.0.3")
    d = Dialog(c)
    p, q = d.setup(caller, callee)
    assert_media_flows(caller, q, callee, p, n=20)
    callee2 = MediaPort("127.0.0.5")
    assert d.reinvite(caller.sdp(), cseq=2) == f"{RELAY_IP} {p}"
    assert d.answer(callee2.sdp(), cseq=2) == f"{RELAY_IP} {q}"
    assert_media_flows(caller, q, callee2, p, n=50)
    # The old callee source is no longer relayed and receives nothing.
    for port in (caller, callee, callee2):
        port.rtp.drain()
    for _ in range(5):
        callee.rtp.send(callee.next_rtp(), (RELAY_IP, p))
        caller.rtp.send(caller.next_rtp(), (RELAY_IP, q))
    got_new = callee2.rtp.recv_all(0.4)
    got_old = callee.rtp.recv_all(0.05)
    got_caller = caller.rtp.recv_all(0.05)
    assert not got_old, "old callee address still receives media after the reset"
    assert len(got_new) == 5, "caller media must go to the new callee address"
    assert not got_caller, "datagrams from the obsolete callee source must be ignored"


def test_two_streams_audio_and_video(mp):
    c = mp.client()
    ca, cv = MediaPort("127.0.0.2"), MediaPort("127.0.0.2", pt=96, kind="video")
    ea, ev = MediaPort("127.0.0.3"), MediaPort("127.0.0.3", pt=96, kind="video")
    d = Dialog(c)
    p = parse_ports(d.invite([ca.sdp(), cv.sdp()]), 2, port_range=mp.port_range)
    q = parse_ports(d.answer([ea.sdp(), ev.sdp()]), 2, port_range=mp.port_range)
    assert len(set(p) | set(q)) == 4, f"four distinct relay ports expected, got {p} {q}"
    assert_media_flows(ca, q[0], ea, p[0], n=50)
    assert_media_flows(cv, q[1], ev, p[1], n=50)
    assert d.remove() == "removed"


def test_answer_rejects_video_with_port_zero(mp):
    c = mp.client()
    ca, cv = MediaPort("127.0.0.2"), MediaPort("127.0.0.2", pt=96, kind="video")
    ea = MediaPort("127.0.0.3")
    d = Dialog(c)
    p = parse_ports(d.invite([ca.sdp(), cv.sdp()]), 2)
    assert 0 not in p
    q = parse_ports(d.answer([ea.sdp(), ea.sdp(kind="video", port=0)]), 2)
    assert q[0] != 0 and q[1] == 0, f"rejected video must get port 0: {q}"
    assert_media_flows(ca, q[0], ea, p[0], n=50)
    # The stream is closed now: a retransmitted INVITE reports it with port 0.
    assert d.invite([ca.sdp(), cv.sdp()]) == f"{RELAY_IP} {p[0]} 0"


def test_offer_with_disabled_stream(mp):
    c = mp.client()
    ca, ea = MediaPort("127.0.0.2"), MediaPort("127.0.0.3")
    d = Dialog(c)
    p = parse_ports(d.invite([ca.sdp(), ca.sdp(kind="video", port=0)]), 2)
    assert p[0] != 0 and p[1] == 0, f"offered port-0 stream must get port 0: {p}"
    q = parse_ports(d.answer([ea.sdp(), ea.sdp(kind="video", port=0)]), 2)
    assert q[0] != 0 and q[1] == 0
    assert_media_flows(ca, q[0], ea, p[0], n=50)


def test_stun_queued_until_destination_known(mp):
    """D.6: STUN is relayed; with no destination yet it is queued and
    flushed in order once the destination is known."""
    c = mp.client()
    caller, callee = MediaPort("127.0.0.2"), MediaPort("127.0.0.3")
    d = Dialog(c)
    p, q = d.setup(caller, callee)
    req = caller.stun(0x0001)
    caller.rtp.send(req, (RELAY_IP, q))
    # There is no observable signal that the relay has read the request; a
    # short pause only makes the "queued" path the likely one. The
    # assertions below hold whatever the order of processing.
    time.sleep(0.05)
    first = callee.next_rtp()
    callee.rtp.send(first, (RELAY_IP, p))
    # The caller was latched by its STUN request, so the callee's first
    # packet reaches it; and the callee being learned releases the queued
    # STUN request towards it, without any further caller packet.
    got = caller.rtp.recv(1.0)
    assert got is not None, "callee's first RTP not relayed to the caller latched by STUN"
    assert got == (first, (RELAY_IP, q))
    got = callee.rtp.recv(1.0)
    assert got is not None, (
        "queued STUN request not delivered when the callee's address became known")
    assert got == (req, (RELAY_IP, p)), f"callee expected the queued STUN, got {got!r}"
    rtp = caller.next_rtp()
    caller.rtp.send(rtp, (RELAY_IP, q))
    assert callee.rtp.recv(1.0) == (rtp, (RELAY_IP, p))
    # STUN responses are relayed back.
    resp = callee.stun(0x0101)
    callee.rtp.send(resp, (RELAY_IP, p))
    got = caller.rtp.recv_all(1.0, until=lambda g: any(x[0] == resp for x in g))
    assert any(x == (resp, (RELAY_IP, q)) for x in got), "STUN response not relayed"
    assert_media_flows(caller, q, callee, p, n=20)


def test_port_allocation_fresh_relay_and_fifo_reuse(mp_factory):
    """D.1: pairs (p, p+1) from the range, caller pair first, 4 ports per
    stream on a fresh relay; freed pairs go to the back of the pool."""
    mp = mp_factory(port_range=f"{PORT_BASE}:{PORT_BASE + 16}")
    c = mp.client()
    b = PORT_BASE
    d1 = Dialog(c)
    assert d1.invite(media_ip_port(5000)) == f"{RELAY_IP} {b + 2}"
    assert d1.answer(media_ip_port(6000, "127.0.0.3")) == f"{RELAY_IP} {b}"
    assert d1.remove() == "removed"
    expected = [(b + 6, b + 4), (b + 10, b + 8), (b + 14, b + 12)]
    dialogs = []
    for i, (inv, ans) in enumerate(expected):
        d = Dialog(c)
        assert d.invite(media_ip_port(5002 + 2 * i)) == f"{RELAY_IP} {inv}", \
            "freed ports must not be reused before never-used ones (FIFO)"
        assert d.answer(media_ip_port(6002 + 2 * i, "127.0.0.3")) == f"{RELAY_IP} {ans}"
        dialogs.append(d)
    d5 = Dialog(c)
    inv = parse_ports(d5.invite(media_ip_port(5100)), 1)[0]
    ans = parse_ports(d5.answer(media_ip_port(6100, "127.0.0.3")), 1)[0]
    assert {inv, ans} == {b, b + 2}, "the only free pairs are the first call's"


@pytest.mark.mediaproxy_config(advertised_ip="192.0.2.50")
def test_advertised_ip_in_replies(mp):
    """D.11 / mediaproxy.ini(5): replies carry advertised_ip, sockets stay on relay_ip."""
    c = mp.client()
    caller, callee = MediaPort("127.0.0.2"), MediaPort("127.0.0.3")
    d = Dialog(c)
    p = parse_ports(d.invite(caller.sdp()), 1, relay_ip="192.0.2.50")[0]
    q = parse_ports(d.answer(callee.sdp()), 1, relay_ip="192.0.2.50")[0]
    assert_media_flows(caller, q, callee, p, n=20)


@pytest.mark.mediaproxy_config(routable_private_ranges="127.0.0.0/8")
def test_rtp_sent_to_routable_sdp_address_before_learning(mp):
    """D.5 / H.17: before a party is learned, RTP goes to its SDP address if
    that is routable (here via routable_private_ranges); RTCP never does."""
    c = mp.client()
    caller, callee = MediaPort("127.0.0.2"), MediaPort("127.0.0.3")
    d = Dialog(c)
    p, q = d.setup(caller, callee)
    pkt = caller.next_rtp()
    caller.rtp.send(pkt, (RELAY_IP, q))
    assert callee.rtp.recv(1.0) == (pkt, (RELAY_IP, p)), \
        "RTP not sent to the callee's routable SDP address before it was learned"
    caller.rtcp.send(caller.next_rtcp(), (RELAY_IP, q + 1))
    assert callee.rtcp.recv(0.3) is None, "RTCP must not be sent to an unlearned party"
    assert callee.rtp.recv(0.05) is None
    assert_media_flows(caller, q, callee, p, n=20)


def test_rtp_not_sent_to_private_sdp_address_before_learning(mp):
    c = mp.client()
    caller, callee = MediaPort("127.0.0.2"), MediaPort("127.0.0.3")
    d = Dialog(c)
    p, q = d.setup(caller, callee)
    for _ in range(3):
        caller.rtp.send(caller.next_rtp(), (RELAY_IP, q))
    assert callee.rtp.recv(0.3) is None, "RTP sent to a non-routable SDP address (127/8)"


def media_ip_port(port, ip="127.0.0.2"):
    return f"audio:{ip}:{port}:sendrecv:ice=no"
