"""RADIUS accounting against a real FreeRADIUS (issue 12, spec F.2).

A FreeRADIUS started by the test itself (radiusserver.py: private
configuration in a temporary directory, accounting on 127.0.0.1:<base+813>,
every Accounting-Request written to a `detail` file) receives what
mediaproxy sends with `[Dispatcher] accounting = radius`. Each request is
checked attribute by attribute against the session record that mediaproxy
logged (`session ended: {...}`), with the F.2 rules written out again here
in Python.

* The server decodes the shipped dictionary (etc/radius/dictionary).
* A call with media, ended by `remove`: every F.2 attribute.
* Call-ids and tags with NUL and non-UTF-8 bytes arrive byte for byte.
* An expired call: Media-Info = timeout.
* A client.conf or dictionary that cannot be used stops start-up with a
  message that says what to fix.
* Two acctservers, the first silent: the second gets the record.
* Fault: no RADIUS server at first. Calls and media are unaffected (every
  module request answered within the module's 500 ms), and every record
  arrives, exactly once and in order, once the server is started.

Relay ports: base..base+100 (MEDIAPROXY_TEST_PORT_BASE), RADIUS: base+812
(auth, never used), base+813 (accounting) and base+814 (a silent server),
all within the block of 1000 ports the harness gives each tester.
"""

import ipaddress
import json
import shutil
import struct
import tempfile
import time
from pathlib import Path

import pytest

from mpclient import Dialog, MediaPort, assert_media_flows
from mpharness import PORT_BASE, render_config, run_expect_exit
from radiusserver import (DICTIONARY, FreeRadius, freeradius_binary, send_accounting,
                          udp_port_free, write_client_conf)

ACCT_PORT = PORT_BASE + 813
ARRIVAL_TIMEOUT = 10.0   # a record reaches a running server
RECOVERY_TIMEOUT = 45.0  # retry backoff (1 s doubling to 30 s) + radius_timeout x tries
MODULE_REPLY_BUDGET = 0.5  # the Kamailio module's mediaproxy_timeout


