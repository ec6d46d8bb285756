//! include/toolpool.h is what cbindgen (the library, pinned in Cargo.toml's
//! dev-dependencies) generates from cbindgen.toml and src/ffi/, byte for byte.
//!
//! `cargo test --test header` fails on a stale header; `make header` (this test with
//! `TOOLPOOL_WRITE_HEADER=1`) rewrites it. No cbindgen CLI is needed for either.

use std::path::Path;

const WRITE_ENV: &str = "TOOLPOOL_WRITE_HEADER";

fn generate() -> Vec<u8> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(root.join("cbindgen.toml"))
        .unwrap_or_else(|e| panic!("reading cbindgen.toml: {e}"));
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_crate(root)
        .generate()
        .unwrap_or_else(|e| panic!("cbindgen could not generate the header: {e}"));
    let mut out = Vec::new();
    bindings.write(&mut out);
    out
}

#[test]
fn header_is_up_to_date() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("include/toolpool.h");
    let fresh = generate();
    if std::env::var_os(WRITE_ENV).is_some_and(|v| v == "1") {
        std::fs::write(&path, &fresh).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        eprintln!("wrote {}", path.display());
        return;
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    if committed != fresh {
        let old = String::from_utf8_lossy(&committed);
        let new = String::from_utf8_lossy(&fresh);
        let first = old
            .lines()
            .zip(new.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| old.lines().count().min(new.lines().count()));
        panic!(
            "include/toolpool.h is stale (it differs from what cbindgen generates from src/ffi/, \
             first at line {}):\n  committed: {:?}\n  generated: {:?}\n\
             fix: run `make header` and commit include/toolpool.h",
            first + 1,
            old.lines().nth(first).unwrap_or("<end of file>"),
            new.lines().nth(first).unwrap_or("<end of file>"),
        );
    }
}
