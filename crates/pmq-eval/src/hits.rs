//! Which test examples a model got right, stored compactly so that two models can be compared
//! example by example (paired bootstrap) long after they were evaluated.
//!
//! Encoding: bit `j` of the bit string is example `j` (1 = correct), packed little-endian into
//! bytes (example 0 is the lowest bit of byte 0), written as lowercase hexadecimal, two digits
//! per byte. 1,000 examples take 250 characters.

use anyhow::{bail, Result};

/// The hexadecimal bit string of `correct`.
pub fn encode_hits(correct: &[bool]) -> String {
    let mut bytes = vec![0u8; correct.len().div_ceil(8)];
    for (j, _) in correct.iter().enumerate().filter(|(_, &c)| c) {
        bytes[j / 8] |= 1 << (j % 8);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `n` per-example outcomes of an [`encode_hits`] string.
pub fn decode_hits(hex: &str, n: usize) -> Result<Vec<bool>> {
    if hex.len() != 2 * n.div_ceil(8) {
        bail!(
            "a hit string for {n} examples has {} hex digits, not {}",
            hex.len(),
            2 * n.div_ceil(8)
        );
    }
    let mut bytes = Vec::with_capacity(hex.len() / 2);
    for i in (0..hex.len()).step_by(2) {
        let pair = hex.get(i..i + 2).unwrap_or("");
        match u8::from_str_radix(pair, 16) {
            Ok(b) => bytes.push(b),
            Err(_) => bail!("hit string has a non-hexadecimal pair {pair:?} at {i}"),
        }
    }
    if !n.is_multiple_of(8) && bytes.last().is_some_and(|b| b >> (n % 8) != 0) {
        bail!("hit string sets bits past its {n} examples");
    }
    Ok((0..n).map(|j| bytes[j / 8] >> (j % 8) & 1 == 1).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_layout() {
        assert_eq!(
            encode_hits(&[true, false, false, false, false, false, false, false, true]),
            "0101"
        );
        assert_eq!(encode_hits(&[]), "");
        for n in [1usize, 7, 8, 9, 1000, 639] {
            let v: Vec<bool> = (0..n).map(|j| (j * 7 + j / 3) % 5 < 2).collect();
            let s = encode_hits(&v);
            assert_eq!(s.len(), 2 * n.div_ceil(8));
            assert_eq!(decode_hits(&s, n).unwrap(), v);
            assert_eq!(
                decode_hits(&s, n).unwrap().iter().filter(|&&b| b).count(),
                v.iter().filter(|&&b| b).count()
            );
        }
    }

    #[test]
    fn refuses_bad_strings() {
        assert!(decode_hits("01", 9).is_err(), "too short");
        assert!(decode_hits("zz", 8).is_err(), "not hex");
        assert!(decode_hits("ff", 3).is_err(), "bits past the end");
    }
}