@pytest.fixture
def conf_dir():
    """A private directory for client.conf and FreeRADIUS's files."""
    d = tempfile.mkdtemp(prefix="mp-radius-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def radius_dir(conf_dir):
    freeradius_binary()  # skips when FreeRADIUS is absent
    return conf_dir


@pytest.fixture
def freeradius(radius_dir):
    if not udp_port_free(ACCT_PORT):
        pytest.skip(f"UDP port {ACCT_PORT} (MEDIAPROXY_TEST_PORT_BASE + 813) is taken")
    server = FreeRadius(str(Path(radius_dir) / "server"), ACCT_PORT)
    server.start()
    yield server
    server.stop()


def radius_overrides(radius_dir: str, acctserver=None, **extra):
    conf = write_client_conf(str(Path(radius_dir) / "client"), ACCT_PORT,
                             acctserver=acctserver)
    overrides = {
        "Dispatcher.accounting": "radius",
        "Radius.config_file": conf,
        "Radius.additional_dictionary": str(DICTIONARY),
        "port_range": f"{PORT_BASE}:{PORT_BASE + 100}",
    }
    overrides.update(extra)
    return overrides


def ended_records(mp):
    """The session records mediaproxy logged, in order."""
    return [json.loads(line.split(" session ended: ", 1)[1])
            for line in mp.stderr_text().splitlines() if " session ended: " in line]


def raw(value: str) -> bytes:
    """A record string's original bytes (non-UTF-8 bytes come as lone
    surrogates, as Python's surrogateescape)."""
    return value.encode("utf-8", "surrogateescape")


def _sequence_length(b: bytes, i: int) -> int:
    """Length of the valid UTF-8 sequence at b[i], or 1 (RFC 3629)."""
    c = b[i]
    if c < 0x80:
        return 1
    lo, hi = 0x80, 0xBF
    if 0xC2 <= c <= 0xDF:
        n = 2
    elif 0xE0 <= c <= 0xEF:
        n = 3
        lo = 0xA0 if c == 0xE0 else lo
        hi = 0x9F if c == 0xED else hi
    elif 0xF0 <= c <= 0xF4:
        n = 4
        lo = 0x90 if c == 0xF0 else lo
        hi = 0x8F if c == 0xF4 else hi
    else:
        return 1
    if i + n > len(b) or not lo <= b[i + 1] <= hi:
        return 1
    if any(not 0x80 <= x <= 0xBF for x in b[i + 2:i + n]):
        return 1
    return n


def cut(b: bytes, limit: int = 253) -> bytes:
    """At most 253 bytes, never ending inside a valid UTF-8 sequence (an
    invalid byte counts as one character)."""
    if len(b) <= limit:
        return b
    end = 0
    while end < len(b):
        n = _sequence_length(b, end)
        if end + n > limit:
            break
        end += n
    return b[:end]


def expected_attributes(rec: dict) -> dict:
    """Spec F.2 for one record, as FreeRADIUS's detail file shows it:
    {attribute: [value bytes]}. Empty strings are not sent (RFC 8044 3.5)."""
    streams = [s for s in rec.get("streams") or [] if isinstance(s, dict)]
    out = {}

    def put(name, value):
        if isinstance(value, bytes):
            value = cut(value)
            if not value:
                return
        else:
            value = str(value).encode()
        out[name] = [value]

    put("Acct-Status-Type", "Update")
    put("User-Name", raw(rec["username"]) if rec.get("username") else b"mediaproxy@default")
    put("Acct-Session-Id", raw(rec["call_id"]))
    put("Acct-Session-Time", int(rec["duration"]))
    caller = sum(s["caller_bytes"] for s in streams)
    callee = sum(s["callee_bytes"] for s in streams)
    put("Acct-Input-Octets", caller & 0xFFFFFFFF)
    put("Acct-Output-Octets", callee & 0xFFFFFFFF)
    if caller >> 32:
        put("Acct-Input-Gigawords", caller >> 32)
    if callee >> 32:
        put("Acct-Output-Gigawords", callee >> 32)
    put("Sip-From-Tag", raw(rec["from_tag"]))
    put("Sip-To-Tag", raw(rec["to_tag"]) if rec.get("to_tag") is not None else b"")
    if streams:
        put("NAS-IP-Address", streams[0]["caller_local"].rsplit(":", 1)[0])
    put("Sip-User-Agents", raw(rec["caller_ua"]) + b"+" + raw(rec["callee_ua"]))
    apps = sorted({raw(s["media_type"]) for s in streams if s["start_time"] != s["end_time"]})
    put("Sip-Applications", b", ".join(apps))
    put("Media-Codecs", b", ".join(raw(s["caller_codec"]) for s in streams))
    if rec.get("all_streams_ice"):
        put("Media-Info", b"ICE session")
    elif rec.get("timed_out"):
        put("Media-Info", b"timeout")
    delays = [s["post_dial_delay"] for s in streams if s.get("post_dial_delay") is not None]
    if delays:
        put("Acct-Delay-Time", int(delays[0]))
    return out


def check_request(got: dict, rec: dict) -> None:
    want = expected_attributes(rec)
    print(f"record: {json.dumps(rec)}\nAccounting-Request: {got}")
    got = {k: v for k, v in got.items() if k != "Timestamp"}  # added by FreeRADIUS
    if "NAS-IP-Address" not in want:
        # No stream: radcli puts in the address it sends from (RFC 2865 wants
        # NAS-IP-Address or NAS-Identifier in every request).
        assert "NAS-IP-Address" in got
        ipaddress.IPv4Address(got.pop("NAS-IP-Address")[0].decode())
    for name in sorted(set(want) | set(got)):
        assert got.get(name) == want.get(name), (
            f"attribute {name}: FreeRADIUS logged {got.get(name)!r}, the record "
            f"{rec.get('call_id')!r} gives {want.get(name)!r}")


def make_call(c, call_id=None, from_tag=None, to_tag=None, packets=20):
    """INVITE + 200 OK + media both ways; returns the dialog."""
    caller, callee = MediaPort("127.0.0.2"), MediaPort("127.0.0.3")
    try:
        d = Dialog(c, call_id=call_id, from_tag=from_tag, to_tag=to_tag)
        p, q = d.setup(caller, callee)
        assert_media_flows(caller, q, callee, p, n=packets)
    finally:
        caller.close()
        callee.close()
    return d


def find_request(requests, call_id: bytes):
    matches = [r for r in requests if r.get("Acct-Session-Id") == [cut(call_id)]]
    assert len(matches) == 1, (
        f"{len(matches)} Accounting-Requests for call-id {call_id!r} "
        f"(of {len(requests)} logged)")
    return matches[0]


# --------------------------------------------------------------------------


def test_freeradius_decodes_the_shipped_dictionary(freeradius):
    """The fixture works and the server side reads etc/radius/dictionary."""
    attrs = [(40, struct.pack("!I", 3)), (44, b"fixture-check"), (104, b"to"), (105, b"from"),
             (233, b"G711u"), (234, b"timeout"), (235, b"a+b"), (236, b"audio")]
    reply = send_accounting(ACCT_PORT, attrs, freeradius.secret)
    assert reply[0] == 5, f"not an Accounting-Response: code {reply[0]}"
    recs = freeradius.wait_records(1, ARRIVAL_TIMEOUT)
    assert len(recs) == 1, freeradius.log_tail()
    r = recs[0]
    assert r["Acct-Status-Type"] == [b"Update"]
    assert r["Sip-To-Tag"] == [b"to"] and r["Sip-From-Tag"] == [b"from"]
    assert r["Media-Codecs"] == [b"G711u"] and r["Media-Info"] == [b"timeout"]
    assert r["Sip-User-Agents"] == [b"a+b"] and r["Sip-Applications"] == [b"audio"]


def test_removed_call_is_accounted_attribute_by_attribute(freeradius, radius_dir, mp_factory):
    mp = mp_factory(**radius_overrides(radius_dir))
    c = mp.client()
    d = make_call(c)
    time.sleep(1.2)  # a duration of at least 1 s: the stream counts in Sip-Applications
    assert d.remove() == "removed"
    recs = freeradius.wait_records(1, ARRIVAL_TIMEOUT)
    assert len(recs) == 1, f"no Accounting-Request arrived:\n{mp.stderr_tail()}"
    logged = ended_records(mp)
    assert len(logged) == 1
    rec = logged[0]
    assert raw(rec["call_id"]) == d.call_id.encode()
    check_request(recs[0], rec)
    # The call really carried media, and both tags are there.
    assert int(recs[0]["Acct-Input-Octets"][0]) > 0
    assert int(recs[0]["Acct-Output-Octets"][0]) > 0
    assert recs[0]["Sip-To-Tag"] == [d.to_tag.encode()]
    assert recs[0]["NAS-IP-Address"] == [b"127.0.0.1"]
    assert recs[0]["Sip-User-Agents"] == [b"Caller UA 1.0+Callee UA 2.0"]
    assert recs[0]["Sip-Applications"] == [b"audio"]
    assert int(recs[0]["Acct-Session-Time"][0]) >= 1
    mp.assert_alive()


ODD_IDS = {
    "nul": (b"nul\x00inside@host", b"tag\x00A", b"tag\x00B"),
    "high-bytes": (b"\xff\xfe\x80-high@host", b"\xffA", b"\xc3\xa9B"),
    "invalid-utf8": (b"\xc3\x28\xed\xa0\x80\xf4\x90\x80\x80@host", b"\xe2\x82A", b"B\xc0\xaf"),
    "long": (b"L" * 300 + b"@host", b"\xc3\xa9" * 140, b"B"),
}


@pytest.mark.parametrize("kind", list(ODD_IDS))
def test_odd_call_ids_arrive_byte_for_byte(freeradius, radius_dir, mp_factory, kind):
    call_id, from_tag, to_tag = ODD_IDS[kind]
    mp = mp_factory(**radius_overrides(radius_dir))
    c = mp.client()
    d = make_call(c, call_id=call_id, from_tag=from_tag, to_tag=to_tag, packets=5)
    assert d.remove() == "removed"
    recs = freeradius.wait_records(1, ARRIVAL_TIMEOUT)
    assert len(recs) == 1, f"no Accounting-Request arrived:\n{mp.stderr_tail()}"
    r = recs[0]
    assert r["Acct-Session-Id"] == [cut(call_id)]
    assert r["Sip-From-Tag"] == [cut(from_tag)]
    assert r["Sip-To-Tag"] == [cut(to_tag)]
    check_request(r, ended_records(mp)[0])


def test_expired_call_says_timeout(freeradius, radius_dir, mp_factory):
    mp = mp_factory(**radius_overrides(radius_dir, stream_timeout=1, answer_timeout=10))
    c = mp.client()
    make_call(c, packets=5)  # then silence: the relay expires the stream
    recs = freeradius.wait_records(1, ARRIVAL_TIMEOUT)
    assert len(recs) == 1, f"no Accounting-Request after expiry:\n{mp.stderr_tail()}"
    rec = ended_records(mp)[0]
    assert rec["timed_out"] is True
    assert recs[0]["Media-Info"] == [b"timeout"]
    check_request(recs[0], rec)


def test_second_acctserver_takes_over(freeradius, radius_dir, mp_factory):
    """acctserver lists two servers; the first never answers."""
    dead = PORT_BASE + 814
    if not udp_port_free(dead):
        pytest.skip(f"UDP port {dead} is taken")
    mp = mp_factory(**radius_overrides(
        radius_dir, acctserver=f"127.0.0.1:{dead},127.0.0.1:{ACCT_PORT}"))
    d = make_call(mp.client(), packets=5)
    assert d.remove() == "removed"
    recs = freeradius.wait_records(1, ARRIVAL_TIMEOUT)
    assert len(recs) == 1, f"no Accounting-Request arrived:\n{mp.stderr_tail()}"
    check_request(recs[0], ended_records(mp)[0])
    time.sleep(0.5)
    assert len(freeradius.records()) == 1, "sent twice"
    assert "accounting backend radius failed" not in mp.stderr_text()


def test_server_absent_then_started_every_record_arrives(radius_dir, mp_factory):
    """No RADIUS server at first: calls and media go on as usual, records
    wait in the queue and all arrive, once each, after the server starts."""
    if not udp_port_free(ACCT_PORT):
        pytest.skip(f"UDP port {ACCT_PORT} is taken")
    mp = mp_factory(**radius_overrides(radius_dir))
    c = mp.client()
    dialogs = []
    for _ in range(3):
        t0 = time.monotonic()
        d = make_call(c, packets=10)  # every module request within 500 ms, or it raises
        assert d.remove() == "removed"
        dialogs.append(d)
        elapsed = time.monotonic() - t0
        print(f"call set up, media checked and removed in {elapsed:.2f}s while RADIUS is down")
        time.sleep(1.0)  # let the accounting worker retry meanwhile
    # Update latency is unaffected: a fresh update is answered well within
    # the module's budget while the worker is blocked on the absent server.
    latencies = []
    for _ in range(5):
        probe = Dialog(c)
        t0 = time.monotonic()
        reply = probe.invite("audio:127.0.0.9:7000:sendrecv:ice=no")
        latencies.append(time.monotonic() - t0)
        assert reply != "error" and latencies[-1] < MODULE_REPLY_BUDGET, (reply, latencies)
        assert probe.remove() == "removed"
    print(f"update latency while RADIUS is down: max {max(latencies) * 1000:.1f} ms")
    # The probes were never answered: logged, but not accounted (spec F).
    logged = [r for r in ended_records(mp) if r.get("start_time") is not None]
    assert len(logged) == 3, logged
    time.sleep(4.0)  # a longer outage: several failed deliveries and growing backoffs
    server = FreeRadius(str(Path(radius_dir) / "server"), ACCT_PORT)
    assert server.records() == []
    server.start()
    t0 = time.monotonic()
    try:
        recs = server.wait_records(3, RECOVERY_TIMEOUT)
        print(f"{len(recs)} records arrived {time.monotonic() - t0:.1f}s after the server started")
        assert len(recs) == 3, (
            f"{len(recs)} of 3 records arrived within {RECOVERY_TIMEOUT}s of the server "
            f"starting:\n{mp.stderr_tail()}")
        time.sleep(1.0)  # nothing more (no duplicate) may follow
        recs = server.records()
        assert [r["Acct-Session-Id"] for r in recs] == [[d.call_id.encode()] for d in dialogs], \
            "records lost, duplicated or out of order"
        for r, rec in zip(recs, logged):
            check_request(r, rec)
        for line in mp.stderr_text().splitlines():
            if "accounting backend radius" in line:
                print(line)
        assert "accounting backend radius failed" in mp.stderr_text()
        assert "accounting backend radius is back" in mp.stderr_text()
    finally:
        server.stop()
    mp.assert_alive()


CONFIG_FAULTS = {
    # name: (change to client.conf or the [Radius] options, words of the error)
    "no-client-conf": (lambda conf, opts: opts.update(
        {"Radius.config_file": str(conf.parent / "missing.conf")}),
        "cannot read the RADIUS client configuration"),
    "no-authserver": (lambda conf, opts: conf.write_text(
        "".join(line + "\n" for line in conf.read_text().splitlines()
                if not line.startswith("authserver"))),
        "has no authserver: radcli requires one"),
    "no-acctserver": (lambda conf, opts: conf.write_text(
        "".join(line + "\n" for line in conf.read_text().splitlines()
                if not line.startswith("acctserver"))),
        "has no acctserver"),
    "servers-file-missing": (lambda conf, opts: conf.write_text(
        conf.read_text().replace(str(conf.parent / "servers"), str(conf.parent / "nope"))),
        "cannot be read"),
    "no-mediaproxy-dictionary": (lambda conf, opts: opts.update(
        {"Radius.additional_dictionary": str(conf.parent / "no-dictionary")}),
        "cannot read the mediaproxy dictionary"),
    "dictionary-without-attributes": (lambda conf, opts: (
        (conf.parent / "empty-dictionary").write_text("# nothing\n"),
        opts.update({"Radius.additional_dictionary": str(conf.parent / "empty-dictionary")})),
        "attribute Sip-From-Tag is in no dictionary"),
}


@pytest.mark.parametrize("fault", list(CONFIG_FAULTS))
def test_unusable_radius_configuration_stops_startup(conf_dir, fault):
    change, words = CONFIG_FAULTS[fault]
    opts = radius_overrides(conf_dir)
    change(Path(opts["Radius.config_file"]), opts)
    rc, err, _ = run_expect_exit(render_config("@RUNTIME@", opts))
    assert rc == 1, f"expected exit code 1, got {rc}; stderr:\n{err}"
    assert "[Radius]" in err and words in err, f"stderr should say {words!r}:\n{err}"
    print(err.strip().splitlines()[-1])
