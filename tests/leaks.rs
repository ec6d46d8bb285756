//! A running instance costs one thread and five fds, and 100 create/shutdown cycles leave
//! fds, threads and children where they started.
//! Alone in its binary so no other test changes the counts.

mod common;
use common::*;
use std::time::Duration;

#[test]
fn create_shutdown_cycles_leak_nothing() {
    // Warm up once so lazily created statics (the global limiter) are counted.
    drop(private(tool(1, &[])));
    let fds = fd_count();
    let threads = thread_count();
    // One thread per running instance (its stderr drainer, which also reaps it), plus
    // the pool's supervisor; five fds per instance (see docs/behaviour.md, "Other limits").
    let n = 16;
    let pool = private(tool(n, &[]));
    // (eventually: the start's worker threads may still be on their way out.)
    assert!(
        eventually(Duration::from_secs(2), || thread_count() <= threads + n + 1),
        "{} threads for {n} instances (from {threads})",
        thread_count()
    );
    assert!(fd_count() <= fds + 5 * n, "{} fds (from {fds})", fd_count());
    pool.shutdown(Duration::from_millis(200));
    for k in 0..100 {
        let pool = private(tool(3, &[]));
        pool.send(k % 3, "ping").unwrap();
        assert_eq!(pool.read_line(k % 3, T).unwrap(), "ping");
        if k % 10 == 0 {
            pool.send(0, "crash:1").unwrap(); // a death in some cycles too
        }
        pool.shutdown(Duration::from_millis(200));
    }
    // Dropped pools too, without an explicit shutdown.
    for _ in 0..10 {
        drop(private(tool(2, &[])));
    }
    // Protocol servers (lsp framing, a handshake, a request from the tool answered), and
    // starts that fail their handshake.
    for k in 0..6 {
        let handshake = if k % 2 == 0 {
            r#"[{"method": "echo", "params": [1]}, {"method": "initialized", "notification": true}]"#
        } else {
            r#"[{"method": "fail", "params": {"message": "no"}}]"#
        };
        let spec = toolpool::ToolSpec::from_json(&format!(
            r#"{{"command": ["python3", "-u", "{}", "--lsp"], "protocol": "lsp", "count": 2,
                "startup": {{"timeout_ms": 20000, "handshake": {handshake}}}}}"#,
            rpc_tool()
        ))
        .unwrap();
        let pool = toolpool::Pool::with_options(
            spec,
            toolpool::PoolOptions {
                limiter: Some(toolpool::Limiter::new(0)),
                ..Default::default()
            },
        );
        match pool {
            Ok(pool) => {
                pool.notify(1, r#"{"method": "hello"}"#).unwrap();
                let r = pool
                    .request(r#"{"method": "ask", "params": {"method": "x"}}"#, T)
                    .unwrap();
                assert!(r.text.contains("-32601"), "{}", r.text);
                pool.shutdown(Duration::from_millis(200));
            }
            Err(e) => assert!(k % 2 == 1, "{e}"),
        }
    }
    assert_eq!(fd_count(), fds, "fds leaked");
    // More threads would be a leak; fewer, a thread of before that has ended since.
    assert!(
        eventually(Duration::from_secs(2), || thread_count() <= threads),
        "threads: {} vs {threads}",
        thread_count()
    );
    assert!(zombies().is_empty(), "zombies: {:?}", zombies());
    assert_eq!(toolpool::Limiter::global().status().active_processes, 0);
}
