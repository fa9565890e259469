//! fortune(6) data files (Debian `fortunes*` packages, `usr/share/games/fortunes/...`): records
//! separated by a line holding only `%` (sometimes `% ` or `%\r`). Older releases ship some files
//! in legacy 8-bit encodings; the current ones are UTF-8 but some English files use backspace
//! overstrike (`_\bX`) for underlining, a Spanish one holds a raw ESC and two Russian ones have
//! CRLF line ends.

use crate::text::{decode_or, normalize_newlines, strip_controls};
use encoding_rs::Encoding;

/// Decodes a fortune file (UTF-8, else `legacy` for the whole file) and splits it into cleaned,
/// trimmed, non-empty records.
pub(crate) fn parse_fortunes(bytes: &[u8], legacy: &'static Encoding) -> Vec<String> {
    let (text, _) = decode_or(bytes, legacy);
    let text = normalize_newlines(&text);
    let mut out = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    let mut flush = |current: &mut Vec<&str>| {
        let record = strip_controls(&current.join("\n"));
        let record = record.trim();
        if !record.is_empty() {
            out.push(record.to_string());
        }
        current.clear();
    };
    for line in text.split('\n') {
        if line.trim_end() == "%" {
            flush(&mut current);
        } else {
            current.push(line);
        }
    }
    flush(&mut current);
    out
}

/// The 8-bit encoding older releases of each language's fortunes used.
pub(crate) fn legacy_encoding(lang: &str) -> &'static Encoding {
    match lang {
        "cs" | "pl" => encoding_rs::ISO_8859_2,
        "ru" => encoding_rs::KOI8_R,
        _ => encoding_rs::WINDOWS_1252,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_percent_lines() {
        let data = b"Man mu\xc3\x9f wissen.\n\t\t-- Abelard\n%\nZweite\nZeile\n% \n%\n\n%\nLetzte ohne Ende";
        let v = parse_fortunes(data, encoding_rs::WINDOWS_1252);
        assert_eq!(
            v,
            [
                "Man muß wissen.\n\t\t-- Abelard",
                "Zweite\nZeile",
                "Letzte ohne Ende"
            ]
        );
    }

    #[test]
    fn crlf_overstrike_and_legacy_encodings() {
        let v = parse_fortunes(
            b"A\r\nB\r\n%\r\n_\x08s_\x08o text\r\n",
            encoding_rs::WINDOWS_1252,
        );
        assert_eq!(v, ["A\nB", "so text"]);
        // ISO-8859-1 German, ISO-8859-2 Czech, KOI8-R Russian.
        let de = parse_fortunes(b"Gr\xfc\xdfe\n%\n", legacy_encoding("de"));
        assert_eq!(de, ["Grüße"]);
        let cs = parse_fortunes(b"\xb9koda\n", legacy_encoding("cs"));
        assert_eq!(cs, ["škoda"]);
        let ru = parse_fortunes(b"\xf0\xd2\xc9\xd7\xc5\xd4\n%", legacy_encoding("ru"));
        assert_eq!(ru, ["Привет"]);
        // A line starting with % but holding text is not a separator.
        let v = parse_fortunes("%Я тоже\n%\nx".as_bytes(), legacy_encoding("ru"));
        assert_eq!(v, ["%Я тоже", "x"]);
    }
}
