"""Build step of the toolpool Python package (metadata lives in pyproject.toml).

``build_py`` puts the shared library inside the package: it copies
``<repo>/target/release/libtoolpool.so`` when it is already built, and otherwise runs
``cargo build --release --lib`` in the repository root first (``TOOLPOOL_CARGO_BUILD=1``
forces the cargo build; ``$CARGO`` names cargo). The wheel is tagged ``py3-none-<platform>``:
no Python C extension, but a native library for one platform.
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


def _library() -> Path:
    """The built shared library, building it with cargo when needed."""
    if not (REPO / "Cargo.toml").is_file():
        packaged = HERE / "toolpool" / LIB_NAME
        if packaged.is_file():
            return packaged
        raise SystemExit(
            f"toolpool: {REPO} is not the toolpool repository (no Cargo.toml) and "
            f"{packaged} does not exist: build from a checkout (pip install ./bindings/python)"
        )
    built = _target_dir() / "release" / LIB_NAME
    if not built.is_file() or os.environ.get("TOOLPOOL_CARGO_BUILD") == "1":
        cargo = os.environ.get("CARGO", "cargo")
        if shutil.which(cargo) is None:
            raise SystemExit(
                f"toolpool: {built} is not built and cargo ({cargo!r}) is not on PATH; "
                "install Rust (https://rustup.rs) or run `make build` first"
            )
        print(f"toolpool: running {cargo} build --release --lib in {REPO}", file=sys.stderr)
        subprocess.run([cargo, "build", "--release", "--lib"], cwd=REPO, check=True)
    if not built.is_file():
        raise SystemExit(f"toolpool: cargo finished but {built} does not exist")
    return built


class build_py_with_lib(build_py):
    """build_py, plus the shared library copied into the package."""

    def run(self) -> None:
        super().run()
        lib = _library()
        dest = Path(self.build_lib) / "toolpool" / LIB_NAME
        dest.parent.mkdir(parents=True, exist_ok=True)
        self.copy_file(str(lib), str(dest))


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
        """A platform wheel (it holds a native library) usable by any Python 3."""

        def finalize_options(self) -> None:
            super().finalize_options()
            self.root_is_pure = False

        def get_tag(self):  # type: ignore[no-untyped-def]
            _, _, plat = super().get_tag()
            return "py3", "none", plat

    cmdclass["bdist_wheel"] = bdist_wheel_platform


class PlatformDistribution(Distribution):
    """Says it has native code, so the package is built and installed as platlib."""

    def has_ext_modules(self) -> bool:
        return True


setup(cmdclass=cmdclass, distclass=PlatformDistribution)
