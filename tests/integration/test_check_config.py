"""`mediaproxy --check-config FILE` (issue 15): the same verdict as a start,
without starting.

Every example configuration under etc/ passes; a broken file fails with its
file:line; role-level mistakes that start-up refuses are refused too; an
option kept only for AG MediaProxy compatibility is a warning, not an error;
and nothing is created (the runtime directory stays absent).
"""

import os
import subprocess
from pathlib import Path

import pytest

from mpharness import REPO, require_binary


def check(path, *extra):
    binary = require_binary()
    r = subprocess.run([str(binary), "--check-config", str(path), *extra],
                       capture_output=True, text=True, timeout=10)
    return r.returncode, r.stdout, r.stderr


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "etc").glob("*.ini")))
def test_every_example_configuration_passes(name):
    rc, out, err = check(REPO / "etc" / name)
    assert rc == 0, err
    assert "configuration OK" in out


@pytest.mark.parametrize("text, where", [
    ("[Relay]\nport_range = 5:3\n", ":2: port_range"),
    ("[Relay]\nno_such_option = 1\n", ":2: unknown option 'no_such_option'"),
    ("relay_ip = 10.0.0.1\n", ":1: option outside any section"),
    ("[Relay]\nrelay_ip = 10.0.0.1\nrelay_ip = 10.0.0.2\n", ":3: option 'relay_ip' given twice"),
])
def test_a_broken_file_fails_with_file_and_line(tmp_path, text, where):
    path = tmp_path / "broken.ini"
    path.write_text(text)
    rc, out, err = check(path)
    assert rc == 1 and out == ""
    assert f"{path}{where}" in err, err


def test_role_level_mistakes_are_refused_as_at_start(tmp_path):
    path = tmp_path / "relay.ini"
    path.write_text("[General]\nrole = relay\n")
    rc, out, err = check(path)
    assert rc == 1 and "role relay needs [Relay] dispatchers" in err
    rc, out, err = check(path, "--role", "combined")
    assert rc == 0 and "configuration OK (role combined)" in out


def test_ag_compatibility_options_warn_and_nothing_is_created(tmp_path):
    run = tmp_path / "not-made"
    path = tmp_path / "ag.ini"
    path.write_text(f"[General]\nruntime_dir = {run}\n[Relay]\ndns_check_interval = 60\n")
    rc, out, err = check(path)
    assert rc == 0, err
    assert f"warning: {path}:4: option 'dns_check_interval'" in err
    assert not run.exists()


def test_a_missing_file_is_an_error(tmp_path):
    rc, out, err = check(tmp_path / "nowhere.ini")
    assert rc == 1 and "cannot open configuration file" in err
