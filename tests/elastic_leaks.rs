//! Many resizes and reloads (with requests in flight, elastic growth and idle shrinking)
//! leave fds, threads and children where they started. Alone in its binary so no other
//! test changes the counts.

mod common;
use common::*;
use std::time::Duration;
use toolpool::ToolSpec;

#[test]
fn resizes_and_reloads_leak_nothing() {
    drop(private(tool(1, &[])));
    let fds = fd_count();
    let threads = thread_count();
    for cycle in 0..3 {
        let pool = private(ToolSpec {
            min_instances: Some(1),
            idle_timeout_ms: Some(50),
            ..tool(3, &[])
        });
        std::thread::scope(|s| {
            let load = s.spawn(|| {
                for k in 0..60 {
                    let r = pool.request(&format!("delay:2:{k}"), T).unwrap();
                    assert_eq!(r.text, k.to_string());
                }
            });
            for (k, n) in [5, 1, 4, 2, 6, 3].into_iter().enumerate() {
                pool.resize(n).unwrap();
                if k % 2 == 0 {
                    let mut spec = tool(n, &[]);
                    spec.min_instances = Some(1);
                    spec.idle_timeout_ms = Some(50);
                    spec.env.insert("CYCLE".into(), format!("{cycle}-{k}"));
                    pool.reload(spec).unwrap();
                }
            }
            load.join().unwrap();
        });
        // A busy instance removed by a shrink: its retirement is still pending at shutdown
        // in some cycles.
        let lease = pool.lease(T).unwrap();
        pool.resize(1).unwrap();
        drop(lease);
        pool.shutdown(Duration::from_millis(200));
        assert_eq!(pool.limiter().unwrap().status().active_processes, 0);
    }
    assert!(
        eventually(Duration::from_secs(3), || fd_count() == fds),
        "fds: {} vs {fds}",
        fd_count()
    );
    // More threads would be a leak; fewer, a thread of before that has ended since.
    assert!(
        eventually(Duration::from_secs(3), || thread_count() <= threads),
        "threads: {} vs {threads}",
        thread_count()
    );
    assert!(zombies().is_empty(), "zombies: {:?}", zombies());
    assert_eq!(toolpool::leaked_threads(), 0);
}
