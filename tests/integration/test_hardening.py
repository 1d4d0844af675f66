"""Hostile proxy-module clients and hostile bytes (issue 11, items 2-4).

* A client that pipelines a flood of bad requests and never reads: the
  server's memory and its log stay bounded (it stops reading that connection
  while its replies are unread and rate-limits the warnings), and once the
  client reads it gets every reply.
* Call-ids and tags are byte strings: one with a NUL byte or with bytes that
  are not UTF-8 is removed by `remove` and forgotten by the dispatcher when
  its relay expires it (the dispatcher-relay JSON keeps the bytes exact).
* Bytes from the network reach the log escaped: control bytes, DEL, a lone
  LF inside a header value (lines end in CRLF, so a lone LF is part of the
  value) and non-ASCII appear as \\xNN, never raw, and forge no line.
"""

import http.client
import json
import os
import re
import select
import socket
import threading
import time

import pytest

from mpclient import Dialog, MediaPort, assert_media_flows, free_tcp_port

METRICS_PORT = free_tcp_port()
METRICS = {"Metrics.listen": f"127.0.0.1:{METRICS_PORT}"}


def metric(name, **labels):
    conn = http.client.HTTPConnection("127.0.0.1", METRICS_PORT, timeout=3)
    conn.request("GET", "/metrics")
    body = conn.getresponse().read().decode()
    conn.close()
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.escape(name) + (r"\{" + re.escape(want) + r"\}" if want else "") + r" (\S+)$"
    for line in body.splitlines():
        m = re.match(pattern, line)
        if m:
            return float(m.group(1))
    return None


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def log_size(mp):
    return os.path.getsize(mp.stderr_path)


# --------------------------------------------------------------------------
# (a) a client that pipelines and never reads

BAD_REQUESTS = [
    b"update\r\nno separator here\r\n\r\n",                      # malformed
    b"update\r\nfrom_tag: x\r\n\r\n",                              # no call_id
    b"frobnicate\r\ncall_id: flood\r\n\r\n",                       # unknown command
    b"remove\r\ncall_id: flood-unknown\r\nfrom_tag: x\r\n\r\n",    # unknown session
]
FLOOD = 400_000          # requests (about 10 MB)
RSS_GROWTH_MAX_MIB = 60  # allowed growth of the server's RSS during the flood
LOG_MAX_BYTES = 100_000  # allowed growth of the log during the flood


class Sender(threading.Thread):
    """Writes `data` without ever reading; `sent` tracks progress."""

    def __init__(self, sock, data):
        super().__init__(daemon=True)
        self.sock, self.data, self.sent, self.error = sock, data, 0, None

    def run(self):
        view = memoryview(self.data)
        try:
            while self.sent < len(view):
                _, w, _ = select.select([], [self.sock], [], 30.0)
                if not w:
                    raise AssertionError("socket not writable for 30 s")
                self.sent += self.sock.send(view[self.sent:self.sent + 65536])
        except Exception as e:  # reported by the test
            self.error = e


