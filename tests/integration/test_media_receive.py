"""How media reaches the relay's user-space path ([Relay] media_receive).

As root (CAP_NET_ADMIN), the default (auto) receives every media port
through one socket per family that an nftables tproxy rule steers them to:
calls carry media, the table exists while the relay runs and is gone after
a clean exit, and a socket another program bound on the relay address with
a port in the range keeps its datagrams. A table of that name that is not
this relay's is left alone: auto falls back to the per-port sockets with a
warning, tproxy refuses to start. The metrics say which socket read what.
Skipped without root or nft.
"""

import http.client
import os
import re
import shutil
import socket
import subprocess

import pytest

from mpclient import Dialog, MediaPort, assert_media_flows, free_tcp_port, parse_ports
from mpharness import PORT_BASE, PORT_SPAN, RELAY_IP, MediaProxy, render_config, run_expect_exit

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft"),
                                reason="needs root and nft")

# One table per xdist worker (PORT_BASE differs per worker).
TABLE = f"mp_it_receive_{PORT_BASE}"
STEERED = "media receive: every media port through one socket per IP family"


def nft(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["nft", *args], capture_output=True, text=True, timeout=10)


def table_listing() -> str:
    r = nft("list", "table", "inet", TABLE)
    return r.stdout if r.returncode == 0 else ""


@pytest.fixture
def foreign_table():
    """Table inet TABLE made by someone else (no comment), removed after."""
    nft("delete", "table", "inet", TABLE)
    assert nft("add", "table", "inet", TABLE).returncode == 0
    yield
    nft("delete", "table", "inet", TABLE)


def metrics(port: int) -> dict:
    """The relay's receive metrics: {name or name{labels}: value}."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
    conn.request("GET", "/metrics")
    body = conn.getresponse().read().decode()
    conn.close()
    out = {}
    for line in body.splitlines():
        m = re.match(r"(mediaproxy_relay_(?:tproxy|received)\S*) (\S+)$", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def call_with_media(mp: MediaProxy) -> None:
    c = mp.client()
    caller, callee = MediaPort("127.0.0.2"), MediaPort("127.0.0.3")
    d = Dialog(c)
    p = parse_ports(d.invite(caller.sdp()), 1, port_range=mp.port_range)[0]
    q = parse_ports(d.answer(callee.sdp()), 1, port_range=mp.port_range)[0]
    assert_media_flows(caller, q, callee, p, n=30, rtcp=True)
    assert d.remove() == "removed"


# Each call_with_media(): 30 RTP and 30 RTCP datagrams each way, at least.
PER_CALL = 120


def test_auto_receives_through_the_tproxy_socket(mp_factory):
    nft("delete", "table", "inet", TABLE)
    port = free_tcp_port()
    mp = mp_factory(**{"Relay.nft_table": TABLE, "Metrics.listen": f"127.0.0.1:{port}"})
    assert STEERED in mp.stderr_text(), mp.stderr_tail()
    listing = table_listing()
    assert "socket transparent 1 tproxy ip to" in listing, listing
    assert f"udp dport {PORT_BASE}-{PORT_BASE + PORT_SPAN - 1}" in listing, listing
    call_with_media(mp)
    # Another program's unconnected socket on the relay address, at a port
    # of the range the relay has not bound (a SIP client's ephemeral port).
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        other.bind((RELAY_IP, PORT_BASE + PORT_SPAN - 2))
        other.settimeout(3)
        sender.sendto(b"not the relay's", (RELAY_IP, PORT_BASE + PORT_SPAN - 2))
        assert other.recv(64) == b"not the relay's"
    finally:
        other.close()
        sender.close()
    call_with_media(mp)
    m = metrics(port)
    assert m["mediaproxy_relay_tproxy_sockets"] == 1, m
    # Everything through the one socket: the port sockets read nothing.
    assert m['mediaproxy_relay_received_datagrams_total{socket="tproxy"}'] >= 2 * PER_CALL, m
    assert m['mediaproxy_relay_received_datagrams_total{socket="port"}'] == 0, m
    assert m["mediaproxy_relay_tproxy_unclaimed_datagrams_total"] == 0, m
    assert mp.stop() == 0
    assert table_listing() == "", "the table outlived a clean exit"


def test_auto_leaves_another_table_alone(mp_factory, foreign_table):
    port = free_tcp_port()
    mp = mp_factory(**{"Relay.nft_table": TABLE, "Metrics.listen": f"127.0.0.1:{port}"})
    log = mp.stderr_text()
    assert STEERED not in log
    assert "media receive: through each port's own socket (media_receive = auto:" in log, log
    assert "left alone" in log
    call_with_media(mp)
    m = metrics(port)
    assert m["mediaproxy_relay_tproxy_sockets"] == 0, m
    assert m['mediaproxy_relay_received_datagrams_total{socket="tproxy"}'] == 0, m
    assert m['mediaproxy_relay_received_datagrams_total{socket="port"}'] >= PER_CALL, m
    assert mp.stop() == 0
    listing = table_listing()
    assert f"table inet {TABLE}" in listing and "chain" not in listing, listing


def test_tproxy_refuses_to_start_without_its_table(foreign_table):
    text = render_config("@RUNTIME@", {"Relay.nft_table": TABLE,
                                       "Relay.media_receive": "tproxy"})
    rc, err, _ = run_expect_exit(text)
    assert rc not in (0, None), err
    assert "media_receive = tproxy, but nftables table inet " + TABLE in err, err
    assert "chain" not in table_listing()
