//! Byte-to-text decoding and clean-up shared by the parsers.

use anyhow::{bail, Result};
use encoding_rs::Encoding;

/// Decodes `bytes` as UTF-8 (a leading byte-order mark is dropped). When the bytes are not valid
/// UTF-8 the whole input is decoded with `fallback` instead. Returns the text and whether the
/// fallback was used.
pub(crate) fn decode_or(bytes: &[u8], fallback: &'static Encoding) -> (String, bool) {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_string(), false),
        Err(_) => {
            let (text, _had_errors) = fallback.decode_without_bom_handling(bytes);
            (text.into_owned(), true)
        }
    }
}

/// Decodes `bytes` as UTF-8 (a leading byte-order mark is dropped) or fails naming `what` and the
/// line of the first invalid byte.
pub(crate) fn decode_utf8_strict(bytes: &[u8], what: &str) -> Result<String> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok(s.to_string()),
        Err(e) => {
            let at = e.valid_up_to();
            let line = 1 + bytes[..at].iter().filter(|&&b| b == b'\n').count();
            bail!(
                "{what}: line {line}: not valid UTF-8 (byte 0x{:02x} at offset {at})",
                bytes[at]
            )
        }
    }
}

/// Turns `\r\n` and lone `\r` into `\n`.
pub(crate) fn normalize_newlines(s: &str) -> String {
    if !s.contains('\r') {
        return s.to_string();
    }
    s.replace("\r\n", "\n").replace('\r', "\n")
}

/// Removes terminal formatting and control characters, keeping `\n` and `\t`:
/// backspace overstrike (`_\bX`, `X\bX` → `X`), ANSI escape sequences (`ESC [ … letter`), a lone
/// `ESC`, other C0/C1 controls and zero-width no-break spaces (stray byte-order marks).
pub(crate) fn strip_controls(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' | '\t' => out.push(c),
            '\u{8}' => {
                // Overstrike: the character after the backspace replaces the one before it.
                if out.ends_with(|p: char| p != '\n') {
                    out.pop();
                }
            }
            '\u{1b}' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    // CSI: parameter and intermediate bytes, then one final byte in '@'..='~'.
                    for n in chars.by_ref() {
                        if ('@'..='~').contains(&n) {
                            break;
                        }
                    }
                }
            }
            '\u{feff}' => {}
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Number of alphabetic characters in `s`.
pub(crate) fn letter_count(s: &str) -> usize {
    s.chars().filter(|c| c.is_alphabetic()).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_falls_back_as_a_whole() {
        let (t, fb) = decode_or("Ã¤ ok".as_bytes(), encoding_rs::WINDOWS_1252);
        assert_eq!((t.as_str(), fb), ("Ã¤ ok", false));
        let (t, fb) = decode_or(b"caf\xe9", encoding_rs::WINDOWS_1252);
        assert_eq!((t.as_str(), fb), ("café", true));
        let (t, _) = decode_or(b"\xEF\xBB\xBFhi", encoding_rs::WINDOWS_1252);
        assert_eq!(t, "hi");
        // Mac Roman: 0xD5 is a right single quote, 0xD1 an em dash.
        let (t, _) = decode_or(b"don\xd5t \xd1 no", encoding_rs::MACINTOSH);
        assert_eq!(t, "don\u{2019}t \u{2014} no");
    }

    #[test]
    fn strict_utf8_names_the_line() {
        let err = decode_utf8_strict(b"ok\nok\nbad \xff\n", "f.tab")
            .unwrap_err()
            .to_string();
        assert!(err.contains("f.tab: line 3"), "{err}");
        assert!(err.contains("0xff"), "{err}");
    }

    #[test]
    fn newlines_and_controls() {
        assert_eq!(normalize_newlines("a\r\nb\rc\n"), "a\nb\nc\n");
        assert_eq!(strip_controls("_\u{8}H_\u{8}i X\u{8}X"), "Hi X");
        assert_eq!(
            strip_controls("\u{1b}[1mbold\u{1b}[0m a \u{1b} b"),
            "bold a  b"
        );
        assert_eq!(
            strip_controls("x\u{2}:\u{2} y\u{7}\u{85}\tz\n"),
            "x: y\tz\n"
        );
        assert_eq!(strip_controls("\u{8}start"), "start");
    }
}
