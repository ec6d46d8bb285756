"""The docs against the header: the error tables (docs/errors.md, the Python README), the
README snippets (each is the code of a file that `make test` builds and runs, or is run
here), the package's public names and its generated declarations."""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import toolpool
from toolpool import _errors, _generated

from conftest import PY_DIR, REPO

README = REPO / "README.md"
DOCS = REPO / "docs"
PY_README = PY_DIR / "README.md"


def header_statuses():
    """(name, value) of every ToolpoolStatus constant in include/toolpool.h."""
    text = (REPO / "include" / "toolpool.h").read_text()
    enum = re.search(r"enum ToolpoolStatus\b.*?\{(.*?)\};", text, re.S)
    assert enum, "enum ToolpoolStatus not found in include/toolpool.h"
    found = re.findall(r"^\s*(TOOLPOOL_\w+) = (-?\d+),", enum.group(1), re.M)
    assert len(found) >= 2
    return {name: int(v) for name, v in found}


def test_generated_statuses_match_the_header():
    assert _generated.STATUS == header_statuses()


def test_docs_error_table_matches_the_header():
    rows = re.findall(r"^\| (-?\d+) \| `(TOOLPOOL_\w+)` \|", (DOCS / "errors.md").read_text(), re.M)
    table = {name: int(v) for v, name in rows}
    assert len(rows) == len(table), "a constant appears twice in the error table of docs/errors.md"
    assert table == header_statuses(), "docs/errors.md's error table differs from include/toolpool.h"


def test_python_readme_error_table_matches_the_header_and_the_classes():
    rows = re.findall(r"^\| `(\w+)`[^|]*\| (-?\d+) \|", PY_README.read_text(), re.M)
    table = {int(v): cls for cls, v in rows}
    errors = {v for name, v in header_statuses().items() if name != "TOOLPOOL_OK"}
    assert set(table) == errors, "bindings/python/README.md's error table differs from include/toolpool.h"
    for code, cls in table.items():
        assert getattr(toolpool, cls).CODE == code, cls
    # Every error constant of the header has its exception class.
    assert set(_errors._BY_CODE) == errors
    for code, cls in _errors._BY_CODE.items():
        assert toolpool.error_for_code(code, "m").__class__ is cls


def test_public_names_are_the_api():
    public = {n for n in dir(toolpool) if not n.startswith("_")}
    assert public == set(toolpool.__all__)
    for leaked in ("Any", "Dict", "json", "byref", "c_uint32", "lib", "annotations", "call"):
        assert leaked not in public
    assert (PY_DIR / "toolpool" / "py.typed").is_file()


def readme_block(lang):
    """The code block of `lang` under "The same five lines in four languages"."""
    text = README.read_text()
    section = text.split("## The same five lines in four languages", 1)[1].split("\n## ", 1)[0]
    m = re.search(rf"^```{lang}\n(.*?)^```", section, re.S | re.M)
    assert m, f"no ```{lang} block in the README's four-languages section"
    return m.group(1)


def marked_block(path, begin, end):
    text = path.read_text()
    m = re.search(rf"^[ \t]*{re.escape(begin)}\n(.*?)^[ \t]*{re.escape(end)}\n", text, re.S | re.M)
    assert m, f"{path} has no {begin} ... {end} block"
    return textwrap.dedent(m.group(1))


def test_readme_snippets_are_the_files_make_test_runs():
    files = {
        "rust": (REPO / "examples" / "readme.rs", "// BEGIN README", "// END README"),
        "c": (REPO / "examples" / "c" / "readme.c", "/* BEGIN README */", "/* END README */"),
        "go": (REPO / "bindings" / "go" / "example_test.go", "// BEGIN README", "// END README"),
    }
    for lang, (path, begin, end) in files.items():
        assert readme_block(lang) == marked_block(path, begin, end), (
            f"the README's {lang} snippet differs from {path.relative_to(REPO)}: copy one onto the other"
        )


def test_readme_python_snippet_runs():
    env = dict(os.environ, PYTHONPATH=str(PY_DIR))
    out = subprocess.run(
        [sys.executable, "-c", readme_block("python")],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "42", out.stdout
    assert "'alive': 3" in lines[1], out.stdout


def test_changelog_records_every_c_function():
    changelog = (REPO / "CHANGELOG.md").read_text()
    missing = [name for name, _, _ in _generated.FUNCTIONS if not re.search(rf"\b{name}\b", changelog)]
    assert not missing, f"CHANGELOG.md does not record these C functions: {missing}"
