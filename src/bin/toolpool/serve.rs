//! `toolpool serve`: one process owns the pools of a registry and the process limit, and
//! serves them to every host process of a machine on a Unix socket ([`toolpool::Service`]).
//! SIGTERM/SIGINT shut it down gracefully, SIGHUP reloads the registry; a watchdog
//! (`watchdog`) makes sure no tool outlives it.

use crate::{signals, tool, watchdog, Fatal, EXIT_OK};
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use toolpool::{Limiter, Service, ServiceOptions};

/// Serve the pools of a registry to many processes on a Unix socket.
///
/// One process owns the pools of every tool in the registry and the process-wide limit;
/// clients (Rust `Client::connect`, C `toolpool_client_connect`, Go `Connect`, Python
/// `toolpool.connect`, or any program with TOOLPOOL_SERVER=unix:PATH) use them as local
/// pools. SIGTERM or SIGINT: the calls in flight finish (within --grace), then every pool
/// shuts down. SIGHUP: the registry file is read again; changed tools reload one instance
/// at a time, new tools start, removed ones stop once idle; no request fails.
#[derive(Args, Debug)]
#[command(after_help = "\
Exit status: 0 after SIGTERM or SIGINT; 2 configuration error (bad registry, a live service
on the socket, a tool that cannot start).

Examples:
  toolpool serve --registry tools.json --socket /run/toolpool.sock --max-processes 8
  TOOLPOOL_SERVER=unix:/run/toolpool.sock toolpool run --tool bc < exprs.txt
  toolpool serve --registry tools.json --socket /tmp/tp.sock --metrics 127.0.0.1:9464")]
pub struct ServeArgs {
    /// The registry file {"tools": {"<id>": {spec}}} [default: $TOOLPOOL_REGISTRY].
    #[arg(long, value_name = "FILE")]
    pub registry: Option<PathBuf>,

    /// The Unix socket to serve on (a stale socket file is replaced; a live service there
    /// is an error). Not needed under systemd socket activation (LISTEN_FDS).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// The process-wide limit on tool processes (0: none).
    #[arg(long, value_name = "N")]
    pub max_processes: Option<usize>,

    /// The socket file's mode, in octal.
    #[arg(long, value_name = "MODE", default_value = "0600", value_parser = parse_mode)]
    pub socket_mode: u32,

    /// A group (name or number) whose members may connect; it becomes the socket's group.
    #[arg(long, value_name = "GROUP")]
    pub socket_group: Option<String>,

    /// Connections served at once; one more is refused.
    #[arg(long, value_name = "N", default_value_t = toolpool::service::DEFAULT_MAX_CLIENTS)]
    pub max_clients: usize,

    /// Serve GET /metrics (Prometheus text) and GET /status (JSON) over HTTP on ADDR
    /// (host:port).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,

    /// How long a shutdown waits for the calls in flight, and then for each tool to exit.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = tool::parse_duration)]
    pub grace: Duration,
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("{s:?} is not an octal file mode such as 0600 or 0660"))
}

/// A group name or number as a gid.
fn parse_group(g: &str) -> Result<u32, Fatal> {
    if let Ok(n) = g.parse::<u32>() {
        return Ok(n);
    }
    let c = std::ffi::CString::new(g)
        .map_err(|_| Fatal::config(format!("--socket-group {g:?} contains a NUL byte")))?;
    // SAFETY: getgrnam with a NUL-terminated name; the result is read at once (this runs
    // before any other thread could call getgrnam).
    let gr = unsafe { libc::getgrnam(c.as_ptr()) };
    if gr.is_null() {
        return Err(Fatal::config(format!(
            "--socket-group {g:?}: no such group"
        )));
    }
    // SAFETY: a non-NULL result of getgrnam.
    Ok(unsafe { (*gr).gr_gid })
}

