"""Loading libtoolpool and declaring the C functions (ctypes), and loading the native
extension ``toolpool._native`` that makes the hot calls (see ``native/src/lib.rs``).

The library is looked for, in order:

1. ``$TOOLPOOL_LIB``: a path to the shared library (an error if it is set but missing);
2. the copy inside the installed package (``toolpool/libtoolpool.so``, put there by
   ``pip install``);
3. ``$CARGO_TARGET_DIR/release/libtoolpool.so`` when that variable is set (relative to the
   repository root if relative), then ``<repo>/target/release/libtoolpool.so`` relative to
   this source file, i.e. ``../../target/release/`` seen from ``bindings/python``: the one
   ``make build`` makes.

The extension is looked for inside the installed package (``toolpool/_native.abi3.so``),
then as ``lib_native.so`` in the same release directories (``make build``); it binds to the library
loaded here, whichever that is.
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any, List

from ._generated import FUNCTIONS

LIB_ENV = "TOOLPOOL_LIB"

if sys.platform == "darwin":
    LIB_NAME = "libtoolpool.dylib"
elif sys.platform == "win32":
    LIB_NAME = "toolpool.dll"
else:
    LIB_NAME = "libtoolpool.so"

_PKG_DIR = Path(__file__).resolve().parent
# bindings/python/toolpool -> bindings/python -> bindings -> repo root
_REPO_ROOT = _PKG_DIR.parent.parent.parent


def _release_dirs() -> List[Path]:
    """The repository's release build directories: ``$CARGO_TARGET_DIR`` first when set."""
    dirs = []
    cargo_target = os.environ.get("CARGO_TARGET_DIR")
    if cargo_target:
        dirs.append(_REPO_ROOT / cargo_target / "release")
    dirs.append(_REPO_ROOT / "target" / "release")
    return dirs


def candidate_paths() -> List[Path]:
    """Where the library is looked for, in order (``$TOOLPOOL_LIB`` first when set)."""
    paths = []
    env = os.environ.get(LIB_ENV)
    if env:
        paths.append(Path(env))
    paths.append(_PKG_DIR / LIB_NAME)
    paths.extend(d / LIB_NAME for d in _release_dirs())
    return paths


def _find_library() -> Path:
    env = os.environ.get(LIB_ENV)
    if env:
        p = Path(env)
        if not p.is_file():
            raise ImportError(f"toolpool: ${LIB_ENV} is set to {env!r}, which is not a file")
        return p
    tried = candidate_paths()
    for p in tried:
        if p.is_file():
            return p
    raise ImportError(
        "toolpool: cannot find the shared library; tried "
        + ", ".join(str(p) for p in tried)
        + f". Run `make build` in the repository, set ${LIB_ENV}, or `pip install` the package."
    )


LIB_PATH: Path = _find_library()
lib = ctypes.CDLL(str(LIB_PATH))


# Every function's signature comes from include/toolpool.h through _generated.py
# (bindings/python/gen_ffi.py); none is written by hand here.
for _name, _restype, _argtypes in FUNCTIONS:
    _fn = getattr(lib, _name)
    _fn.restype = _restype
    _fn.argtypes = list(_argtypes)
del _name, _restype, _argtypes, _fn


NATIVE_NAME = "_native.abi3.so"


def native_paths() -> List[Path]:
    """Where the native extension is looked for, in order."""
    return [_PKG_DIR / NATIVE_NAME] + [d / "lib_native.so" for d in _release_dirs()]


def _load_native() -> Any:
    tried = native_paths()
    for p in tried:
        if p.is_file():
            loader = importlib.machinery.ExtensionFileLoader("toolpool._native", str(p))
            spec = importlib.util.spec_from_file_location("toolpool._native", str(p), loader=loader)
            assert spec is not None
            module = importlib.util.module_from_spec(spec)
            loader.exec_module(module)
            return module
    raise ImportError(
        "toolpool: cannot find the native extension; tried "
        + ", ".join(str(p) for p in tried)
        + ". Run `make build` in the repository, or `pip install` the package."
    )


#: The native extension (``toolpool._native``); bound to ``lib`` by ``_errors``.
native: Any = _load_native()
