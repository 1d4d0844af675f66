"""The module protocol's control semantics (spec A.2-A.6, A.10, B.6, D.1-D.3):
remove, `None` replies, request framing, concurrency, port exhaustion."""

import threading

import time

import pytest

from mpclient import (RELAY_IP, ConnectionClosed, Dialog, MediaPort, ModuleClient, UPDATE_HEADERS,
                      assert_media_flows, assert_nothing_relayed, encode_request,
                      parse_ports)
from mpharness import PORT_BASE


def fake_media(port, ip="127.0.0.2", kind="audio", direction="sendrecv"):
    return f"{kind}:{ip}:{port}:{direction}:ice=no"


def update_headers(d, media, type_="request", cseq=1, to_tag="", **override):
    fields = dict(type=type_, dialog_id="", call_id=d.call_id, cseq=cseq,
                  from_uri="alice@example.com", to_uri="bob@example.net",
                  from_tag=d.from_tag, to_tag=to_tag, user_agent="Caller UA 1.0",
                  signaling_ip="127.0.0.2", media_relay="", media=media)
    fields.update(override)
    return [(name, fields[name]) for name in UPDATE_HEADERS]


# -- remove -----------------------------------------------------------------

def test_remove_stops_media_and_tag_order_does_not_matter(mp):
    c = mp.client()
    caller, callee = MediaPort("127.0.0.2"), MediaPort("127.0.0.3")
    d = Dialog(c)
    p, q = d.setup(caller, callee)
    assert_media_flows(caller, q, callee, p, n=20)
    # BYE from the callee: tags swapped (H.9).
    assert d.remove(swapped=True) == "removed"
    assert_nothing_relayed(caller, q, callee, p)
    # Removing again: the session is gone.
    assert d.remove() == "error"
    assert d.remove(swapped=True) == "error"


def test_remove_unknown_call(mp):
    c = mp.client()
    assert Dialog(c).remove() == "error"
    # Known call_id but tags of another dialog.
    d = Dialog(c)
    parse_ports(d.invite(fake_media(5000)), 1)
    assert c.remove(d.call_id, "no-such-tag", "nor-this") == "error"
    assert d.remove() == "removed"


def test_remove_before_answer(mp):
    """CANCEL / failure route: remove with the caller's tag only."""
    c = mp.client()
    d = Dialog(c)
    parse_ports(d.invite(fake_media(5000)), 1)
    assert c.remove(d.call_id, d.from_tag, "") == "removed"
    assert c.remove(d.call_id, d.from_tag, "") == "error"


# -- None replies ------------------------------------------------------------

def test_reply_without_media_for_unknown_session_is_none(mp):
    c = mp.client()
    d = Dialog(c)
    assert d.answer("") == "None"


def test_offer_without_media_is_none(mp):
    c = mp.client()
    d = Dialog(c)
    assert d.invite("") == "None"


def test_signaling_ip_is_optional(mp):
    """G.1: a reimplementation should not require signaling_ip."""
    c = mp.client()
    d = Dialog(c)
    parse_ports(c.request("update", update_headers(d, fake_media(5000), signaling_ip="")), 1)
    assert d.remove() == "removed"


@pytest.mark.parametrize("media, count", [
    ("audio:127.0.0.2:5000:sendrecv:ice=no,", 1),          # trailing empty item
    (",audio:127.0.0.2:5000:sendrecv:ice=no", 1),          # leading empty item
    ("audio:127.0.0.2:5000:sendrecv:ice=no,,video:127.0.0.2:5002:sendrecv:ice=no", 2),
    ("audio:127.0.0.2:5000:sendrecv", 1),                   # ice absent == no
    ("audio:127.0.0.2:5000:sendrecv:ice=no:foo=bar", 1),   # extra parameters
    ("audio:127.0.0.2:5000:sendrecv::ice=no", 1),          # empty parameter
    ("audio:127.0.0.2:5000:recvonly:ice=yes", 1),
    ("image:127.0.0.2:5000:inactive:ice=no", 1),
    ("application:127.0.0.2:5000:sendonly:ice=no", 1),
])
def test_media_header_tolerated_forms(mp, media, count):
    c = mp.client()
    d = Dialog(c)
    ports = parse_ports(d.invite(media), count, port_range=mp.port_range)
    assert 0 not in ports
    assert d.remove() == "removed"


# -- framing -----------------------------------------------------------------

