"""MKL's Intel code path on CPUs that are not Intel's (hummuss/mkl_vendor.py): the environment
the suite starts its processes with, the library, and what MKL does in a process started so."""

import ctypes
import json
import os
import subprocess
import sys

import pytest

from hummuss import mkl_vendor

AMD = "AuthenticAMD"
needs_linux_x86 = pytest.mark.skipif(not (sys.platform.startswith("linux") and mkl_vendor.platform.machine() == "x86_64"),
                                     reason="the library is preloaded on x86-64 Linux only")
needs_library = pytest.mark.skipif(not mkl_vendor.applies() or mkl_vendor.library() is None,
                                   reason="this CPU is an Intel one, or no C compiler: MKL needs no library here")


@needs_linux_x86
def test_the_environment_preloads_the_library_first_and_keeps_the_users(monkeypatch):
    monkeypatch.setattr(mkl_vendor, "cpu_vendor", lambda: AMD)
    if mkl_vendor.library() is None:
        pytest.skip("no C compiler")
    lib = str(mkl_vendor.library())
    env = mkl_vendor.with_intel_path({"LD_PRELOAD": "/opt/libmine.so other.so", "HOME": "/h"})
    assert env == {"LD_PRELOAD": f"{lib}:/opt/libmine.so:other.so", "HOME": "/h"}
    assert mkl_vendor.preloaded(env) and not mkl_vendor.preloaded({"LD_PRELOAD": "/opt/libmine.so"})
    assert mkl_vendor.with_intel_path(env) == env  # once only
    assert mkl_vendor.with_intel_path({}) == {"LD_PRELOAD": lib}
    # another machine's build (an inherited environment) is not here: replaced by this one's
    stale = {"LD_PRELOAD": "/elsewhere/libhummuss-mkl-intel-cpu-0123456789ab.so:/opt/libmine.so"}
    assert not mkl_vendor.preloaded(stale)
    assert mkl_vendor.with_intel_path(stale) == {"LD_PRELOAD": f"{lib}:/opt/libmine.so"}
    assert mkl_vendor.with_intel_path({mkl_vendor.ENV: "0"}) == {mkl_vendor.ENV: "0"}  # turned off
    for vendor in ("GenuineIntel", None):  # MKL's own answer is already yes / nothing to go by
        monkeypatch.setattr(mkl_vendor, "cpu_vendor", lambda v=vendor: v)
        assert mkl_vendor.with_intel_path({"HOME": "/h"}) == {"HOME": "/h"}


def test_the_library_is_named_by_its_source_and_answers_yes(monkeypatch, tmp_path):
    """Built into the cache folder under a name that changes with the source; the function MKL
    calls returns 1. Without a compiler: None, with a warning that says what it costs."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    mkl_vendor.library.cache_clear()
    try:
        if (os.environ.get("CC") or mkl_vendor.shutil.which("cc") or mkl_vendor.shutil.which("gcc")) is None:
            pytest.skip("no C compiler")
        path = mkl_vendor.library()
        assert path == tmp_path / "hummuss" / mkl_vendor.library_name() and path.exists()
        assert ctypes.CDLL(str(path)).mkl_serv_intel_cpu_true() == 1
        source = tmp_path / "changed.c"
        source.write_text(mkl_vendor.SOURCE.read_text() + "\n/* changed */\n")
        monkeypatch.setattr(mkl_vendor, "SOURCE", source)
        assert mkl_vendor.library_name() != path.name
        mkl_vendor.library.cache_clear()
        monkeypatch.setattr(mkl_vendor, "library_name", lambda: "libhummuss-mkl-intel-cpu-none.so")
        monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
        with pytest.warns(RuntimeWarning, match="half the matmul rate"):
            assert mkl_vendor.library() is None
    finally:
        mkl_vendor.library.cache_clear()


PROBE = r"""
import ctypes, json, os, torch
from hummuss import mkl_vendor
lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
torch.manual_seed(0)
a, b = torch.randn(300, 200, dtype=torch.float64), torch.randn(200, 100, dtype=torch.float64)
x = torch.randn(8, 486, dtype=torch.float64)
print(json.dumps(dict(
    branch=lib.mkl_serv_cbwr_get_auto_branch(), path=mkl_vendor.code_path(), intel=mkl_vendor.intel_code_path(),
    mm=float((a.float() @ b.float() - a @ b).abs().max()),
    fft=float((torch.fft.rfft(x.float()) - torch.fft.rfft(x)).abs().max()))))
"""


def _probe(env) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@needs_library
def test_mkl_takes_another_code_branch_in_a_process_started_with_it_and_computes_the_same():
    """Started with `with_intel_path`, MKL's dispatcher reports another code branch than
    without (its automatic CNR branch: 2 and 14 on an AMD EPYC with AVX-512), so its calls
    bind to the library; the float32 matmuls and FFTs stay within float32 rounding of float64."""
    plain = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    generic = _probe({**plain, mkl_vendor.ENV: "0"})
    intel = _probe(mkl_vendor.with_intel_path({**plain, mkl_vendor.ENV: "1"}))
    assert not generic["intel"] and "generic code" in generic["path"], generic
    assert intel["intel"] and "Intel code path" in intel["path"], intel
    assert intel["branch"] != generic["branch"], (generic, intel)
    for probe in (generic, intel):  # |a b| ~ sqrt(200) * 3: float32 rounding ~ 1e-5; rfft of 486 points alike
        assert probe["mm"] < 1e-4 and probe["fft"] < 1e-4, probe


@needs_library
def test_hummuss_suite_restarts_with_the_library_and_children_inherit_it(monkeypatch, tmp_path):
    from suite import entry
    from suite.launch.processes import child_env
    from suite.tracking import TrackingSettings

    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.delenv(mkl_vendor.ENV, raising=False)
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")  # the huge pages already there
    env = entry.restart_environment(os.environ)
    assert env is not None and env["LD_PRELOAD"] == str(mkl_vendor.library())
    assert entry.restart_environment(env) is None  # the restarted process runs as it is
    monkeypatch.setenv(mkl_vendor.ENV, "0")
    assert entry.restart_environment(os.environ) is None
    monkeypatch.delenv(mkl_vendor.ENV)
    child = child_env(TrackingSettings(f"sqlite:///{tmp_path}/m.db", str(tmp_path)), processes=1)
    assert child["LD_PRELOAD"] == str(mkl_vendor.library())