@pytest.mark.mediaproxy_config(**METRICS)
def test_pipelining_client_that_never_reads(small_asan_quarantine, mp):
    pid = mp.proc.pid
    # Warm up (first allocations, log start-up) before the baseline.
    with mp.client() as c:
        assert c.request("update", [("from_tag", "x")]) == "error"
    time.sleep(0.3)
    rss0, log0 = rss_kib(pid), log_size(mp)

    blob = b"".join(BAD_REQUESTS[i % len(BAD_REQUESTS)] for i in range(FLOOD))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(mp.socket_path)
    sock.setblocking(False)
    sender = Sender(sock, blob)
    sender.start()
    # Flood until the sender stalls (the server stopped reading) or is done.
    peak, last, still_since = rss0, -1, time.monotonic()
    deadline = time.monotonic() + 60
    while sender.is_alive() and time.monotonic() < deadline:
        time.sleep(0.1)  # sampling interval
        peak = max(peak, rss_kib(pid))
        if sender.sent != last:
            last, still_since = sender.sent, time.monotonic()
        elif time.monotonic() - still_since > 1.5:
            break
    time.sleep(0.5)  # let the server finish what it already read
    mp.assert_alive()
    peak = max(peak, rss_kib(pid))
    grown_mib = (peak - rss0) / 1024
    logged = log_size(mp) - log0
    print(f"flood: {sender.sent} of {len(blob)} bytes accepted while unread, "
          f"RSS {rss0 / 1024:.1f} MiB -> peak {peak / 1024:.1f} MiB, log +{logged} bytes")
    assert grown_mib < RSS_GROWTH_MAX_MIB, (
        f"RSS grew by {grown_mib:.0f} MiB while the client did not read its replies "
        f"(bound {RSS_GROWTH_MAX_MIB} MiB): replies are buffered without limit")
    assert logged < LOG_MAX_BYTES, (
        f"{logged} bytes of log for {sender.sent} bytes of bad requests: "
        "warnings about bad input are not rate-limited")

    # Now the client reads: every request gets its reply, nothing is lost.
    sock.setblocking(True)
    sock.settimeout(30)
    replies, buf = 0, b""
    end = time.monotonic() + 120
    while replies < FLOOD and time.monotonic() < end:
        chunk = sock.recv(1 << 20)
        assert chunk, f"server closed the connection after {replies} replies"
        buf += chunk
        n = buf.count(b"\r\n")
        lines = buf.split(b"\r\n")
        buf = lines[-1]
        assert all(line == b"error" for line in lines[:-1]), lines[:5]
        replies += n
    sender.join(10)
    assert sender.error is None, sender.error
    assert sender.sent == len(blob)
    assert replies == FLOOD, f"{replies} replies for {FLOOD} requests"
    sock.close()
    total_logged = log_size(mp) - log0
    print(f"flood: all {replies} replies read; log +{total_logged} bytes in all")
    assert total_logged < LOG_MAX_BYTES, f"{total_logged} bytes of log for {FLOOD} bad requests"
    # The bad requests are counted in the metrics instead.
    assert metric("mediaproxy_dispatcher_errors_total", kind="malformed_request") >= FLOOD / 4
    assert metric("mediaproxy_log_lines_suppressed_total") > 0
    # A well-behaved client is still served.
    caller, callee = MediaPort("127.0.0.2"), MediaPort("127.0.0.3")
    with mp.client() as c:
        d = Dialog(c)
        p, q = d.setup(caller, callee)
        assert_media_flows(caller, q, callee, p, n=10)
        assert d.remove() == "removed"


# --------------------------------------------------------------------------
# (b) call-ids and tags with NUL and non-UTF-8 bytes

ODD_IDS = {
    "nul": (b"nul\x00inside@host", b"tag\x00A", b"tag\x00B"),
    "high-bytes": (b"\xff\xfe\x80-high@host", b"\xffA", b"\xc3\xa9B"),
    "invalid-utf8": (b"\xc3\x28\xed\xa0\x80\xf4\x90\x80\x80@host", b"\xe2\x82A", b"B\xc0\xaf"),
}
EXPIRY = dict(METRICS, stream_timeout=1, answer_timeout=10)


def wait_metric(name, want, timeout):
    deadline = time.monotonic() + timeout
    while True:
        got = metric(name)
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.1)  # polling interval


@pytest.mark.parametrize("dialog_id, remove_reply", [("4321:8765", "removed"), ("", "error")],
                         ids=["with-dialog-id", "without-dialog-id"])
@pytest.mark.parametrize("kind", list(ODD_IDS))
@pytest.mark.mediaproxy_config(**EXPIRY)
def test_odd_call_id_is_forgotten_on_expiry(mp, kind, dialog_id, remove_reply):
    call_id, from_tag, to_tag = ODD_IDS[kind]
    c = mp.client()
    caller, callee = MediaPort("127.0.0.2"), MediaPort("127.0.0.3")
    d = Dialog(c, call_id=call_id, from_tag=from_tag, to_tag=to_tag, dialog_id=dialog_id)
    p, q = d.setup(caller, callee)
    assert_media_flows(caller, q, callee, p, n=5)
    assert metric("mediaproxy_dispatcher_sessions") == 1
    # Silent for stream_timeout: the relay expires the session.
    assert wait_metric("mediaproxy_relay_sessions", 0, 6) == 0, "the relay did not expire it"
    assert wait_metric("mediaproxy_dispatcher_sessions", 0, 2) == 0, (
        "the relay expired the session but the dispatcher still routes its call-id: "
        "the expired report did not carry the call-id's bytes exactly")
    # The logged record is JSON that gives the exact bytes back in Python.
    ended = [line for line in mp.stderr_text().splitlines() if " session ended: " in line]
    assert len(ended) == 1, ended
    record = json.loads(ended[0].split(" session ended: ", 1)[1])
    for key, want in (("call_id", call_id), ("from_tag", from_tag), ("to_tag", to_tag)):
        assert record[key].encode("utf-8", "surrogateescape") == want, (key, record[key])
    # With a dialog id the answered call's record stays for the proxy's remove
    # (spec B.5); without one it is gone.
    assert d.remove() == remove_reply
    assert metric("mediaproxy_dispatcher_sessions") == 0
    mp.assert_alive()


