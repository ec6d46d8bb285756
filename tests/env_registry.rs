//! TOOLPOOL_REGISTRY: `Registry::from_env` and `Pool::from_registry`. A binary of its own,
//! so the environment it sets is seen by nothing else.

mod common;
use common::*;
use toolpool::{Error, Pool, Registry};

#[test]
fn registry_from_env_and_pool_from_registry() {
    let dir = std::env::temp_dir().join(format!("toolpool-envreg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tools.json");
    std::fs::write(
        &path,
        format!(
            r#"{{"tools": {{"echo": {{"command": ["{}"], "count": 2}}}}}}"#,
            testtool()
        ),
    )
    .unwrap();
    let unset = Registry::from_env().unwrap_err();
    assert!(
        matches!(&unset, Error::Config(m) if m.contains("TOOLPOOL_REGISTRY")),
        "{unset}"
    );
    // A command line taken for a tool id: the error says what was looked up, and how to
    // start a command instead.
    let err = Pool::from_registry(None, "bc -q", 0).unwrap_err();
    let m = err.to_string();
    assert!(matches!(err, Error::Config(_)), "{err}");
    assert!(m.contains("TOOLPOOL_REGISTRY is not set"), "{m}");
    assert!(m.contains("tool id 'bc -q'"), "{m}");
    assert!(m.contains(r#""command": ["bc","-q"]"#), "{m}");
    let reg = Registry::from_path(&path).unwrap();
    std::env::set_var(toolpool::spec::REGISTRY_ENV, &path);
    assert_eq!(Registry::from_env().unwrap(), reg);

    // No path: the file named by TOOLPOOL_REGISTRY; count 0: the spec's count.
    let pool = Pool::from_registry(None, "echo", 0).unwrap();
    assert_eq!(pool.len(), 2);
    assert_eq!(pool.request("hi", T).unwrap().text, "hi");
    let pool = Pool::from_registry(Some(&path), "echo", 3).unwrap();
    assert_eq!(pool.len(), 3);
    assert!(matches!(
        Pool::from_registry(None, "nope", 0),
        Err(Error::UnknownTool { .. })
    ));
    std::env::remove_var(toolpool::spec::REGISTRY_ENV);
    std::fs::remove_dir_all(&dir).unwrap();
}