def test_empty_lines_between_requests_are_ignored(mp):
    c = mp.client()
    d = Dialog(c)
    c.send_raw(b"\r\n\r\n\r\n" + encode_request("update", update_headers(d, fake_media(5000))))
    parse_ports(c.read_line(), 1)
    c.assert_idle()
    assert d.remove() == "removed"


def test_request_split_across_many_writes(mp):
    c = mp.client()
    d = Dialog(c)
    data = encode_request("update", update_headers(d, fake_media(5000)))
    for i in range(len(data)):
        c.send_raw(data[i:i + 1])
    parse_ports(c.read_line(), 1)
    c.assert_idle()
    data = encode_request("remove", [("call_id", d.call_id), ("from_tag", d.from_tag),
                                     ("to_tag", "")])
    for i in range(0, len(data), 7):
        c.send_raw(data[i:i + 7])
    assert c.read_line() == "removed"


def test_two_requests_in_one_write(mp):
    c = mp.client()
    d1, d2 = Dialog(c), Dialog(c)
    c.send_raw(encode_request("update", update_headers(d1, fake_media(5000)))
               + encode_request("update", update_headers(d2, fake_media(5002))))
    r1, r2 = c.read_line(), c.read_line()
    parse_ports(r1, 1)
    parse_ports(r2, 1)
    assert r1 != r2
    c.assert_idle()
    assert d1.remove() == "removed"
    assert d2.remove() == "removed"


def test_header_value_may_contain_colon_space(mp):
    c = mp.client()
    d = Dialog(c)
    parse_ports(c.request("update", update_headers(
        d, fake_media(5000), user_agent="Phone: model X: v1.2")), 1)
    assert d.remove() == "removed"


def test_long_line_under_limit_is_accepted(mp):
    """A.2: lines up to 16384 bytes are accepted."""
    c = mp.client()
    d = Dialog(c)
    parse_ports(c.request("update", update_headers(d, fake_media(5000),
                                                   user_agent="U" * 16000)), 1)
    assert d.remove() == "removed"


def test_duplicate_header_last_wins(mp):
    c = mp.client()
    d = Dialog(c)
    first = "first-" + d.call_id
    headers = update_headers(d, fake_media(5000))
    i = [n for n, _ in headers].index("call_id")
    headers.insert(i, ("call_id", first))
    parse_ports(c.request("update", headers), 1)
    assert c.remove(first, d.from_tag, "") == "error"
    assert d.remove() == "removed"


# -- concurrency --------------------------------------------------------------

def test_many_concurrent_connections(mp):
    n = 50
    clients = [mp.client() for _ in range(n)]
    barrier = threading.Barrier(n)
    results = [None] * n

    def worker(i):
        c = clients[i]
        try:
            d = Dialog(c)
            offer = fake_media(10000 + 2 * i)
            answer = fake_media(20000 + 2 * i, ip="127.0.0.3")
            barrier.wait(10)
            worst = 0.0
            p = parse_ports(d.invite(offer), 1, port_range=mp.port_range)[0]
            worst = max(worst, c.last_elapsed)
            q = parse_ports(d.answer(answer), 1, port_range=mp.port_range)[0]
            worst = max(worst, c.last_elapsed)
            assert d.invite(offer) == f"{RELAY_IP} {p}"
            assert d.reinvite(offer, cseq=2) == f"{RELAY_IP} {p}"
            assert d.answer(answer, cseq=2) == f"{RELAY_IP} {q}"
            worst = max(worst, c.last_elapsed)
            assert d.remove() == "removed"
            worst = max(worst, c.last_elapsed)
            results[i] = ("ok", (p, q), worst)
        except BaseException as e:  # noqa: BLE001 - reported below
            results[i] = ("fail", repr(e), None)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    failures = [f"connection {i}: {r[1]}" for i, r in enumerate(results)
                if r is None or r[0] != "ok"]
    assert not failures, "\n".join(failures[:10])
    ports = [p for r in results for p in r[1]]
    assert len(set(ports)) == 2 * n, "two calls were given the same relay port"
    mp.assert_alive()


# -- port pool -----------------------------------------------------------------

