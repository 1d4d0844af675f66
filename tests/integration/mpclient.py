"""Test-side peers of mediaproxy: a proxy-module client and UDP phones.

Everything here talks to the binary only through its public interfaces:

* ModuleClient speaks the UNIX-socket protocol of spec A.2-A.6 exactly like
  the Kamailio `mediaproxy` module: one persistent SOCK_STREAM connection,
  strictly sequential requests, every header emitted (empty value when
  unknown), one CRLF-terminated reply line awaited for at most 500 ms (the
  module's `mediaproxy_timeout`; a slower reply is a failure).
* Dialog drives one SIP dialog through that client (INVITE, 200 OK,
  re-INVITEs from either side, remove).
* MediaPort is one phone's media stream: two real UDP sockets (RTP, RTCP) on a
  127.0.0.x address, with generators for RTP/RTCP/STUN datagrams and helpers
  that assert what the relay delivers.

Standard library only.
"""

from __future__ import annotations

import itertools
import os
import re
import select
import socket
import struct
import time
import zlib
from typing import Iterable, List, Optional, Sequence, Tuple, Union

RELAY_IP = "127.0.0.1"
# The module's reply timeout (mediaproxy_timeout, spec A.1).
MODULE_TIMEOUT = float(os.environ.get("MEDIAPROXY_TEST_REPLY_TIMEOUT", "0.5"))

# Header order of the Kamailio module (spec A.4).
UPDATE_HEADERS = (
    "type", "dialog_id", "call_id", "cseq", "from_uri", "to_uri", "from_tag",
    "to_tag", "user_agent", "signaling_ip", "media_relay", "media",
)
REMOVE_HEADERS = ("call_id", "from_tag", "to_tag")

STUN_MAGIC = 0x2112A442

Value = Union[str, bytes, int]


class ReplyTimeout(AssertionError):
    """No complete reply line within the module timeout."""


class ConnectionClosed(AssertionError):
    """The dispatcher closed the connection."""


def _b(value: Value) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8")


def encode_request(command: Value, headers: Iterable[Tuple[Value, Value]]) -> bytes:
    """`command` CRLF, `name: value` CRLF for every header, CRLF."""
    out = bytearray(_b(command) + b"\r\n")
    for name, value in headers:
        out += _b(name) + b": " + _b(value) + b"\r\n"
    out += b"\r\n"
    return bytes(out)


