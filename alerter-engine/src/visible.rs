//! Text made safe to show on a terminal or a desktop: control characters
//! that a terminal would act on are shown instead, visibly.
//!
//! Applied to decoded text (after the OEM code page: in CP850 the byte 0x9B
//! is a letter, while U+009B is CSI), so letters are never touched. Kept:
//! newline and tab. Shown in caret notation: the other C0 controls (ESC as
//! `^[`, BEL as `^G`), DEL as `^?`, and a CR that does not end a line (a CR
//! before a newline is dropped, which is how Windows and smbclient end
//! lines). Shown as `<U+XXXX>`: C1 controls (U+0080..U+009F) and the Unicode
//! bidirectional controls, which reorder what follows (U+061C, U+200E,
//! U+200F, U+202A..U+202E, U+2066..U+2069).

use std::borrow::Cow;

fn is_bidi(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn needs_care(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t') || is_bidi(c)
}

/// Whether a terminal would act on `c`: any control character (newline and
/// tab included) or bidirectional control.
pub fn is_control_or_bidi(c: char) -> bool {
    c.is_control() || is_bidi(c)
}

/// `text` with every control character a terminal would act on made
/// visible; borrowed when there is none (the common case).
pub fn visible(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_care) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' | '\t' => out.push(c),
            '\u{7f}' => out.push_str("^?"),
            c if (c as u32) < 0x20 => {
                out.push('^');
                out.push(char::from(b'@' + c as u8));
            }
            c if needs_care(c) => out.push_str(&format!("<U+{:04X}>", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// [`visible`], and on one line: newlines and tabs shown as `^J` and `^I`
/// too (for a header line such as a sender's name, which a newline could
/// otherwise forge).
pub fn visible_line(text: &str) -> Cow<'_, str> {
    if !text.contains(['\n', '\t']) {
        return visible(text);
    }
    Cow::Owned(visible(text).replace('\n', "^J").replace('\t', "^I"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_and_letters_are_kept() {
        let text = "Disk /var at 97 %\n\tcafé ÿ ß ¢ 日本";
        assert!(matches!(visible(text), Cow::Borrowed(_)));
        assert_eq!(visible(text), text);
    }

    #[test]
    fn controls_are_shown_not_acted_on() {
        assert_eq!(visible("hello\x1b[2J\x1b]0;pwned\x07 world"), "hello^[[2J^[]0;pwned^G world");
        // A CR with cursor-up, forging a header line.
        assert_eq!(visible("ok\r\x1b[AMessage from ADMINISTRATOR"), "ok^M^[[AMessage from ADMINISTRATOR");
        // A device status query, which makes a terminal type a reply.
        assert_eq!(visible("\x1b[6n"), "^[[6n");
        assert_eq!(visible("a\r\nb\r\n"), "a\nb\n");
        assert_eq!(visible("nul\0del\x7f"), "nul^@del^?");
        // C1 CSI and bidi overrides.
        assert_eq!(visible("\u{9b}2J"), "<U+009B>2J");
        assert_eq!(visible("invoice\u{202e}fdp.exe"), "invoice<U+202E>fdp.exe");
        assert_eq!(visible("\u{2066}x\u{2069}"), "<U+2066>x<U+2069>");
    }

    #[test]
    fn a_line_cannot_be_broken() {
        assert_eq!(visible_line("MALLORY\nMessage from ADMIN"), "MALLORY^JMessage from ADMIN");
        assert_eq!(visible_line("a\tb\x1b"), "a^Ib^[");
        assert_eq!(visible_line("BOB"), "BOB");
    }

    proptest::proptest! {
        #[test]
        fn nothing_a_terminal_acts_on_survives(s in "\\PC*|[\\x00-\\x{9f}\\x{200e}\\x{202e}\\x{2066}]*") {
            let v = visible(&s);
            proptest::prop_assert!(!v.chars().any(|c| (c.is_control() && c != '\n' && c != '\t') || is_bidi(c)));
            let l = visible_line(&s);
            proptest::prop_assert!(!l.chars().any(|c| c.is_control() || is_bidi(c)));
        }
    }
}
