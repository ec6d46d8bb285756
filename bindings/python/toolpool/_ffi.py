"""Loading libtoolpool and declaring the C functions (ctypes, no compiler needed).

The library is looked for, in order:

1. ``$TOOLPOOL_LIB``: a path to the shared library (an error if it is set but missing);
2. the copy inside the installed package (``toolpool/libtoolpool.so``, put there by
   ``pip install``);
3. ``<repo>/target/release/libtoolpool.so`` relative to this source file, i.e.
   ``../../target/release/`` seen from ``bindings/python``: the one ``make build`` makes.
"""

from __future__ import annotations

import ctypes
import os
import sys
from ctypes import POINTER, c_bool, c_char_p, c_int32, c_size_t, c_uint32, c_void_p
from pathlib import Path
from typing import List

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


def candidate_paths() -> List[Path]:
    """Where the library is looked for, in order (``$TOOLPOOL_LIB`` first when set)."""
    paths = []
    env = os.environ.get(LIB_ENV)
    if env:
        paths.append(Path(env))
    paths.append(_PKG_DIR / LIB_NAME)
    paths.append(_REPO_ROOT / "target" / "release" / LIB_NAME)
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


class Health(ctypes.Structure):
    """``struct ToolpoolHealth``."""

    _fields_ = [("total", c_uint32), ("alive", c_uint32), ("dead", c_uint32)]


# Returned `char *` are declared as c_void_p (never c_char_p, which would copy into bytes
# and lose the pointer that toolpool_string_free needs).
P = c_void_p  # opaque handles
PP = POINTER(c_void_p)  # handle and string out-parameters
PU32 = POINTER(c_uint32)


def _decl(name: str, restype, *argtypes) -> None:  # type: ignore[no-untyped-def]
    fn = getattr(lib, name)
    fn.restype = restype
    fn.argtypes = list(argtypes)


_decl("toolpool_version", c_char_p)
_decl("toolpool_status_name", c_char_p, c_int32)
_decl("toolpool_last_error_message", c_char_p)  # static per-thread slot: not freed
_decl("toolpool_last_error_code", c_int32)
_decl("toolpool_string_free", None, c_void_p)

_decl("toolpool_limit_set", c_int32, c_uint32, PU32)
_decl("toolpool_limit_status_json", c_int32, PP)
_decl("toolpool_kill_all", c_int32, PU32)

_decl("toolpool_pool_new", c_int32, c_char_p, PP)
_decl("toolpool_pool_from_registry", c_int32, c_char_p, c_char_p, c_uint32, PP)
_decl("toolpool_pool_size", c_int32, P, PU32)
_decl("toolpool_pool_send", c_int32, P, c_uint32, c_char_p)
_decl("toolpool_pool_send_routed", c_int32, P, c_char_p, PU32)
_decl("toolpool_pool_read_line", c_int32, P, c_uint32, c_uint32, PP)
_decl("toolpool_pool_send_bytes", c_int32, P, c_uint32, c_char_p, c_size_t)
_decl("toolpool_pool_read_line_bytes", c_int32, P, c_uint32, c_uint32, PP, POINTER(c_size_t))
_decl("toolpool_bytes_free", None, c_void_p, c_size_t)
_decl("toolpool_pool_read_stderr_line", c_int32, P, c_uint32, c_uint32, PP)
_decl("toolpool_pool_read_any", c_int32, P, c_uint32, PU32, PP)
_decl("toolpool_pool_request", c_int32, P, c_char_p, c_uint32, PP)
_decl(
    "toolpool_pool_request_sticky",
    c_int32,
    P,
    c_char_p,
    c_char_p,
    c_uint32,
    PP,
    PU32,
    POINTER(c_bool),
)
_decl("toolpool_pool_map_json", c_int32, P, c_char_p, c_uint32, PP)
_decl("toolpool_pool_lease", c_int32, P, c_uint32, PP)
_decl("toolpool_pool_health", c_int32, P, POINTER(Health))
_decl("toolpool_pool_health_json", c_int32, P, PP)
_decl("toolpool_pool_status_json", c_int32, P, PP)
_decl("toolpool_pool_metrics_json", c_int32, P, PP)
_decl("toolpool_pool_restart", c_int32, P, c_uint32)
_decl("toolpool_pool_shutdown", c_int32, P, c_uint32)
_decl("toolpool_pool_free", None, P)

_decl("toolpool_lease_index", c_int32, P, PU32)
_decl("toolpool_lease_send", c_int32, P, c_char_p)
_decl("toolpool_lease_read_line", c_int32, P, c_uint32, PP)
_decl("toolpool_lease_request", c_int32, P, c_char_p, c_uint32, PP)
_decl("toolpool_lease_free", None, P)
