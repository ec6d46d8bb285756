#!/usr/bin/env bash
# What a user outside the repository does, run by `make test-install` (part of `make test`):
#  1. `make install PREFIX=<temp>`;
#  2. C: examples/c/quickstart.c built with `pkg-config --cflags --libs toolpool` against
#     the installed copy (shared: links libtoolpool.so and runs with nothing set), then
#     with `pkg-config --static` against a copy of the prefix that holds only libtoolpool.a;
#  3. Go: bindings/go copied out of the repository (as the module cache would hold it), a
#     small program in its own module that requires it through a `replace` to the copy,
#     built and run with PKG_CONFIG_PATH pointing at the installed toolpool.pc only.
# No network: the module needs nothing but the standard library.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/toolpool-install.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
fail() { echo "test-install: FAIL: $*" >&2; exit 1; }

prefix="$tmp/prefix"
make -C "$repo" --no-print-directory install PREFIX="$prefix" >/dev/null
for f in include/toolpool.h lib/libtoolpool.so lib/libtoolpool.a lib/pkgconfig/toolpool.pc; do
  [ -f "$prefix/$f" ] || fail "make install did not put $f under PREFIX"
done

# Only the installed copy: nothing from the repository's target/ or include/.
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
unset LD_LIBRARY_PATH
cflags="$(pkg-config --cflags toolpool)"
libs="$(pkg-config --libs toolpool)"
case "$cflags $libs" in *"$repo"*) fail "pkg-config points into the repository: $cflags $libs";; esac

# C, shared.
cp "$repo/examples/c/quickstart.c" "$tmp/quickstart.c"
(cd "$tmp" && gcc -std=c11 -Wall -Wextra -Werror quickstart.c $cflags $libs -o quickstart-shared)
readelf -d "$tmp/quickstart-shared" | grep -q 'NEEDED.*libtoolpool\.so' || fail "quickstart-shared does not use libtoolpool.so"
out="$("$tmp/quickstart-shared")" || fail "quickstart (shared) failed: $out"
grep -q '^toolpool ' <<<"$out" || fail "quickstart (shared) printed no version: $out"
echo "test-install: C quickstart via pkg-config (shared) ok"

# C, static: a prefix with the static library only, linked with `pkg-config --static`.
sprefix="$tmp/static-prefix"
cp -r "$prefix" "$sprefix"
rm "$sprefix/lib/libtoolpool.so"
sed -i "s|^prefix=.*|prefix=$sprefix|" "$sprefix/lib/pkgconfig/toolpool.pc"
slibs="$(PKG_CONFIG_PATH="$sprefix/lib/pkgconfig" pkg-config --static --libs toolpool)"
scflags="$(PKG_CONFIG_PATH="$sprefix/lib/pkgconfig" pkg-config --cflags toolpool)"
(cd "$tmp" && gcc -std=c11 -Wall -Wextra -Werror quickstart.c $scflags $slibs -o quickstart-static)
if readelf -d "$tmp/quickstart-static" | grep -q 'NEEDED.*libtoolpool'; then
  fail "quickstart-static needs a shared libtoolpool"
fi
out="$("$tmp/quickstart-static")" || fail "quickstart (static) failed: $out"
grep -q '^toolpool ' <<<"$out" || fail "quickstart (static) printed no version: $out"
echo "test-install: C quickstart via pkg-config --static ok"

# Go: the binding copied out of the repository, a program in its own module.
gobind="$tmp/gomod/toolpool-go"
mkdir -p "$gobind" "$tmp/app"
cp -r "$repo/bindings/go/." "$gobind/"
cat > "$tmp/app/go.mod" <<MOD
module example.com/app

go $(sed -n 's/^go //p' "$repo/bindings/go/go.mod")

require github.com/toolpool/toolpool/bindings/go v0.0.0

replace github.com/toolpool/toolpool/bindings/go => $gobind
MOD
cat > "$tmp/app/main.go" <<'GO'
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	toolpool "github.com/toolpool/toolpool/bindings/go"
)

func main() {
	pool, err := toolpool.NewFromSpec(toolpool.Spec{Command: []string{"cat"}, Count: 2})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer pool.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reply, err := pool.Request(ctx, "hello from another module")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(toolpool.Version(), reply)
}
GO
export GOFLAGS=-mod=mod GOPROXY=off GOWORK=off GOTOOLCHAIN=local
(cd "$tmp/app" && go build -o app .) || fail "go build in another module failed"
out="$("$tmp/app/app")" || fail "the Go program failed: $out"
[ "$out" = "$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -n1) hello from another module" ] \
  || fail "the Go program printed: $out"
grep -q "$prefix/lib/libtoolpool.so" <<<"$(ldd "$tmp/app/app")" || fail "the Go program does not load the installed libtoolpool.so: $(ldd "$tmp/app/app")"
echo "test-install: Go program in its own module against the installed copy ok"
