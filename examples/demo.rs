//! The main job: real pools of real tools doing real work.
//!
//! - `bc -l`, 3 warm instances: a batch of arbitrary-precision computations spread over
//!   the pool, timed against starting `bc` once per computation;
//! - a persistent JSON-RPC tool in Python, 2 instances: calls, a typed tool error;
//! - health, status and metrics of both pools.
//!
//! Run with `make demo` (or `cargo run --release --example demo`).

use std::time::{Duration, Instant};
use toolpool::{Pool, Protocol, ToolSpec};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let timeout = Duration::from_secs(10);

    println!("== bc -l: 3 warm instances ==");
    let bc = Pool::from_spec(ToolSpec {
        id: "bc".into(),
        count: 3,
        // bc wraps long numbers over several lines unless told not to.
        env: [("BC_LINE_LENGTH".to_string(), "0".to_string())].into(),
        ..ToolSpec::new(["bc", "-l"])
    })?;
    let exprs: Vec<String> = (1..=12)
        .map(|k| format!("scale=40; sqrt({k})"))
        .chain([
            "scale=60; 4*a(1)".into(),
            "2^256".into(),
            "scale=50; e(1)".into(),
        ])
        .collect();
    let t = Instant::now();
    let results = bc.map(&exprs, timeout);
    let pooled = t.elapsed();
    for (e, r) in exprs.iter().zip(&results) {
        let r = r.as_ref().map_err(|e| e.to_string())?;
        println!(
            "  [instance {}] {e:<22} = {}",
            r.instance.unwrap_or(0),
            r.text
        );
    }
    let t = Instant::now();
    for e in &exprs {
        let out = std::process::Command::new("bc")
            .arg("-l")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin
                    .take()
                    .expect("piped")
                    .write_all(format!("{e}\n").as_bytes())?;
                c.wait_with_output()
            })?;
        assert!(out.status.success());
    }
    let spawned = t.elapsed();
    println!(
        "  {} computations: pooled {:.2} ms, spawning bc per call {:.2} ms ({:.1}x)",
        exprs.len(),
        pooled.as_secs_f64() * 1e3,
        spawned.as_secs_f64() * 1e3,
        spawned.as_secs_f64() / pooled.as_secs_f64()
    );

    println!("\n== JSON-RPC tool in Python: 2 warm instances ==");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/tools/rpc_tool.py");
    let rpc = Pool::from_spec(ToolSpec {
        id: "rpc_tool".into(),
        count: 2,
        protocol: Protocol::Jsonrpc,
        max_in_flight: 4,
        startup: toolpool::Startup {
            ready_line: Some("READY".into()),
            ..Default::default()
        },
        ..ToolSpec::new(["python3", "-u", script, "--ready", "READY"])
    })?;
    for payload in [
        r#"{"method":"add","params":[40,2]}"#,
        r#"{"method":"upper","params":{"text":"warm processes"}}"#,
        r#"{"method":"pid"}"#,
        r#"{"method":"pid"}"#,
    ] {
        let r = rpc.request(payload, timeout)?;
        println!(
            "  [instance {}] {payload} -> {}",
            r.instance.unwrap_or(0),
            r.text
        );
    }
    match rpc.request(
        r#"{"method":"fail","params":{"code":-32001,"message":"no such file"}}"#,
        timeout,
    ) {
        Err(e) => println!("  a tool error comes back typed: code {} : {e}", e.code()),
        Ok(r) => println!("  unexpected reply {}", r.text),
    }

    println!("\n== health ==");
    for pool in [&bc, &rpc] {
        let h = pool.health();
        println!(
            "  {:<9} total {} alive {} dead {}  pids {:?}",
            pool.spec().id,
            h.total,
            h.alive,
            h.dead,
            h.instances.iter().map(|i| i.pid).collect::<Vec<_>>()
        );
    }
    println!(
        "\n== metrics (bc) ==\n{}",
        serde_json::to_string_pretty(&bc.metrics())?
    );
    println!(
        "\n== process limit ==\n  {}",
        serde_json::to_string(&toolpool::Limiter::global().status())?
    );
    bc.shutdown(Duration::from_secs(2));
    rpc.shutdown(Duration::from_secs(2));
    println!(
        "\nshut down; children left: {}",
        toolpool::Limiter::global().status().active_processes
    );
    Ok(())
}
