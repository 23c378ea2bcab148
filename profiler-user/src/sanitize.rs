//! The one rule for text a target chose: process and thread names, function and file names (ELF symbols, Python
//! code objects). Such text ends up in log lines, crash reports, folded stacks and label values, where a newline
//! forges a log line or a report entry, an escape sequence rewrites a terminal, and a megabyte of name costs
//! every window. So it is made printable once, where it enters: control characters (and the Unicode controls that
//! reorder text) become visible escapes, and the length is bounded.
use std::borrow::Cow;

/// The most bytes a name keeps (Pyroscope's default label value limit is 2048; a C++ symbol rarely passes 1 KiB).
pub(crate) const MAX_NAME_BYTES: usize = 1024;

/// `raw` with control and bidirectional-override characters escaped (`\n`, `\u{1b}`) and cut to
/// [`MAX_NAME_BYTES`] (ending in `…` when cut). Borrowed when nothing needed changing.
pub(crate) fn name(raw: &str) -> Cow<'_, str> {
    if raw.len() <= MAX_NAME_BYTES && !raw.chars().any(needs_escape) {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len().min(MAX_NAME_BYTES + 8));
    for c in raw.chars() {
        let start = out.len();
        if needs_escape(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
        if out.len() > MAX_NAME_BYTES - '…'.len_utf8() {
            out.truncate(start);
            out.push('…');
            break;
        }
    }
    Cow::Owned(out)
}

/// [`name`], owned.
pub(crate) fn owned(raw: String) -> String {
    match name(&raw) {
        Cow::Borrowed(_) => raw,
        Cow::Owned(clean) => clean,
    }
}

fn needs_escape(c: char) -> bool {
    // Bidi embeddings, overrides and isolates (the "Trojan Source" characters), and the line/paragraph separators.
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_names_are_borrowed() {
        assert!(matches!(name("Server.run"), Cow::Borrowed("Server.run")));
        assert!(matches!(name("größe"), Cow::Borrowed(_)));
    }

    #[test]
    fn controls_become_visible_escapes() {
        assert_eq!(name("evil\nINFO forged line"), "evil\\nINFO forged line");
        assert_eq!(name("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(name("x\u{202e}y"), "x\\u{202e}y");
        assert_eq!(owned("tab\there".into()), "tab\\there");
    }

    #[test]
    fn long_names_are_cut_on_a_character() {
        let long = "é".repeat(2000);
        let cut = name(&long);
        assert!(cut.len() <= MAX_NAME_BYTES, "{}", cut.len());
        assert!(cut.ends_with('…'));
        let escapes = "\n".repeat(2000);
        assert!(name(&escapes).len() <= MAX_NAME_BYTES);
    }
}
