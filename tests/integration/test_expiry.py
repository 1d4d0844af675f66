"""Timers and expiry (spec D.6, D.8, D.9, B.5, B.6; answer_timeout).

Whether a session still holds its relay ports is observed through the port
pool: these tests run with a pool of exactly one stream (4 ports), so a new
call's INVITE is answered `error` while the session under test is alive and
gets ports as soon as it has expired. A failed INVITE creates nothing, so
probing does not disturb the session under test.

Timeouts are short (1-3 s) to keep the suite fast; upper bounds allow a few
seconds of timer granularity.
"""

import time

import pytest

from mpclient import RELAY_IP, Dialog, MediaPort, assert_media_flows, parse_ports
from mpharness import PORT_BASE

ONE_STREAM = f"{PORT_BASE}:{PORT_BASE + 4}"
SLACK = 4.0  # allowed lateness of an expiry


def probe_new_call(c):
    """INVITE for a new call; returns (dialog, reply)."""
    d = Dialog(c, caller_ip="127.0.0.9")
    return d, d.invite("audio:127.0.0.9:7000:sendrecv:ice=no")


def assert_pool_exhausted(c, why):
    d, r = probe_new_call(c)
    assert r == "error", f"{why}: a new call got {r!r}, so the session's ports were freed"


def wait_pool_free(c, since, timeout, step=0.1, between=None):
    """Probe with new calls until one gets ports. Returns (seconds since
    `since`, the probe dialog)."""
    deadline = since + timeout
    while True:
        if between:
            between()
        d, r = probe_new_call(c)
        now = time.monotonic()
        if r != "error":
            parse_ports(r, 1)
            return now - since, d
        if now > deadline:
            raise AssertionError(
                f"session still holds its relay ports {now - since:.1f}s later "
                f"(new calls keep getting 'error')")
        time.sleep(step)  # probing interval


@pytest.mark.mediaproxy_config(answer_timeout=2, stream_timeout=1, port_range=ONE_STREAM)
def test_unanswered_call_expires_after_answer_timeout(mp):
    c = mp.client()
    d = Dialog(c)
    parse_ports(d.invite("audio:127.0.0.2:5000:sendrecv:ice=no"), 1)
    t0 = time.monotonic()
    assert_pool_exhausted(c, "right after the INVITE")
    elapsed, probe = wait_pool_free(c, t0, timeout=2 + SLACK)
    assert elapsed >= 1.5, (
        f"ringing call expired after {elapsed:.1f}s: before answer_timeout=2 "
        "(stream_timeout=1 must not apply before the answer)")
    assert probe.remove() == "removed"
    # Never answered and no dialog id: the dispatcher dropped the record
    # (B.5 step 4), so the module's remove is unknown (B.6 step 4).
    assert d.remove() == "error", (
        "remove of an expired, never-answered session without dialog_id: spec B.5 step 4 "
        "deletes the dispatcher record, so B.6 step 4 answers 'error'")


@pytest.mark.mediaproxy_config(stream_timeout=1, answer_timeout=10)
def test_long_ringing_call_is_not_killed_by_stream_timeout(mp):
    c = mp.client()
    caller, callee = MediaPort("127.0.0.2"), MediaPort("127.0.0.3")
    d = Dialog(c)
    r_inv = d.invite(caller.sdp())
    p = parse_ports(r_inv, 1)[0]
    time.sleep(3.0)  # ring for three times stream_timeout, no media at all
    mp.assert_alive()
    # Still the same session: a retransmitted INVITE gets the same port.
    assert d.invite(caller.sdp()) == r_inv
    q = parse_ports(d.answer(callee.sdp()), 1)[0]
    assert q != p
    assert_media_flows(caller, q, callee, p, n=30)


@pytest.mark.mediaproxy_config(stream_timeout=1, answer_timeout=10, port_range=ONE_STREAM)
def test_active_call_survives_stream_timeout(mp):
    """Relayed media keeps the stream alive, whatever path forwards it."""
    c = mp.client()
    caller, callee = MediaPort("127.0.0.2"), MediaPort("127.0.0.3")
    d = Dialog(c)
    p, q = d.setup(caller, callee)
    assert_media_flows(caller, q, callee, p, n=10)
    end = time.monotonic() + 3.0
    while time.monotonic() < end:
        a, b = caller.next_rtp(), callee.next_rtp()
        caller.rtp.send(a, (RELAY_IP, q))
        callee.rtp.send(b, (RELAY_IP, p))
        ga = caller.rtp.recv_all(0.5, until=lambda g: any(x[0] == b for x in g))
        gb = callee.rtp.recv_all(0.5, until=lambda g: any(x[0] == a for x in g))
        assert any(x[0] == b for x in ga) and any(x[0] == a for x in gb), (
            "media stopped being relayed during an active call")
        time.sleep(0.1)  # 10 packets/s, well inside stream_timeout
    assert_pool_exhausted(c, "after 3 s of continuous media (stream_timeout=1)")
    assert_media_flows(caller, q, callee, p, n=20, rtcp=False)


