"""pytest wrapper for the OpenSIPS 3.4 end-to-end test
(tests/e2e/opensips/run_opensips_e2e.sh), one test per mode:

    /usr/bin/python3 -m pytest -p no:cacheprovider -v tests/e2e/test_opensips.py

call:   a normal call through OpenSIPS (stock mediaproxy module, engage mode)
        and our relay, ended by the caller's BYE.
hangup: the phones stop their RTP mid-call; the relay expires the stream, our
        dispatcher sends OpenSIPS `dlg_end_dlg` over mi_datagram and OpenSIPS
        must BYE both phones (also with forwarding = kernel).
mi:     the OpenSIPS side alone: the runner sends `dlg_end_dlg` itself (the
        module's decimal dialog_id, which OpenSIPS 3.4 refuses, then the
        dlg_list ID) and OpenSIPS must BYE both phones.

OpenSIPS is built (and cached) by ../shared/tools/build-opensips.sh from the
runner. Skipped when not root or when OpenSIPS cannot be built (the runner's
exit code 77). Honours the runner's environment variables (MP_BIN,
OPENSIPS_BUILD, OPENSIPS_PREFIX, MPOS_STREAM_TIMEOUT, MPOS_SNOOP, MPOS_KEEP,
MPOS_STATS_TOL).
"""

import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "opensips", "run_opensips_e2e.sh")
# the first run builds OpenSIPS (about 2 minutes on 2 shared cores)
TIMEOUT = 600


@pytest.mark.parametrize("mode,forwarding", [("call", "userspace"), ("hangup", "userspace"),
                                             ("hangup", "kernel"), ("mi", "userspace")])
def test_opensips_mediaproxy(mode, forwarding):
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces")
    try:
        env = dict(os.environ, MPOS_FORWARDING=forwarding)
        proc = subprocess.run(["/bin/bash", SCRIPT, mode], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT, env=env)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        sys.stdout.write(out)
        pytest.fail(f"run_opensips_e2e.sh {mode} did not finish within {TIMEOUT} s")
    sys.stdout.write(proc.stdout)
    if proc.returncode == 77:
        reason = [ln for ln in proc.stdout.splitlines() if "SKIP" in ln]
        pytest.skip(reason[-1] if reason else "run_opensips_e2e.sh skipped (exit 77)")
    assert proc.returncode == 0, f"run_opensips_e2e.sh {mode} failed (rc={proc.returncode}):\n{proc.stdout}"
