"""The docs against the code: the error tables (docs/errors.md, the Python README) against
the header, the README snippets (each is the code of a file that `make test` builds and
runs, or is run here), the Prometheus families of docs/observability.md against a real
pool's output, the package's public names and its generated declarations."""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

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


def documented_families():
    """{name: (type, {label: values or None}, has_tool)} from docs/observability.md's table.

    A row is `| `name` | type | labels | meaning |`; labels are `label` = `v1`, `v2` (the
    values the label takes), a bare `label`, nothing, or (no `tool`)."""
    text = (DOCS / "observability.md").read_text()
    rows = re.findall(r"^\| `(toolpool_\w+)` \| (\w+) \|([^|]*)\|", text, re.M)
    assert rows, "docs/observability.md has no table of Prometheus families"
    documented = {}
    for name, kind, labels in rows:
        assert name not in documented, f"{name} appears twice in docs/observability.md"
        labels = labels.strip()
        has_tool = labels != "(no `tool`)"
        spec = {}
        m = re.fullmatch(r"`(\w+)`(?: = (.*))?", labels)
        if m:
            spec[m.group(1)] = set(re.findall(r"`([^`]+)`", m.group(2))) if m.group(2) else None
        else:
            assert labels in ("", "(no `tool`)"), f"{name}: cannot read the labels cell {labels!r}"
        documented[name] = (kind, spec, has_tool)
    return documented


def emitted_families(text):
    """{documented name: (type, {label: values}, tool labels seen)} of a real exposition.

    prometheus_client names a counter family without its `_total`; the docs use the name
    of its series, so `_total` is put back. The histogram's own `le` is counted on its
    `_bucket` series only."""
    out = {}
    for fam in text_string_to_metric_families(text):
        name = fam.name + "_total" if fam.type == "counter" else fam.name
        labels = {}
        tools = set()
        for smp in fam.samples:
            for k, v in smp.labels.items():
                if k == "tool":
                    tools.add(v)
                elif k != "pool":
                    labels.setdefault(k, set()).add(v)
        out[name] = (fam.type, labels, tools)
    return out


def test_docs_prometheus_families_are_what_a_pool_emits(testtool):
    documented = documented_families()
    # An elastic pool of the test tool with every per-instance family filled in: requests
    # ok, one timeout (a recycle for reason `timeout`), running instances (memory, CPU).
    spec = {"id": "py_docs_prom", "command": [testtool], "count": 3, "min_instances": 2}
    with toolpool.Pool(spec) as pool:
        for k in range(5):
            assert pool.request(f"x{k}") == f"x{k}"
        with pytest.raises(toolpool.Timeout):
            pool.request("delay:1000:late", timeout=0.05)
        for source, text in (
            ("metrics_prometheus()", pool.metrics_prometheus()),
            ("metrics_prometheus_all()", toolpool.metrics_prometheus_all()),
        ):
            emitted = emitted_families(text)
            assert set(emitted) - set(documented) == set(), (
                f"{source} emits families docs/observability.md does not list"
            )
            assert set(documented) - set(emitted) == set(), (
                f"docs/observability.md lists families {source} does not emit"
            )
            for name, (kind, spec_labels, has_tool) in documented.items():
                got_kind, got_labels, tools = emitted[name]
                assert got_kind == kind, f"{name}: documented as {kind}, emitted as {got_kind}"
                assert set(got_labels) == set(spec_labels), (
                    f"{name}: documented labels {sorted(spec_labels)}, emitted {sorted(got_labels)} ({source})"
                )
                for label, values in spec_labels.items():
                    if values is not None:
                        assert got_labels[label] == values, (
                            f"{name}: label {label} documented as {sorted(values)}, emitted {sorted(got_labels[label])}"
                        )
                if has_tool:
                    assert "py_docs_prom" in tools, f"{name}: no series with tool=\"py_docs_prom\" ({source})"
                else:
                    assert tools == set(), f"{name}: documented without `tool`, emitted with {tools}"