class ModuleClient:
    """One persistent connection to the dispatcher socket, like one SIP worker."""

    def __init__(self, path: str, timeout: float = MODULE_TIMEOUT):
        self.path = path
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(2.0)
        self.sock.connect(path)
        self.buf = b""
        self.last_elapsed: Optional[float] = None

    # -- plumbing ---------------------------------------------------------
    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "ModuleClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _recv_some(self, timeout: float) -> Optional[bytes]:
        """Bytes, b"" on EOF/reset, None if nothing arrived within timeout."""
        r, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        if not r:
            return None
        try:
            return self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return b""

    def read_line(self, timeout: Optional[float] = None) -> str:
        """One reply line without its CRLF."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while b"\r\n" not in self.buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ReplyTimeout(
                    f"no complete reply line within {timeout:.3f}s "
                    f"(received so far: {self.buf!r})")
            chunk = self._recv_some(remaining)
            if chunk is None:
                continue
            if chunk == b"":
                raise ConnectionClosed(
                    f"dispatcher closed the connection (partial data: {self.buf!r})")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line.decode("utf-8", "replace")

    def assert_idle(self) -> None:
        """No unsolicited bytes (extra reply lines) and the peer has not closed."""
        chunk = self._recv_some(0)
        if chunk == b"":
            raise ConnectionClosed("dispatcher closed an idle connection")
        if chunk:
            self.buf += chunk
        assert not self.buf, f"unsolicited/extra data from the dispatcher: {self.buf!r}"

    def wait_closed(self, timeout: float = 2.0) -> bytes:
        """Wait until the server closes the connection; return what it sent before."""
        deadline = time.monotonic() + timeout
        received = self.buf
        self.buf = b""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"server did not close the connection within {timeout}s "
                    f"(received {received[:200]!r})")
            chunk = self._recv_some(remaining)
            if chunk == b"":
                return received
            if chunk:
                received += chunk

    # -- requests ---------------------------------------------------------
    def request(self, command: Value, headers: Sequence[Tuple[Value, Value]],
                timeout: Optional[float] = None) -> str:
        """Send one request and return its reply line (timed like the module)."""
        self.assert_idle()
        data = encode_request(command, headers)
        start = time.monotonic()
        self.sock.sendall(data)
        line = self.read_line(timeout)
        self.last_elapsed = time.monotonic() - start
        return line

    def update(self, **fields: Value) -> str:
        headers = [(name, fields.pop(name, "")) for name in UPDATE_HEADERS]
        # This relay's extensions, sent only when given (the stock modules never do).
        for name in ("families",):
            if name in fields:
                headers.append((name, fields.pop(name)))
        assert not fields, f"unknown update fields {sorted(fields)}"
        return self.request("update", headers)

    def remove(self, call_id: Value, from_tag: Value, to_tag: Value = "") -> str:
        return self.request("remove", [("call_id", call_id), ("from_tag", from_tag),
                                       ("to_tag", to_tag)])


_PORTS_RE = re.compile(r"^(\d{1,3}(?:\.\d{1,3}){3}|[0-9a-f:.]*:[0-9a-f:.]*)((?: \d+)+)$")


def parse_ports(reply: str, count: Optional[int] = None, relay_ip: str = RELAY_IP,
                port_range: Optional[Tuple[int, int]] = None) -> List[int]:
    """Check `<ip> <port>...` (spec A.6) and return the ports."""
    m = _PORTS_RE.match(reply)
    assert m, f"expected '<ip> <port>...' reply, got {reply!r}"
    assert m.group(1) == relay_ip, f"reply {reply!r}: relay ip should be {relay_ip}"
    ports = [int(x) for x in m.group(2).split()]
    if count is not None:
        assert len(ports) == count, f"reply {reply!r}: expected {count} port(s)"
    for p in ports:
        if p == 0:
            continue
        assert p % 2 == 0, f"reply {reply!r}: RTP port {p} is odd"
        if port_range is not None:
            lo, hi = port_range
            assert lo <= p < hi, f"reply {reply!r}: port {p} outside port_range {lo}:{hi}"
    return ports


def media_item(kind: str, ip: str, port: int, direction: str = "sendrecv",
               ice: str = "no") -> str:
    if ":" in ip:  # IPv6 goes in brackets (this relay's extension of spec A.5)
        ip = f"[{ip}]"
    return f"{kind}:{ip}:{port}:{direction}:ice={ice}"


_call_counter = itertools.count(1)


class Dialog:
    """One SIP dialog as seen by the module: caller tag A, callee tag B."""

    def __init__(self, client: ModuleClient, call_id: Optional[str] = None,
                 from_tag: Optional[str] = None, to_tag: Optional[str] = None,
                 dialog_id: str = "", caller_ip: str = "127.0.0.2",
                 callee_ip: str = "127.0.0.3"):
        n = next(_call_counter)
        uniq = f"{os.getpid():x}{n:04d}"
        self.client = client
        self.call_id = call_id or f"{uniq}-call@{caller_ip}"
        self.from_tag = from_tag or f"A{uniq}"
        self.to_tag = to_tag or f"B{uniq}"
        self.dialog_id = dialog_id
        self.caller_ip = caller_ip
        self.callee_ip = callee_ip

    def _update(self, type_: str, from_tag: str, to_tag: str, cseq: int,
                media: Union[str, Sequence[str], bytes], user_agent: str,
                signaling_ip: str, **extra: Value) -> str:
        if not isinstance(media, (str, bytes)):
            media = ",".join(media)
        return self.client.update(
            type=type_, dialog_id=self.dialog_id, call_id=self.call_id, cseq=cseq,
            from_uri="alice@example.com", to_uri="bob@example.net",
            from_tag=from_tag, to_tag=to_tag, user_agent=user_agent,
            signaling_ip=signaling_ip, media_relay="", media=media, **extra)

    # Caller-side requests (From = caller).
    def invite(self, media, cseq: int = 1, **extra: Value) -> str:
        """Initial INVITE: no To tag yet. `extra`: more headers (families=...)."""
        return self._update("request", self.from_tag, "", cseq, media,
                            "Caller UA 1.0", self.caller_ip, **extra)

    def reinvite(self, media, cseq: int) -> str:
        """In-dialog re-INVITE/UPDATE from the caller."""
        return self._update("request", self.from_tag, self.to_tag, cseq, media,
                            "Caller UA 1.0", self.caller_ip)

    def answer(self, media, cseq: int = 1, provisional: bool = False, **extra: Value) -> str:
        """Callee's reply (183/200) to a caller request; 1xx carry no To tag."""
        return self._update("reply", self.from_tag, "" if provisional else self.to_tag,
                            cseq, media, "Callee UA 2.0", self.callee_ip, **extra)

    # Callee-side requests (From = callee).
    def callee_reinvite(self, media, cseq: int) -> str:
        return self._update("request", self.to_tag, self.from_tag, cseq, media,
                            "Callee UA 2.0", self.callee_ip)

    def caller_answer(self, media, cseq: int) -> str:
        """Caller's reply to a callee re-INVITE."""
        return self._update("reply", self.to_tag, self.from_tag, cseq, media,
                            "Caller UA 1.0", self.caller_ip)

    def remove(self, swapped: bool = False) -> str:
        if swapped:
            return self.client.remove(self.call_id, self.to_tag, self.from_tag)
        return self.client.remove(self.call_id, self.from_tag, self.to_tag)

    def setup(self, caller: Union["MediaPort", Sequence["MediaPort"]],
              callee: Union["MediaPort", Sequence["MediaPort"]],
              port_range: Optional[Tuple[int, int]] = None):
        """INVITE + 200 OK. Returns (callee_facing_ports, caller_facing_ports).

        For a single MediaPort each, the two lists are unpacked to ints.
        """
        single = isinstance(caller, MediaPort)
        callers = [caller] if single else list(caller)
        callees = [callee] if isinstance(callee, MediaPort) else list(callee)
        r1 = self.invite([m.sdp() for m in callers])
        p = parse_ports(r1, len(callers), port_range=port_range)
        r2 = self.answer([m.sdp() for m in callees])
        q = parse_ports(r2, len(callers), port_range=port_range)
        if single:
            return p[0], q[0]
        return p, q