pub fn main(args: ServeArgs) -> Result<i32, Fatal> {
    let registry = tool::load_registry(args.registry.as_deref())?;
    let options = ServiceOptions {
        socket_mode: args.socket_mode,
        socket_group: args.socket_group.as_deref().map(parse_group).transpose()?,
        max_clients: args.max_clients.max(1),
    };
    // Before any thread: the socket systemd passed (it checks LISTEN_PID against us),
    // then the fork into watchdog and service.
    let passed = toolpool::service::systemd_socket().map_err(|e| Fatal::config(e.to_string()))?;
    if passed.is_none() && args.socket.is_none() {
        return Err(Fatal::config(
            "no socket: give --socket PATH (or start under systemd socket activation)",
        ));
    }
    watchdog::split().map_err(|e| Fatal::config(format!("cannot fork the watchdog: {e}")))?;
    log_to_stderr();
    if let Some(n) = args.max_processes {
        Limiter::global().set_limit(n);
    }
    let signals = signals::install_for(&[libc::SIGINT, libc::SIGTERM, libc::SIGHUP]);
    let service = match (passed, &args.socket) {
        (Some(fd), _) => Service::from_socket(fd, registry, options),
        (None, Some(path)) => Service::bind(path, registry, options),
        (None, None) => unreachable!("checked above"),
    }
    .map_err(|e| Fatal::config(e.to_string()))?;
    let service = Arc::new(service);
    if let Some(addr) = &args.metrics {
        metrics_http(addr, Arc::clone(&service))?;
    }
    let where_ = args
        .socket
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "the socket systemd passed".into());
    eprintln!(
        "toolpool serve: pid {}, serving {} tool(s) on {where_}",
        std::process::id(),
        service.pools().tools().len()
    );
    let runner = {
        let service = Arc::clone(&service);
        std::thread::Builder::new()
            .name("toolpool-accept".into())
            .spawn(move || service.run())
            .map_err(|e| Fatal::config(format!("cannot start the accept thread: {e}")))?
    };
    for sig in signals.iter() {
        if sig != libc::SIGHUP {
            eprintln!("toolpool serve: signal {sig}: shutting down");
            break;
        }
        match tool::load_registry(args.registry.as_deref())
            .and_then(|r| service.reload(r).map_err(|e| Fatal::config(e.to_string())))
        {
            Ok(report) => eprintln!(
                "toolpool serve: reloaded: {}",
                serde_json::to_string(&report).unwrap_or_default()
            ),
            Err(f) => eprintln!(
                "toolpool serve: reload failed, nothing changed: {}",
                f.message
            ),
        }
    }
    service.shutdown(args.grace);
    match runner.join() {
        Ok(Ok(())) => Ok(EXIT_OK),
        Ok(Err(e)) => Err(Fatal::config(e.to_string())),
        Err(_) => Err(Fatal::config("the accept thread panicked")),
    }
}

/// Serve GET /metrics and GET /status on `addr` on a thread of its own.
fn metrics_http(addr: &str, service: Arc<Service>) -> Result<(), Fatal> {
    let server = tiny_http::Server::http(addr)
        .map_err(|e| Fatal::config(format!("--metrics {addr}: {e}")))?;
    std::thread::Builder::new()
        .name("toolpool-metrics".into())
        .spawn(move || {
            for req in server.incoming_requests() {
                let path = req.url().split('?').next().unwrap_or("").to_string();
                let get = *req.method() == tiny_http::Method::Get;
                let (code, body, kind) = match (get, path.as_str()) {
                    (true, "/metrics") => (
                        200,
                        service.metrics_prometheus(),
                        "text/plain; version=0.0.4; charset=utf-8",
                    ),
                    (true, "/status") => (
                        200,
                        serde_json::to_string(&service.status()).unwrap_or_default(),
                        "application/json",
                    ),
                    (false, _) => (405, "only GET\n".into(), "text/plain"),
                    _ => (404, "GET /metrics or /status\n".into(), "text/plain"),
                };
                let header =
                    tiny_http::Header::from_bytes("Content-Type", kind).expect("a valid header");
                let _ = req.respond(
                    tiny_http::Response::from_string(body)
                        .with_status_code(code)
                        .with_header(header),
                );
            }
        })
        .map_err(|e| Fatal::config(format!("cannot start the metrics thread: {e}")))?;
    Ok(())
}

/// Log records of the library (a client refused, a malformed frame, a tool's restarts) to
/// stderr, one line each.
fn log_to_stderr() {
    struct Stderr;
    impl log::Log for Stderr {
        fn enabled(&self, m: &log::Metadata<'_>) -> bool {
            m.level() <= log::Level::Info
        }
        fn log(&self, r: &log::Record<'_>) {
            if self.enabled(r.metadata()) {
                eprintln!("toolpool serve: {} {}: {}", r.level(), r.target(), r.args());
            }
        }
        fn flush(&self) {}
    }
    static LOGGER: Stderr = Stderr;
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
}
