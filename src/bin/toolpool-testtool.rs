//! A scriptable tool for toolpool's own tests and benchmarks (not part of the library).
//!
//! Flags (at start): `--ready LINE` print LINE once started; `--start-delay-ms N` sleep
//! before that; `--ignore-term` ignore SIGTERM; `--grandchild` start a `sleep` that holds
//! the pipes; `--crash-after N` exit 3 after N input lines; `--exit-now CODE` exit at
//! once; `--stderr-flood N` write N stderr lines at start; `--prefix P` prefix replies;
//! `--banner N` print N lines before the ready line; `--no-flush` never flush stdout.
//!
//! Commands, one per stdin line (anything else is echoed back):
//! `delay:MS:TEXT` sleep then echo TEXT · `crash:CODE` exit · `kill:SIG` raise a signal ·
//! `huge:N` N bytes of 'x' with no newline · `hugenl:N` the same plus a newline ·
//! `badutf8` invalid UTF-8 bytes then a newline · `flood:N` N stdout lines ·
//! `stderr:N` N stderr lines · `multi:N:TEXT` N lines then `END` · `signals` the SigBlk,
//! SigIgn lines of /proc/self/status · `fds` the fd numbers open in this process ·
//! `pid` the pid · `grandchild` start a `sleep` holding the pipes and print its pid ·
//! `escape:SECS` the same, but in a process group of its own (beyond a group kill) ·
//! `hang` stop reading stdin and sleep forever · `silent` print nothing ·
//! `env:NAME` the variable's value · `cwd` the working directory · `twice:TEXT` two lines ·
//! `alloc:MB` allocate MB MiB, write every byte, keep it; reply `allocated TOTAL` (MiB held) ·
//! `free` drop what `alloc` holds; reply `freed` · `warn:MS:TEXT` a stderr line, MS ms, then
//! TEXT · `fail:TEXT` TEXT on stderr only · `late:MS:TEXT` TEXT, then after MS ms a second
//! line `late TEXT` · `tty` which of stdin, stdout, stderr are terminals, and `TERM`.

use std::io::{BufRead, Write};
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut ready = None;
    let mut crash_after: Option<u64> = None;
    let mut prefix = String::new();
    let mut flush = true;
    let mut i = 0;
    let num = |i: usize| -> u64 {
        args.get(i + 1)
            .and_then(|v| v.parse().ok())
            .expect("numeric flag value")
    };
    while i < args.len() {
        match args[i].as_str() {
            "--ready" => {
                ready = args.get(i + 1).cloned();
                i += 1;
            }
            "--start-delay-ms" => {
                std::thread::sleep(Duration::from_millis(num(i)));
                i += 1;
            }
            // SAFETY: setting a signal disposition to SIG_IGN installs no handler code.
            "--ignore-term" => unsafe {
                libc::signal(libc::SIGTERM, libc::SIG_IGN);
            },
            "--grandchild" => {
                spawn_grandchild();
            }
            "--crash-after" => {
                crash_after = Some(num(i));
                i += 1;
            }
            "--exit-now" => std::process::exit(num(i) as i32),
            "--stderr-flood" => {
                let n = num(i);
                let mut e = std::io::stderr().lock();
                for k in 0..n {
                    let _ = writeln!(e, "stderr flood line {k}");
                }
                i += 1;
            }
            "--banner" => {
                for k in 0..num(i) {
                    println!("banner {k}");
                }
                i += 1;
            }
            "--prefix" => {
                prefix = args.get(i + 1).cloned().unwrap_or_default();
                i += 1;
            }
            "--no-flush" => flush = false,
            other => {
                eprintln!("toolpool-testtool: unknown flag {other}");
                std::process::exit(2);
            }
        }
        i += 1;
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if let Some(r) = ready {
        let _ = writeln!(out, "{r}");
        let _ = out.flush();
    }
    let stdin = std::io::stdin();
    let mut seen = 0u64;
    let mut line = Vec::new();
    let mut input = stdin.lock();
    loop {
        line.clear();
        match input.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        seen += 1;
        let text = String::from_utf8_lossy(&line).into_owned();
        let ok = command(&text, &line, &prefix, &mut out);
        if ok.is_err() {
            break; // stdout closed: nothing more to do
        }
        if flush && out.flush().is_err() {
            break;
        }
        if crash_after.is_some_and(|n| seen >= n) {
            let _ = out.flush();
            eprintln!("crashing after {seen} lines");
            std::process::exit(3);
        }
    }
    let _ = out.flush();
}

/// Memory held by `alloc`.
static HELD: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());

fn spawn_grandchild() -> u32 {
    std::process::Command::new("sleep")
        .arg("1000")
        .spawn()
        .map(|c| c.id())
        .unwrap_or(0)
}

