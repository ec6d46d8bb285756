//! The README's Rust snippet ("The same five lines in four languages"), run by
//! `make test` (`cargo run --example readme`). bindings/python/tests/test_docs.py checks
//! that the README shows exactly the lines between BEGIN README and END README.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // BEGIN README
    let pool = toolpool::Pool::from_spec(toolpool::ToolSpec {
        count: 3,
        ..toolpool::ToolSpec::new(["bc", "-q"])
    })?;
    let reply = pool.request("6*7", std::time::Duration::from_secs(5))?;
    println!("{} from instance {:?}", reply.text, reply.instance);
    println!("{}", serde_json::to_string(&pool.health())?);
    pool.shutdown(std::time::Duration::from_secs(2));
    // END README
    Ok(())
}
