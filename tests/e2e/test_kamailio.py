"""pytest wrapper for the Kamailio end-to-end test (run_e2e.sh), one test per
Kamailio mode:

    /usr/bin/python3 -m pytest -v tests/e2e/test_kamailio.py

The engage and rtpproxy modes run a second time with the relay's in-kernel
forwarding (forwarding = kernel), asserting that the kernel carried the call.
rtpproxy and manage drive mediaproxy through Kamailio's stock rtpproxy.so.
hangup lets the phones fall silent: the relay expires the stream and the
dispatcher has Kamailio end the dialog (dlg.end_dlg over jsonrpcs), which
must BYE both phones (hangup_check.py).
Honours the same environment variables as run_e2e.sh (MP_BIN,
MPE2E_NO_MEDIAPROXY, MPE2E_KEEP, MPE2E_STATS_TOL). Needs root (network
namespaces); skipped otherwise.
"""

import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "run_e2e.sh")


@pytest.mark.parametrize("mode,forwarding", [("use", "userspace"), ("engage", "userspace"),
                                             ("engage", "kernel"), ("rtpproxy", "userspace"),
                                             ("rtpproxy", "kernel"), ("manage", "userspace"),
                                             ("hangup", "userspace"), ("hangup", "kernel")])
def test_kamailio_mediaproxy(mode, forwarding):
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    if mode == "hangup" and os.environ.get("MPE2E_NO_MEDIAPROXY") == "1":
        pytest.skip("hangup needs mediaproxy")
    try:
        env = dict(os.environ, MPE2E_FORWARDING=forwarding)
        proc = subprocess.run(["/bin/bash", SCRIPT, mode], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=120, env=env)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        sys.stdout.write(out)
        pytest.fail(f"run_e2e.sh {mode} did not finish within 120 s")
    sys.stdout.write(proc.stdout)
    assert proc.returncode == 0, f"run_e2e.sh {mode} failed (rc={proc.returncode}):\n{proc.stdout}"
