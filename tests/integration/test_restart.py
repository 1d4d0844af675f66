"""A relay process that is killed and started again keeps its calls (issue 13).

The combined role on loopback, userspace forwarding, accounting into SQLite so
the final records can be read as an operator would. `kill -9` leaves the state
file (<runtime_dir>/relay.state) behind; the next start restores every
session from it: the same relay ports, the latched addresses (media flows
again without any new `update`), the counters, and the dispatcher side's
table, so the module's `remove` for a call set up before the restart works
and its record counts the packets of both processes. State files that are
damaged, cut short, or written for another relay are refused with one log
line and the relay starts empty.
"""

import json
import os
import sqlite3
import time

from mpclient import Dialog, MediaPort, assert_media_flows, parse_ports
from pgserver import wait_until

N = 40  # packets each way per sub-stream, per process


def overrides(**extra):
    o = {"Dispatcher.accounting": "database", "Database.dburi": "sqlite:accounting.db"}
    o.update(extra)
    return o


def state_path(mp) -> str:
    return os.path.join(mp.runtime_dir, "relay.state")


def state_lines(mp):
    try:
        with open(state_path(mp), "rb") as f:
            return f.read().split(b"\n")
    except FileNotFoundError:
        return []


def records(mp):
    path = os.path.join(mp.runtime_dir, "accounting.db")
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            return [json.loads(r[0]) for r in con.execute("select info from media_sessions")]
        finally:
            con.close()
    except sqlite3.OperationalError:
        return []


def setup_calls(mp, count):
    c = mp.client()
    calls = []
    for _ in range(count):
        caller, callee = MediaPort("127.0.0.2"), MediaPort("127.0.0.3")
        d = Dialog(c)
        p = parse_ports(d.invite(caller.sdp()), 1, port_range=mp.port_range)[0]
        q = parse_ports(d.answer(callee.sdp()), 1, port_range=mp.port_range)[0]
        calls.append((d, caller, callee, p, q))
    return calls


def test_kill_9_restart_keeps_calls_latching_and_counters(mp_factory):
    mp = mp_factory(**overrides())
    calls = setup_calls(mp, 3)
    for d, caller, callee, p, q in calls:
        assert_media_flows(caller, q, callee, p, n=N, rtcp=True)
    # Killed right away: the last counter checkpoint is older than the last
    # packets, which only the memory-mapped counter table has seen.
    mp.kill_and_restart()
    log = mp.stderr_text()
    assert "3 session(s) restored, 0 not" in log, log

    # No update since the restart: the relay still knows both parties.
    for d, caller, callee, p, q in calls:
        assert_media_flows(caller, q, callee, p, n=N, rtcp=True)
    c = mp.client()
    for d, *_ in calls:
        d.client = c  # the module reconnects to the new process
        assert d.remove() == "removed"
    wait_until(lambda: len(records(mp)) == 3, 10, "three accounting records")
    by_call = {r["call_id"]: r for r in records(mp)}
    for d, caller, callee, p, q in calls:
        rec = by_call[d.call_id]
        st = rec["streams"][0]
        # Everything the phones sent, in both processes, but the one datagram
        # per sub-stream that came before the other party was latched (RTP
        # and RTCP; none after the restart: the latches were kept).
        sent = len(caller.sent) + len(callee.sent)
        assert st["caller_packets"] + st["callee_packets"] == sent - 2, (st, sent)
        assert st["caller_packets"] >= len(caller.sent) - 2, st
        assert st["callee_packets"] >= len(callee.sent) - 2, st
        assert st["caller_remote"] == f"{caller.ip}:{caller.port}", st
        assert st["status"] == "closed"
        assert rec["start_time"] is not None


def test_clean_exit_leaves_no_state(mp_factory):
    mp = mp_factory(**overrides())
    setup_calls(mp, 1)
    wait_until(lambda: len(state_lines(mp)) > 2, 5, "the session in the state file")
    assert mp.stop() == 0
    assert not os.path.exists(state_path(mp)), "SIGTERM ended every call: no state to keep"


def _restart_with_state(mp, mangle):
    calls = setup_calls(mp, 2)
    d, caller, callee, p, q = calls[0]
    assert_media_flows(caller, q, callee, p, n=5, rtcp=False)
    wait_until(lambda: len(state_lines(mp)) >= 4, 5, "two sessions in the state file")
    mp.kill()
    with open(state_path(mp), "rb") as f:
        data = f.read()
    with open(state_path(mp), "wb") as f:
        f.write(mangle(data))
    mp.close()
    mp._clients = []
    mp.start()
    return calls


