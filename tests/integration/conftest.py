"""pytest fixtures for the mediaproxy integration tests.

* `mp`         - one running instance per test (see mpharness.MediaProxy); its
                 configuration can be changed per test with
                 @pytest.mark.mediaproxy_config(option=value, ...)
* `mp_factory` - start(prestart=None, **overrides) for tests that need a hook
                 before start-up or several instances.

Teardown sends SIGTERM to every instance still running and requires exit
code 0 within 10 s.
"""

import os
import shutil
import signal
import sys
from pathlib import Path
from typing import List

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mpharness import EXIT_TIMEOUT, MediaProxy  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "mediaproxy_config(**options): configuration overrides for the `mp` fixture")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture
def mp_factory(request):
    instances: List[MediaProxy] = []

    def start(prestart=None, **overrides) -> MediaProxy:
        inst = MediaProxy(overrides, prestart=prestart)
        instances.append(inst)
        return inst.start()

    yield start

    failed = getattr(request.node, "rep_call", None)
    failed = failed is not None and failed.failed
    problems = []
    for inst in instances:
        for c in inst._clients:
            c.close()
        if inst.proc is None:
            continue
        if inst.proc.poll() is None:
            rc = inst.stop(signal.SIGTERM, EXIT_TIMEOUT)
            if rc is None:
                inst.kill()
                problems.append(f"mediaproxy did not exit within {EXIT_TIMEOUT}s of SIGTERM")
            elif rc != 0:
                problems.append(f"mediaproxy exited with code {rc} after SIGTERM (expected 0)")
        else:
            rc = inst.proc.returncode
            if rc != 0 and not getattr(inst, "expected_nonzero_exit", False):
                problems.append(f"mediaproxy had exited with code {rc} before teardown")
        inst.close()
        if failed or problems:
            print(f"--- mediaproxy stderr (last 60 lines), {inst.stderr_path} ---")
            print(inst.stderr_tail())
        else:
            shutil.rmtree(inst.workdir, ignore_errors=True)
    if problems:
        pytest.fail("; ".join(problems))


@pytest.fixture
def mp(mp_factory, request) -> MediaProxy:
    marker = request.node.get_closest_marker("mediaproxy_config")
    overrides = dict(marker.kwargs) if marker else {}
    return mp_factory(**overrides)


# The ASan build keeps freed memory in a quarantine (256 MB by default), so
# its RSS would grow with the amount allocated, not with what is live. A small
# quarantine makes RSS follow the live memory, as in a release build. Tests
# that bound the server's RSS take this fixture before the server's.
@pytest.fixture
def small_asan_quarantine(monkeypatch):
    opts = os.environ.get("ASAN_OPTIONS", "")
    monkeypatch.setenv("ASAN_OPTIONS", (opts + ":" if opts else "") + "quarantine_size_mb=4")
