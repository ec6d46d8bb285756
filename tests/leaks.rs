//! 100 create/shutdown cycles leave fds, threads and children where they started.
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
    assert_eq!(fd_count(), fds, "fds leaked");
    assert!(
        eventually(Duration::from_secs(2), || thread_count() == threads),
        "threads: {} vs {threads}",
        thread_count()
    );
    assert!(zombies().is_empty(), "zombies: {:?}", zombies());
    assert_eq!(toolpool::Limiter::global().status().active_processes, 0);
}
