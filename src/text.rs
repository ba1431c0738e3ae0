//! Text that came from users (reasons, comments, tickets, names) shown somewhere else: which
//! characters are unsafe to show, and how such text is made safe and short. Pure: no I/O.
//!
//! One home for the rule: SSH key comments refuse these characters, notifications replace them.

/// Control characters, and the invisible ones that can make a text read differently than it is
/// (bidirectional overrides, zero-width characters, the byte order mark).
pub fn is_control_or_invisible(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

/// `text` made safe to show on one line anywhere (a chat message, a terminal, a log viewer),
/// then capped at `max_bytes` of UTF-8 before [`CUT_MARK`].
///
/// Line breaks and tabs (`\n`, `\r`, `\t`, U+2028, U+2029) become a space, so the text cannot
/// start a line of its own that looks like the sender's. Every other control or invisible
/// character (ESC and so every terminal escape sequence, NUL, BEL, the C1 range, bidirectional
/// overrides, zero-width characters) becomes U+FFFD, so what was removed stays visible. A text
/// longer than `max_bytes` is cut on a character boundary and ends with [`CUT_MARK`].
pub fn one_line(text: &str, max_bytes: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_bytes) + CUT_MARK.len());
    for c in text.chars() {
        let shown = match c {
            '\n' | '\r' | '\t' | '\u{2028}' | '\u{2029}' => ' ',
            c if is_control_or_invisible(c) => char::REPLACEMENT_CHARACTER,
            c => c,
        };
        if out.len() + shown.len_utf8() > max_bytes {
            out.push_str(CUT_MARK);
            return out;
        }
        out.push(shown);
    }
    out
}

/// What ends a text [`one_line`] cut short.
pub const CUT_MARK: &str = "… [cut]";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_line_breaks_cannot_survive() {
        let shown = one_line(
            "ok\u{1b}[2J\u{1b}]0;title\u{7}\nforged line\r\u{9b}31m",
            1024,
        );
        assert_eq!(
            shown,
            "ok\u{FFFD}[2J\u{FFFD}]0;title\u{FFFD} forged line \u{FFFD}31m"
        );
        assert!(!shown.chars().any(char::is_control));
        assert_eq!(
            one_line("a\u{202E}b\u{200B}c\u{2028}d", 64),
            "a\u{FFFD}b\u{FFFD}c d"
        );
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary_and_marked() {
        let text = "é".repeat(600); // 1200 bytes
        let shown = one_line(&text, 1024);
        assert!(shown.ends_with(CUT_MARK));
        let kept = shown.strip_suffix(CUT_MARK).unwrap();
        assert_eq!(kept.len(), 1024);
        assert_eq!(kept.chars().count(), 512);
        // An odd limit falls back to the previous boundary.
        let kept = one_line(&text, 1023);
        assert_eq!(kept.strip_suffix(CUT_MARK).unwrap().len(), 1022);
        // Exactly at the limit: kept whole, unmarked.
        assert_eq!(one_line(&"a".repeat(1024), 1024), "a".repeat(1024));
    }

    #[test]
    fn invisible_characters_are_recognised() {
        for c in [
            '\u{0}', '\u{1b}', '\u{7f}', '\u{85}', '\u{200D}', '\u{202E}', '\u{2066}', '\u{FEFF}',
        ] {
            assert!(is_control_or_invisible(c), "{:?}", c);
        }
        for c in ['a', 'é', ' ', '€', '中'] {
            assert!(!is_control_or_invisible(c), "{:?}", c);
        }
    }
}
