#!/usr/bin/python3
"""test_kemi_script.py - runs the example Kamailio KEMI script
(plugin-shim/examples/kamailio-mediaproxy-shim.py) outside Kamailio, with a
stub `KSR` module standing in for app_python3, against the fake dispatcher:
an INVITE with SDP, its 200 OK and the BYE must produce the `update`/`remove`
requests and the body replacements the script promises, with the real
libmediaproxy-shim.so loaded through ctypes; then the same script in engage
mode (MPSHIM_MODE=engage): INVITE, 183, 200, ACK, re-INVITE and its 200, BYE,
and a second call failing with 486, each reported to the dialog table with
the return code the library gives and no dialog left; and the family the
script picks for bridging (peer_family): an INVITE whose next hop ($du) is
IPv6 gets the fake's IPv6 relay address, its 200 the IPv4 one, and in use
mode the request's source family is kept in $avp(s:mpshim_family) for the
reply. No root needed.

    test_kemi_script.py LIBRARY FAKE_DISPATCHER
"""
import importlib.util
import os
import subprocess
import sys
import tempfile
import types

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "..", "..", "plugin-shim", "examples", "kamailio-mediaproxy-shim.py")

INVITE_SDP = ("v=0\r\no=caller 1 1 IN IP4 192.168.1.2\r\ns=-\r\nc=IN IP4 192.168.1.2\r\n"
              "t=0 0\r\nm=audio 6000 RTP/AVP 8\r\na=rtcp:6001\r\n")
ANSWER_SDP = ("v=0\r\no=callee 1 1 IN IP4 10.9.0.1\r\ns=-\r\nc=IN IP4 10.9.0.1\r\n"
              "t=0 0\r\nm=audio 7000 RTP/AVP 8\r\n")


