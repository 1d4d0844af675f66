"""Prometheus endpoint ([Metrics] listen): scraped with a real HTTP client
(http.client), checked against calls set up, media sent, removed and
expired. Values are read from the exposition text as Prometheus would."""

import http.client
import re
import socket
import time

import pytest

from mpclient import free_tcp_port, Dialog, MediaPort, assert_media_flows


PORT = free_tcp_port()
CONFIG = {"Metrics.listen": f"127.0.0.1:{PORT}", "stream_timeout": 1}


def scrape(path="/metrics"):
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=3)
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read().decode()
    conn.close()
    return resp.status, resp.getheader("Content-Type"), body


def value(body, name, **labels):
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.escape(name) + (r"\{" + re.escape(want) + r"\}" if want else "") + r" (\S+)$"
    for line in body.splitlines():
        m = re.match(pattern, line)
        if m:
            return float(m.group(1))
    return None


@pytest.mark.mediaproxy_config(**CONFIG)
def test_metrics_follow_calls_and_traffic(mp):
    status, ctype, body = scrape()
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
    assert "# TYPE mediaproxy_relay_forwarded_packets_total counter" in body
    assert value(body, "mediaproxy_relay_sessions") == 0
    free0 = value(body, "mediaproxy_relay_port_pairs", state="free")

    c = mp.client()
    caller, callee = MediaPort("127.0.0.2"), MediaPort("127.0.0.3")
    d = Dialog(c)
    p, q = d.setup(caller, callee)
    assert_media_flows(caller, q, callee, p, n=30, rtcp=False)
    body = scrape()[2]
    assert value(body, "mediaproxy_relay_sessions") == 1
    assert value(body, "mediaproxy_relay_sessions_created_total") == 1
    assert value(body, "mediaproxy_relay_port_pairs", state="free") == free0 - 2
    sent = value(body, "mediaproxy_relay_forwarded_packets_total", path="userspace",
                 direction="caller_to_callee")
    assert sent >= 30
    assert value(body, "mediaproxy_relay_forwarded_bytes_total", path="userspace",
                 direction="caller_to_callee") == sent * 200
    assert value(body, "mediaproxy_dispatcher_requests_total", command="update", result="ok") == 2
    assert value(body, "mediaproxy_dispatcher_update_latency_seconds_count") == 2

    assert d.remove() == "removed"
    assert c.remove("nonexistent", "x") == "error"
    body = scrape()[2]
    assert value(body, "mediaproxy_relay_sessions") == 0
    assert value(body, "mediaproxy_relay_sessions_removed_total") == 1
    # Counters stay monotonic when the session is gone.
    assert value(body, "mediaproxy_relay_forwarded_packets_total", path="userspace",
                 direction="caller_to_callee") == sent
    assert value(body, "mediaproxy_dispatcher_errors_total", kind="unknown_session") == 1

    # An idle answered call expires after stream_timeout (1 s).
    d2 = Dialog(c)
    p2, q2 = d2.setup(MediaPort("127.0.0.4"), MediaPort("127.0.0.5"))
    deadline = time.monotonic() + 6
    expired = None
    while time.monotonic() < deadline:
        expired = value(scrape()[2], "mediaproxy_relay_sessions_expired_total",
                        reason="no_traffic_timeout")
        if expired:
            break
        time.sleep(0.1)  # polling interval
    assert expired == 1


@pytest.mark.mediaproxy_config(**CONFIG)
def test_event_loop_turns_are_counted(mp):
    body = scrape()[2]
    assert "# TYPE mediaproxy_event_loop_turn_seconds histogram" in body
    turns0 = value(body, "mediaproxy_event_loop_turn_seconds_count")
    c = mp.client()
    d = Dialog(c)
    d.setup(MediaPort("127.0.0.2"), MediaPort("127.0.0.3"))
    assert d.remove() == "removed"
    body = scrape()[2]
    # Every request and every scrape is a turn of the loop at least.
    assert value(body, "mediaproxy_event_loop_turn_seconds_count") >= turns0 + 3
    # Cumulative buckets: the +Inf one holds every turn; the longest is a real duration.
    assert value(body, "mediaproxy_event_loop_turn_seconds_bucket", le="+Inf") == \
        value(body, "mediaproxy_event_loop_turn_seconds_count")
    longest = value(body, "mediaproxy_event_loop_turn_longest_seconds")
    assert 0 < longest < 5


@pytest.mark.mediaproxy_config(**CONFIG)
def test_metrics_endpoint_rejects_other_requests(mp):
    assert scrape("/other")[0] == 404
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=3)
    conn.request("POST", "/metrics", body="x")
    assert conn.getresponse().status == 405
    s = socket.create_connection(("127.0.0.1", PORT))
    s.sendall(b"G" * 20000)
    s.settimeout(3)
    assert s.recv(100).startswith(b"HTTP/1.1 431")
    assert scrape()[0] == 200


@pytest.mark.mediaproxy_config(**CONFIG)
def test_metrics_head_request_gets_headers_and_no_body(mp):
    # Raw socket: http.client would not notice a body after a HEAD reply.
    s = socket.create_connection(("127.0.0.1", PORT))
    s.settimeout(3)
    s.sendall(b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    reply = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        reply += chunk
    s.close()
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
    assert length > 0, "Content-Length is that of the GET reply"
    assert body == b"", "a HEAD reply has no body"
