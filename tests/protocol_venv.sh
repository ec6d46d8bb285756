#!/bin/sh
# Makes target/protocol-venv, a Python virtual environment with the protocol servers and
# REPLs the tests and the demo drive (an MCP server, two language servers and IPython, from
# PyPI), when it is missing; prints its path. Safe to run from several test binaries at once (flock).
set -e
cd "$(dirname "$0")/.."
VENV=target/protocol-venv
mkdir -p target
exec 9>target/.protocol-venv.lock
flock 9
if [ ! -x "$VENV/bin/mcp-server-time" ] || [ ! -x "$VENV/bin/jedi-language-server" ] || [ ! -x "$VENV/bin/ruff" ] || [ ! -x "$VENV/bin/ipython" ]; then
  echo "installing mcp-server-time, jedi-language-server, ruff and ipython into $VENV" >&2
  if ! python3 -m venv "$VENV" >&2; then
    # Debian splits venv (ensurepip) into its own package.
    SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
    $SUDO apt-get update -qq >&2 && $SUDO apt-get install -y -qq python3-venv >&2
    rm -rf "$VENV"
    python3 -m venv "$VENV"
  fi
  "$VENV/bin/pip" install -q mcp-server-time==2026.10.19 jedi-language-server==0.47.0 ruff==0.17.6 ipython==9.19.1 >&2
fi
echo "$(pwd)/$VENV"