@pytest.mark.mediaproxy_config(port_range=f"{PORT_BASE}:{PORT_BASE + 8}")
def test_port_pool_exhaustion_and_recovery(mp):
    c = mp.client()
    caller, callee = MediaPort("127.0.0.2"), MediaPort("127.0.0.3")
    d1 = Dialog(c)
    p1, q1 = d1.setup(caller, callee, port_range=mp.port_range)
    d2 = Dialog(c)
    p2 = parse_ports(d2.invite(fake_media(5002)), 1, port_range=mp.port_range)[0]
    parse_ports(d2.answer(fake_media(6002, ip="127.0.0.3")), 1, port_range=mp.port_range)

    d3 = Dialog(c)
    assert d3.invite(fake_media(5004)) == "error", "no ports left: expected error"
    assert d3.remove() == "error", "a failed update must not leave a session behind"
    d4 = Dialog(c)
    assert d4.invite([fake_media(5006), fake_media(5008, kind="video")]) == "error"
    # Existing calls are unaffected and need no new ports for a refresh.
    assert d2.reinvite(fake_media(5002), cseq=2) == f"{RELAY_IP} {p2}"
    assert_media_flows(caller, q1, callee, p1, n=20)
    mp.assert_alive()

    assert d1.remove() == "removed"
    caller2, callee2 = MediaPort("127.0.0.4"), MediaPort("127.0.0.5")
    d5 = Dialog(c)
    p5, q5 = d5.setup(caller2, callee2, port_range=mp.port_range)
    assert_media_flows(caller2, q5, callee2, p5, n=20)
    assert d2.remove() == "removed"
    assert d5.remove() == "removed"


def test_module_timeout_respected_on_fresh_connection(mp):
    """Every request on a brand-new connection is answered within the module
    timeout (connect-then-request, as a worker does after a restart)."""
    for i in range(20):
        with ModuleClient(mp.socket_path) as c:
            d = Dialog(c)
            parse_ports(d.invite(fake_media(5000 + 2 * i)), 1)
            assert d.remove() == "removed"


def test_thirty_two_streams(mp):
    """The modules send at most 32 m= lines (A.5): all get ports, in order."""
    c = mp.client()
    d = Dialog(c)
    offer = [fake_media(5000 + 2 * i) for i in range(32)]
    p = parse_ports(d.invite(offer), 32, port_range=mp.port_range)
    answer = [fake_media(6000 + 2 * i, ip="127.0.0.3") for i in range(32)]
    q = parse_ports(d.answer(answer), 32, port_range=mp.port_range)
    assert 0 not in p + q and len(set(p + q)) == 64
    assert d.invite(offer) == f"{RELAY_IP} " + " ".join(map(str, p))
    assert d.remove() == "removed"


@pytest.mark.parametrize("media_relay", ["127.0.0.1", "192.0.2.99", "not-an-ip"])
def test_media_relay_header(mp, media_relay):
    """B.6: a preferred relay is tried first; an unknown one only logs."""
    c = mp.client()
    d = Dialog(c)
    parse_ports(c.request("update", update_headers(d, fake_media(5000),
                                                   media_relay=media_relay)), 1)
    assert d.remove() == "removed"


@pytest.mark.mediaproxy_config(max_connections=3)
def test_max_connections(mp):
    """mediaproxy(8) LIMITS: connections beyond max_connections are accepted
    and closed; the others keep working, and a freed slot can be reused."""
    def usable_connection(i):
        # The fixture's start-up probe connection may still hold a slot for a
        # moment: retry until a connection answers a request.
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            c = ModuleClient(mp.socket_path)
            try:
                d = Dialog(c)
                parse_ports(d.invite(fake_media(5000 + 2 * i)), 1)
                assert d.remove() == "removed"
                return c
            except (ConnectionClosed, OSError):
                c.close()
                time.sleep(0.01)  # polling interval
        raise AssertionError(f"connection {i + 1} of max_connections=3 not accepted")

    clients = [usable_connection(i) for i in range(3)]
    extra = mp.client()
    assert extra.wait_closed(2.0) == b"", "connection over the limit must be closed"
    clients[0].close()
    # The slot is released asynchronously: poll (bounded in time, not in
    # attempts, so a loaded machine does not fail it) for a connection that stays.
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        c = ModuleClient(mp.socket_path)
        try:
            d = Dialog(c)
            r = d.invite(fake_media(5100))
            break
        except (ConnectionClosed, OSError):
            c.close()
            time.sleep(0.01)  # polling interval
    else:
        raise AssertionError("no connection accepted after one was closed")
    parse_ports(r, 1)
    for c2 in clients[1:]:
        d = Dialog(c2)
        parse_ports(d.invite(fake_media(5200)), 1)
    c.close()
    for c2 in clients:
        c2.close()
