#!/usr/bin/python3
"""record.py - records (or re-checks) the OpenSIPS goldens: what the stock
OpenSIPS 3.4 mediaproxy module sends in engage mode for the inputs of the
Kamailio golden cases (../golden/NN-name/: params, invite.sdp, early.sdp,
answer.sdp), one SIP call per case on loopback through OpenSIPS
(opensips-record.cfg: engage_media_proxy() on the INVITE). The SIP user
agents, the recording dispatcher and the file formats are those of
../golden/record.py (imported); the outputs go to NN-name/ here:

  M.msg       what the proxy knows about message M (invite, early, answer),
              with the dialog_id the module sent (its decimal db id)
  M.request   the exact `update` the module sent (absent: none)
  M.reply     the dispatcher's reply line
  M.out       the body OpenSIPS forwarded
  bye.request the `remove` the dialog's end sent
  crash       present when the OpenSIPS worker died on the call (its log
              lines from the crash): OpenSIPS 3.4 aborts building a reply
              whose SDP the module edited in some cases; it is restarted

OpenSIPS is the cached build of ../../../../shared/tools/build-opensips.sh
(OPENSIPS_PREFIX, default /var/cache/mediaproxy-tests/opensips-3.4.18).

Usage:
  record.py [CASE...]          re-record (all cases by default)
  record.py --check [CASE...]  record into a temporary directory and compare
                               with the committed files; exit 1 on a
                               difference, 77 when the OpenSIPS build is missing
No root, no network namespaces.
"""

import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
INPUTS = os.path.join(HERE, "..", "golden")
CFG = os.path.join(HERE, "opensips-record.cfg")
PREFIX = os.environ.get("OPENSIPS_PREFIX", "/var/cache/mediaproxy-tests/opensips-3.4.18")
OPENSIPS = os.path.join(PREFIX, "sbin", "opensips")
MPATH = os.path.join(PREFIX, "lib64", "opensips", "modules") + "/"

_spec = importlib.util.spec_from_file_location("kamailio_record", os.path.join(INPUTS, "record.py"))
kr = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(kr)

OUTPUTS = (".msg", ".request", ".reply", ".out", "crash")


def case_names(names):
    all_cases = sorted(d for d in os.listdir(INPUTS)
                       if os.path.isfile(os.path.join(INPUTS, d, "params")))
    missing = [n for n in names if n not in all_cases]
    if missing:
        sys.exit(f"unknown case(s): {' '.join(missing)}")
    return names or all_cases


def start_opensips(tmp, sock_path, port, uas_port, n=0):
    with open(CFG, encoding="utf-8") as f:
        cfg = f.read()
    for token, value in (("@MPATH@", MPATH), ("@LISTEN@", f"udp:127.0.0.1:{port}"),
                         ("@MP_SOCKET@", sock_path), ("@CALLEE@", f"sip:127.0.0.1:{uas_port}")):
        cfg = cfg.replace(token, value)
    path = os.path.join(tmp, "opensips.cfg")
    with open(path, "w", encoding="utf-8") as f:
        f.write(cfg)
    log = open(os.path.join(tmp, f"opensips-{n}.log"), "wb")
    proc = subprocess.Popen([OPENSIPS, "-F", "-f", path, "-P", os.path.join(tmp, "opensips.pid"),
                             "-w", tmp, "-m", "64", "-M", "8"], stdout=log, stderr=subprocess.STDOUT)
    return proc, log


def wait_ready(proc, uac, port):
    """Up when it answers an OPTIONS (405 from the script)."""
    deadline = time.monotonic() + 15
    probe = (f"OPTIONS sip:probe@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:"
             f"{uac.getsockname()[1]};branch=z9hG4bK-probe\r\nFrom: <sip:p@127.0.0.1>;tag=p"
             f"\r\nTo: <sip:p@127.0.0.1>\r\nCall-ID: probe\r\nCSeq: 1 OPTIONS\r\n"
             f"Content-Length: 0\r\n\r\n").encode()
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"opensips exited (rc {proc.returncode})")
        if time.monotonic() > deadline:
            raise RuntimeError("opensips did not start")
        uac.sendto(probe, ("127.0.0.1", port))
        try:
            uac.settimeout(0.2)
            data, _ = uac.recvfrom(65535)
            if b"Call-ID: probe" in data:  # not a stale message of a crashed call
                return
        except socket.timeout:
            continue


def stable(line):
    """A crash log line without what changes from run to run (time, pids,
    message lengths, which depend on the ports): the length difference stays."""
    line = re.sub(r"^.*?\] ", "", line)
    line = re.sub(r"child process \d+", "child process", line)
    return re.sub(r"calculated (\d+), written (\d+)",
                  lambda m: f"calculated N, written N-{int(m.group(1)) - int(m.group(2))}", line)


def drain(*socks):
    """Drop what a crashed call left queued (e.g. its forwarded INVITE)."""
    for sock in socks:
        sock.setblocking(False)
        try:
            while True:
                sock.recv(65535)
        except BlockingIOError:
            pass
        sock.setblocking(True)


