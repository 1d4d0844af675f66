#!/usr/bin/python3
"""record.py - records (or re-checks) nathelper.golden: what Kamailio 5.6's
real nathelper module answers for each case of corpus.txt.

Runs Kamailio with kamailio-nathelper.cfg on 127.0.0.1:45060 and
[::1]:45060 (no root) and, per case, sends an OPTIONS request with the
case's Contact and top Via from 127.0.0.1 (or ::1 for cases marked "ipv6")
port 45101+N (fixed, so that the goldens are stable). Kamailio
answers with nat_uac_test() for the flags 1, 2, 4 and 16 and the Contact
after fix_nated_contact() in X- headers; they are written to nathelper.golden
(the input of tests/shim/test_nat_golden.c).

Usage:
  record.py            re-record nathelper.golden
  record.py --check    record into memory and compare with the committed
                       file; exit 1 on a difference, 77 when kamailio or
                       nathelper.so is missing
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CFG = os.path.join(HERE, "kamailio-nathelper.cfg")
GOLDEN = os.path.join(HERE, "nathelper.golden")
KAMAILIO = shutil.which("kamailio") or "/usr/sbin/kamailio"
MODULE = "/usr/lib/x86_64-linux-gnu/kamailio/modules/nathelper.so"
KPORT = 45060
FIRST_SRC_PORT = 45101


def corpus():
    cases = []
    with open(os.path.join(HERE, "corpus.txt"), encoding="utf-8") as f:
        for line in f:
            if not line.strip() or line.startswith("#"):
                continue
            parts = [x.strip() for x in line.split(" | ")]
            family = parts[3] if len(parts) > 3 else "ipv4"
            cases.append((parts[0], parts[1], parts[2], family))
    return cases


def ask(sock, host, n, contact, via):
    req = (f"OPTIONS sip:nat@{host}:{KPORT} SIP/2.0\r\n"
           f"Via: {via}\r\n"
           f"From: <sip:alice@example.com>;tag=f{n}\r\n"
           f"To: <sip:nat@example.com>\r\n"
           f"Call-ID: nathelper-{n}@127.0.0.1\r\n"
           f"CSeq: 1 OPTIONS\r\n"
           f"Contact: {contact}\r\n"
           f"Max-Forwards: 70\r\n"
           f"Content-Length: 0\r\n\r\n")
    for _ in range(3):
        sock.sendto(req.encode(), (host.strip("[]"), KPORT))
        try:
            data, _ = sock.recvfrom(65535)
            return data.decode()
        except socket.timeout:
            continue
    raise RuntimeError(f"no reply from Kamailio for case {n}")


def header(reply, name):
    for line in reply.split("\r\n"):
        if line.lower().startswith(name.lower() + ":"):
            return line.split(":", 1)[1].strip()
    return None


def record():
    tmp = tempfile.mkdtemp(prefix="mpshim-nathelper-")
    log = open(os.path.join(tmp, "kamailio.log"), "w")
    cmd = [KAMAILIO, "-DD", "-E", "-f", CFG, "-l", f"udp:127.0.0.1:{KPORT}",
           "-l", f"udp:[::1]:{KPORT}",
           "-P", os.path.join(tmp, "kamailio.pid"), "-Y", tmp, "-w", tmp]
    kam = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    out = ["# nathelper.golden - recorded by record.py from Kamailio 5.6's nathelper.so;\n"
           "# do not edit. One block per corpus case: inputs (contact, via, source),\n"
           "# nat_uac_test() results per flag, fix_nated_contact() rc and Contact.\n"]
    try:
        time.sleep(1.0)
        for n, (name, contact, via, family) in enumerate(corpus()):
            port = FIRST_SRC_PORT + n
            contact = contact.replace("SRCPORT", str(port))
            via = via.replace("SRCPORT", str(port))
            v6 = family == "ipv6"
            src = "::1" if v6 else "127.0.0.1"
            s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((src, port))
            s.settimeout(1.0)
            reply = ask(s, "[::1]" if v6 else "127.0.0.1", n, contact, via)
            s.close()
            out.append(f"\ncase: {name}\ncontact: {contact}\nvia: {via}\n"
                       f"source: {src} {port}\nnat: {header(reply, 'X-Nat')}\n"
                       f"fix: {header(reply, 'X-Fix')}\n")
            fixed = header(reply, "X-Contact")
            if fixed is not None:
                out.append(f"fixed: {fixed}\n")
    finally:
        kam.terminate()
        kam.wait(timeout=10)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return "".join(out)


def main(argv):
    if not os.path.exists(KAMAILIO) or not os.path.exists(MODULE):
        print("kamailio or nathelper.so missing: skipped")
        return 77
    text = record()
    if "--check" in argv:
        with open(GOLDEN, encoding="utf-8") as f:
            if f.read() != text:
                print("nathelper.golden differs from a new recording")
                return 1
        print("nathelper.golden matches a new recording")
        return 0
    with open(GOLDEN, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"recorded {GOLDEN}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
