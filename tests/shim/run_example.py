#!/usr/bin/python3
"""run_example.py - runs the complete example of mediaproxy-shim(3)
(plugin-shim/examples/example.c) against the fake dispatcher and checks its
output (NAT detected, Contact fixed, SDP rewritten, session ended), and that
the EXAMPLE section of the man page is that very program.

    run_example.py EXAMPLE FAKE_DISPATCHER MAN_PAGE EXAMPLE_SOURCE
"""
import os
import subprocess
import sys
import tempfile
import time


def man_example(man_page):
    """The text between .EX and .EE of the EXAMPLE section, unescaped."""
    with open(man_page, encoding="utf-8") as f:
        lines = f.read().split("\n")
    start = lines.index(".EX", lines.index(".SH EXAMPLE")) + 1
    end = lines.index(".EE", start)
    out = []
    for line in lines[start:end]:
        if line.startswith("\\&"):
            line = line[2:]
        out.append(line.replace("\\-", "-").replace("\\e", "\\"))
    return "\n".join(out) + "\n"


def main(example, fake, man_page, source):
    with open(source, encoding="utf-8") as f:
        same = man_example(man_page) == f.read()
    print(("ok" if same else "FAIL") + " the man page's EXAMPLE is plugin-shim/examples/example.c")
    with tempfile.TemporaryDirectory(prefix="mpshim-example-") as tmp:
        sock = os.path.join(tmp, "dispatcher.sock")
        disp = subprocess.Popen([fake, sock, "192.0.2.5 40002", "removed"],
                                stdout=subprocess.PIPE, text=True)
        try:
            if disp.stdout.readline().strip() != "ready":
                print("FAIL fake dispatcher did not start")
                return 1
            out = subprocess.run([example, sock], capture_output=True, text=True, timeout=10)
        finally:
            disp.kill()
            disp.wait()
    print(out.stdout, end="")
    want = ["client_nat_test: 7",
            "fixed Contact: \"Alice\" <sip:alice@203.0.113.7:40123;transport=udp>;expires=600",
            "use_media_proxy: ok",
            "c=IN IP4 192.0.2.5",
            "m=audio 40002 RTP/AVP 0 8 101",
            "a=rtcp:40003",
            "end_media_session: 1"]
    missing = [w for w in want if w not in out.stdout]
    for w in missing:
        print(f"FAIL missing in the output: {w!r}")
    ok = out.returncode == 0 and not missing and same
    print(f"{1 if ok else 0} passed, {0 if ok else 1} failed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
