"""The rtpproxy control-protocol front end ([Rtpproxy] listen) over real
sockets: the commands Kamailio's rtpproxy.so sends, media through the relay
ports they return, retransmissions, deletion forms, the timeout
notification, the unix: transport and bad input.

Every test starts its own combined-role instance (see conftest.py) with an
rtpproxy UDP listener on a free port.
"""

import os
import socket
import time

import pytest

from mpclient import RELAY_IP, MediaPort
from mpharness import PORT_BASE

WAIT = 2.0


def free_udp_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Rtpp:
    """A UDP client with Kamailio's cookie scheme (<pid>_<seq>)."""

    def __init__(self, port: int):
        self.dst = ("127.0.0.1", port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(WAIT)
        self.seq = 0

    def raw(self, data: bytes, expect_reply: bool = True):
        self.sock.sendto(data, self.dst)
        if not expect_reply:
            return None
        return self.sock.recv(65536)

    def cmd(self, text: str, cookie: str = None) -> str:
        if cookie is None:
            self.seq += 1
            cookie = f"{os.getpid()}_{self.seq}"
        reply = self.raw(f"{cookie} {text}".encode()).decode()
        assert reply.startswith(cookie + " ") and reply.endswith("\n"), repr(reply)
        return reply[len(cookie) + 1:-1]

    def close(self):
        self.sock.close()


def port_of(reply: str) -> int:
    parts = reply.split()
    assert len(parts) == 2 and parts[1] == RELAY_IP, reply
    return int(parts[0])


@pytest.fixture
def rtpp(mp_factory, request):
    marker = request.node.get_closest_marker("mediaproxy_config")
    overrides = dict(marker.kwargs) if marker else {}
    port = free_udp_port()
    listen = overrides.pop("rtpproxy_listen", "")
    overrides["Rtpproxy.listen"] = f"udp:127.0.0.1:{port}" + (f", {listen}" if listen else "")
    inst = mp_factory(**overrides)
    client = Rtpp(port)
    client.mp = inst
    yield client
    client.close()


def exchange(caller: MediaPort, to_callee_port: int, callee: MediaPort, to_caller_port: int,
             n: int = 5) -> None:
    """Both parties send n RTP packets; each must get the other's, unchanged.
    The relay forwards only to latched parties (private SDP addresses are not
    used as a fallback), so the callee's first packet only makes it known."""
    callee.rtp.send(callee.next_rtp(), (RELAY_IP, to_callee_port))
    caller.rtp.recv_all(0.05)
    for _ in range(n):
        pkt = caller.next_rtp()
        caller.rtp.send(pkt, (RELAY_IP, to_caller_port))
        got = callee.rtp.recv(WAIT)
        assert got and got[0] == pkt, "caller's RTP did not reach the callee"
        pkt = callee.next_rtp()
        callee.rtp.send(pkt, (RELAY_IP, to_callee_port))
        got = caller.rtp.recv(WAIT)
        assert got and got[0] == pkt, "callee's RTP did not reach the caller"


def test_handshake_answers_what_kamailio_requires(rtpp):
    assert rtpp.cmd("V") == "20040107"
    for feature in ("20050322", "20071116", "20081102", "20081224"):
        assert rtpp.cmd(f"VF {feature}") == "1", feature
    assert rtpp.cmd("VF 20071218") == "0"  # copy: not implemented


def test_offer_answer_media_both_ways_and_delete(rtpp):
    caller, callee = MediaPort("127.0.0.2"), MediaPort("127.0.0.3")
    try:
        u = port_of(rtpp.cmd(f"Uc0,8,101 c1@x {caller.ip} {caller.port} ftag;1"))
        lo, hi = rtpp.mp.port_range
        assert lo <= u < hi
        l_port = port_of(rtpp.cmd(f"Lc0,8,101 c1@x {callee.ip} {callee.port} ftag;1 ttag;1"))
        assert l_port != u
        # The callee sends to the U port, the caller to the L port.
        exchange(caller, u, callee, l_port)
        q = rtpp.cmd("Q c1@x ftag ttag").split()
        assert len(q) == 5 and int(q[0]) > 0, q
        assert int(q[1]) >= 5 and int(q[2]) >= 5, q  # from caller, from callee
        info = rtpp.cmd("I")
        assert "active sessions: 1" in info
        assert rtpp.cmd("D c1@x ftag ttag") == "0"
        assert rtpp.cmd("G nsess_created nsess_destroyed") == "1 1"
        assert rtpp.cmd("D c1@x ftag ttag") == "E50"
        assert rtpp.cmd("Q c1@x ftag ttag") == "E50"
        assert rtpp.cmd(f"L c1@x {callee.ip} {callee.port} ftag;1 ttag;1") == "0"
    finally:
        caller.close()
        callee.close()


def test_two_media_streams(rtpp):
    a1, a2 = MediaPort("127.0.0.2"), MediaPort("127.0.0.2")
    b1, b2 = MediaPort("127.0.0.3"), MediaPort("127.0.0.3")
    try:
        u1 = port_of(rtpp.cmd(f"U c2@x 127.0.0.2 {a1.port} f;1"))
        u2 = port_of(rtpp.cmd(f"U c2@x 127.0.0.2 {a2.port} f;2"))
        l1 = port_of(rtpp.cmd(f"L c2@x 127.0.0.3 {b1.port} f;1 t;1"))
        l2 = port_of(rtpp.cmd(f"L c2@x 127.0.0.3 {b2.port} f;2 t;2"))
        assert len({u1, u2, l1, l2}) == 4
        exchange(a1, u1, b1, l1)
        exchange(a2, u2, b2, l2)
        assert "active streams: 2" in rtpp.cmd("I")
        assert rtpp.cmd("D c2@x f") == "0"  # no to-tag: the whole call
    finally:
        for p in (a1, a2, b1, b2):
            p.close()


def test_retransmissions_allocate_nothing(rtpp):
    first = rtpp.cmd("U c3@x 127.0.0.2 4000 f;1", cookie="77_1")
    # The same datagram again: the cached reply, byte for byte.
    assert rtpp.cmd("U c3@x 127.0.0.2 4000 f;1", cookie="77_1") == first
    # The same offer with a new cookie (a retransmitted INVITE): same port.
    assert rtpp.cmd("U c3@x 127.0.0.2 4000 f;1") == first
    assert "sessions created: 1" in rtpp.cmd("I")
    # A new address for stream 1 before any answer: a new offer, new port.
    assert port_of(rtpp.cmd("U c3@x 127.0.0.2 4010 f;1")) != port_of(first)
    assert rtpp.cmd("D c3@x f", cookie="77_2") == "0"
    # A retransmitted delete gets the cached answer, not "no such session".
    assert rtpp.cmd("D c3@x f", cookie="77_2") == "0"
    assert rtpp.cmd("D c3@x f", cookie="77_3") != "0"


def test_reinvite_from_the_callee_keeps_the_call(rtpp):
    caller, callee = MediaPort("127.0.0.2"), MediaPort("127.0.0.3")
    try:
        u = port_of(rtpp.cmd(f"U c4@x 127.0.0.2 {caller.port} a;1"))
        l_port = port_of(rtpp.cmd(f"L c4@x 127.0.0.3 {callee.port} a;1 b;1"))
        exchange(caller, u, callee, l_port)
        # The callee re-INVITEs (its tag first), the caller answers.
        u2 = port_of(rtpp.cmd(f"U c4@x 127.0.0.3 {callee.port} b;1 a;1"))
        l2 = port_of(rtpp.cmd(f"L c4@x 127.0.0.2 {caller.port} b;1 a;1"))
        assert (u2, l2) == (l_port, u), "same SDP: the relay ports must stay"
        exchange(caller, u, callee, l_port)
        assert rtpp.cmd("D c4@x b a") == "0"  # BYE from the callee: tags swapped
    finally:
        caller.close()
        callee.close()


def test_errors_for_what_is_not_done_and_bad_input(rtpp):
    assert rtpp.cmd("Z foo") == "E0"
    assert rtpp.cmd("U only-callid") == "E1"
    assert rtpp.cmd("Ux c5@x 127.0.0.2 4000 f;1") == "E35"
    assert rtpp.cmd("U c5@x 999.0.0.1 4000 f;1") == "E37"
    assert rtpp.cmd("U c5@x 127.0.0.2 70000 f;1") == "E37"
    assert rtpp.cmd("P c5@x prompt codec f t") == "E60"
    assert rtpp.cmd("R c5@x f t") == "E65"
    assert rtpp.cmd("X") == "E0"
    assert rtpp.cmd("D unknown@x f t") == "E50"
    # A refused new call leaves nothing behind.
    assert rtpp.cmd("U half@x 127.0.0.2 4000 f;200") == "E31"
    assert rtpp.cmd("L half@x 127.0.0.3 5000 f;1 t;1") == "0"
    assert "active sessions: 0" in rtpp.cmd("I")
    # Garbage, a cookie alone, a 64 KiB datagram: each gets its E code, and
    # the listener keeps answering.
    reply = rtpp.raw(b"\x00\xff\xfe garbage")
    assert reply.startswith(b"\x00\xff\xfe E") and reply.endswith(b"\n"), reply
    assert rtpp.raw(b"cookieonly").decode() == "cookieonly E5\n"
    assert rtpp.raw(b"big U " + b"a" * 65000) == b"big E25\n"
    assert rtpp.cmd("V") == "20040107"


@pytest.mark.mediaproxy_config(port_range=f"{PORT_BASE}:{PORT_BASE + 8}")
def test_port_exhaustion_answers_e71_and_recovers(rtpp):
    # 4 pairs: one stream takes two (caller and callee side).
    assert port_of(rtpp.cmd("U e1@x 127.0.0.2 4000 f;1"))
    assert port_of(rtpp.cmd("U e2@x 127.0.0.2 4002 f;1"))
    for i in range(3, 20):  # a flood of new calls: each refused, nothing kept
        assert rtpp.cmd(f"U e{i}@x 127.0.0.2 4000 f;1") == "E71"
    assert rtpp.cmd("D e1@x f") == "0"
    assert port_of(rtpp.cmd("U e3@x 127.0.0.2 4004 f;1"))


@pytest.mark.mediaproxy_config(port_range=f"{PORT_BASE}:{PORT_BASE + 4}")
def test_a_refused_second_stream_leaves_the_first_working(rtpp):
    # Room for one stream. The second stream of the offer is refused (E71);
    # the call must stay as the relay has it: stream 1 answers and carries media.
    caller, callee = MediaPort("127.0.0.2"), MediaPort("127.0.0.3")
    try:
        u = port_of(rtpp.cmd(f"U s1@x 127.0.0.2 {caller.port} f;1"))
        assert rtpp.cmd("U s1@x 127.0.0.2 4010 f;2") == "E71"
        assert port_of(rtpp.cmd(f"U s1@x 127.0.0.2 {caller.port} f;1")) == u
        l_port = port_of(rtpp.cmd(f"L s1@x 127.0.0.3 {callee.port} f;1 t;1"))
        exchange(caller, u, callee, l_port)
        assert rtpp.cmd("D s1@x f t") == "0"
    finally:
        caller.close()
        callee.close()


@pytest.mark.mediaproxy_config(stream_timeout=1)
def test_media_timeout_is_notified_to_the_timeout_socket(rtpp, tmp_path):
    path = f"/tmp/mp-notify-{os.getpid()}.sock"
    if os.path.exists(path):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    listener.settimeout(10)
    try:
        assert port_of(rtpp.cmd(f"U t1@x 127.0.0.2 4000 f;1 unix:{path} dlg%3A42%20end"))
        assert port_of(rtpp.cmd("L t1@x 127.0.0.3 5000 f;1 t;1"))
        conn, _ = listener.accept()  # no media: the relay times the call out
        conn.settimeout(5)
        data = b""
        while not data.endswith(b"\n"):
            chunk = conn.recv(1024)
            assert chunk, "notification socket closed before the tag arrived"
            data += chunk
        assert data == b"dlg:42 end\n"
        conn.close()
        deadline = time.monotonic() + 5
        while "active sessions: 0" not in rtpp.cmd("I"):
            assert time.monotonic() < deadline, "the timed-out call is still listed"
            time.sleep(0.05)
    finally:
        listener.close()
        os.unlink(path)


@pytest.mark.mediaproxy_config(**{"Rtpproxy.notify_targets": "none"})
def test_notify_target_not_permitted_is_refused(rtpp):
    assert rtpp.cmd("VF 20081224") == "0"
    assert rtpp.cmd("U n1@x 127.0.0.2 4000 f;1 tcp:192.0.2.1:8000 tag") == "E75"
    # Kamailio's timeout_socket without a tag: "<ftag> <ttag> <socket>"; the
    # to-tag reads as the socket, which is not one: ignored, as rtpproxy does.
    reply = rtpp.cmd("Uc8,101 n2@x 127.0.0.2 4000 f;1 t;1 tcp:127.0.0.1:8000")
    assert reply.split()[1] == RELAY_IP, reply


def test_unix_transport_one_command_per_connection(mp_factory):
    path = f"/tmp/mp-rtpp-{os.getpid()}.sock"
    inst = mp_factory(**{"Rtpproxy.listen": f"unix:{path}"})
    try:
        def one(text: str) -> str:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(WAIT)
            s.connect(path)
            s.sendall(text.encode())  # Kamailio: no cookie, no newline
            reply = s.recv(4096).decode()
            s.close()
            assert reply.endswith("\n"), repr(reply)
            return reply[:-1]

        assert one("V") == "20040107"
        port = port_of(one("U ux@x 127.0.0.2 4000 f;1"))
        assert inst.port_range[0] <= port < inst.port_range[1]
        assert one("D ux@x f") == "0"
    finally:
        if os.path.exists(path):
            os.unlink(path)
