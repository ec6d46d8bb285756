//! `toolpool`: run a command-line tool over a pool of warm processes from the shell.
//!
//! - `toolpool run`: one request per input line, one reply per output line, in input order
//!   (or completion order), streaming with bounded memory;
//! - `toolpool bench`: a sample through a warm pool and through one process per call;
//! - `toolpool check`: validate a registry, optionally start each tool once;
//! - `toolpool serve`: the pools of a registry for many processes, on a Unix socket;
//! - `toolpool exec`: one command under a service's process limit.
//!
//! Built only with the `cli` feature (clap and indicatif are not dependencies of the
//! library). Uses the library's public API only.
//!
//! Modules: `tool` (which tool: flags to a spec), `run` (threads, ordering, backpressure,
//! Ctrl-C) with `input` (line reading) and `rows` (output and counts), `bench`, `check`,
//! `progress` (the bar), `stats` (latency quantiles), `signals` (SIGINT/SIGTERM/SIGHUP),
//! `serve` with `watchdog` (no tool outlives the service).

mod bench;
mod check;
mod exec;
mod input;
mod progress;
mod rows;
mod run;
mod serve;
mod signals;
mod stats;
mod tool;
mod watchdog;

use clap::{Parser, Subcommand};

/// Exit status: every request succeeded.
pub const EXIT_OK: i32 = 0;
/// Exit status: some requests failed (the others still ran and were written).
pub const EXIT_FAILED: i32 = 1;
/// Exit status: usage or configuration error (unknown tool, bad spec, missing registry).
pub const EXIT_CONFIG: i32 = 2;

const AFTER_HELP: &str = "\
Exit status: 0 every request succeeded; 1 some failed (the rest still ran); 2 usage or
configuration error (unknown tool, bad spec, missing registry, tool cannot start);
130 interrupted by Ctrl-C (143 by SIGTERM); 141 the output was closed.

Examples:
  seq 1000 | sed 's/$/^2/' | toolpool run -n 4 -- bc -q
  toolpool run --protocol jsonrpc --jsonl --input calls.jsonl -- python3 tool.py
  toolpool run --registry tools.json --tool bc --input exprs.txt --output results.txt
  seq 200 | sed 's/$/*3/' | toolpool bench -- bc -q
  toolpool check tools.json --start";

/// Keep a command-line tool warm in a pool of processes and drive it from the shell.
///
/// Instead of starting a slow tool once per input line (xargs, GNU parallel), toolpool
/// starts N instances once and streams every line through them.
#[derive(Parser, Debug)]
#[command(name = "toolpool", version, after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    Run(run::RunArgs),
    Bench(bench::BenchArgs),
    Check(check::CheckArgs),
    Serve(serve::ServeArgs),
    Exec(exec::ExecArgs),
}

/// An error that ends the command: its message and exit status.
#[derive(Debug)]
pub struct Fatal {
    /// Exit status.
    pub code: i32,
    /// What went wrong (printed after `toolpool: `).
    pub message: String,
}

impl Fatal {
    /// A usage or configuration error (exit 2).
    pub fn config(message: impl Into<String>) -> Fatal {
        Fatal {
            code: EXIT_CONFIG,
            message: message.into(),
        }
    }
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(a) => run::main(a),
        Command::Bench(a) => bench::main(a),
        Command::Check(a) => check::main(a),
        Command::Serve(a) => serve::main(a),
        Command::Exec(a) => exec::main(a),
    };
    let code = match result {
        Ok(code) => code,
        Err(f) => {
            eprintln!("toolpool: {}", f.message);
            f.code
        }
    };
    std::process::exit(code);
}
