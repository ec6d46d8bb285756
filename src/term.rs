//! What a tool drew on a terminal, as text: the small terminal the `prompt` framing reads
//! a tool's output through.
//!
//! Interactive tools write for a screen: colours, title changes, a line editor that redraws
//! the input line with cursor moves, bracketed-paste switches, carriage returns. A reply
//! must be the text a person would read, so the bytes go through [`Screen`]: rows of
//! characters and a cursor, moved by the control characters and escape sequences of an
//! ANSI/xterm terminal (the cursor moves, erasures, insertions and deletions a line editor
//! uses); everything else (colours and other SGR attributes, modes such as bracketed
//! paste, window titles and other OSC strings, charset switches, queries) is consumed and
//! dropped. A line feed also
//! returns the carriage (tools on a raw terminal may write `\n` alone). There is no
//! wrapping (the tool's terminal is 1000 columns wide) and no scroll limit: rows are kept
//! from the start of the request. A leaf module.

/// Rows a cursor-addressing sequence (`CSI row;col H`) counts from: the rows of the tool's
/// terminal (`spawn::PTY_ROWS`), the last ones of the text.
const SCREEN_ROWS: usize = 50;
/// Longest escape sequence kept while it is parsed; a longer one is dropped.
const MAX_SEQUENCE: usize = 64;

/// The escape parser's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Parse {
    Ground,
    /// After ESC.
    Esc,
    /// After ESC and an intermediate byte (a charset designation): one byte more.
    EscOne,
    /// Inside `ESC [` (a control sequence).
    Csi,
    /// Inside `ESC ]` (an operating-system command), until BEL or ST.
    Osc,
    /// ESC inside an OSC string (the start of ST).
    OscEsc,
}

/// A terminal's text: rows, a cursor, and the escape parser (see the module docs).
#[derive(Debug)]
pub(crate) struct Screen {
    rows: Vec<Vec<char>>,
    /// Rows that a carriage return and a line feed ended (a line editor's Enter; a
    /// program's output on a raw terminal ends its lines with a line feed alone).
    crlf: Vec<bool>,
    /// The last byte was a carriage return.
    after_cr: bool,
    row: usize,
    col: usize,
    saved: (usize, usize),
    parse: Parse,
    seq: Vec<u8>,
    /// Bytes of a UTF-8 character split between two writes.
    utf8: Vec<u8>,
    /// Where [`Screen::text_since_mark`] starts: a column of the first row.
    mark: usize,
}

impl Default for Screen {
    fn default() -> Screen {
        Screen {
            rows: vec![Vec::new()],
            crlf: vec![false],
            after_cr: false,
            row: 0,
            col: 0,
            saved: (0, 0),
            parse: Parse::Ground,
            seq: Vec::new(),
            utf8: Vec::new(),
            mark: 0,
        }
    }
}