def record(names, outdir):
    tmp = tempfile.mkdtemp(prefix="mpshim-golden-os-")
    sock_path = os.path.join(tmp, "dispatcher.sock")
    disp = kr.Dispatcher(sock_path)
    disp.start()
    port = kr.free_udp_port()
    uac = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    uac.bind(("127.0.0.1", 0))
    uas = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    uas.bind(("127.0.0.1", 0))
    uas_port = uas.getsockname()[1]
    proc, log = start_opensips(tmp, sock_path, port, uas_port)
    starts = 1
    failures = []
    try:
        wait_ready(proc, uac, port)
        for name in names:
            case_dir = os.path.join(INPUTS, name)
            params = kr.read_params(os.path.join(case_dir, "params"))
            call_id = f"golden-{name}@127.0.0.1"
            with disp.lock:
                disp.replies[call_id] = {k: params[k + "_reply"] for k in
                                         ("invite", "early", "answer") if k + "_reply" in params}
            drain(uac, uas)
            try:
                call_id, got, info = kr.run_call(name, case_dir, params, ("127.0.0.1", port),
                                                 uac, uas, uas_port)
            except Exception as e:  # noqa: BLE001 - report and go on
                try:
                    proc.wait(2)
                except subprocess.TimeoutExpired:
                    failures.append(f"{name}: call failed: {e!r}")
                    continue
                # the worker died: keep what the log says and start again
                log.close()
                with open(log.name, encoding="utf-8", errors="replace") as f:
                    crash = [ln for ln in f.read().splitlines()
                             if "CRITICAL" in ln or ">>>" in ln or "exited by a signal" in ln]
                out = os.path.join(outdir, name)
                os.makedirs(out, exist_ok=True)
                for f in os.listdir(out):
                    if f.endswith(OUTPUTS):
                        os.unlink(os.path.join(out, f))
                with open(os.path.join(out, "crash"), "w", encoding="utf-8") as f:
                    f.writelines(stable(ln) + "\n" for ln in crash)
                print(f"recorded {name}: OpenSIPS crashed")
                proc, log = start_opensips(tmp, sock_path, port, uas_port, starts)
                starts += 1
                wait_ready(proc, uac, port)
                continue
            # the remove follows the BYE's forwarding: wait for it (bounded)
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:
                with disp.lock:
                    if "bye" in disp.seen.get(call_id, {}):
                        break
                time.sleep(0.02)
            with disp.lock:
                seen = dict(disp.seen.get(call_id, {}))
            dialog_id = ""
            for req, _ in seen.values():
                m = re.search(rb"\r\ndialog_id: (\d*)\r\n", req)
                if m:
                    dialog_id = m.group(1).decode()
            out = os.path.join(outdir, name)
            os.makedirs(out, exist_ok=True)
            for f in os.listdir(out):
                if f.endswith(OUTPUTS):
                    os.unlink(os.path.join(out, f))
            for kind in ("invite", "early", "answer"):
                if kind not in info:
                    continue
                with open(os.path.join(out, kind + ".msg"), "w", encoding="utf-8") as f:
                    f.writelines(f"{k}: {v}\n" for k, v in info[kind] + [("dialog_id", dialog_id)])
                if got.get(kind) is not None:
                    with open(os.path.join(out, kind + ".out"), "wb") as f:
                        f.write(got[kind])
                if kind in seen:
                    with open(os.path.join(out, kind + ".request"), "wb") as f:
                        f.write(seen[kind][0])
                    with open(os.path.join(out, kind + ".reply"), "w", encoding="utf-8") as f:
                        f.write(seen[kind][1] + "\n")
            if "bye" in seen:
                with open(os.path.join(out, "bye.request"), "wb") as f:
                    f.write(seen["bye"][0])
            print(f"recorded {name}: {', '.join(sorted(seen))} (dialog_id {dialog_id})")
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        disp.close()
        uac.close()
        uas.close()
        if failures:
            print(f"opensips log kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return failures


def compare(names, recorded):
    diffs = []
    for name in names:
        a_dir, b_dir = os.path.join(HERE, name), os.path.join(recorded, name)
        files = set()
        for d in (a_dir, b_dir):
            if os.path.isdir(d):
                files |= {f for f in os.listdir(d) if f.endswith(OUTPUTS)}
        for f in sorted(files):
            a, b = kr.read_bytes(os.path.join(a_dir, f)), kr.read_bytes(os.path.join(b_dir, f))
            if f.endswith((".msg", ".request")) and a and b:
                # the dialog's db id depends on OpenSIPS's hash table state
                a = re.sub(rb"dialog_id: \d+", b"dialog_id: N", a)
                b = re.sub(rb"dialog_id: \d+", b"dialog_id: N", b)
            if a != b:
                diffs.append(f"{name}/{f}: committed {a!r} != recorded {b!r}")
    return diffs


def main(argv):
    check = "--check" in argv
    names = case_names([a for a in argv if not a.startswith("--")])
    if not os.access(OPENSIPS, os.X_OK) or not os.path.exists(MPATH + "mediaproxy.so"):
        print(f"no OpenSIPS build with mediaproxy.so at {PREFIX}", file=sys.stderr)
        return 77 if check else 2
    if not check:
        failures = record(names, HERE)
        for f in failures:
            print("FAIL " + f)
        return 1 if failures else 0
    tmp = tempfile.mkdtemp(prefix="mpshim-golden-os-check-")
    try:
        failures = record(names, tmp)
        diffs = compare(names, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for f in failures + diffs:
        print("FAIL " + f)
    print(f"{len(names)} OpenSIPS golden cases re-recorded: "
          f"{'identical' if not failures and not diffs else 'DIFFERENT'}")
    return 1 if failures or diffs else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
