//! `movieReviewSnippets_GroundTruth.txt` from the VADER sdist (`hutto_ICWSM_2014.tar.gz`):
//! UTF-8, CRLF line ends, one snippet per line as `ID <TAB> MEAN-RATING <TAB> TEXT`, the mean of
//! ≥ 20 human ratings on −4..+4. The text is not quoted and may itself hold tabs.

use crate::text::{decode_utf8_strict, normalize_newlines};
use anyhow::{bail, Result};

/// One rated snippet.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RatedSnippet {
    pub rating: f64,
    pub text: String,
}

/// Parses a VADER `*_GroundTruth.txt` file; `what` names it in errors.
pub(crate) fn parse_ground_truth(bytes: &[u8], what: &str) -> Result<Vec<RatedSnippet>> {
    let text = normalize_newlines(&decode_utf8_strict(bytes, what)?);
    let mut out = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut parts = line.splitn(3, '\t');
        let (Some(id), Some(rating), Some(snippet)) = (parts.next(), parts.next(), parts.next())
        else {
            bail!(
                "{what}: line {}: expected ID<TAB>RATING<TAB>TEXT, found {:?}",
                i + 1,
                truncate_for_error(line)
            );
        };
        if id.trim().parse::<u64>().is_err() {
            bail!("{what}: line {}: ID {id:?} is not a number", i + 1);
        }
        let rating: f64 = match rating.trim().parse() {
            Ok(r) if f64::is_finite(r) => r,
            _ => bail!("{what}: line {}: rating {rating:?} is not a number", i + 1),
        };
        out.push(RatedSnippet {
            rating,
            text: snippet.to_string(),
        });
    }
    Ok(out)
}

pub(crate) fn truncate_for_error(s: &str) -> String {
    if s.chars().count() <= 80 {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(80).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_real_layout() {
        let data = "1\t2.26666666667\tThe Rock is destined to be ''Conan''.\r\n\
3\t-0.6\tEffective but too tepid biopic\r\n\
233\t2.9375\tJirí Hubac's script\twith a tab.";
        let v = parse_ground_truth(data.as_bytes(), "m.txt").unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[1].rating, -0.6);
        assert_eq!(v[1].text, "Effective but too tepid biopic");
        assert_eq!(v[2].text, "Jirí Hubac's script\twith a tab.");
    }

    #[test]
    fn errors_name_the_line() {
        let err = parse_ground_truth(b"1\t0.5\tok\n2\tnope\ttext\n", "m.txt")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("m.txt: line 2") && err.contains("rating"),
            "{err}"
        );
        let err = parse_ground_truth(b"1\t0.5\n", "m.txt")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 1") && err.contains("ID<TAB>"), "{err}");
        assert!(parse_ground_truth(b"x\t0.5\tt\n", "m.txt").is_err());
        assert!(parse_ground_truth(b"1\tNaN\tt\n", "m.txt").is_err());
    }
}
