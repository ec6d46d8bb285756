#!/usr/bin/env python3
"""Generate ``toolpool/_generated.py`` from ``include/toolpool.h`` (as wasmtime-py generates
its ctypes bindings from the C headers): the ``ToolpoolStatus`` and ``ToolpoolStream``
constants, the structs and every function's ctypes signature, so that none of them is
written by hand in Python.

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

# C type (as cbindgen spells it, without `struct`) -> ctypes expression. Strings that
# toolpool returns through `char **` are c_void_p, not c_char_p: c_char_p would copy them
# into bytes and lose the pointer that toolpool_string_free needs.
TYPES: Dict[str, str] = {
    "void": "None",
    "bool": "c_bool",
    "int32_t": "c_int32",
    "uint32_t": "c_uint32",
    "size_t": "c_size_t",
    "const char *": "c_char_p",
    "char *": "c_void_p",
    "char **": "POINTER(c_void_p)",
    "const uint8_t *": "c_char_p",
    "uint8_t *": "c_void_p",
    "uint8_t **": "POINTER(c_void_p)",
    "uint32_t *": "POINTER(c_uint32)",
    "size_t *": "POINTER(c_size_t)",
    "bool *": "POINTER(c_bool)",
    "ToolpoolPool *": "c_void_p",
    "const ToolpoolPool *": "c_void_p",
    "ToolpoolPool **": "POINTER(c_void_p)",
    "ToolpoolLease *": "c_void_p",
    "const ToolpoolLease *": "c_void_p",
    "ToolpoolLease **": "POINTER(c_void_p)",
    "ToolpoolCancel *": "c_void_p",
    "const ToolpoolCancel *": "c_void_p",
    "ToolpoolCancel **": "POINTER(c_void_p)",
    "ToolpoolRun *": "c_void_p",
    "const ToolpoolRun *": "c_void_p",
    "ToolpoolRun **": "POINTER(c_void_p)",
    "ToolpoolPermit *": "c_void_p",
    "const ToolpoolPermit *": "c_void_p",
    "ToolpoolPermit **": "POINTER(c_void_p)",
    "int32_t *": "POINTER(c_int32)",
    "ToolpoolHealth *": "POINTER(ToolpoolHealth)",
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
        "from ctypes import CFUNCTYPE, POINTER, Structure, c_bool, c_char_p, c_int32, c_size_t, c_uint32, c_void_p",
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
    fresh = render(HEADER.read_text())
    if argv[1:] == ["--check"]:
        if not OUTPUT.is_file() or OUTPUT.read_text() != fresh:
            print(
                f"{OUTPUT.relative_to(REPO)} is stale (it differs from what gen_ffi.py makes of "
                "include/toolpool.h): run `make header` and commit it",
                file=sys.stderr,
            )
            return 1
        return 0
    if argv[1:]:
        print(__doc__, file=sys.stderr)
        return 2
    OUTPUT.write_text(fresh)
    print(f"wrote {OUTPUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
