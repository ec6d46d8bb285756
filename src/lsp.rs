//! The `lsp` framing: the Language Server Protocol's base protocol, `Content-Length`
//! headers around JSON-RPC 2.0 bodies, both directions.
//!
//! It owns the cutting of stdout into messages ([`LspFilter`], a [`StdoutFilter`] in front
//! of the JSON-RPC [`Dispatcher`], which matches the bodies by id as in `jsonrpc`) and the
//! framing of what goes to stdin ([`frame`]).
//!
//! Header parsing is strict, and a broken stream is **resynchronised**, never a reason to
//! kill the instance (every case is a protocol error, counted and kept for status):
//! - a header section that is not `Name: value` lines ended by an empty line, or that has
//!   no `Content-Length`, two of them, or one that is not a decimal number: the bytes are
//!   dropped up to the next `Content-Length:` (where the next message starts);
//! - a header section longer than [`MAX_LSP_HEADER_BYTES`] without its empty line: the
//!   same;
//! - a `Content-Length` above `limits.max_line_bytes` (the body cap, 1 MiB by default): the
//!   body is read and dropped as it arrives (memory stays bounded), the stream stays in step;
//! - a body that is not a JSON-RPC 2.0 object: dropped as in `jsonrpc`.
//!
//! A request whose reply was lost in a broken stretch times out, and its late reply (if
//! any) is dropped by id, as in `jsonrpc`.

use crate::linebuf::LineBuf;
use crate::reader::StdoutFilter;
use crate::rpc::Dispatcher;
use parking_lot::Mutex;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// Longest header section (all header lines and the empty line) of one message.
pub const MAX_LSP_HEADER_BYTES: usize = 8 * 1024;

const CONTENT_LENGTH: &[u8] = b"content-length:";

/// `body` framed for the tool's stdin: `Content-Length: N\r\n\r\n` then the body.
pub(crate) fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = format!("Content-Length: {}\r\n\r\n", body.len()).into_bytes();
    out.extend_from_slice(body);
    out
}

/// Where the reader is in a broken stream.
#[derive(Default)]
struct Sync {
    /// Body bytes still to drop (an over-long message).
    skip: usize,
    /// Dropping bytes until the next `Content-Length:`.
    resync: bool,
}

/// Cuts a language server's stdout into message bodies and hands them to the JSON-RPC
/// dispatcher.
pub(crate) struct LspFilter {
    rpc: Arc<Dispatcher>,
    sync: Mutex<Sync>,
}

impl LspFilter {
    /// A filter in front of `rpc`.
    pub fn new(rpc: Arc<Dispatcher>) -> LspFilter {
        LspFilter {
            rpc,
            sync: Mutex::new(Sync::default()),
        }
    }
}

/// What a complete header section says.
enum Header {
    /// The body length.
    Length(usize),
    /// Not a valid header section: why.
    Bad(String),
}

/// Parse the header section `h` (without its final `\r\n\r\n`).
fn parse_header(h: &[u8]) -> Header {
    let mut length = None;
    for line in h.split(|&b| b == b'\n') {
        let Some(line) = line.strip_suffix(b"\r") else {
            return Header::Bad("a header line does not end with \\r\\n".into());
        };
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Header::Bad(format!(
                "header line '{}' is not 'Name: value'",
                String::from_utf8_lossy(line)
            ));
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.is_empty() || !name.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-') {
            return Header::Bad(format!(
                "header name '{}' is not a token",
                String::from_utf8_lossy(name)
            ));
        }
        if !name.eq_ignore_ascii_case(b"content-length") {
            continue; // Content-Type and others: allowed, not needed
        }
        if length.is_some() {
            return Header::Bad("two Content-Length headers".into());
        }
        let v = value.trim_ascii();
        if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
            return Header::Bad(format!(
                "Content-Length '{}' is not a decimal number",
                String::from_utf8_lossy(v)
            ));
        }
        // At most 19 digits: fits in u64.
        let n: u64 = std::str::from_utf8(v).map_or(0, |s| s.parse().unwrap_or(0));
        length = Some(usize::try_from(n).unwrap_or(usize::MAX));
    }
    match length {
        Some(n) => Header::Length(n),
        None => Header::Bad("no Content-Length header".into()),
    }
}

/// Position of the next `Content-Length:` (any case) in `b`.
fn find_content_length(b: &[u8]) -> Option<usize> {
    b.windows(CONTENT_LENGTH.len())
        .position(|w| w.eq_ignore_ascii_case(CONTENT_LENGTH))
}

impl StdoutFilter for LspFilter {
    fn filter(&self, body: Vec<u8>) -> Option<Vec<u8>> {
        self.rpc.filter(body)
    }

    fn closed(&self) {
        self.rpc.closed()
    }