# ---------------------------------------------------------------------------
# UDP side


def rtp_packet(pt: int, seq: int, ts: int, ssrc: int, payload_len: int = 160) -> bytes:
    header = struct.pack("!BBHII", 0x80, pt & 0x7F, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
    seed = struct.pack("!IH", ssrc, seq & 0xFFFF)
    payload = bytearray()
    counter = 0
    while len(payload) < payload_len:
        payload += struct.pack("!I", zlib.crc32(seed + struct.pack("!I", counter)))
        counter += 1
    return header + bytes(payload[:payload_len])


def rtcp_packet(ssrc: int, count: int) -> bytes:
    # Receiver report with one report block (V=2, RC=1, PT=201, length 7).
    block = struct.pack("!IIIIII", ssrc ^ 0x5A5A5A5A, count & 0xFFFFFF, count, 0, 0, 0)
    return struct.pack("!BBHI", 0x81, 201, 7, ssrc) + block


def stun_packet(msg_type: int = 0x0001, txid: Optional[bytes] = None) -> bytes:
    txid = txid if txid is not None else os.urandom(12)
    # One SOFTWARE attribute so the datagram carries a recognisable payload.
    value = b"mediaproxy-test"
    attr = struct.pack("!HH", 0x8022, len(value)) + value + b"\x00" * ((4 - len(value) % 4) % 4)
    return struct.pack("!HHI", msg_type, len(attr), STUN_MAGIC) + txid + attr


def is_stun(data: bytes) -> bool:
    return len(data) >= 20 and struct.unpack("!I", data[4:8])[0] == STUN_MAGIC


class UdpEndpoint:
    """A real UDP socket bound on a loopback address."""

    def __init__(self, ip: str):
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.bind((ip, 0))
        self.sock.setblocking(False)
        self.ip, self.port = self.sock.getsockname()[:2]

    @property
    def addr(self) -> Tuple[str, int]:
        return (self.ip, self.port)

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes, dst: Tuple[str, int]) -> None:
        try:
            self.sock.sendto(data, dst)
        except ConnectionRefusedError:  # stale ICMP error from an earlier send
            self.sock.sendto(data, dst)

    def recv(self, timeout: float) -> Optional[Tuple[bytes, Tuple[str, int]]]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                data, src = self.sock.recvfrom(65536)
                return data, src[:2]  # IPv6: (host, port, flowinfo, scope_id)
            except BlockingIOError:
                pass
            except ConnectionRefusedError:
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            select.select([self.sock], [], [], remaining)

    def recv_all(self, timeout: float, until=None) -> List[Tuple[bytes, Tuple[str, int]]]:
        """Collect datagrams until `until(collected)` is true or timeout elapses."""
        deadline = time.monotonic() + timeout
        got: List[Tuple[bytes, Tuple[str, int]]] = []
        while until is None or not until(got):
            item = self.recv(max(0.0, deadline - time.monotonic()))
            if item is None:
                break
            got.append(item)
        return got

    def drain(self) -> List[Tuple[bytes, Tuple[str, int]]]:
        return self.recv_all(0)