@pytest.mark.parametrize("dialog_id, remove_reply", [
    ("4321:8765", "removed"),  # answered + dialog id: record kept (B.5 4, H.20)
    ("", "error"),              # no dialog id: record deleted (B.5 4, B.6 4)
], ids=["with-dialog-id", "without-dialog-id"])
@pytest.mark.mediaproxy_config(stream_timeout=1, answer_timeout=10, port_range=ONE_STREAM)
def test_idle_established_call_expires(mp, dialog_id, remove_reply):
    c = mp.client()
    caller, callee = MediaPort("127.0.0.2"), MediaPort("127.0.0.3")
    d = Dialog(c, dialog_id=dialog_id)
    p, q = d.setup(caller, callee)
    assert_media_flows(caller, q, callee, p, n=10)
    t_last = time.monotonic()
    elapsed, probe = wait_pool_free(c, t_last, timeout=1 + SLACK)
    assert elapsed >= 0.8, f"call expired {elapsed:.1f}s after its last packet (stream_timeout=1)"
    assert probe.remove() == "removed"
    mp.assert_alive()
    assert d.remove() == remove_reply, (
        f"remove after expiry of an answered session with dialog_id={dialog_id!r}: spec B.5 "
        "step 4 keeps the record only if dialog_id is set (then B.6 step 3: 'removed'), "
        "otherwise deletes it (B.6 step 4: 'error')")
    assert d.remove() == "error"


@pytest.mark.mediaproxy_config(stream_timeout=1, on_hold_timeout=3, answer_timeout=10,
                               port_range=ONE_STREAM)
def test_silent_hold_lasts_until_on_hold_timeout(mp):
    c = mp.client()
    caller, callee = MediaPort("127.0.0.2"), MediaPort("127.0.0.3")
    d = Dialog(c)
    p, q = d.setup(caller, callee)
    assert_media_flows(caller, q, callee, p, n=10)
    assert d.reinvite(caller.sdp("sendonly"), cseq=2) == f"{RELAY_IP} {p}"
    t_hold = time.monotonic()
    assert d.answer(callee.sdp("recvonly"), cseq=2) == f"{RELAY_IP} {q}"
    # No packets at all from now on.
    time.sleep(2.0)  # twice stream_timeout
    assert_pool_exhausted(c, "held call after 2 s of silence (stream_timeout=1, on_hold_timeout=3)")
    elapsed, probe = wait_pool_free(c, t_hold, timeout=3 + SLACK)
    assert elapsed >= 2.5, f"held call expired after {elapsed:.1f}s, before on_hold_timeout=3"
    assert probe.remove() == "removed"


@pytest.mark.mediaproxy_config(stream_timeout=1, answer_timeout=10, port_range=ONE_STREAM)
def test_stun_does_not_count_as_media(mp):
    """D.6/D.8: STUN is relayed but does not stop the setup timer, so an
    answered stream that only carries STUN expires after stream_timeout."""
    c = mp.client()
    caller, callee = MediaPort("127.0.0.2"), MediaPort("127.0.0.3")
    d = Dialog(c)
    p, q = d.setup(caller, callee)
    t_answer = time.monotonic()
    relayed = {"to_callee": 0, "to_caller": 0}

    def stun_round():
        caller.rtp.send(caller.stun(0x0001), (RELAY_IP, q))
        callee.rtp.send(callee.stun(0x0001), (RELAY_IP, p))
        relayed["to_caller"] += len(caller.rtp.recv_all(0.02))
        relayed["to_callee"] += len(callee.rtp.recv_all(0.02))

    try:
        elapsed, probe = wait_pool_free(c, t_answer, timeout=1 + SLACK, between=stun_round)
    except AssertionError as e:
        raise AssertionError(f"STUN-only stream did not expire: {e}") from None
    assert relayed["to_caller"] > 0 and relayed["to_callee"] > 0, (
        f"STUN was not relayed both ways before expiry: {relayed}")
    assert probe.remove() == "removed"
