# toolpool: one entry point for Rust, C, Go and Python.
#   make demo   - a real pool of real tools doing real work (the main job)
#   make test   - everything: header check, Rust, C, Go, Python, the installed copy
# Both install what the machine lacks (the demo: bc; the tests also sqlite3, jq, tcl, mawk,
# valgrind, pkg-config, openssh-server, slurm-wlm and munge with apt-get, and pytest, mypy,
# prometheus_client, fastapi, httpx2, gunicorn with pip),
# and target/protocol-venv, a virtual environment with protocol servers from PyPI
# (mcp-server-time, jedi-language-server, ruff) for the protocol tests and the demo.
# Needed beforehand: Rust (cargo), gcc, make, Go, Python 3 with pip and venv.
# CARGO_TARGET_DIR is honoured: the build goes there, and the C, Go and Python tests find
# the library and the test tool there.
CARGO        ?= cargo
PYTHON       ?= python3
PREFIX       ?= /usr/local
TARGET_DIR   := $(or $(CARGO_TARGET_DIR),target)
LIB_DIR      := $(TARGET_DIR)/release
TESTTOOL     := $(TARGET_DIR)/release/toolpool-testtool
SUDO         := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
VERSION      := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
# How to link libtoolpool is said in one place, toolpool.pc.in. Inside the repository the
# C and Go builds read the uninstalled copy that `make build` writes here.
PC_DIR       := $(abspath $(TARGET_DIR))/pkgconfig
export PKG_CONFIG_PATH := $(PC_DIR)$(if $(PKG_CONFIG_PATH),:$(PKG_CONFIG_PATH))
C_CC         := gcc
C_FLAGS      := -std=c11 -Wall -Wextra -Wpedantic -Werror -pthread -g
C_BIN_DIR    := $(TARGET_DIR)/c-tests
C_TEST_BIN   := $(C_BIN_DIR)/toolpool-c-tests
VALGRIND     := valgrind --quiet --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite --show-leak-kinds=definite
# The C tests again under AddressSanitizer and UndefinedBehaviorSanitizer (the C side is
# instrumented; libtoolpool is the release build): timing differs from valgrind's, so a
# test that asserts a state before it is reached fails here.
SAN_FLAGS    := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
# Where the Go and Python tests find the library, the test tool and the toolpool command
# (they start `toolpool serve`).
TOOLPOOL_CLI := $(TARGET_DIR)/release/toolpool
TEST_ENV     := TOOLPOOL_LIB=$(abspath $(LIB_DIR))/libtoolpool.so TOOLPOOL_TESTTOOL=$(abspath $(TESTTOOL)) \
                TOOLPOOL_CLI=$(abspath $(TOOLPOOL_CLI))

.PHONY: protocol-venv
.PHONY: all build deps demo-deps apt-deps py-deps test test-rust test-c test-c-asan test-go \
        test-python test-install examples bench demo header header-check lint install quickstart clean

all: build

# libtoolpool.so, libtoolpool.a, the test tool and the toolpool command (target/release),
# the Python binding's extension (target/release/lib_native.so, from
# bindings/python/native) and the uninstalled target/pkgconfig/toolpool.pc.
PY_NATIVE    := --manifest-path bindings/python/native/Cargo.toml --target-dir $(TARGET_DIR)
build:
	$(CARGO) build --release --lib --bins --features cli
	$(CARGO) build --release $(PY_NATIVE)
	@mkdir -p $(PC_DIR)
	@sed -e 's|@PREFIX@|$(abspath .)|' -e 's|@LIBDIR@|$(abspath $(LIB_DIR))|' \
	  -e 's|@INCLUDEDIR@|$(abspath include)|' -e 's|@VERSION@|$(VERSION)|' \
	  toolpool.pc.in > $(PC_DIR)/toolpool.pc

# Programs the demo uses, then those the tests use, installed only if missing.
demo-deps:
	@command -v bc >/dev/null || { echo "installing bc"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq bc >/dev/null; }