_ssrc_counter = itertools.count(0x10000001, 0x01010101)


class MediaPort:
    """One phone's media stream: RTP and RTCP sockets plus packet generators."""

    def __init__(self, ip: str, pt: int = 0, kind: str = "audio"):
        self.ip = ip
        self.kind = kind
        self.pt = pt
        self.rtp = UdpEndpoint(ip)
        self.rtcp = UdpEndpoint(ip)
        self.ssrc = next(_ssrc_counter) & 0xFFFFFFFF
        self.seq = (self.ssrc >> 8) & 0x3FFF
        self.ts = 1000
        self.rtcp_count = 0
        # Everything this port ever sent, to validate what the peer receives.
        self.sent: set = set()

    @property
    def port(self) -> int:
        return self.rtp.port

    def sdp(self, direction: str = "sendrecv", ip: Optional[str] = None,
            port: Optional[int] = None, kind: Optional[str] = None, ice: str = "no") -> str:
        return media_item(kind or self.kind, self.ip if ip is None else ip,
                          self.port if port is None else port, direction, ice)

    def next_rtp(self) -> bytes:
        pkt = rtp_packet(self.pt, self.seq, self.ts, self.ssrc)
        self.seq += 1
        self.ts += 160
        self.sent.add(pkt)
        return pkt

    def next_rtcp(self) -> bytes:
        pkt = rtcp_packet(self.ssrc, self.rtcp_count)
        self.rtcp_count += 1
        self.sent.add(pkt)
        return pkt

    def stun(self, msg_type: int = 0x0001) -> bytes:
        pkt = stun_packet(msg_type)
        self.sent.add(pkt)
        return pkt

    def close(self) -> None:
        self.rtp.close()
        self.rtcp.close()


def _check_from(items, relay_port: int, sender: MediaPort, who: str, relay_ip: str):
    for data, src in items:
        assert src == (relay_ip, relay_port), (
            f"{who} received a datagram from {src}, expected it from the relay port "
            f"{relay_ip}:{relay_port} (symmetric forwarding)")
        assert data in sender.sent, (
            f"{who} received a datagram that its peer never sent (corrupted?): {data[:40]!r}")


