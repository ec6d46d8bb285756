//! Quoting for a remote POSIX shell: ssh joins its arguments into one line that the
//! remote login shell parses, so each argument is quoted to arrive intact.

/// `arg` quoted for a POSIX shell: wrapped in single quotes, each `'` written as `'\''`.
/// Everything else (spaces, `$`, `;`, `*`, backslashes, `!` outside an interactive
/// shell) is literal between single quotes. Newlines are refused earlier (a C-shell login
/// shell cannot take one in quotes), see [`crate::remote::RemoteSpec`].
pub fn sh_quote(arg: &str) -> String {
    let mut out = String::with_capacity(arg.len() + 2);
    out.push('\'');
    for ch in arg.chars() {
        if ch == '\'' {
            out.push_str(r#"'\''"#);
        } else {
            out.push(ch);
        }
    }
    out.push('\'');
    out
}

/// `argv` as one shell line, each argument quoted.
pub fn sh_line(argv: &[String]) -> String {
    argv.iter()
        .map(|a| sh_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each argument survives a real `sh` word split, whatever it holds.
    #[test]
    fn quoted_arguments_arrive_intact_through_sh() {
        let args: Vec<String> = [
            "plain",
            "two words",
            "it's",
            "$HOME `id` $(id)",
            "a;b && c | d > /tmp/x",
            "\\ back\\slash",
            "*?[a]",
            "",
            "'",
            "\"double\"",
            "!bang",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let line = format!("printf '%s\\0' {}", sh_line(&args));
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&line)
            .output()
            .expect("sh runs");
        let got: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .split_terminator('\0')
            .map(String::from)
            .collect();
        assert_eq!(got, args);
    }
}
