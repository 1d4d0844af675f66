"""Bad input on the module socket (spec A.2, A.3, A.5, B.2).

Every bad request is sent on its own connection while an established call
keeps relaying media; after each one the process must be alive and the call
must still relay both ways; at the end a new call must work.
"""

import random

import pytest

from mpclient import (RELAY_IP, ConnectionClosed, Dialog, MediaPort, ModuleClient,
                      UPDATE_HEADERS, assert_media_flows, encode_request, parse_ports)


def headers_for(call_id, media="audio:127.0.0.2:5000:sendrecv:ice=no", **override):
    fields = dict(type="request", dialog_id="", call_id=call_id, cseq=1,
                  from_uri="alice@example.com", to_uri="bob@example.net",
                  from_tag="tagA-" + call_id[:8], to_tag="", user_agent="Bad Phone",
                  signaling_ip="127.0.0.2", media_relay="", media=media)
    fields.update(override)
    return [(name, fields[name]) for name in UPDATE_HEADERS]


GARBAGE_MEDIA = [
    "garbage",
    "audio",
    "audio:127.0.0.2",
    "audio:127.0.0.2:5000",
    "audio:127.0.0.2:5000:sendrecv:ice",           # parameter without '='
    "audio:127.0.0.2:5000:sendrecv:ice=no:x",
    "audio:300.1.1.1:5000:sendrecv:ice=no",
    "audio:127.0.0.2:99999:sendrecv:ice=no",
    "audio:127.0.0.2:65536:sendrecv:ice=no",
    "audio:127.0.0.2:-5:sendrecv:ice=no",
    "audio:127.0.0.2:abc:sendrecv:ice=no",
    "audio:127.0.0.2:5000/2:sendrecv:ice=no",
    "audio:127.0.0.2: 5000:sendrecv:ice=no",
    "audio:127.0.0.2:5000:sideways:ice=no",
    "audio:::sendrecv:ice=no",
    "audio:fe80::1:5000:sendrecv:ice=no",
    "audio:example.com:5000:sendrecv:ice=no",
    "audio:127.0.0.2:5000:sendrecv:ice=no,video:1.2.3",
    ",,,,",
    b"audio:127.0.0.2:5000:\xff\xfe:ice=no",
    b"\x00\x01\x02\x03",
    "audio:" + "9" * 40 + ":5000:sendrecv:ice=no",
    "audio:127.0.0.2:" + "9" * 40 + ":sendrecv:ice=no",
]


@pytest.fixture
def established(mp):
    """An established call with media flowing; returns a checker."""
    c = mp.client()
    caller, callee = MediaPort("127.0.0.2"), MediaPort("127.0.0.3")
    d = Dialog(c, caller_ip="127.0.0.2")
    p, q = d.setup(caller, callee)
    assert_media_flows(caller, q, callee, p, n=20)

    class Call:
        dialog = d
        ports = (p, q)
        caller_port = caller
        callee_port = callee

        @staticmethod
        def check(n=5, what=""):
            mp.assert_alive()
            try:
                assert_media_flows(caller, q, callee, p, n=n, rtcp=False)
            except AssertionError as e:
                raise AssertionError(f"established call broken after {what}: {e}") from None

        @staticmethod
        def finish():
            mp.assert_alive()
            assert_media_flows(caller, q, callee, p, n=50)
            # A brand-new call can be set up and relays media.
            with ModuleClient(mp.socket_path) as c2:
                a, b = MediaPort("127.0.0.6"), MediaPort("127.0.0.7")
                d2 = Dialog(c2)
                p2, q2 = d2.setup(a, b, port_range=mp.port_range)
                assert_media_flows(a, q2, b, p2, n=50)
                assert d2.remove() == "removed"
            assert d.remove() == "removed"

    return Call


def test_unknown_command(mp, established):
    with mp.client() as c:
        assert c.request("frobnicate", headers_for("unknown-cmd-1")) == "error"
        # With the call_id of the existing session (forwarded to its relay).
        assert c.request("frobnicate", [("call_id", established.dialog.call_id)]) == "error"
        assert c.request("sessions", [("call_id", "unknown-cmd-2")]) == "error"
        c.assert_idle()
    established.check(what="unknown commands")
    # The session was not affected by the unknown command on its call_id.
    p, q = established.ports
    assert established.dialog.invite(established.caller_port.sdp()) == f"{RELAY_IP} {p}"
    established.finish()


def test_missing_call_id(mp, established):
    with mp.client() as c:
        assert c.request("update", headers_for("")) == "error"
        assert c.request("update", []) == "error"
        assert c.request("remove", [("from_tag", "x"), ("to_tag", "y")]) == "error"
        c.assert_idle()
    established.check(what="requests without call_id")
    established.finish()


@pytest.mark.parametrize("bad_line", [b"bogus header line", b"call_id:nospace",
                                      b"media:audio:1.2.3.4:5:sendrecv", b":",
                                      b"\x80\x81\x82"])
def test_header_line_without_separator(mp, established, bad_line):
    with mp.client() as c:
        req = encode_request("update", headers_for("no-sep-1"))
        # Insert the bad line after the command line.
        req = req.replace(b"update\r\n", b"update\r\n" + bad_line + b"\r\n", 1)
        c.send_raw(req)
        assert c.read_line() == "error"
        # The connection stays usable.
        d = Dialog(c)
        parse_ports(d.invite("audio:127.0.0.2:5010:sendrecv:ice=no"), 1)
        assert d.remove() == "removed"
    established.check(what=f"header line {bad_line!r}")
    established.finish()


