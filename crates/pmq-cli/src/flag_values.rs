//! clap value parsers for numeric flags, so that 0, negative or non-finite values are flag
//! errors instead of being coerced later.

/// A count that must be at least 1.
pub fn positive(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// A finite number ≥ 0 (NaN and ±inf are refused).
pub fn finite_non_negative(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        Ok(v) => Err(format!("must be a finite number ≥ 0, got {v}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Bits per weight: 2, 3, 4 or 8.
pub fn bits(s: &str) -> Result<u8, String> {
    match s.trim().parse::<u8>() {
        Ok(b @ (2 | 3 | 4 | 8)) => Ok(b),
        Ok(b) => Err(format!("must be 2, 3, 4 or 8, got {b}")),
        Err(e) => Err(e.to_string()),
    }
}

/// A group size: positive, or -1 for one group per row.
pub fn group_size(s: &str) -> Result<i64, String> {
    match s.trim().parse::<i64>() {
        Ok(g) if g > 0 || g == -1 => Ok(g),
        Ok(g) => Err(format!(
            "must be positive, or -1 for one group per row; got {g}"
        )),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_negative_and_non_finite_values_are_refused() {
        assert_eq!(positive("3"), Ok(3));
        assert!(positive("0").is_err() && positive("-1").is_err());
        assert_eq!(finite_non_negative("0.5"), Ok(0.5));
        for bad in ["NaN", "inf", "-inf", "-0.1", "x"] {
            assert!(finite_non_negative(bad).is_err(), "{bad}");
        }
        assert_eq!(bits("4"), Ok(4));
        assert!(bits("5").is_err() && bits("0").is_err());
        assert_eq!(group_size("-1"), Ok(-1));
        assert!(group_size("0").is_err() && group_size("-2").is_err());
    }
}
