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
}