fn command(text: &str, raw: &[u8], prefix: &str, out: &mut impl Write) -> std::io::Result<()> {
    let mut parts = text.splitn(3, ':');
    let cmd = parts.next().unwrap_or("");
    let arg = parts.next().unwrap_or("");
    let rest = parts.next().unwrap_or("");
    let n = || arg.parse::<u64>().unwrap_or(0);
    match cmd {
        "delay" => {
            std::thread::sleep(Duration::from_millis(n()));
            writeln!(out, "{prefix}{rest}")
        }
        "crash" => {
            out.flush()?;
            eprintln!("crash requested with code {}", n());
            std::process::exit(n() as i32)
        }
        "kill" => {
            out.flush()?;
            // SAFETY: raising a signal at ourselves; no memory is involved.
            unsafe {
                libc::raise(n() as i32);
            }
            Ok(())
        }
        "huge" | "hugenl" => {
            let chunk = vec![b'x'; 64 * 1024];
            let mut left = n() as usize;
            while left > 0 {
                let k = left.min(chunk.len());
                out.write_all(&chunk[..k])?;
                left -= k;
            }
            if cmd == "hugenl" {
                out.write_all(b"\n")?;
            }
            Ok(())
        }
        "badutf8" => out.write_all(b"bad \xff\xfe\xc3 bytes\n"),
        "flood" => {
            for k in 0..n() {
                writeln!(out, "flood {k}")?;
            }
            Ok(())
        }
        "stderr" => {
            let mut e = std::io::stderr().lock();
            for k in 0..n() {
                writeln!(e, "stderr line {k}")?;
            }
            writeln!(out, "{prefix}stderr done")
        }
        "multi" => {
            for k in 0..n() {
                writeln!(out, "{rest} {k}")?;
            }
            writeln!(out, "END")
        }
        "signals" => {
            let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
            let keep: Vec<&str> = status
                .lines()
                .filter(|l| l.starts_with("SigBlk:") || l.starts_with("SigIgn:"))
                .collect();
            writeln!(out, "{}", keep.join(" "))
        }
        "fds" => {
            let mut fds: Vec<u32> = std::fs::read_dir("/proc/self/fd")
                .map(|d| {
                    d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                        .collect()
                })
                .unwrap_or_default();
            fds.sort_unstable();
            // read_dir itself holds one fd while listing: drop the highest number.
            fds.pop();
            let s: Vec<String> = fds.iter().map(u32::to_string).collect();
            writeln!(out, "{}", s.join(","))
        }
        "pid" => writeln!(out, "{}", std::process::id()),
        "grandchild" => writeln!(out, "{}", spawn_grandchild()),
        "escape" => {
            // A grandchild in a process group of its own, holding our pipes.
            use std::os::unix::process::CommandExt;
            let pid = std::process::Command::new("sleep")
                .arg(arg)
                .process_group(0)
                .spawn()
                .map(|c| c.id())
                .unwrap_or(0);
            writeln!(out, "{pid}")
        }
        "hang" => loop {
            out.flush()?;
            std::thread::sleep(Duration::from_secs(3600));
        },
        "silent" => Ok(()),
        "env" => writeln!(
            out,
            "{}",
            std::env::var(arg).unwrap_or_else(|_| "<unset>".into())
        ),
        "cwd" => writeln!(
            out,
            "{}",
            std::env::current_dir()
                .map(|d| d.display().to_string())
                .unwrap_or_default()
        ),
        "twice" => writeln!(out, "{prefix}{arg}\n{prefix}{arg}"),
        "alloc" => {
            // Written byte by byte (not calloc'd zero pages), so it is resident.
            let block = vec![0x5au8; (n() as usize) << 20];
            let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
            held.push(std::hint::black_box(block));
            let total: usize = held.iter().map(Vec::len).sum();
            writeln!(out, "{prefix}allocated {}", total >> 20)
        }
        "free" => {
            HELD.lock().unwrap_or_else(|e| e.into_inner()).clear();
            writeln!(out, "{prefix}freed")
        }
        "warn" => {
            eprintln!("warning: {rest} is coming");
            std::thread::sleep(Duration::from_millis(n()));
            writeln!(out, "{prefix}{rest}")
        }
        "fail" => {
            let mut e = std::io::stderr().lock();
            writeln!(e, "error: {}", &text[5..])
        }
        "late" => {
            writeln!(out, "{prefix}{rest}")?;
            out.flush()?;
            std::thread::sleep(Duration::from_millis(n()));
            writeln!(out, "{prefix}late {rest}")
        }
        "tty" => {
            // SAFETY: isatty on the three standard fds.
            let t = |fd| unsafe { libc::isatty(fd) } == 1;
            writeln!(
                out,
                "stdin {} stdout {} stderr {} TERM={}",
                t(0),
                t(1),
                t(2),
                std::env::var("TERM").unwrap_or_default()
            )
        }
        _ => {
            out.write_all(prefix.as_bytes())?;
            out.write_all(raw)?;
            out.write_all(b"\n")
        }
    }
}
