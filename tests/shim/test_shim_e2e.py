"""test_shim_e2e.py - pytest wrapper of run_shim_e2e.sh: Kamailio 5.6 with
app_python3 running plugin-shim/examples/kamailio-mediaproxy-shim.py, which
uses libmediaproxy-shim (ctypes) for a sipp call through our dispatcher and
relay in network namespaces; RTP counted at the relay, session removed on BYE;
and the same script in engage mode with a re-INVITE (MPSHIM_E2E_MODE=engage):
every message reported to the shim's dialog table (shared by two SIP
workers), the dispatcher's `sessions` listing the call after the re-INVITE
and nothing after the BYE; and in engage mode with phones that fall silent
(MPSHIM_E2E_MODE=hangup): the dispatcher hangs the call up through Kamailio's
dlg.end_dlg with the dialog ids the shim sent, and the dialog:end event makes
the shim send the answered `remove`. Then IPv6 (bridge_check.py): an IPv4
caller bridged to an IPv6 callee by the script's peer_family
(MPSHIM_E2E_MODE=bridge: the callee sees `c=IN IP6` of the relay, the caller
`c=IN IP4`, RTP both ways through one relay session), the same in engage
mode with a re-INVITE from the callee sent with `families: 6,4`
(bridge-engage), and a call with both phones on IPv6 (ipv6).

    /usr/bin/python3 -m pytest -p no:cacheprovider -v tests/shim/test_shim_e2e.py

Environment as run_shim_e2e.sh: MP_BIN, MPSHIM_LIB, MPE2E_KEEP. Skipped
unless root.
"""

import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "run_shim_e2e.sh")


def run(mode):
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    env = dict(os.environ, MPSHIM_E2E_MODE=mode)
    try:
        proc = subprocess.run(["/bin/bash", SCRIPT], stdout=subprocess.PIPE, env=env,
                              stderr=subprocess.STDOUT, text=True, timeout=150)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        sys.stdout.write(out)
        pytest.fail("run_shim_e2e.sh did not finish within 150 s")
    sys.stdout.write(proc.stdout)
    assert proc.returncode == 0, f"run_shim_e2e.sh failed (rc={proc.returncode}):\n{proc.stdout}"


def test_kamailio_app_python3_with_shim():
    run("use")


def test_kamailio_app_python3_with_shim_engage_reinvite():
    run("engage")


def test_kamailio_app_python3_with_shim_engage_hangup():
    run("hangup")


def test_kamailio_app_python3_with_shim_bridge_ipv4_ipv6():
    run("bridge")


def test_kamailio_app_python3_with_shim_bridge_engage_callee_reinvite():
    run("bridge-engage")


def test_kamailio_app_python3_with_shim_ipv6():
    run("ipv6")