def _assert_started_empty(mp, reason):
    log = mp.stderr_text()
    lines = [x for x in log.splitlines() if "state file" in x and "ignored" in x]
    assert len(lines) == 1 and reason in lines[0], log
    assert "restored" not in log
    # It works: a new call gets ports (the old ones are free again).
    caller, callee = MediaPort("127.0.0.2"), MediaPort("127.0.0.3")
    d = Dialog(mp.client())
    p = parse_ports(d.invite(caller.sdp()), 1, port_range=mp.port_range)[0]
    q = parse_ports(d.answer(callee.sdp()), 1, port_range=mp.port_range)[0]
    assert_media_flows(caller, q, callee, p, n=5, rtcp=False)
    assert d.remove() == "removed"


def test_damaged_state_file_is_refused(mp_factory):
    mp = mp_factory(**overrides())

    def flip(data):
        i = data.index(b"call_id")
        return data[:i] + b"CALL_ID" + data[i + 7:]

    _restart_with_state(mp, flip)
    _assert_started_empty(mp, "checksum mismatch")


def test_truncated_state_file_is_refused(mp_factory):
    mp = mp_factory(**overrides())
    _restart_with_state(mp, lambda data: data[:len(data) - 20])
    _assert_started_empty(mp, "cut short")


def test_state_file_of_another_relay_is_refused(mp_factory):
    mp = mp_factory(**overrides())
    lo, hi = mp.port_range

    def other_range(data):
        return data.replace(f" {lo}:{hi} ".encode(), f" {lo}:{hi - 2} ".encode(), 1)

    _restart_with_state(mp, other_range)
    _assert_started_empty(mp, "for another relay")


def test_state_file_none_disables_it(mp_factory):
    mp = mp_factory(**overrides(**{"Relay.state_file": "none"}))
    setup_calls(mp, 1)
    mp.kill_and_restart()
    assert not os.path.exists(state_path(mp))
    assert "restored" not in mp.stderr_text()


def test_upgrade_takes_over_sockets_connections_and_calls(mp_factory):
    """`mediaproxy --upgrade`: the new process takes the media sockets, the
    module socket and the module's open connection from the running one. A
    caller sending a packet every millisecond throughout loses none (what
    queued on the sockets meanwhile is read by the new process), the proxy's
    connection stays open and its remove works, and the record counts both
    processes' packets."""
    import threading
    mp = mp_factory(**overrides())
    calls = setup_calls(mp, 2)
    for d, caller, callee, p, q in calls:
        assert_media_flows(caller, q, callee, p, n=N, rtcp=False)
    d, caller, callee, p, q = calls[0]
    callee.rtp.drain()
    stop = threading.Event()
    sent = []

    def stream():
        seq = 0
        while not stop.is_set() and seq < 5000:
            pkt = caller.next_rtp()
            caller.rtp.send(pkt, (mp.relay_ip, q))
            sent.append(pkt)
            seq += 1
            time.sleep(0.001)  # one packet per millisecond

    th = threading.Thread(target=stream)
    th.start()
    try:
        time.sleep(0.1)
        assert mp.upgrade() == 0, "the old process exits cleanly"
        time.sleep(0.2)
    finally:
        stop.set()
        th.join()
    got = {data for data, _ in callee.rtp.recv_all(2.0, until=lambda g: len(g) >= len(sent))}
    assert len(sent) > 200
    missing = [i for i, pkt in enumerate(sent) if pkt not in got]
    assert not missing, f"{len(missing)} of {len(sent)} lost, first at {missing[:5]}"
    log = mp.stderr_text()
    assert "upgrade: took over 8 media socket(s), the module socket and 1 module connection(s)" \
        in log, log
    # And the tproxy receive socket where media_receive = auto found it (root).
    if "media receive: every media port through one socket" in log:
        assert "1 module connection(s); 1 tproxy receive socket(s)" in log, log
    assert "2 session(s) restored, 0 not" in log
    # The module's connection from before the upgrade is served by the new process.
    for d, *_ in calls:
        assert d.remove() == "removed"
    wait_until(lambda: len(records(mp)) == 2, 10, "two accounting records")
    rec = {r["call_id"]: r for r in records(mp)}[calls[0][0].call_id]
    st = rec["streams"][0]
    assert st["caller_packets"] == len(calls[0][1].sent), st
    # New connections and new calls go to the new process.
    (d2, caller2, callee2, p2, q2), = setup_calls(mp, 1)
    assert_media_flows(caller2, q2, callee2, p2, n=5, rtcp=False)
    assert d2.remove() == "removed"