@pytest.mark.parametrize("kind", list(ODD_IDS))
@pytest.mark.mediaproxy_config(**METRICS)
def test_odd_call_id_is_removed(mp, kind):
    call_id, from_tag, to_tag = ODD_IDS[kind]
    c = mp.client()
    caller, callee = MediaPort("127.0.0.2"), MediaPort("127.0.0.3")
    d = Dialog(c, call_id=call_id, from_tag=from_tag, to_tag=to_tag)
    p, q = d.setup(caller, callee)
    assert_media_flows(caller, q, callee, p, n=5)
    assert d.remove() == "removed"
    assert d.remove() == "error"
    assert metric("mediaproxy_dispatcher_sessions") == 0
    assert metric("mediaproxy_relay_sessions") == 0


# --------------------------------------------------------------------------
# (c) hostile bytes in log lines

FORGED = b"2030-01-01T00:00:00.000Z critical FORGED LINE"


def assert_log_clean(mp, markers):
    raw = open(mp.stderr_path, "rb").read()
    lines = raw.split(b"\n")
    for line in lines:
        assert not line.startswith(FORGED[:24]), f"forged log line: {line!r}"
        bad = [b for b in line if b < 0x20 or b >= 0x7f]
        assert not bad, f"raw control or non-ASCII bytes {bad} in log line {line!r}"
    text = raw.decode("ascii")
    for m in markers:
        assert m in text, f"expected escaped text {m!r} in the log"


@pytest.mark.mediaproxy_config(stream_timeout=1, answer_timeout=10)
def test_hostile_bytes_are_escaped_in_the_log(mp):
    # The NUL comes last so that a value printed with %s shows its other bytes.
    evil = b"evil\x1b[31m\x7f\xff\n" + FORGED + b"\x00end"
    c = mp.client()
    # Unknown command and bad header values, logged by dispatcher and relay.
    assert c.request(b"frob" + evil, [("call_id", evil)]) == "error"
    assert c.request("remove", [("call_id", evil), ("from_tag", "x")]) == "error"
    assert c.update(type=evil, call_id=evil, cseq=1, from_uri="a@b", to_uri="c@d",
                    from_tag=evil, user_agent=evil, signaling_ip="127.0.0.2",
                    media="audio:127.0.0.2:5000:sendrecv:ice=no") == "error"
    assert c.update(type="request", call_id=evil, cseq=evil, from_uri="a@b", to_uri="c@d",
                    from_tag="t", user_agent="u", signaling_ip="127.0.0.2",
                    media="audio:127.0.0.2:5000:sendrecv:ice=no") == "error"
    assert c.update(type="request", call_id=evil, cseq=1, from_uri="a@b", to_uri="c@d",
                    from_tag="t", user_agent="u", signaling_ip="127.0.0.2",
                    media=b"audio:127.0.0.2:5000:" + evil) in ("error", "None")
    # A malformed request whose parse error quotes nothing but is logged.
    c.send_raw(b"update\r\n" + evil + b"\r\n\r\n")
    assert c.read_line() == "error"
    # A call that lives, then expires: "session ... expired" and the record.
    caller, callee = MediaPort("127.0.0.2"), MediaPort("127.0.0.3")
    d = Dialog(c, call_id=evil, from_tag=b"A" + evil, to_tag=b"B" + evil)
    p, q = d.setup(caller, callee)
    assert_media_flows(caller, q, callee, p, n=5)
    deadline = time.monotonic() + 6
    while b" expired" not in open(mp.stderr_path, "rb").read():
        assert time.monotonic() < deadline, "the session did not expire"
        time.sleep(0.1)  # polling interval
    time.sleep(0.5)  # the dispatcher logs the end of the session
    mp.assert_alive()
    assert_log_clean(mp, ["evil\\x1b[31m\\x7f\\xff\\x0a" + FORGED.decode() + "\\x00end"])
    # The record of the ended call, JSON-escaped (json_quote) in one line.
    assert "session ended: {\"call_id\": \"evil\\u001b[31m\\u007f\\udcff\\n2030" in mp.stderr_text()
