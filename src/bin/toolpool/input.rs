//! The input of `toolpool run`: lines read in pieces, never the whole input, with a poll
//! before each read so that a stop is seen even on a pipe where nothing arrives.

use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use crate::Fatal;

/// Longest input line taken as a request; a longer one is an error row (and is not held).
pub const MAX_INPUT_LINE: usize = 64 << 20;

/// The input: a file or stdin, read in pieces with a poll first so that a stop request is
/// seen within 100 ms even when nothing arrives.
pub struct Input {
    file: Option<std::fs::File>,
    path: Option<PathBuf>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
}

impl Input {
    pub fn open(path: Option<&std::path::Path>) -> Result<Input, Fatal> {
        let file = match path {
            Some(p) => Some(
                std::fs::File::open(p)
                    .map_err(|e| Fatal::config(format!("cannot open {}: {e}", p.display())))?,
            ),
            None => None,
        };
        Ok(Input {
            file,
            path: path.map(|p| p.to_path_buf()),
            buf: vec![0; 64 * 1024],
            start: 0,
            end: 0,
            eof: false,
        })
    }

    fn fd(&self) -> RawFd {
        self.file.as_ref().map_or(0, |f| f.as_raw_fd())
    }

    /// A path to count the lines of when the input is a regular file.
    pub fn regular_file_path(&self) -> Option<PathBuf> {
        // SAFETY: all-zero bytes are a valid `libc::stat` (plain integers).
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `st` is a writable stat; fstat on a bad fd only returns -1.
        if unsafe { libc::fstat(self.fd(), &mut st) } != 0 {
            return None;
        }
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return None;
        }
        Some(
            self.path
                .clone()
                .unwrap_or_else(|| "/proc/self/fd/0".into()),
        )
    }

    /// The next line (without its newline and a trailing CR): the line, or its length
    /// when longer than [`MAX_INPUT_LINE`] (read through, not kept); None at the end of the
    /// input or when `stop` is set.
    pub fn next_line(
        &mut self,
        stop: &AtomicBool,
    ) -> std::io::Result<Option<Result<Vec<u8>, usize>>> {
        let mut line = Vec::new();
        let mut len = 0usize;
        let mut take = |line: &mut Vec<u8>, piece: &[u8]| {
            len += piece.len();
            if len <= MAX_INPUT_LINE {
                line.extend_from_slice(piece);
            } else {
                *line = Vec::new();
            }
            len
        };
        loop {
            if let Some(k) = self.buf[self.start..self.end]
                .iter()
                .position(|&b| b == b'\n')
            {
                let len = take(&mut line, &self.buf[self.start..self.start + k]);
                self.start += k + 1;
                if len > MAX_INPUT_LINE {
                    return Ok(Some(Err(len)));
                }
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(Some(Ok(line)));
            }
            let len = take(&mut line, &self.buf[self.start..self.end]);
            self.start = 0;
            self.end = 0;
            if self.eof {
                // A last line without a newline still counts.
                return Ok(match len {
                    0 => None,
                    n if n > MAX_INPUT_LINE => Some(Err(n)),
                    _ => Some(Ok(line)),
                });
            }
            // Wait until readable, looking at `stop` every 100 ms.
            loop {
                if stop.load(Relaxed) {
                    return Ok(None);
                }
                let mut pfd = libc::pollfd {
                    fd: self.fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: poll on one valid pollfd.
                let n = unsafe { libc::poll(&mut pfd, 1, 100) };
                if n > 0 {
                    break;
                }
                if n < 0 {
                    let e = std::io::Error::last_os_error();
                    if e.kind() != std::io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
            // SAFETY: read into our buffer, within its length.
            let n = unsafe { libc::read(self.fd(), self.buf.as_mut_ptr().cast(), self.buf.len()) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted
                    || e.kind() == std::io::ErrorKind::WouldBlock
                {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                self.eof = true;
            }
            self.end = n as usize;
        }
    }
}

/// Count the lines of a regular file on a thread of its own, then report the total.
pub fn count_lines_later(path: PathBuf, set: Box<dyn FnOnce(u64) + Send>) {
    let _ = std::thread::Builder::new()
        .name("toolpool-count".into())
        .spawn(move || {
            use std::io::Read;
            let Ok(mut f) = std::fs::File::open(&path) else {
                return;
            };
            let mut buf = vec![0u8; 256 * 1024];
            let (mut n, mut last) = (0u64, b'\n');
            loop {
                match f.read(&mut buf) {
                    Ok(0) => break,
                    Ok(k) => {
                        n += buf[..k].iter().filter(|&&b| b == b'\n').count() as u64;
                        last = buf[k - 1];
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => return,
                }
            }
            if last != b'\n' {
                n += 1;
            }
            set(n);
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(data: &[u8]) -> Vec<Result<Vec<u8>, usize>> {
        let path = std::env::temp_dir().join(format!(
            "toolpool-run-input-{}-{}",
            std::process::id(),
            data.len()
        ));
        std::fs::write(&path, data).unwrap();
        let mut input = Input::open(Some(&path)).unwrap();
        let stop = AtomicBool::new(false);
        let mut out = Vec::new();
        while let Some(l) = input.next_line(&stop).unwrap() {
            out.push(l);
        }
        std::fs::remove_file(&path).unwrap();
        out
    }

    #[test]
    fn input_lines() {
        let ok = |s: &str| Ok(s.as_bytes().to_vec());
        assert_eq!(
            lines_of(b"a\r\n\nb\nlast"),
            vec![ok("a"), ok(""), ok("b"), ok("last")]
        );
        assert_eq!(lines_of(b"x\n"), vec![ok("x")]);
        assert!(lines_of(b"").is_empty());
        // Lines across the 64 KiB read buffer stay whole.
        let long = "y".repeat(200_000);
        assert_eq!(
            lines_of(format!("{long}\nz\n").as_bytes()),
            vec![ok(&long), ok("z")]
        );
    }
}
