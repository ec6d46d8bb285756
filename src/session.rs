//! An interactive tool's session as the `prompt` framing sees it (one per incarnation):
//! what the tool drew on stdout and on stderr since the last request ([`Screen`]s), the
//! spec's patterns compiled once, and whether the tool waits at its prompt. The framing
//! itself (sending, waiting, interrupting) is `prompt`, above the incarnation; this module
//! holds the state and reads a reply out of it ([`Session::scan`]).

use crate::spec::{Prompt, DEFAULT_CONTINUATION};
use crate::term::Screen;
use regex::Regex;

/// The patterns of a [`Prompt`], compiled.
#[derive(Debug)]
pub(crate) struct Patterns {
    pub prompt: Regex,
    pub continuation: Regex,
    pub error: Option<Regex>,
}

impl Patterns {
    /// Compile `p`'s patterns (validated with the spec: a failure here names the key).
    pub fn new(p: &Prompt) -> Result<Patterns, String> {
        let re = |key: &str, s: &str| {
            Regex::new(s).map_err(|e| format!("protocol.{key}: not a regular expression: {e}"))
        };
        Ok(Patterns {
            prompt: re("prompt", &p.prompt)?,
            continuation: re(
                "continuation",
                p.continuation.as_deref().unwrap_or(DEFAULT_CONTINUATION),
            )?,
            error: p.error.as_deref().map(|e| re("error", e)).transpose()?,
        })
    }
}

/// What one stream holds once read against a request's input lines.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Scanned {
    /// The text without the prompts, continuation prompts and echoed input it held, and
    /// without the final prompt.
    pub text: String,
    /// Prompts passed before the final one (the tool read a line after each).
    pub prompts: usize,
    /// The text ends with a prompt: the tool waits for input.
    pub at_prompt: bool,
}

/// The session of one incarnation (see the module docs).
#[derive(Debug)]
pub(crate) struct Session {
    pub patterns: Patterns,
    /// stdout, and stderr, drawn since the request began.
    pub out: Screen,
    pub err: Screen,
    /// The tool is at its prompt: its next output belongs to the next request. False
    /// after a request that did not end at the prompt (a timeout, a cancel without a
    /// working interrupt): then the incarnation is replaced.
    pub synced: bool,
}

impl Session {
    /// A session for `p`, not yet at a prompt.
    pub fn new(p: &Prompt) -> Result<Session, String> {
        Ok(Session {
            patterns: Patterns::new(p)?,
            out: Screen::default(),
            err: Screen::default(),
            synced: false,
        })
    }

    /// A new request begins: what was drawn before goes, but the row the cursor is on
    /// stays (the prompt the tool drew, which a line editor redraws with the echo of the
    /// input).
    pub fn begin(&mut self) {
        self.out.keep_cursor_row();
        self.err.keep_cursor_row();
    }

    /// Read both streams against the request's input `lines` (see [`scan`]).
    pub fn scan(&self, lines: &[&str]) -> (Scanned, Scanned) {
        let need = lines.len().saturating_sub(1);
        (
            scan(&self.out.text_since_mark(), lines, &self.patterns, need),
            scan(&self.err.text_since_mark(), lines, &self.patterns, need),
        )
    }
}

