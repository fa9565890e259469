//! Exact k-th smallest magnitude of a stream too large to hold, in two passes.
//!
//! For x ≥ 0 (and not NaN) the IEEE-754 bit pattern of an f32, read as u32, is monotonic in x.
//! Pass 1 histograms the high 16 bits of |x| (65 536 bins) and finds the bin holding the k-th
//! smallest; pass 2 histograms the low 16 bits of the values in that bin. The two halves give
//! the exact bit pattern of the k-th smallest |x|. Memory: two 65 536-bin u64 histograms.

const BINS: usize = 1 << 16;

/// Two-pass exact selection of the k-th smallest |x| (k is 1-based).
#[derive(Debug, Clone)]
pub struct StreamingKth {
    hi: Vec<u64>,
    lo: Vec<u64>,
    count: u64,
    /// After pass 1: (high half of the answer, rank of the answer inside that bin, 1-based).
    target: Option<(u32, u64)>,
}

impl Default for StreamingKth {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamingKth {
    pub fn new() -> Self {
        Self {
            hi: vec![0; BINS],
            lo: Vec::new(),
            count: 0,
            target: None,
        }
    }

    /// Pass 1: feeds values (their magnitudes are used).
    pub fn observe_first(&mut self, values: &[f32]) {
        for v in values {
            self.hi[(v.abs().to_bits() >> 16) as usize] += 1;
        }
        self.count += values.len() as u64;
    }

    /// Number of values seen in pass 1.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Ends pass 1 for the k-th smallest (1 ≤ k ≤ count). Returns false when k is out of range.
    pub fn start_second(&mut self, k: u64) -> bool {
        if k == 0 || k > self.count {
            return false;
        }
        let mut before = 0u64;
        for (bin, &c) in self.hi.iter().enumerate() {
            if before + c >= k {
                self.target = Some((bin as u32, k - before));
                self.lo = vec![0; BINS];
                return true;
            }
            before += c;
        }
        false
    }

    /// Pass 2: feeds exactly the same values as pass 1 (any order or chunking).
    pub fn observe_second(&mut self, values: &[f32]) {
        let Some((bin, _)) = self.target else { return };
        for v in values {
            let bits = v.abs().to_bits();
            if bits >> 16 == bin {
                self.lo[(bits & 0xFFFF) as usize] += 1;
            }
        }
    }

    /// The k-th smallest |x| after pass 2.
    pub fn value(&self) -> Option<f32> {
        let (bin, rank) = self.target?;
        let mut before = 0u64;
        for (low, &c) in self.lo.iter().enumerate() {
            if before + c >= rank {
                return Some(f32::from_bits((bin << 16) | low as u32));
            }
            before += c;
        }
        None
    }
}

/// k-th smallest |x| (1-based) of an in-memory slice, by selection; `None` if k is out of range.
pub fn kth_smallest_abs(values: &[f32], k: usize) -> Option<f32> {
    if k == 0 || k > values.len() {
        return None;
    }
    let mut abs: Vec<f32> = values.iter().map(|v| v.abs()).collect();
    let (_, kth, _) = abs.select_nth_unstable_by(k - 1, f32::total_cmp);
    Some(*kth)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_sorting_including_ties_and_zeros() {
        let data: Vec<f32> = (0..5000)
            .map(|i| {
                let x = ((i * 7919) % 1013) as f32 - 506.0;
                if i % 11 == 0 {
                    0.0
                } else {
                    x * 1e-3
                }
            })
            .collect();
        let mut sorted: Vec<f32> = data.iter().map(|v| v.abs()).collect();
        sorted.sort_by(f32::total_cmp);
        for k in [1, 2, 455, 456, 457, 2500, 4999, 5000] {
            let mut s = StreamingKth::new();
            for chunk in data.chunks(333) {
                s.observe_first(chunk);
            }
            assert!(s.start_second(k as u64));
            for chunk in data.chunks(1000).rev() {
                s.observe_second(chunk);
            }
            assert_eq!(s.value(), Some(sorted[k - 1]), "k = {k}");
            assert_eq!(kth_smallest_abs(&data, k), Some(sorted[k - 1]));
        }
        let mut s = StreamingKth::new();
        s.observe_first(&data);
        assert!(!s.start_second(0) && !s.start_second(5001));
    }
}