apt-deps: demo-deps
	@# command:package; the real tools of tests/tools_as_they_are.rs and the C, Go, Python tests
	@missing=""; for cp in sqlite3:sqlite3 jq:jq tclsh:tcl mawk:mawk valgrind:valgrind pkg-config:pkg-config; do \
	  command -v $${cp%%:*} >/dev/null || missing="$$missing $${cp#*:}"; done; \
	if [ -n "$$missing" ]; then echo "installing$$missing"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $$missing >/dev/null; fi
	@# tests/remote.rs, the Python remote test and the ssh bench row start a throwaway sshd on 127.0.0.1
	@[ -x /usr/sbin/sshd ] || { echo "installing openssh-server"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq openssh-server >/dev/null; }
	@# tests/slurm.rs starts a one-node Slurm cluster (munged, slurmctld, slurmd) in a private dir
	@[ -x /usr/sbin/slurmctld ] && [ -x /usr/sbin/slurmd ] && [ -x /usr/sbin/munged ] || { echo "installing slurm-wlm munge"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null; }
py-deps:
	@$(PYTHON) -c 'import pytest, mypy' 2>/dev/null || { echo "installing pytest mypy"; \
	  $(PYTHON) -m pip install -q pytest mypy 2>/dev/null || $(PYTHON) -m pip install -q --break-system-packages pytest mypy; }
	@$(PYTHON) -c 'import prometheus_client' 2>/dev/null || { echo "installing prometheus_client (the Prometheus text parser of the tests)"; \
	  $(PYTHON) -m pip install -q prometheus_client 2>/dev/null || $(PYTHON) -m pip install -q --break-system-packages prometheus_client; }
	@$(PYTHON) -c 'import fastapi, httpx2' 2>/dev/null || { echo "installing fastapi httpx2 (the FastAPI service of docs/runs.md, tested through Starlette's TestClient)"; \
	  $(PYTHON) -m pip install -q fastapi httpx2 2>/dev/null || $(PYTHON) -m pip install -q --break-system-packages fastapi httpx2; }
	@$(PYTHON) -c 'import gunicorn' 2>/dev/null || { echo "installing gunicorn (the multi-process WSGI host of the service tests)"; \
	  $(PYTHON) -m pip install -q gunicorn 2>/dev/null || $(PYTHON) -m pip install -q --break-system-packages gunicorn; }
deps: apt-deps
# Protocol servers from PyPI (an MCP server, two language servers) in target/protocol-venv,
# made when missing; the protocol tests and the demo drive them.
protocol-venv:
	@tests/protocol_venv.sh >/dev/null

demo: demo-deps protocol-venv
	$(CARGO) run --release --example demo
	seq 300 | sed 's/$$/^2/' | $(CARGO) run -q --release --features cli --bin toolpool -- bench -n 2 -- bc -q
	@echo "== MCP server mcp-server-time (PyPI): 2 warm, handshaken instances vs start + initialize + call + exit per call =="
	$(CARGO) run -q --release --features cli --bin toolpool -- bench --spec examples/specs/mcp-time.json \
	  --input examples/specs/mcp-time-calls.jsonl --calls 200 --spawn-calls 4

test: test-rust test-c test-c-asan test-go test-python test-install

# Unit, integration (tests/header.rs is the header check), doc tests, examples (the README's
# Rust snippet is run); the benchmark only in its smoke mode (a few iterations in the debug
# profile, every row checked, none printed; its binding rows run what `make build` made).
test-rust: build deps protocol-venv
	$(CARGO) test --features cli --lib --bins --tests --examples -- --test-threads=2
	$(CARGO) test --doc
	$(CARGO) run --quiet --release --example readme
	TOOLPOOL_BENCH_SMOKE=1 $(CARGO) test --quiet --bench pool

bench: build deps
	$(CARGO) bench --bench pool

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) fmt --manifest-path bindings/python/native/Cargo.toml -- --check
	$(CARGO) clippy --all-targets --features cli -- -D warnings
	$(CARGO) clippy $(PY_NATIVE) -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps --quiet --features cli
	@# The private modules' docs too: their links are how a reader follows a request down.
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps --quiet --features cli --document-private-items