def _exchange(a: MediaPort, a_sock: UdpEndpoint, a_port: int, a_gen,
              b: MediaPort, b_sock: UdpEndpoint, b_port: int, b_gen,
              n: int, relay_ip: str, what: str) -> None:
    """a talks to relay:a_port, b to relay:b_port; check forwarding both ways."""
    # Latching: until both parties have been learned, early datagrams are
    # dropped (127/8 is not routable, so the relay never sends to an SDP
    # address). Send a round from each side until each side got something.
    a_got: list = []
    b_got: list = []
    for _ in range(20):
        b_sock.send(b_gen(), (relay_ip, b_port))
        a_sock.send(a_gen(), (relay_ip, a_port))
        deadline = time.monotonic() + 0.1
        while time.monotonic() < deadline and not (a_got and b_got):
            a_got += a_sock.recv_all(0.01, until=lambda g: bool(g))
            b_got += b_sock.recv_all(0.01, until=lambda g: bool(g))
        if a_got and b_got:
            break
    _check_from(a_got, a_port, b, f"caller ({what})", relay_ip)
    _check_from(b_got, b_port, a, f"callee ({what})", relay_ip)
    assert a_got and b_got, (
        f"{what}: media not relayed after 20 rounds of packets from both sides: "
        f"caller got {len(a_got)} datagram(s) on relay port {a_port}, "
        f"callee got {len(b_got)} on relay port {b_port}")

    # Bulk: n datagrams each way, all of which must arrive intact.
    batch_a = [a_gen() for _ in range(n)]
    batch_b = [b_gen() for _ in range(n)]
    for pa, pb in zip(batch_a, batch_b):
        a_sock.send(pa, (relay_ip, a_port))
        b_sock.send(pb, (relay_ip, b_port))
    want_at_b = set(batch_a)
    want_at_a = set(batch_b)

    def complete(want):
        return lambda got: want.issubset(d for d, _ in got)

    recv_a = a_sock.recv_all(2.0, until=complete(want_at_a))
    recv_b = b_sock.recv_all(2.0, until=complete(want_at_b))
    _check_from(recv_a, a_port, b, f"caller ({what})", relay_ip)
    _check_from(recv_b, b_port, a, f"callee ({what})", relay_ip)
    got_a = want_at_a & {d for d, _ in recv_a}
    got_b = want_at_b & {d for d, _ in recv_b}
    assert len(got_a) == n and len(got_b) == n, (
        f"{what}: of {n} datagrams each way, callee->caller delivered {len(got_a)} "
        f"(via relay port {b_port} -> {a_port}), caller->callee delivered {len(got_b)} "
        f"(via relay port {a_port} -> {b_port})")


def assert_media_flows(caller: MediaPort, caller_relay_port: int, callee: MediaPort,
                       callee_relay_port: int, n: int = 50, rtcp: bool = True,
                       relay_ip: str = RELAY_IP) -> None:
    """RTP (and RTCP on port+1) relayed both ways, intact and symmetric.

    `caller_relay_port` is the relay port the caller sends to (from the reply
    to the 200 OK), `callee_relay_port` the one the callee sends to (from the
    reply to the INVITE).
    """
    _exchange(caller, caller.rtp, caller_relay_port, caller.next_rtp,
              callee, callee.rtp, callee_relay_port, callee.next_rtp,
              n, relay_ip, f"RTP {caller.kind}")
    if rtcp:
        _exchange(caller, caller.rtcp, caller_relay_port + 1, caller.next_rtcp,
                  callee, callee.rtcp, callee_relay_port + 1, callee.next_rtcp,
                  n, relay_ip, f"RTCP {caller.kind}")


def assert_nothing_relayed(caller: MediaPort, caller_relay_port: int, callee: MediaPort,
                           callee_relay_port: int, n: int = 5, wait: float = 0.4,
                           relay_ip: str = RELAY_IP) -> None:
    """Datagrams sent to these relay ports reach neither party."""
    caller.rtp.drain()
    callee.rtp.drain()
    for _ in range(n):
        callee.rtp.send(callee.next_rtp(), (relay_ip, callee_relay_port))
        caller.rtp.send(caller.next_rtp(), (relay_ip, caller_relay_port))
    got_a = caller.rtp.recv_all(wait)
    got_b = callee.rtp.recv_all(0.05)
    assert not got_a and not got_b, (
        f"relay ports {caller_relay_port}/{callee_relay_port} should be dead, but the "
        f"caller received {len(got_a)} and the callee {len(got_b)} datagram(s)")


def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