    fn next_message(
        &self,
        buf: &mut LineBuf,
        max: usize,
        _split: &AtomicU64,
    ) -> Option<(Vec<u8>, bool)> {
        let mut sync = self.sync.lock();
        loop {
            let avail = buf.pending();
            if avail.is_empty() {
                return None;
            }
            if sync.skip > 0 {
                let n = sync.skip.min(avail.len());
                buf.consume(n);
                sync.skip -= n;
                continue;
            }
            if sync.resync {
                match find_content_length(avail) {
                    Some(at) => {
                        buf.consume(at);
                        sync.resync = false;
                    }
                    None => {
                        // Keep what may be the start of a split "Content-Length:".
                        let keep = (CONTENT_LENGTH.len() - 1).min(avail.len());
                        buf.consume(avail.len() - keep);
                        return None;
                    }
                }
                continue;
            }
            let window = &avail[..avail.len().min(MAX_LSP_HEADER_BYTES)];
            let Some(end) = window.windows(4).position(|w| w == b"\r\n\r\n") else {
                if avail.len() >= MAX_LSP_HEADER_BYTES {
                    let why = format!(
                        "header section longer than {MAX_LSP_HEADER_BYTES} bytes (MAX_LSP_HEADER_BYTES); resynchronising at the next Content-Length"
                    );
                    self.rpc.record_bad(window, &why);
                    buf.consume(1);
                    sync.resync = true;
                    continue;
                }
                return None; // the header section is not complete yet
            };
            // The header lines, each ending in \r\n (the split keeps the last \r).
            let header = &avail[..end + 1];
            match parse_header(header) {
                Header::Bad(why) => {
                    self.rpc.record_bad(
                        header,
                        &format!("{why}; resynchronising at the next Content-Length"),
                    );
                    buf.consume(1);
                    sync.resync = true;
                }
                Header::Length(n) if n > max => {
                    self.rpc.record_bad(
                        header,
                        &format!(
                            "Content-Length {n} exceeds the body cap of {max} bytes (limits.max_line_bytes); body skipped"
                        ),
                    );
                    buf.consume(end + 4);
                    sync.skip = n;
                }
                Header::Length(n) => {
                    let start = end + 4;
                    if avail.len() - start < n {
                        return None; // the body is not complete yet
                    }
                    let body = avail[start..start + n].to_vec();
                    buf.consume(start + n);
                    return Some((body, false));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::atomic::Ordering::Relaxed;

    /// Feed `chunks` through a real pipe into a LineBuf and collect the bodies.
    fn cut(chunks: &[&[u8]], max: usize) -> (Vec<Vec<u8>>, Arc<Dispatcher>) {
        let rpc = Arc::new(Dispatcher::new(0));
        let f = LspFilter::new(Arc::clone(&rpc));
        let mut buf = LineBuf::default();
        let split = AtomicU64::new(0);
        let mut out = Vec::new();
        for c in chunks {
            let (r, mut w) = std::io::pipe().unwrap();
            w.write_all(c).unwrap();
            drop(w);
            let file = std::fs::File::from(std::os::fd::OwnedFd::from(r));
            while buf.fill_from(&file).unwrap() > 0 {}
            while let Some((m, _)) = f.next_message(&mut buf, max, &split) {
                out.push(m);
            }
        }
        (out, rpc)
    }

    #[test]
    fn frames_and_cuts_messages_split_anywhere() {
        let mut stream = frame(br#"{"a":1}"#);
        stream.extend(b"Content-Type: application/vscode-jsonrpc; charset=utf-8\r\ncontent-length: 2\r\n\r\n[]");
        for at in 0..stream.len() {
            let (out, rpc) = cut(&[&stream[..at], &stream[at..]], 1024);
            assert_eq!(
                out,
                vec![br#"{"a":1}"#.to_vec(), b"[]".to_vec()],
                "split at {at}"
            );
            assert_eq!(rpc.protocol_errors.load(Relaxed), 0);
        }
    }

    #[test]
    fn bad_headers_are_counted_and_the_stream_resynchronised() {
        let good = frame(br#"{"ok":true}"#);
        let mut huge = b"Content-Length: 100\r\n\r\n".to_vec();
        huge.extend([b'z'; 100]);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                b"Content-Type: x\r\n\r\n{}".to_vec(),
                "no Content-Length header",
            ),
            (
                b"Content-Length: abc\r\n\r\n".to_vec(),
                "is not a decimal number",
            ),
            (
                // Resynchronised at the second header, which frames `{}`.
                b"Content-Length: 2\r\nContent-Length: 2\r\n\r\n{}".to_vec(),
                "two Content-Length headers",
            ),
            (b"hello world\r\n".to_vec(), "is not 'Name: value'"),
            (b"a log line\n".to_vec(), "does not end with"),
            (huge, "exceeds the body cap of 64 bytes"),
            (
                vec![b'x'; MAX_LSP_HEADER_BYTES + 10],
                "longer than 8192 bytes",
            ),
        ];
        for (bad, why) in cases {
            let mut s = bad;
            s.extend(&good);
            let (mut out, rpc) = cut(&[&s], 64);
            if why.starts_with("two") {
                assert_eq!(out.remove(0), b"{}", "{why}");
            }
            assert_eq!(out, vec![br#"{"ok":true}"#.to_vec()], "{why}");
            assert_eq!(rpc.protocol_errors.load(Relaxed), 1, "{why}");
            let kept = rpc.bad_lines().join("\n");
            assert!(kept.contains(why), "{why}: {kept}");
        }
    }
}
