//! Progress on stderr: drawn when stderr is a terminal (`--progress auto`), always, or
//! never. Draws through our own terminal writer on fd 2 so the decision is ours alone
//! (indicatif's own stderr target also hides itself when TERM is unset or dumb).

use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};
use std::io::Write;
use std::time::Duration;

/// When to draw progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum When {
    /// When stderr is a terminal (and TERM is not "dumb").
    Auto,
    /// Even when stderr is not a terminal.
    Always,
    /// Never.
    Never,
}

/// True when fd `fd` is a terminal.
pub fn isatty(fd: i32) -> bool {
    // SAFETY: isatty only inspects the fd.
    unsafe { libc::isatty(fd) == 1 }
}

/// stderr as a terminal for indicatif: ANSI sequences written to fd 2.
#[derive(Debug)]
struct Stderr;

impl Stderr {
    fn put(&self, s: &str) -> std::io::Result<()> {
        std::io::stderr().lock().write_all(s.as_bytes())
    }

    /// Move the cursor `n` places in direction `dir` (the CSI letter A, B, C or D).
    fn cursor(&self, n: usize, dir: char) -> std::io::Result<()> {
        if n == 0 {
            return Ok(());
        }
        self.put(&format!("\x1b[{n}{dir}"))
    }
}

impl TermLike for Stderr {
    fn width(&self) -> u16 {
        // SAFETY: all-zero bytes are a valid `libc::winsize` (plain integers).
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ writes one winsize into `ws`, which is writable.
        let ok = unsafe { libc::ioctl(2, libc::TIOCGWINSZ, &mut ws) } == 0;
        if ok && ws.ws_col > 0 {
            ws.ws_col
        } else {
            80
        }
    }
    fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
        self.cursor(n, 'A')
    }
    fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
        self.cursor(n, 'B')
    }
    fn move_cursor_right(&self, n: usize) -> std::io::Result<()> {
        self.cursor(n, 'C')
    }
    fn move_cursor_left(&self, n: usize) -> std::io::Result<()> {
        self.cursor(n, 'D')
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.put(&format!("{s}\n"))
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.put(s)
    }
    fn clear_line(&self) -> std::io::Result<()> {
        self.put("\r\x1b[2K")
    }
    fn flush(&self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// The progress display of a run (a hidden bar when not drawn).
pub struct Progress {
    bar: ProgressBar,
    drawn: bool,
}

const KNOWN: &str =
    "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} rows  {rate}  ETA {eta}  {msg}";
const UNKNOWN: &str = "{spinner} [{elapsed_precise}] {pos} rows  {rate}  {msg}";

fn style(bar: &ProgressBar, known: bool) {
    let t = if known { KNOWN } else { UNKNOWN };
    if let Ok(s) = ProgressStyle::with_template(t) {
        let s = s.with_key(
            "rate",
            |st: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{}/s", crate::stats::rate(st.per_sec()));
            },
        );
        bar.set_style(s);
    }
}

impl Progress {
    /// A display for `when`; the total is not known yet.
    pub fn new(when: When) -> Progress {
        let drawn = match when {
            When::Auto => isatty(2) && std::env::var_os("TERM").is_none_or(|t| t != "dumb"),
            When::Always => true,
            When::Never => false,
        };
        let target = if drawn {
            ProgressDrawTarget::term_like_with_hz(Box::new(Stderr), 10)
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(None, target);
        style(&bar, false);
        if drawn {
            bar.enable_steady_tick(Duration::from_millis(100));
        }
        Progress { bar, drawn }
    }

    /// A function that sets the total (from another thread).
    pub fn total_setter(&self) -> Box<dyn FnOnce(u64) + Send> {
        let bar = self.bar.clone();
        Box::new(move |n| {
            if bar.length().is_none() {
                bar.set_length(n);
                style(&bar, true);
            }
        })
    }

    /// Whether anything is drawn.
    pub fn drawn(&self) -> bool {
        self.drawn
    }

    /// The number of rows is now known.
    pub fn set_total(&self, total: u64) {
        let known = self.bar.length().is_some();
        self.bar.set_length(total);
        if !known {
            style(&self.bar, true);
        }
    }

    /// A status text before the run (start-up).
    pub fn status(&self, text: &str) {
        self.bar.set_message(text.to_string());
    }

    /// One more row done, with the errors so far.
    pub fn row_done(&self, errors: u64, errors_changed: bool) {
        self.bar.inc(1);
        if errors_changed {
            self.bar.set_message(format!("errors: {errors}"));
        }
    }

    /// Run `f` with the bar cleared (for lines written to the same terminal).
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        if self.drawn {
            self.bar.suspend(f)
        } else {
            f()
        }
    }

    /// Remove the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
