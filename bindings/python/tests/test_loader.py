"""The library loader and the module-level functions."""

import os
import subprocess
import sys
from pathlib import Path

import toolpool

PY_DIR = Path(__file__).resolve().parent.parent


def test_version():
    v = toolpool.version()
    assert v.count(".") == 2
    assert v == toolpool.__version__
    assert toolpool.LIB_PATH.is_file()


def _import_with(env_lib):
    env = dict(os.environ)
    env.pop("TOOLPOOL_LIB", None)
    if env_lib is not None:
        env["TOOLPOOL_LIB"] = env_lib
    code = f"import sys; sys.path.insert(0, {str(PY_DIR)!r}); import toolpool; print(toolpool.LIB_PATH)"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=30)


def test_toolpool_lib_env_is_used_and_checked():
    lib = str(toolpool.LIB_PATH)
    r = _import_with(lib)
    assert r.returncode == 0 and r.stdout.strip() == lib
    r = _import_with("/nonexistent/libtoolpool.so")
    assert r.returncode != 0 and "TOOLPOOL_LIB" in r.stderr


def test_falls_back_to_the_package_or_target_release():
    from toolpool import _ffi

    paths = _ffi.candidate_paths()
    assert paths[-1].parts[-3:] == ("target", "release", _ffi.LIB_NAME)
    package = paths.index(PY_DIR / "toolpool" / _ffi.LIB_NAME)
    r = _import_with(None)
    found = Path(r.stdout.strip())
    assert r.returncode == 0 and found in paths[package:], r.stderr
