#!/usr/bin/python3
"""run_engage_example.py - runs the engage-mode example of mediaproxy-shim(3)
(plugin-shim/examples/engage.c) against the fake dispatcher and checks what
it prints: every SDP event relayed with the relay's port, the ACK without
body not sent, the dialog early, then confirmed by the 200, gone after the
BYE and after the expiry reported by the timer thread, no dialog left.

    run_engage_example.py ENGAGE_EXAMPLE FAKE_DISPATCHER
"""
import os
import subprocess
import sys
import tempfile

WANT = [
    ("INVITE", "1", "m=audio 40000 RTP/AVP 0 8", "dialog state 1"),
    ("183 a", "1", "m=audio 40000 RTP/AVP 0", "dialog state 1"),
    ("183 b", "1", "m=audio 40000 RTP/AVP 0", "dialog state 1"),
    ("200", "1", "m=audio 40000 RTP/AVP 0", "dialog state 2"),
    ("ACK", "-2", "(the message has no body)", "dialog state 2"),
    ("re-INVITE", "1", "m=audio 40000 RTP/AVP 0 8", "dialog state 2"),
    ("200", "1", "m=audio 40000 RTP/AVP 0", "dialog state 2"),
    ("BYE", "1", "", "dialog state 0"),
    ("INVITE", "1", "m=audio 40000 RTP/AVP 0 8", "dialog state 1"),
    ("200", "1", "m=audio 40000 RTP/AVP 0", "dialog state 2"),
    ("expired", "1", "", "dialog state 0"),
]


def main(example, fake):
    with tempfile.TemporaryDirectory(prefix="mpshim-engage-") as tmp:
        sock = os.path.join(tmp, "dispatcher.sock")
        disp = subprocess.Popen([fake, sock], stdout=subprocess.PIPE, text=True)
        try:
            if disp.stdout.readline().strip() != "ready":
                print("FAIL fake dispatcher did not start")
                return 1
            out = subprocess.run([example, sock], capture_output=True, text=True, timeout=20)
        finally:
            disp.kill()
            disp.wait()
    print(out.stdout, end="")
    lines = out.stdout.splitlines()
    failures = 0
    for i, (what, rc, body, state) in enumerate(WANT):
        line = lines[i] if i < len(lines) else ""
        if not (line.startswith(what) and line[len(what):].split()[:1] == [rc]):
            print(f"FAIL line {i + 1}: expected {what} {rc}: {line!r}")
            failures += 1
        elif body not in line or not line.endswith(state):
            print(f"FAIL line {i + 1}: expected {body!r} and {state!r}: {line!r}")
            failures += 1
    if "dialogs held: 0" not in lines or out.returncode != 0:
        print(f"FAIL exit {out.returncode} or dialogs left: {out.stderr}")
        failures += 1
    print(f"{0 if failures else 1} passed, {1 if failures else 0} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