impl Screen {
    /// Draw `bytes`.
    pub fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.byte(b);
        }
    }

    /// The text drawn: the rows joined by `\n` (`\r\n` after a row that a carriage return
    /// and a line feed ended: see [`Screen::crlf`]), trailing blanks cut from every row but
    /// the cursor's (a prompt may end in a space).
    pub fn text(&self) -> String {
        let mut s = String::new();
        for (i, r) in self.rows.iter().enumerate() {
            if i > 0 {
                if self.crlf.get(i - 1) == Some(&true) {
                    s.push('\r');
                }
                s.push('\n');
            }
            let line: String = r.iter().collect();
            if i == self.row {
                s.push_str(&line);
            } else {
                s.push_str(line.trim_end_matches(' '));
            }
        }
        s
    }

    /// Forget what was drawn (the parser's state and the modes stay).
    pub fn clear(&mut self) {
        self.rows = vec![Vec::new()];
        self.crlf = vec![false];
        self.row = 0;
        self.col = 0;
        self.saved = (0, 0);
        self.mark = 0;
    }

    /// Forget every row but the cursor's, and mark the cursor: what is drawn from here on
    /// is [`Screen::text_since_mark`] (a line editor that redraws the row rewrites what is
    /// left of the mark).
    pub fn keep_cursor_row(&mut self) {
        self.ensure_row();
        let row = std::mem::take(&mut self.rows[self.row]);
        self.rows = vec![row];
        self.crlf = vec![false];
        self.row = 0;
        self.saved = (0, 0);
        self.mark = self.col;
    }

    /// The text drawn from the mark on (see [`Screen::text`]).
    pub fn text_since_mark(&self) -> String {
        let text = self.text();
        let first = text.split('\n').next().unwrap_or("");
        let skip: usize = first.chars().take(self.mark).map(char::len_utf8).sum();
        text[skip..].to_string()
    }

    /// The text of the cursor's row (where a prompt that waits for input is).
    pub fn cursor_row(&self) -> String {
        self.rows
            .get(self.row)
            .map_or(String::new(), |r| r.iter().collect())
    }

    /// Characters drawn so far (a bound on the text's size).
    pub fn len(&self) -> usize {
        self.rows.iter().map(Vec::len).sum::<usize>() + self.rows.len()
    }

    fn byte(&mut self, b: u8) {
        match self.parse {
            Parse::Ground => self.ground(b),
            Parse::Esc => self.escape(b),
            Parse::EscOne => self.parse = Parse::Ground,
            Parse::Csi => {
                if (0x40..=0x7e).contains(&b) {
                    self.csi(b);
                    self.parse = Parse::Ground;
                } else if self.seq.len() < MAX_SEQUENCE {
                    self.seq.push(b);
                } else {
                    self.parse = Parse::Ground;
                }
            }
            Parse::Osc => match b {
                0x07 => self.parse = Parse::Ground,
                0x1b => self.parse = Parse::OscEsc,
                _ => {}
            },
            Parse::OscEsc => {
                self.parse = if b == b'\\' {
                    Parse::Ground
                } else {
                    Parse::Osc
                }
            }
        }
    }

    fn ground(&mut self, b: u8) {
        let after_cr = std::mem::replace(&mut self.after_cr, b == b'\r');
        if !self.utf8.is_empty() || b >= 0x80 {
            self.utf8.push(b);
            match std::str::from_utf8(&self.utf8) {
                Ok(s) => {
                    let c = s.chars().next().unwrap_or('\u{FFFD}');
                    self.utf8.clear();
                    self.put(c);
                }
                Err(e) if e.error_len().is_some() || self.utf8.len() >= 4 => {
                    self.utf8.clear();
                    self.put('\u{FFFD}');
                }
                Err(_) => {} // more bytes of this character to come
            }
            return;
        }
        match b {
            0x1b => {
                self.parse = Parse::Esc;
                self.seq.clear();
            }
            b'\r' => self.col = 0,
            b'\n' | 0x0b | 0x0c => {
                self.ensure_row();
                self.crlf[self.row] = after_cr;
                self.down(1);
                self.col = 0;
            }
            0x08 => self.col = self.col.saturating_sub(1),
            b'\t' => self.put('\t'),
            0x00..=0x1f | 0x7f => {} // BEL and the other controls draw nothing
            _ => self.put(b as char),
        }
    }

    fn escape(&mut self, b: u8) {
        self.parse = Parse::Ground;
        match b {
            b'[' => self.parse = Parse::Csi,
            b']' => self.parse = Parse::Osc,
            b'(' | b')' | b'*' | b'+' | b'#' | b'%' => self.parse = Parse::EscOne,
            b'7' => self.saved = (self.row, self.col),
            b'8' => (self.row, self.col) = self.saved,
            b'M' => self.row = self.row.saturating_sub(1),
            b'D' => self.down(1),
            b'E' => {
                self.down(1);
                self.col = 0;
            }
            b'c' => self.clear(),
            _ => {}
        }
    }

    /// A complete control sequence: `self.seq` holds its parameters, `fin` its final byte.
    fn csi(&mut self, fin: u8) {
        let params: Vec<usize> = self
            .seq
            .split(|&c| c == b';')
            .map(|p| {
                p.iter()
                    .filter(|c| c.is_ascii_digit())
                    .fold(0usize, |n, c| {
                        n.saturating_mul(10).saturating_add((c - b'0') as usize)
                    })
            })
            .collect();
        let p = |i: usize| params.get(i).copied().unwrap_or(0);
        let n = p(0).max(1);
        match fin {
            b'A' => self.row = self.row.saturating_sub(n),
            b'B' | b'e' => self.down(n),
            b'C' | b'a' => self.col = self.col.saturating_add(n),
            b'D' => self.col = self.col.saturating_sub(n),
            b'E' => {
                self.down(n);
                self.col = 0;
            }
            b'F' => {
                self.row = self.row.saturating_sub(n);
                self.col = 0;
            }
            b'G' | b'`' => self.col = n - 1,
            b'H' | b'f' => {
                self.row = self.screen_top() + p(0).max(1) - 1;
                self.ensure_row();
                self.col = p(1).max(1) - 1;
            }
            b'd' => {
                self.row = self.screen_top() + n - 1;
                self.ensure_row();
            }
            b'J' => match p(0) {
                0 => {
                    let col = self.col;
                    self.line().truncate(col);
                    self.rows.truncate(self.row + 1);
                    self.crlf.truncate(self.row + 1);
                }
                2 | 3 => self.clear(),
                _ => {}
            },
            b'K' => {
                let col = self.col;
                let line = self.line();
                match p(0) {
                    0 => line.truncate(col),
                    1 => line.iter_mut().take(col + 1).for_each(|c| *c = ' '),
                    _ => line.clear(),
                }
            }
            b'P' => {
                let col = self.col;
                let line = self.line();
                if col < line.len() {
                    let end = (col + n).min(line.len());
                    line.drain(col..end);
                }
            }
            b'@' => {
                let col = self.col;
                let line = self.line();
                if col <= line.len() {
                    line.splice(col..col, std::iter::repeat_n(' ', n));
                }
            }
            b'X' => {
                let col = self.col;
                let line = self.line();
                line.iter_mut().skip(col).take(n).for_each(|c| *c = ' ');
            }
            b's' => self.saved = (self.row, self.col),
            b'u' => (self.row, self.col) = self.saved,
            _ => {} // colours, modes, queries, scroll regions: nothing to draw
        }
    }

    /// The first row a cursor address counts from.
    fn screen_top(&self) -> usize {
        self.rows.len().saturating_sub(SCREEN_ROWS)
    }

    fn down(&mut self, n: usize) {
        self.row = self.row.saturating_add(n);
        self.ensure_row();
    }

    fn ensure_row(&mut self) {
        while self.rows.len() <= self.row {
            self.rows.push(Vec::new());
            self.crlf.push(false);
        }
    }

    fn line(&mut self) -> &mut Vec<char> {
        self.ensure_row();
        &mut self.rows[self.row]
    }

    fn put(&mut self, c: char) {
        let col = self.col;
        let line = self.line();
        while line.len() < col {
            line.push(' ');
        }
        if col < line.len() {
            line[col] = c;
        } else {
            line.push(c);
        }
        self.col += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(bytes: &[u8]) -> String {
        let mut s = Screen::default();
        s.feed(bytes);
        s.text()
    }

    #[test]
    fn plain_text_and_line_ends() {
        // A row ended by CR LF (a line editor's Enter) keeps the CR in the text.
        assert_eq!(text(b"a\nb\r\nc"), "a\nb\r\nc");
        assert_eq!(text(b"abc\rX"), "Xbc");
        assert_eq!(text(b"ab\x08c"), "ac");
        assert_eq!(text("é€\n".as_bytes()), "é€\n");
    }

    #[test]
    fn colours_titles_and_modes_draw_nothing() {
        assert_eq!(
            text(b"\x1b[0;32mIn [\x1b[0;92;1m1\x1b[0;32m]: \x1b[0m"),
            "In [1]: "
        );
        assert_eq!(text(b"\x1b]0;IPython: /tmp\x07x"), "x");
        assert_eq!(text(b"\x1b]2;title\x1b\\y"), "y");
        assert_eq!(text(b"\x1b(Bz\x1b[?25l\x1b[?7h"), "z");
    }

    #[test]
    fn a_line_editor_redraw_leaves_the_final_line() {
        // prompt_toolkit: draw the prompt and input, move back, erase, draw again.
        let mut s = Screen::default();
        s.feed(b"\x1b[0;32mIn [1]: \x1b[8D\x1b[8C");
        s.feed(
            b"\x1b[?25l\x1b[8D\x1b[0m\x1b[JIn [1]: 1\x1b[0m+\x1b[0;32m1\x1b[11D\x1b[0m\r\n\x1b[J",
        );
        s.feed(b"Out[1]: 2\n\n");
        assert_eq!(s.text(), "In [1]: 1+1\r\nOut[1]: 2\n\n");
        // Up two rows and draw a block again over itself.
        let mut s = Screen::default();
        s.feed(b"In [3]: def f(a):\r\n   ...:     return a\r\n   ...: ");
        s.feed(
            b"\x1b[2A\x1b[16D\x1b[JIn [3]: def f(a):\r\n   ...:     return a\r\n   ...: \r\n\x1b[J",
        );
        assert_eq!(
            s.text(),
            "In [3]: def f(a):\r\n   ...:     return a\r\n   ...:\r\n"
        );
    }

    #[test]
    fn erasing_and_inserting() {
        assert_eq!(text(b"hello\x1b[3D\x1b[K"), "he");
        assert_eq!(text(b"hello\x1b[1G\x1b[2P"), "llo");
        assert_eq!(text(b"held\x1b[2D\x1b[1@l"), "helld");
        // Bracketed paste and other private modes draw nothing.
        assert_eq!(text(b"\x1b[?2004ha\x1b[?2004l"), "a");
    }
}

#[cfg(test)]
mod mark_tests {
    use super::*;

    #[test]
    fn the_text_since_the_mark_leaves_the_prompt_out() {
        let mut s = Screen::default();
        s.feed(b"banner\nIn [1]: ");
        s.keep_cursor_row();
        s.feed(b"\x1b[8D\x1b[JIn [1]: 1+1\r\nOut[1]: 2\n");
        assert_eq!(s.text_since_mark(), "1+1\r\nOut[1]: 2\n");
        let mut s = Screen::default();
        s.feed(b">>> ");
        s.keep_cursor_row();
        s.feed(b"2\n>>> ");
        assert_eq!(s.text_since_mark(), "2\n>>> ");
    }
}