def test_state_file_compacted_off_the_loop_restores_every_call(mp_factory):
    """The state file is compacted while calls keep changing (the compacted
    file is written on a worker thread, the records of the meantime appended
    to it): a kill -9 after that restores exactly the live calls."""
    mp = mp_factory(**overrides())
    c = mp.client()
    uri = "sip:" + "u" * 8000 + "@example.com"  # From and To: ~16 KB records, 1 MiB in ~65
    calls = []
    for i in range(40):
        d = Dialog(c)
        for type_, tag, to_tag, ip, port in (("request", d.from_tag, "", "127.0.0.2", 4000 + 2 * i),
                                             ("reply", d.from_tag, d.to_tag, "127.0.0.3",
                                              6000 + 2 * i)):
            reply = c.update(type=type_, call_id=d.call_id, cseq=1, from_uri=uri, to_uri=uri,
                             from_tag=tag, to_tag=to_tag, user_agent="ua", signaling_ip=ip,
                             media=f"audio:{ip}:{port}:sendrecv:ice=no")
            parse_ports(reply, 1, port_range=mp.port_range)
        calls.append(d)

    def compacted():
        lines = state_lines(mp)
        sessions = sum(1 for line in lines if b" S " in line[:40])
        return 0 < sessions < 2 * len(calls)  # each call wrote two records

    wait_until(compacted, 10, "the state file compacted")
    for d in calls[:10]:
        assert d.remove() == "removed"
    # Records are written when the loop turn ends, after the replies: wait
    # until the file's own account (S lines minus D lines) has the 30 calls.
    def live_in_file():
        live = set()
        for line in state_lines(mp)[1:]:
            parts = line.split(b" ", 3)
            if len(parts) >= 3 and parts[1] == b"S":
                live.add(parts[2])
            elif len(parts) >= 3 and parts[1] == b"D":
                live.discard(parts[2])
        return len(live)

    wait_until(lambda: live_in_file() == 30, 5, "the ten endings recorded")
    mp.kill_and_restart()
    log = mp.stderr_text()
    assert "30 session(s) restored, 0 not" in log, log
    c = mp.client()
    for d in calls[10:]:
        d.client = c
        assert d.remove() == "removed"
    for d in calls[:10]:
        d.client = c
        assert d.remove() != "removed"


def test_state_writes_under_load_wait_for_state_write_interval(mp_factory):
    """Changes that come sooner than state_write_interval after the last write
    wait for one write at the end of the interval (here 1 s, the largest
    allowed, so that the test's own pace cannot blur it): the record is not in
    the file right after the reply, is there by the end of the interval with
    no further traffic, and a kill -9 inside an interval loses only the
    changes of that interval."""
    mp = mp_factory(**overrides(**{"Relay.state_write_interval": "1"}))
    caller, callee = MediaPort("127.0.0.2"), MediaPort("127.0.0.3")
    c = mp.client()

    def in_file(d, records=1):
        return sum(d.call_id.encode() in line for line in state_lines(mp)) >= records

    def call():
        d = Dialog(c)
        parse_ports(d.invite(caller.sdp()), 1, port_range=mp.port_range)
        parse_ports(d.answer(callee.sdp()), 1, port_range=mp.port_range)
        return d

    first = call()  # the offer written at once, the answer at the end of the interval
    wait_until(lambda: in_file(first, 2), 3, "the first call's two records")
    time.sleep(1.2)  # an interval without changes (what is under test is time itself)
    second = call()  # the first write after 1.2 s idle: at once...
    third = call()   # ...this one less than a second later: deferred
    t_reply = time.monotonic()
    assert in_file(second), "a change after an idle interval is written before the loop waits"
    assert not in_file(third), "a change within the interval is written at its end, not at once"
    wait_until(lambda: in_file(third), 3, "the deferred record")
    assert time.monotonic() - t_reply <= 3

    fourth = call()  # deferred again: the kill comes before its write
    assert not in_file(fourth)
    mp.kill_and_restart()
    log = mp.stderr_text()
    assert "3 session(s) restored, 0 not" in log, log
    c = mp.client()
    for d in (first, second, third):
        d.client = c
        assert d.remove() == "removed"
    fourth.client = c
    assert fourth.remove() != "removed"
    for p in (caller, callee):
        p.close()
