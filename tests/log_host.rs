//! A Rust host with its own `log` logger keeps it: toolpool's records go there, and the
//! bridge for C/Go/Python hosts refuses to take its place. (Its own binary: the `log`
//! logger is process-wide.)

mod common;
use common::*;
use std::sync::Mutex;

struct HostLogger(Mutex<Vec<String>>);

impl log::Log for HostLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, r: &log::Record<'_>) {
        self.0
            .lock()
            .unwrap()
            .push(format!("{} {}", r.level(), r.args()));
    }
    fn flush(&self) {}
}

static HOST: HostLogger = HostLogger(Mutex::new(Vec::new()));

#[test]
fn the_host_logger_wins() {
    log::set_logger(&HOST).unwrap();
    log::set_max_level(log::LevelFilter::Debug);
    let e = toolpool::log_bridge::set_sink(log::LevelFilter::Trace, Some(Box::new(|_, _, _| {})))
        .unwrap_err();
    assert_eq!(e.code(), 1);
    assert!(e.to_string().contains("another `log` logger"), "{e}");
    // Removing a sink that was never set is fine.
    toolpool::log_bridge::set_sink(log::LevelFilter::Off, None).unwrap();
    let pool = private(toolpool::ToolSpec {
        id: "host_log".into(),
        ..tool(1, &[])
    });
    pool.shutdown(T);
    let got = HOST.0.lock().unwrap().clone();
    assert!(
        got.iter()
            .any(|l| l.starts_with("INFO spawned tool=host_log ")),
        "{got:#?}"
    );
    assert!(
        got.iter()
            .any(|l| l.starts_with("DEBUG stopped tool=host_log ")),
        "{got:#?}"
    );
    assert_eq!(
        log::max_level(),
        log::LevelFilter::Debug,
        "the host's level is untouched"
    );

    // A pool freed right after a cancelled request (its instance is being replaced, so no
    // late reply reaches anyone) says nothing false: its replacement is stopped by the
    // shutdown on purpose, not a start that failed.
    for k in 0..10 {
        let pool = private(toolpool::ToolSpec {
            id: format!("cancel_free_{k}"),
            ..tool(1, &[])
        });
        let token = toolpool::CancelToken::new();
        let canceller = {
            let token = token.clone();
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(30));
                token.cancel();
            })
        };
        let r = pool.request("hang", toolpool::Wait::new(T).with_cancel(&token));
        assert!(matches!(r, Err(toolpool::Error::Cancelled(_))), "{r:?}");
        canceller.join().unwrap();
        drop(pool);
    }
    // Dry-run records name no pid (there is no process), as status does.
    let mut spec = toolpool::ToolSpec::new(["/nonexistent/dry"]);
    spec.id = "dry_log".into();
    spec.dry_run = Some(toolpool::DryRun::echo());
    let pool = toolpool::Pool::from_spec(spec).unwrap();
    assert_eq!(pool.request("x", T).unwrap().text, "x");
    pool.shutdown(T);
    let got = HOST.0.lock().unwrap().clone();
    let false_warnings: Vec<&String> = got
        .iter()
        .filter(|l| l.starts_with("WARN") && l.contains("cancel_free_"))
        .collect();
    assert!(false_warnings.is_empty(), "{false_warnings:#?}");
    assert!(
        got.iter()
            .any(|l| l.contains("cancel kill tool=cancel_free_")),
        "{got:#?}"
    );
    let dry: Vec<&String> = got.iter().filter(|l| l.contains("tool=dry_log")).collect();
    assert!(
        dry.iter()
            .any(|l| l.starts_with("DEBUG stopped tool=dry_log instance=0 pid=null ")),
        "{dry:#?}"
    );
    assert!(
        dry.iter()
            .all(|l| !l.contains("pid=-") && !l.contains("pid=0 ")),
        "{dry:#?}"
    );
}