def sanitizer_preload(lib):
    """A library built with ASan can only be dlopen()ed by python when the ASan
    runtime is preloaded: re-run this script that way (leak checks off, the
    interpreter itself is not clean)."""
    if "LD_PRELOAD" in os.environ:
        return
    try:
        out = subprocess.run(["ldd", lib], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return
    for line in out.splitlines():
        if "asan" in line and "=>" in line:
            runtime = line.split("=>")[1].split("(")[0].strip()
            env = dict(os.environ, LD_PRELOAD=runtime,
                       ASAN_OPTIONS="detect_leaks=0:" + os.environ.get("ASAN_OPTIONS", ""))
            os.execve(sys.executable, [sys.executable] + sys.argv, env)


class Stub:
    """The parts of app_python3's KSR the script uses, recording calls."""

    def __init__(self):
        self.pvs = {}
        self.calls = []
        self.logs = []

    def module(self):
        ksr = types.ModuleType("KSR")
        stub = self

        def rec(name, result=1):
            def f(*args):
                stub.calls.append((name,) + args)
                return result() if callable(result) else result
            return f

        ksr.pv = types.SimpleNamespace(get=lambda n: stub.pvs.get(n),
                                       sets=rec("pv.sets"), seti=rec("pv.seti"))
        for level in ("info", "notice", "err", "dbg"):
            setattr(ksr, level, lambda text, level=level: stub.logs.append((level, text)))
        ksr.maxfwd = types.SimpleNamespace(process_maxfwd=rec("maxfwd", 1))
        ksr.siputils = types.SimpleNamespace(
            has_totag=rec("has_totag", lambda: 1 if stub.pvs.get("$tt") else -1))
        ksr.rr = types.SimpleNamespace(loose_route=rec("loose_route", 1),
                                       record_route=rec("record_route"))
        ksr.tm = types.SimpleNamespace(t_relay=rec("t_relay"), t_on_reply=rec("t_on_reply"),
                                       t_on_failure=rec("t_on_failure"),
                                       t_check_trans=rec("t_check_trans", 0))
        ksr.sl = types.SimpleNamespace(sl_send_reply=rec("sl_send_reply"),
                                       sl_reply_error=rec("sl_reply_error"))
        ksr.textops = types.SimpleNamespace(
            has_body=rec("has_body", lambda: 1 if stub.pvs.get("$rb") else -1),
            set_body=rec("set_body"))
        ksr.hdr = types.SimpleNamespace(remove=rec("hdr.remove"), append=rec("hdr.append"))
        return ksr


def load_script(stub):
    sys.modules["KSR"] = stub.module()
    spec = importlib.util.spec_from_file_location("kemi_example", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.mod_init()


def engage(fake, check):
    """The script in engage mode against a fake answering by default."""
    with tempfile.TemporaryDirectory(prefix="mpshim-kemi-engage-") as tmp:
        sock = os.path.join(tmp, "d.sock")
        disp = subprocess.Popen([fake, sock], stdout=subprocess.PIPE, text=True)
        try:
            assert disp.stdout.readline().strip() == "ready"
            os.environ.update(MPSHIM_SOCKET=sock, MPSHIM_MODE="engage", MPSHIM_ICE="none")
            stub = Stub()
            k = load_script(stub)
            common = {"$ci": "engage@test", "$fu": "sip:alice@example.com",
                      "$tu": "sip:bob@example.net", "$ft": "ft1", "$si": "203.0.113.7",
                      "$sp": 5062, "$hdr(Content-Type)": "application/sdp", "$ua": "phone/1",
                      "$hdr(Contact)": "<sip:alice@203.0.113.7:5062>",
                      "$hdr(Via)": "SIP/2.0/UDP 203.0.113.7:5062;branch=z9hG4bK1"}

            def request(method, cseq, to_tag, body, ci=None):
                stub.pvs = dict(common, **{"$mt": 1, "$rm": method, "$cs": cseq, "$tt": to_tag,
                                           "$rb": body}, **({"$ci": ci} if ci else {}))
                k.ksr_request_route(None)

            def reply(status, cseq, to_tag, body, ci=None):
                stub.pvs = dict(common, **{"$mt": 2, "$rs": status, "$rm": "INVITE", "$cs": cseq,
                                           "$tt": to_tag, "$rb": body, "$si": "10.9.0.1"},
                                **({"$ci": ci} if ci else {}))
                k.ksr_onreply_mediaproxy(None)

            request("INVITE", 1, None, INVITE_SDP)
            reply(183, 1, "tt1", ANSWER_SDP)
            reply(200, 1, "tt1", ANSWER_SDP)
            request("ACK", 1, "tt1", None)
            request("INVITE", 2, "tt1", INVITE_SDP)
            reply(200, 2, "tt1", ANSWER_SDP)
            bodies = [c for c in stub.calls if c[0] == "set_body"]
            check(len(bodies) == 5 and all("c=IN IP4 192.0.2.5\r\n" in b[1] for b in bodies),
                  "engage: INVITE, 183, 200, re-INVITE, 200 bodies name the relay")
            table = k.mp.table
            check(k.mp.lib.mpshim_dialogs_count(table) == 1, "engage: one dialog during the call")
            request("BYE", 3, "tt1", None)
            check(k.mp.lib.mpshim_dialogs_count(table) == 0, "engage: no dialog after the BYE")
            request("INVITE", 1, None, INVITE_SDP, ci="engage2@test")
            reply(486, 1, "tt2", None, ci="engage2@test")
            k.ksr_failure_mediaproxy(None)
            check(k.mp.lib.mpshim_dialogs_count(table) == 0, "engage: no dialog after the 486")
            logged = [t for lvl, t in stub.logs if lvl == "notice"]
            want = ["E2E dialog_request(INVITE) rc=1\n", "E2E dialog_reply(reply 183) rc=1\n",
                    "E2E dialog_reply(reply 200) rc=1\n", "E2E dialog_request(ACK) rc=-2\n",
                    "E2E dialog_request(INVITE) rc=1\n", "E2E dialog_reply(reply 200) rc=1\n",
                    "E2E dialog_request(BYE) rc=1\n", "E2E dialog_request(INVITE) rc=1\n",
                    "E2E dialog_reply(reply 486) rc=1\n", "E2E dialog_end(failure) rc=0\n"]
            check(logged == want, "engage: return codes %r" % logged)

            # bridged: an IPv4 caller's INVITE to an IPv6 next hop, the
            # callee's IPv6 answer; the fake answers in the family asked for
            stub.calls.clear()
            v6_answer = ANSWER_SDP.replace("IN IP4 10.9.0.1", "IN IP6 2001:db8::9")
            stub.pvs = dict(common, **{"$mt": 1, "$rm": "INVITE", "$cs": 1, "$tt": None,
                                       "$rb": INVITE_SDP, "$ci": "bridge@test",
                                       "$du": "sip:[2001:db8::9]:5060", "$dd": "[2001:db8::9]"})
            k.ksr_request_route(None)
            reply(200, 1, "tt3", v6_answer, ci="bridge@test")
            request("BYE", 2, "tt3", None, ci="bridge@test")
            bodies = [c[1] for c in stub.calls if c[0] == "set_body"]
            check(len(bodies) == 2 and "c=IN IP6 2001:db8::5\r\n" in bodies[0]
                  and "c=IN IP4 192.0.2.5\r\n" in bodies[1],
                  "engage, bridged by the next hop's family: INVITE IPv6, 200 IPv4 %r" % bodies)
        finally:
            disp.kill()
            disp.wait()


def main(lib, fake):
    sanitizer_preload(lib)
    failures = []

    def check(cond, what):
        print(("ok    " if cond else "FAIL  ") + what)
        if not cond:
            failures.append(what)

    with tempfile.TemporaryDirectory(prefix="mpshim-kemi-") as tmp:
        sock = os.path.join(tmp, "d.sock")
        disp = subprocess.Popen([fake, sock, "192.0.2.5 40002", "192.0.2.5 40000", "removed"],
                                stdout=subprocess.PIPE, text=True)
        try:
            assert disp.stdout.readline().strip() == "ready"
            os.environ.update(MPSHIM_LIB=lib, MPSHIM_SOCKET=sock, MPSHIM_ICE="low-priority",
                              MPSHIM_FORWARD_TO="sip:10.9.0.1:5060")
            stub = Stub()
            k = load_script(stub)
            check(k.child_init(1) == 0, "mod_init() and child_init()")

            common = {"$ci": "kemi@test", "$cs": 1, "$fu": "sip:alice@example.com",
                      "$tu": "sip:bob@example.net", "$ft": "ft1", "$si": "203.0.113.7",
                      "$sp": 5062, "$hdr(Content-Type)": "application/sdp"}
            stub.pvs = dict(common, **{
                "$mt": 1, "$rm": "INVITE", "$tt": None, "$ua": "phone/1",
                "$rb": INVITE_SDP, "$hdr(Contact)": "<sip:alice@192.168.1.2:5062>",
                "$hdr(Via)": "SIP/2.0/UDP 192.168.1.2:5062;branch=z9hG4bK1"})
            k.ksr_request_route(None)
            bodies = [c for c in stub.calls if c[0] == "set_body"]
            check(len(bodies) == 1 and "c=IN IP4 192.0.2.5\r\n" in bodies[0][1]
                  and "m=audio 40002 RTP/AVP 8\r\na=rtcp:40003\r\n" in bodies[0][1]
                  and bodies[0][2] == "application/sdp", "INVITE body replaced")
            check(("hdr.append", "Contact: <sip:alice@203.0.113.7:5062>\r\n") in stub.calls,
                  "NAT detected and Contact fixed")
            check(("pv.sets", "$du", "sip:10.9.0.1:5060") in stub.calls, "forwarded")
            check(("t_on_reply", "ksr_onreply_mediaproxy") in stub.calls and
                  ("t_relay",) in stub.calls, "reply route armed, relayed")
            check(("notice", "E2E use_media_proxy(INVITE) rc=1\n") in stub.logs, "logged rc=1")
            check(("pv.seti", "$avp(s:mpshim_family)", 4) in stub.calls,
                  "the request's source family kept for the reply")

            stub.calls.clear()
            stub.pvs = dict(common, **{"$mt": 2, "$rs": 200, "$rm": "INVITE", "$tt": "tt1",
                                       "$ua": None, "$hdr(Server)": "callee/2",
                                       "$si": "10.9.0.1", "$rb": ANSWER_SDP})
            k.ksr_onreply_mediaproxy(None)
            bodies = [c for c in stub.calls if c[0] == "set_body"]
            check(len(bodies) == 1 and "m=audio 40000 RTP/AVP 8" in bodies[0][1],
                  "200 OK body replaced")

            stub.calls.clear()
            stub.pvs = dict(common, **{"$mt": 1, "$rm": "BYE", "$tt": "tt1", "$rb": None})
            k.ksr_request_route(None)
            check(("notice", "E2E end_media_session(BYE) rc=1\n") in stub.logs, "BYE: remove")
        finally:
            disp.kill()
            disp.wait()
    engage(fake, check)
    print(f"{15 - len(failures)} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
