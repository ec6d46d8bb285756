"""Build step of the toolpool Python package (metadata lives in pyproject.toml).

``build_py`` puts two native files inside the package: the shared library
(``<repo>/target/release/libtoolpool.so``) and the extension ``toolpool._native``
(``<repo>/target/release/lib_native.so``, from ``native/``, copied as
``_native.abi3.so``). Each is copied when it is already built; otherwise cargo builds it
first (``cargo build --release --lib`` in the repository root, ``cargo build --release``
of ``native/`` into the same target directory). ``TOOLPOOL_CARGO_BUILD=1`` forces both
builds; ``$CARGO`` names cargo. The extension uses CPython's stable ABI (abi3) from 3.10 on,
so the wheel is tagged ``cp310-abi3-<platform>``, and building it needs no Python headers.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
if sys.platform == "darwin":
    LIB_NAME = "libtoolpool.dylib"
else:
    LIB_NAME = "libtoolpool.so"


def _target_dir() -> Path:
    t = os.environ.get("CARGO_TARGET_DIR")
    return Path(t) if t else REPO / "target"


def _built(name: str, what: str, cargo_args: list) -> Path:
    """``target/release/<name>``, built with ``cargo <cargo_args>`` when needed."""
    if not (REPO / "Cargo.toml").is_file():
        raise SystemExit(
            f"toolpool: {REPO} is not the toolpool repository (no Cargo.toml): "
            "build from a checkout (pip install ./bindings/python)"
        )
    built = _target_dir() / "release" / name
    if not built.is_file() or os.environ.get("TOOLPOOL_CARGO_BUILD") == "1":
        cargo = os.environ.get("CARGO", "cargo")
        if shutil.which(cargo) is None:
            raise SystemExit(
                f"toolpool: {built} is not built and cargo ({cargo!r}) is not on PATH; "
                "install Rust (https://rustup.rs) or run `make build` first"
            )
        print(f"toolpool: building {what} with {cargo} {' '.join(cargo_args)}", file=sys.stderr)
        subprocess.run([cargo, *cargo_args], cwd=REPO, check=True)
    if not built.is_file():
        raise SystemExit(f"toolpool: cargo finished but {built} does not exist")
    return built


def _natives() -> list:
    """(built file, name inside the package) of the library and the extension."""
    lib = _built(LIB_NAME, "the library", ["build", "--release", "--lib"])
    ext = _built(
        "lib_native.so",
        "the extension",
        ["build", "--release", "--manifest-path", str(HERE / "native" / "Cargo.toml"),
         "--target-dir", str(_target_dir())],
    )
    return [(lib, LIB_NAME), (ext, "_native.abi3.so")]


class build_py_with_lib(build_py):
    """build_py, plus the shared library and the extension copied into the package."""

    def run(self) -> None:
        super().run()
        for built, name in _natives():
            dest = Path(self.build_lib) / "toolpool" / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            self.copy_file(str(built), str(dest))


cmdclass = {"build_py": build_py_with_lib}

try:  # setuptools >= 70.1 ships bdist_wheel; older ones need the wheel package
    from setuptools.command.bdist_wheel import bdist_wheel as _bdist_wheel
except ImportError:
    try:
        from wheel.bdist_wheel import bdist_wheel as _bdist_wheel  # type: ignore
    except ImportError:
        _bdist_wheel = None

if _bdist_wheel is not None:

    class bdist_wheel_platform(_bdist_wheel):
        """A platform wheel (native code) for CPython 3.10 and later (the stable ABI)."""

        def finalize_options(self) -> None:
            super().finalize_options()
            self.root_is_pure = False

        def get_tag(self):  # type: ignore[no-untyped-def]
            _, _, plat = super().get_tag()
            return "cp310", "abi3", plat

    cmdclass["bdist_wheel"] = bdist_wheel_platform


class PlatformDistribution(Distribution):
    """Says it has native code, so the package is built and installed as platlib."""

    def has_ext_modules(self) -> bool:
        return True


setup(cmdclass=cmdclass, distclass=PlatformDistribution)