# C tests (tests/c/*.c, one runner) under valgrind, then the examples; the header must
# also compile as C++. Prints "N passed, M failed" last.
test-c: build deps
	$(C_CC) $(C_FLAGS) -fsyntax-only -x c include/toolpool.h
	g++ -std=c++11 -Wall -Wextra -Wpedantic -Werror -fsyntax-only -x c++ include/toolpool.h
	@mkdir -p $(C_BIN_DIR)
	$(C_CC) $(C_FLAGS) $$(pkg-config --cflags toolpool) -o $(C_TEST_BIN) tests/c/*.c $$(pkg-config --libs toolpool)
	$(VALGRIND) $(C_TEST_BIN) $(abspath $(TESTTOOL)) $(abspath examples/tools/rpc_tool.py)
	$(MAKE) --no-print-directory examples

test-c-asan: build deps
	@mkdir -p $(C_BIN_DIR)
	$(C_CC) $(C_FLAGS) $(SAN_FLAGS) $$(pkg-config --cflags toolpool) -o $(C_TEST_BIN)-asan tests/c/*.c $$(pkg-config --libs toolpool)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  $(C_TEST_BIN)-asan $(abspath $(TESTTOOL)) $(abspath examples/tools/rpc_tool.py)

# examples/c/quickstart.c and the README's C snippet, built and run.
examples: build deps
	@mkdir -p $(C_BIN_DIR)
	$(C_CC) $(C_FLAGS) $$(pkg-config --cflags toolpool) -o $(C_BIN_DIR)/quickstart examples/c/quickstart.c $$(pkg-config --libs toolpool)
	$(C_BIN_DIR)/quickstart
	$(C_CC) $(C_FLAGS) $$(pkg-config --cflags toolpool) -o $(C_BIN_DIR)/readme examples/c/readme.c $$(pkg-config --libs toolpool)
	$(C_BIN_DIR)/readme

quickstart: build deps
	@mkdir -p $(C_BIN_DIR)
	$(C_CC) $(C_FLAGS) $$(pkg-config --cflags toolpool) -o $(C_BIN_DIR)/quickstart examples/c/quickstart.c $$(pkg-config --libs toolpool)
	$(C_BIN_DIR)/quickstart

# Go binding (bindings/go, `#cgo pkg-config: toolpool`, here the uninstalled copy) against
# real children, race detector on (-count=1: a cached "ok" would survive a rebuilt Rust
# library), then its quickstart.
test-go: build deps
	cd bindings/go && bad="$$(gofmt -l .)" && if [ -n "$$bad" ]; then echo "not gofmt-ed: $$bad"; exit 1; fi \
	  && go vet ./... && $(TEST_ENV) go test -count=1 -race ./... && go run ./examples/quickstart >/dev/null

# Python binding (bindings/python, ctypes over libtoolpool.so) against real children:
# the generated declarations are fresh, mypy --strict passes, then pytest (which exits
# non-zero when it finds no tests, so an empty run fails too).
test-python: build deps py-deps protocol-venv
	$(PYTHON) bindings/python/gen_ffi.py --check
	cd bindings/python && $(PYTHON) -m mypy --strict toolpool
	$(TEST_ENV) $(PYTHON) -m pytest -q bindings/python/tests

# What a user outside the repository does: `make install` to a temporary prefix, then a C
# program through pkg-config (shared and --static) and a Go program in its own module
# with a copy of bindings/go, found through PKG_CONFIG_PATH only.
test-install: build deps
	tests/install/run.sh

# Header, both libraries and toolpool.pc under $(PREFIX) (DESTDIR for staging).
install: build
	install -d $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 644 include/toolpool.h $(DESTDIR)$(PREFIX)/include/toolpool.h
	install -m 755 $(LIB_DIR)/libtoolpool.so $(DESTDIR)$(PREFIX)/lib/libtoolpool.so
	install -m 644 $(LIB_DIR)/libtoolpool.a $(DESTDIR)$(PREFIX)/lib/libtoolpool.a
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$${prefix}/lib|' -e 's|@INCLUDEDIR@|$${prefix}/include|' \
	  -e 's|@VERSION@|$(VERSION)|' toolpool.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/toolpool.pc

# The C header, generated by cbindgen as a library (pinned in Cargo.toml) through the
# same test that checks it (tests/header.rs), then the Python declarations made from it.
header:
	TOOLPOOL_WRITE_HEADER=1 $(CARGO) test --quiet --test header
	$(PYTHON) bindings/python/gen_ffi.py

header-check:
	$(CARGO) test --quiet --test header
	$(PYTHON) bindings/python/gen_ffi.py --check

clean:
	$(CARGO) clean
