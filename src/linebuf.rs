//! The line-splitting rule shared by stdout, stderr and the dry-run responder: a buffer
//! of bytes read from a pipe and not yet split into lines ([`LineBuf`]). A line ends at
//! `\n` (not included); a line longer than the limit is cut into pieces of that size
//! (counted); at EOF the unterminated rest is a last line.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Bytes asked of the kernel per `read`.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Bytes read but not yet split into lines (`buf[start..]`), and the splitting rule
/// shared by stdout and stderr: a line ends at `\n` (not included); a line longer than
/// `max` is cut into pieces of `max` bytes; at EOF the unterminated rest is a last line.
#[derive(Default)]
pub(crate) struct LineBuf {
    buf: Vec<u8>,
    start: usize,
}

impl LineBuf {
    /// One `read` of up to 64 KiB from `src`; `Ok(0)` at EOF. The kernel writes into
    /// the buffer's spare capacity directly (nothing is zeroed first), so only the pages a
    /// read fills become resident: an idle instance holds a page, not 64 KiB.
    pub fn fill_from(&mut self, src: &File) -> std::io::Result<usize> {
        if self.start > 0 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.reserve(READ_CHUNK_BYTES);
        let spare = self.buf.spare_capacity_mut();
        let want = spare.len().min(READ_CHUNK_BYTES);
        // SAFETY: read(2) writes at most `want` bytes into the spare capacity; exactly
        // the `n` bytes it reports are then marked initialised.
        let n = unsafe { libc::read(src.as_raw_fd(), spare.as_mut_ptr().cast(), want) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: see above; `n <= want <= spare.len()`.
        unsafe { self.buf.set_len(self.buf.len() + n as usize) };
        Ok(n as usize)
    }

    /// The next complete line or piece, if the buffer holds one.
    pub fn next_line(&mut self, max: usize, split: &AtomicU64) -> Option<Vec<u8>> {
        self.next_piece(max, split).map(|(line, _)| line)
    }

    /// [`LineBuf::next_line`], and whether it is a piece of a cut line that goes on in
    /// the next one.
    pub fn next_piece(&mut self, max: usize, split: &AtomicU64) -> Option<(Vec<u8>, bool)> {
        let avail = &self.buf[self.start..];
        let window = &avail[..avail.len().min(max + 1)];
        let (line, used) = match window.iter().position(|&b| b == b'\n') {
            Some(pos) if pos <= max => ((avail[..pos].to_vec(), false), pos + 1),
            _ if avail.len() >= max => {
                split.fetch_add(1, Relaxed);
                ((avail[..max].to_vec(), true), max)
            }
            _ => return None,
        };
        self.start += used;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        Some(line)
    }

    /// The bytes read but not yet taken.
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Take (drop) the first `n` pending bytes (at most all of them).
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.buf.len());
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }

    /// At EOF: the unterminated rest, if any.
    pub fn rest(&mut self) -> Option<Vec<u8>> {
        let rest = (self.start < self.buf.len()).then(|| self.buf[self.start..].to_vec());
        self.buf.clear();
        self.start = 0;
        rest
    }
}