/// Read `text` (one stream since a request was sent) against the request's input `lines`:
/// it ends at a prompt when its end is a match of the prompt pattern; before that, the
/// prompts the tool printed after each line but the last (prompts, or continuation
/// prompts, at most `need` of them, each at a line's start or right after another) and the
/// tool's own echo of an input line (a line equal to it, leading blanks aside, at the
/// start or right after a prompt) are taken out.
pub(crate) fn scan(text: &str, lines: &[&str], p: &Patterns, need: usize) -> Scanned {
    // The final prompt: a match that ends the text.
    let last = p
        .prompt
        .find_iter(text)
        .last()
        .filter(|m| m.end() == text.len());
    let body = last.map_or(text, |m| &text[..m.start()]);
    let mut out = String::with_capacity(body.len());
    let mut pos = 0;
    let mut prompts = 0;
    skip_echo(body, &mut pos, lines.first().copied());
    loop {
        let main = p.prompt.find_at(body, pos).map(|m| (m.start(), m.end()));
        let cont = (prompts < need)
            .then(|| continuation_at(body, pos, &p.continuation))
            .flatten();
        let next = match (main, cont) {
            (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
            (a, b) => a.or(b),
        };
        // A prompt that is not the last counts only while lines remain to be read.
        let Some((start, end)) = next.filter(|_| prompts < need) else {
            break;
        };
        out.push_str(&body[pos..start]);
        pos = end;
        prompts += 1;
        skip_echo(body, &mut pos, lines.get(prompts).copied());
    }
    out.push_str(&body[pos..]);
    Scanned {
        text: out,
        prompts,
        at_prompt: last.is_some(),
    }
}

/// The first continuation prompt at `pos` or at the start of a line after it.
fn continuation_at(body: &str, pos: usize, re: &Regex) -> Option<(usize, usize)> {
    re.find_iter(&body[pos..])
        .map(|m| (pos + m.start(), pos + m.end()))
        .find(|&(start, _)| start == pos || body[..start].ends_with('\n'))
}

/// Step over the tool's echo of input `line` at `pos`, if it is there: a line equal to it
/// (leading blanks aside: a line editor may indent it) that a line editor ended (a carriage
/// return and a line feed, `\r\n` in the text: what a program prints on the raw terminal
/// ends with `\n` alone, so output equal to the input is not taken for an echo).
fn skip_echo(body: &str, pos: &mut usize, line: Option<&str>) {
    let Some(line) = line else { return };
    let rest = &body[*pos..];
    let Some((first, _)) = rest.split_once('\n') else {
        return;
    };
    let Some(first) = first.strip_suffix('\r') else {
        return;
    };
    let want = line.trim();
    if !want.is_empty() && first.trim() == want {
        *pos += first.len() + 2;
    }
}

/// Text as a reply gives it: line ends as `\n`, the final ones dropped.
pub(crate) fn reply_text(text: &str) -> String {
    text.replace("\r\n", "\n")
        .trim_end_matches('\n')
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patterns(prompt: &str) -> Patterns {
        Patterns::new(&Prompt::new(prompt)).unwrap()
    }

    fn reply(text: &str, input: &str, prompt: &str) -> Scanned {
        let lines: Vec<&str> = input.split('\n').collect();
        scan(text, &lines, &patterns(prompt), lines.len() - 1)
    }

    #[test]
    fn a_reply_ends_at_the_prompt() {
        let s = reply("2\n>>> ", "1+1", ">>> ");
        assert_eq!((s.text.as_str(), s.at_prompt), ("2\n", true));
        let s = reply("2\n", "1+1", ">>> ");
        assert!(!s.at_prompt);
        // A prompt in the middle of the output is not the end.
        let s = reply(">>> is a prompt\n", "print('>>> is a prompt')", ">>> ");
        assert!(!s.at_prompt);
    }

    #[test]
    fn echo_continuation_and_intermediate_prompts_are_taken_out() {
        // python3 -i, no echo: a block of three lines.
        let s = reply("... ... >>> ", "def f(a):\n    return a*2\n", ">>> ");
        assert_eq!((s.text.as_str(), s.prompts, s.at_prompt), ("", 2, true));
        // Two statements: the prompt after the first is taken out.
        let s = reply(">>> 1\n>>> ", "x = 1\nprint(x)", ">>> ");
        assert_eq!((s.text.as_str(), s.prompts), ("1\n", 1));
        // node: the echo of the input (ended by CR LF), then the output.
        let s = reply("1+1\r\n2\n> ", "1+1", "> ");
        assert_eq!(s.text, "2\n");
        // Output equal to the input (ended by LF alone) is no echo.
        let s = reply("5\n>>> ", "5", ">>> ");
        assert_eq!(s.text, "5\n");
        // IPython redrawn: echo (auto-indented), continuation prompts, the output.
        let s = reply(
            "def f(a):\r\n   ...:         return a*2\r\n   ...:\r\n\nIn [4]: ",
            "def f(a):\n    return a*2\n",
            r"In \[\d+\]: ",
        );
        assert_eq!((s.text.trim_end_matches('\n'), s.at_prompt), ("", true));
        // Output that looks like a continuation prompt is kept when no line is left.
        let s = reply("... done\n>>> ", "print('... done')", ">>> ");
        assert_eq!(s.text, "... done\n");
    }
}