@pytest.mark.parametrize("kind", ["header-line", "no-crlf", "command-line"])
def test_overlong_line_closes_connection(mp, established, kind):
    big = b"x" * 100_000
    if kind == "header-line":
        data = b"update\r\ncall_id: big-1\r\nuser_agent: " + big + b"\r\n\r\n"
    elif kind == "no-crlf":
        data = big
    else:
        data = b"update" + big + b"\r\n\r\n"
    c = mp.client()
    c.sock.settimeout(3.0)
    try:
        c.send_raw(data)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server closed while we were still sending: fine
    received = c.wait_closed(timeout=3.0)
    assert received in (b"", b"error\r\n"), f"unexpected bytes before close: {received[:100]!r}"
    c.close()
    established.check(what=f"a 100 KB line ({kind})")
    established.finish()


def test_random_bytes_then_valid_request(mp, established):
    rng = random.Random(20240611)
    for seed in range(24):
        size = rng.choice([1, 7, 64, 300, 1500, 4000])
        garbage = bytes(rng.getrandbits(8) for _ in range(size))
        with mp.client() as c:
            d = Dialog(c)
            valid = encode_request("update", [
                ("type", "request"), ("dialog_id", ""), ("call_id", d.call_id), ("cseq", 1),
                ("from_uri", "a@b"), ("to_uri", "c@d"), ("from_tag", d.from_tag),
                ("to_tag", ""), ("user_agent", "ua"), ("signaling_ip", "127.0.0.2"),
                ("media_relay", ""), ("media", "audio:127.0.0.2:5012:sendrecv:ice=no")])
            try:
                c.send_raw(garbage + b"\r\n\r\n" + valid)
            except (BrokenPipeError, ConnectionResetError):
                continue
            lines = []
            try:
                while True:
                    line = c.read_line(timeout=1.0)
                    if line != "error":
                        parse_ports(line, 1)
                        break
                    lines.append(line)
                    assert len(lines) <= 64, "too many error lines"
            except ConnectionClosed:
                continue  # closing the connection is an acceptable answer
            assert d.remove() == "removed"
        mp.assert_alive()
    established.check(what="random bytes")
    established.finish()


@pytest.mark.parametrize("media", GARBAGE_MEDIA, ids=range(len(GARBAGE_MEDIA)))
def test_garbage_media_header_in_new_call(mp, established, media):
    with mp.client() as c:
        r = c.request("update", headers_for("garbage-media-call", media=media))
        assert r in ("error", "None"), f"media {media!r}: expected error or None, got {r!r}"
    established.check(what=f"media {media!r}")


def test_garbage_media_in_reinvite_keeps_call(mp, established):
    d = established.dialog
    p, q = established.ports
    for i, media in enumerate(GARBAGE_MEDIA):
        r = d.reinvite(media, cseq=2 + i)
        assert r in ("error", "None"), f"re-INVITE media {media!r}: got {r!r}"
    established.check(what="re-INVITEs with garbage media")
    established.finish()


@pytest.mark.parametrize("override", [
    {"cseq": "abc"}, {"cseq": "-"}, {"type": "bogus"}, {"from_tag": ""},
    {"from_uri": ""}, {"to_uri": ""}, {"user_agent": ""}, {"cseq": ""},
    {"type": ""},
], ids=lambda o: ",".join(f"{k}={v or 'empty'}" for k, v in o.items()))
def test_invalid_or_missing_required_headers(mp, established, override):
    with mp.client() as c:
        r = c.request("update", headers_for("bad-hdr-call", **override))
        assert r == "error", f"{override}: expected error, got {r!r}"
    established.check(what=f"update with {override}")


def test_client_disconnects_mid_request_and_before_reply(mp, established):
    for i in range(10):
        c = ModuleClient(mp.socket_path)
        c.send_raw(encode_request("update", headers_for(f"gone-{i}"))[: 10 + i * 13])
        c.close()
        c = ModuleClient(mp.socket_path)
        c.send_raw(encode_request("update", headers_for(f"gone-full-{i}")))
        c.close()
    established.check(what="clients that went away")
    established.finish()


def test_header_names_are_case_sensitive(mp, established):
    """A.2: `Call_ID` is not `call_id`, so the request has no call_id."""
    with mp.client() as c:
        hdrs = [(n.upper() if n == "call_id" else n, v) for n, v in headers_for("case-1")]
        assert c.request("update", hdrs) == "error"
        c.assert_idle()
    established.check(what="upper-case header name")


def test_too_many_header_lines(mp, established):
    """mediaproxy(8) LIMITS: more than 64 header lines -> error; the
    connection stays usable."""
    with mp.client() as c:
        hdrs = headers_for("many-headers-1") + [(f"x_extra_{i}", "1") for i in range(60)]
        assert c.request("update", hdrs) == "error"
        d = Dialog(c)
        parse_ports(d.invite("audio:127.0.0.2:5014:sendrecv:ice=no"), 1)
        assert d.remove() == "removed"
    established.check(what="a request with 72 header lines")
