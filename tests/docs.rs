//! The docs against the code: the key tables of docs/specs.md (tool specs) and
//! docs/runs.md (run specs) list exactly the keys the spec parsers accept. The truth comes
//! from the parser itself: an unknown key makes serde name every key it knows ("unknown
//! field `x`, expected one of `a`, `b`, ..."), at the top level and in each object the
//! table spells out as dotted keys (`startup.*`, `limits.*`, ...). Objects the table names
//! as a whole (`remote`, `dry_run`, `env`, ...) have their own pages.

use std::collections::BTreeSet;
use toolpool::ToolSpec;

/// Objects whose keys the table lists one by one, as `object.key`.
const DOTTED: [&str; 6] = [
    "startup", "shutdown", "limits", "restart", "health", "oneshot",
];

/// The keys serde accepts in the object at `path` ("" for the top level), read from the
/// error an unknown key there gets.
fn accepted_keys(path: &str) -> BTreeSet<String> {
    let unknown = r#"{"no_such_key_in_any_spec": 1}"#;
    let json = if path.is_empty() {
        unknown.to_string()
    } else {
        format!(r#"{{"command": ["x"], "{path}": {unknown}}}"#)
    };
    let err = serde_json::from_str::<ToolSpec>(&json)
        .expect_err("an unknown key must be refused")
        .to_string();
    named_keys(&err, path)
}

/// The keys serde names in `err`, its error for an unknown key ("expected one of `a`,
/// `b`, ..."); `what` says where, for the failure message.
fn named_keys(err: &str, what: &str) -> BTreeSet<String> {
    let (_, expected) = err
        .split_once("expected")
        .unwrap_or_else(|| panic!("serde's message for {what:?} names no keys: {err}"));
    let expected = expected.split(" at line").next().unwrap();
    let keys: BTreeSet<String> = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    assert!(
        !keys.is_empty(),
        "no keys in serde's message for {what:?}: {err}"
    );
    keys
}

/// The spec keys the parser accepts, with the `DOTTED` objects spelled out.
fn spec_keys() -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for key in accepted_keys("") {
        if DOTTED.contains(&key.as_str()) {
            keys.extend(
                accepted_keys(&key)
                    .into_iter()
                    .map(|k| format!("{key}.{k}")),
            );
        } else {
            keys.insert(key);
        }
    }
    keys
}

/// The first column of docs/specs.md's key table: rows `| `key` | default | meaning |`
/// under the heading "## Keys".
fn documented_keys() -> Vec<String> {
    documented_keys_in("specs.md", "Keys")
}

/// The first column of the key table of docs/`page` under the heading "## `heading`".
fn documented_keys_in(page: &str, heading: &str) -> Vec<String> {
    let path = format!("{}/docs/{page}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("the docs page");
    let (_, section) = text
        .split_once(&format!("\n## {heading}\n"))
        .unwrap_or_else(|| panic!("docs/{page} has a section \"## {heading}\""));
    let section = section.split("\n## ").next().unwrap();
    section
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split_once('`'))
        .map(|(key, _)| key.to_string())
        .collect()
}

#[test]
fn the_spec_key_table_lists_every_key_and_no_other() {
    let documented = documented_keys();
    let unique: BTreeSet<String> = documented.iter().cloned().collect();
    assert_eq!(
        unique.len(),
        documented.len(),
        "a key appears twice in docs/specs.md's table"
    );
    let accepted = spec_keys();
    let missing: Vec<_> = accepted.difference(&unique).collect();
    let unknown: Vec<_> = unique.difference(&accepted).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "docs/specs.md's key table differs from what the spec parser accepts: \
         not documented {missing:?}; documented but not accepted {unknown:?}"
    );
}

#[test]
fn the_registry_example_of_docs_specs_is_a_valid_registry() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/specs.md");
    let text = std::fs::read_to_string(path).expect("docs/specs.md");
    let (_, rest) = text
        .split_once("## The registry\n")
        .expect("docs/specs.md has a section \"## The registry\"");
    let (_, block) = rest.split_once("```json\n").expect("a ```json block");
    let (json, _) = block.split_once("```").unwrap();
    let registry = toolpool::Registry::from_json(json)
        .unwrap_or_else(|e| panic!("docs/specs.md's registry example: {e}"));
    assert_eq!(
        registry
            .tools
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        ["bc", "rpc"]
    );
}

#[test]
fn the_run_spec_key_table_of_docs_runs_lists_every_key_and_no_other() {
    let documented: BTreeSet<String> = documented_keys_in("runs.md", "The run spec")
        .into_iter()
        .collect();
    let err = serde_json::from_str::<toolpool::RunSpec>(r#"{"no_such_key_in_any_spec": 1}"#)
        .expect_err("an unknown key must be refused")
        .to_string();
    let accepted = named_keys(&err, "a run spec");
    assert_eq!(
        documented, accepted,
        "docs/runs.md's key table differs from the keys of a run spec"
    );
}
