#!/usr/bin/env python3
"""Generate ``toolpool/_generated.py`` from ``include/toolpool.h`` (as wasmtime-py generates
its ctypes bindings from the C headers): the ``ToolpoolStatus`` and ``ToolpoolStream``
constants, the structs and every function's ctypes signature, so that none of them is
written by hand in Python; and ``native/src/api.rs``, the Rust declarations of the few
functions the native extension calls.

    python3 bindings/python/gen_ffi.py          # rewrite toolpool/_generated.py
    python3 bindings/python/gen_ffi.py --check  # exit 1 when it is stale (make test-python)

``make header`` runs it after regenerating the header. It reads only the subset of C that
cbindgen writes into that header; anything else is an error naming the line, so a new
kind of parameter is added here on purpose, never guessed.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Dict, List, Tuple

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
HEADER = REPO / "include" / "toolpool.h"
OUTPUT = HERE / "toolpool" / "_generated.py"
#: The Rust declarations of the C functions the native extension calls (native/src/api.rs).
NATIVE_OUTPUT = HERE / "native" / "src" / "api.rs"
#: The functions the native extension calls (its hot paths), in the header's order.
NATIVE_FUNCTIONS = (
    "toolpool_cancel_new",
    "toolpool_cancel_trigger",
    "toolpool_cancel_free",
    "toolpool_completions_request",
    "toolpool_completions_request_sticky",
    "toolpool_completions_take",
    "toolpool_completions_wait",
    "toolpool_pool_request_cancellable",
    "toolpool_last_error_message",
    "toolpool_set_log_callback",
    "toolpool_string_free",
)
#: The structs the native extension reads.
NATIVE_STRUCTS = ("ToolpoolCompletion",)

# C type -> Rust type, for the native extension's declarations (handles are opaque).
RUST_TYPES: Dict[str, str] = {
    "void": "()",
    "bool": "bool",
    "int32_t": "i32",
    "uint32_t": "u32",
    "uint64_t": "u64",
    "size_t": "usize",
    "const char *": "*const c_char",
    "char *": "*mut c_char",
    "char **": "*mut *mut c_char",
    "uint32_t *": "*mut u32",
    "size_t *": "*mut usize",
    "bool *": "*mut bool",
    "ToolpoolPool *": "*mut c_void",
    "const ToolpoolPool *": "*const c_void",
    "const ToolpoolCancel *": "*const c_void",
    "ToolpoolCancel *": "*mut c_void",
    "ToolpoolCancel **": "*mut *mut c_void",
    "const ToolpoolCompletions *": "*const c_void",
    "ToolpoolCompletion *": "*mut ToolpoolCompletion",
    "void *": "*mut c_void",
    "ToolpoolLogCallback": "ToolpoolLogCallback",
}

# C type (as cbindgen spells it, without `struct`) -> ctypes expression. Strings that
# toolpool returns through `char **` are c_void_p, not c_char_p: c_char_p would copy them
# into bytes and lose the pointer that toolpool_string_free needs.
TYPES: Dict[str, str] = {
    "void": "None",
    "bool": "c_bool",
    "int32_t": "c_int32",
    "uint32_t": "c_uint32",
    "uint64_t": "c_uint64",
    "size_t": "c_size_t",
    "const char *": "c_char_p",
    "char *": "c_void_p",
    "char **": "POINTER(c_void_p)",
    "const uint8_t *": "c_char_p",
    "uint8_t *": "c_void_p",
    "uint8_t **": "POINTER(c_void_p)",
    "uint32_t *": "POINTER(c_uint32)",
    "int32_t *": "POINTER(c_int32)",
    "size_t *": "POINTER(c_size_t)",
    "bool *": "POINTER(c_bool)",
    "ToolpoolPool *": "c_void_p",
    "const ToolpoolPool *": "c_void_p",
    "ToolpoolPool **": "POINTER(c_void_p)",
    "ToolpoolPools *": "c_void_p",
    "const ToolpoolPools *": "c_void_p",
    "ToolpoolPools **": "POINTER(c_void_p)",
    "ToolpoolClient *": "c_void_p",
    "const ToolpoolClient *": "c_void_p",
    "ToolpoolClient **": "POINTER(c_void_p)",
    "ToolpoolLease *": "c_void_p",
    "const ToolpoolLease *": "c_void_p",
    "ToolpoolLease **": "POINTER(c_void_p)",
    "ToolpoolCancel *": "c_void_p",
    "const ToolpoolCancel *": "c_void_p",
    "ToolpoolCancel **": "POINTER(c_void_p)",
    "ToolpoolCompletions *": "c_void_p",
    "const ToolpoolCompletions *": "c_void_p",
    "ToolpoolCompletions **": "POINTER(c_void_p)",
    "ToolpoolRun *": "c_void_p",
    "const ToolpoolRun *": "c_void_p",
    "ToolpoolRun **": "POINTER(c_void_p)",
    "ToolpoolPermit *": "c_void_p",
    "const ToolpoolPermit *": "c_void_p",
    "ToolpoolPermit **": "POINTER(c_void_p)",
    "int32_t *": "POINTER(c_int32)",
    "ToolpoolHealth *": "POINTER(ToolpoolHealth)",
    "ToolpoolCompletion *": "POINTER(ToolpoolCompletion)",
    "void *": "c_void_p",
}


def callbacks(text: str) -> List[Tuple[str, str, List[str]]]:
    """Function-pointer typedefs (``typedef R (*Name)(args);``) as (name, restype, argtypes);
    each name becomes a C type that functions may take."""
    found = []
    for m in re.finditer(r"typedef ([\w\s\*]+?)\s*\(\*(\w+)\)\(([^)]*)\);", text):
        name = m.group(2)
        args = []
        for p in " ".join(m.group(3).split()).split(","):
            ptype, _, pname = p.strip().rpartition(" ")
            if pname.startswith("*"):
                ptype, pname = ptype + " " + pname[: pname.count("*")], pname.lstrip("*")
            args.append(_ctype(ptype, f"{name}({pname})"))
        found.append((name, _ctype(m.group(1), f"{name} return"), args))
        TYPES[name] = name
    return found


def _ctype(c: str, where: str) -> str:
    c = re.sub(r"\bstruct\s+", "", c)
    c = re.sub(r"\s*\*", " *", c.strip()).replace("* *", "**")
    if c not in TYPES:
        raise SystemExit(f"gen_ffi.py: no ctypes mapping for C type {c!r} ({where}); add it to TYPES")
    return TYPES[c]


def enum_constants(text: str, name: str) -> List[Tuple[str, int]]:
    """The (name, value) constants of C enum ``name``."""
    enum = re.search(rf"enum {name}\b.*?\{{(.*?)\}};", text, re.S)
    if enum is None:
        raise SystemExit(f"gen_ffi.py: enum {name} not found in include/toolpool.h")
    found = [(m.group(1), int(m.group(2))) for m in re.finditer(r"^\s*(TOOLPOOL_\w+) = (-?\d+),", enum.group(1), re.M)]
    if not found:
        raise SystemExit(f"gen_ffi.py: enum {name} has no constants")
    return found


def parse(text: str) -> Tuple[List[Tuple[str, int]], List[Tuple[str, List[Tuple[str, str]]]], List[Tuple[str, str, List[str]]]]:
    statuses = enum_constants(text, "ToolpoolStatus")

    structs = []
    for m in re.finditer(r"typedef struct (\w+) \{(.*?)\} \1;", text, re.S):
        body = re.sub(r"/\*.*?\*/", "", m.group(2), flags=re.S)
        fields = []
        for decl in (d.strip() for d in body.split(";")):
            if decl:
                ctype, name = decl.rsplit(None, 1)
                if name.startswith("*"):
                    ctype, name = ctype + " " + name[: name.count("*")], name.lstrip("*")
                fields.append((name, _ctype(ctype, f"{m.group(1)}.{name}")))
        structs.append((m.group(1), fields))

    body = text.split('extern "C" {', 1)[-1]
    body = re.sub(r"/\*.*?\*/", "", body, flags=re.S)
    body = re.sub(r"^\s*#.*$", "", body, flags=re.M)
    functions = []
    for m in re.finditer(r"([\w\s\*]+?)\b(toolpool_\w+)\(([^)]*)\);", body):
        name = m.group(2)
        restype = _ctype(m.group(1), f"{name} return")
        args = []
        params = " ".join(m.group(3).split())
        if params != "void":
            for p in params.split(","):
                ptype, _, pname = p.strip().rpartition(" ")
                if pname.startswith("*"):
                    ptype, pname = ptype + " " + pname[: pname.count("*")], pname.lstrip("*")
                args.append(_ctype(ptype, f"{name}({pname})"))
        functions.append((name, restype, args))
    if not functions:
        raise SystemExit("gen_ffi.py: no toolpool_* functions found in include/toolpool.h")
    return statuses, structs, functions


def _norm(c: str) -> str:
    c = re.sub(r"\bstruct\s+", "", c)
    return re.sub(r"\s*\*", " *", c.strip()).replace("* *", "**")


def _rust(c: str, where: str) -> str:
    c = _norm(c)
    if c not in RUST_TYPES:
        raise SystemExit(f"gen_ffi.py: no Rust mapping for C type {c!r} ({where}); add it to RUST_TYPES")
    return RUST_TYPES[c]


def render_native(text: str) -> str:
    """native/src/api.rs: a #[repr(C)] struct per NATIVE_STRUCTS and a table of function
    pointers (one per NATIVE_FUNCTIONS) looked up by name in the loaded library."""
    body = text.split('extern "C" {', 1)[-1]
    body = re.sub(r"/\*.*?\*/", "", body, flags=re.S)
    body = re.sub(r"^\s*#.*$", "", body, flags=re.M)
    sigs: Dict[str, Tuple[str, List[str]]] = {}
    for m in re.finditer(r"([\w\s\*]+?)\b(toolpool_\w+)\(([^)]*)\);", body):
        name, params, args = m.group(2), " ".join(m.group(3).split()), []
        if name not in NATIVE_FUNCTIONS:
            continue
        if params != "void":
            for p in params.split(","):
                ptype, _, pname = p.strip().rpartition(" ")
                if pname.startswith("*"):
                    ptype = ptype + " " + pname[: pname.count("*")]
                args.append(_rust(ptype, f"{name}({pname.lstrip('*')})"))
        sigs[name] = (_rust(m.group(1), f"{name} return"), args)
    out = [
        "//! Generated by bindings/python/gen_ffi.py from include/toolpool.h: do not edit; run",
        "//! `make header` (which also regenerates this file).",
        "//!",
        "//! The C functions the extension calls, as pointers looked up by name in the libtoolpool",
        "//! that the package's ctypes layer loaded, and the structs they fill.",
        "",
        "use std::ffi::{c_char, c_void, CStr};",
    ]
    for m in re.finditer(r"typedef ([\w\s\*]+?)\s*\(\*(\w+)\)\(([^)]*)\);", text):
        if m.group(2) not in RUST_TYPES:
            continue
        args = []
        for p in " ".join(m.group(3).split()).split(","):
            ptype, _, pname = p.strip().rpartition(" ")
            if pname.startswith("*"):
                ptype = ptype + " " + pname[: pname.count("*")]
            args.append(_rust(ptype, f"{m.group(2)}({pname.lstrip('*')})"))
        ret = _rust(m.group(1), f"{m.group(2)} return")
        arrow = "" if ret == "()" else f" -> {ret}"
        out += ["", f"/// `{m.group(2)}` (NULL is `None`).",
                f"pub type {m.group(2)} = Option<unsafe extern \"C\" fn({', '.join(args)}){arrow}>;"]
    for sname in NATIVE_STRUCTS:
        m = re.search(r"typedef struct %s \{(.*?)\} %s;" % (sname, sname), text, re.S)
        if m is None:
            raise SystemExit(f"gen_ffi.py: struct {sname} not found in include/toolpool.h")
        out += ["", f"/// `struct {sname}`.", "#[repr(C)]", f"pub struct {sname} {{"]
        for decl in (d.strip() for d in re.sub(r"/\*.*?\*/", "", m.group(1), flags=re.S).split(";")):
            if decl:
                ctype, name = decl.rsplit(None, 1)
                if name.startswith("*"):
                    ctype, name = ctype + " " + name[: name.count("*")], name.lstrip("*")
                out.append(f"    pub {name}: {_rust(ctype, sname + '.' + name)},")
        out.append("}")
    out += ["", "/// The functions, by their C names.", "#[allow(non_snake_case)]", "pub struct Api {"]
    for name in NATIVE_FUNCTIONS:
        if name not in sigs:
            raise SystemExit(f"gen_ffi.py: {name} (NATIVE_FUNCTIONS) is not in include/toolpool.h")
        ret, args = sigs[name]
        arrow = "" if ret == "()" else f" -> {ret}"
        out.append(f"    pub {name}: unsafe extern \"C\" fn({', '.join(args)}){arrow},")
    out += [
        "}",
        "",
        "impl Api {",
        "    /// Look every function up with `sym`, which returns NULL for a missing name.",
        "    ///",
        "    /// # Safety",
        "    /// `sym` must return the addresses of the functions of include/toolpool.h.",
        "    pub unsafe fn load(sym: impl Fn(&CStr) -> *mut c_void) -> Result<Api, String> {",
        "        let need = |name: &CStr| {",
        "            let p = sym(name);",
        "            if p.is_null() {",
        "                Err(format!(\"{} is not in the loaded libtoolpool\", name.to_string_lossy()))",
        "            } else {",
        "                Ok(p)",
        "            }",
        "        };",
        "        // SAFETY: each address is the C function of that name, whose signature is the",
        "        // one declared in the struct (both come from include/toolpool.h).",
        "        unsafe {",
        "            Ok(Api {",
    ]
    for name in NATIVE_FUNCTIONS:
        ret, args = sigs[name]
        arrow = "" if ret == "()" else f" -> {ret}"
        fn_type = f"unsafe extern \"C\" fn({', '.join(args)}){arrow}"
        out.append(f"                {name}: std::mem::transmute::<*mut c_void, {fn_type}>(need(c\"{name}\")?),")
    out += ["            })", "        }", "    }", "}", ""]
    return "\n".join(out)


def render(text: str) -> str:
    fn_types = callbacks(text)
    statuses, structs, functions = parse(text)
    out = [
        '"""Generated by bindings/python/gen_ffi.py from include/toolpool.h: do not edit; run',
        "`make header` (which also regenerates this file).",
        "",
        "The ToolpoolStatus and ToolpoolStream constants, the structs and the ctypes signature of every",
        "C function.",
        '"""',
        "",
        "from ctypes import CFUNCTYPE, POINTER, Structure, c_bool, c_char_p, c_int32, c_size_t, c_uint32, c_uint64, c_void_p",
        "from typing import Any, Dict, Sequence, Tuple",
        "",
        "# enum ToolpoolStatus",
    ]
    out += [f"{name} = {value}" for name, value in statuses]
    out += ["", "#: Every ToolpoolStatus constant by name, in the header's order.", "STATUS: Dict[str, int] = {"]
    out += [f'    "{name}": {name},' for name, _ in statuses]
    out += ["}", "", "# enum ToolpoolStream"]
    out += [f"{name} = {value}" for name, value in enum_constants(text, "ToolpoolStream")]
    out += [""]
    for sname, fields in structs:
        out += ["", f"class {sname}(Structure):", f'    """``struct {sname}``."""', "", "    _fields_ = ["]
        out += [f'        ("{f}", {t}),' for f, t in fields]
        out += ["    ]", ""]
    for fname, restype, args in fn_types:
        out += ["", f"#: ``{fname}``: a C function pointer type.", f"{fname} = CFUNCTYPE({restype}, {', '.join(args)})", ""]
    out += [
        "",
        "#: (name, restype, argtypes) of every function of the C API, in the header's order.",
        "FUNCTIONS: Sequence[Tuple[str, Any, Sequence[Any]]] = (",
    ]
    for name, restype, args in functions:
        argtuple = args[0] + "," if len(args) == 1 else ", ".join(args)
        out.append(f'    ("{name}", {restype}, ({argtuple})),')
    out += [")", ""]
    return "\n".join(out)


def main(argv: List[str]) -> int:
    text = HEADER.read_text()
    outputs = [(OUTPUT, render(text)), (NATIVE_OUTPUT, render_native(text))]
    if argv[1:] == ["--check"]:
        stale = [path for path, fresh in outputs if not path.is_file() or path.read_text() != fresh]
        for path in stale:
            print(
                f"{path.relative_to(REPO)} is stale (it differs from what gen_ffi.py makes of "
                "include/toolpool.h): run `make header` and commit it",
                file=sys.stderr,
            )
        return 1 if stale else 0
    if argv[1:]:
        print(__doc__, file=sys.stderr)
        return 2
    for path, fresh in outputs:
        path.write_text(fresh)
        print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
