//! `--include` / `--exclude`: which tensors are merged.

use glob::Pattern;

use crate::MergeError;

/// Tensor-name filter: a name is selected when it matches some include pattern (or there are
/// none) and no exclude pattern. Patterns are shell globs over the whole name (`*` also
/// matches `.`), e.g. `*.mlp.*.weight`.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    include: Vec<Pattern>,
    exclude: Vec<Pattern>,
}

impl Selector {
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self, MergeError> {
        let compile = |ps: &[String]| -> Result<Vec<Pattern>, MergeError> {
            ps.iter()
                .map(|p| {
                    Pattern::new(p).map_err(|e| MergeError::Pattern {
                        pattern: p.clone(),
                        reason: e.to_string(),
                    })
                })
                .collect()
        };
        Ok(Self {
            include: compile(include)?,
            exclude: compile(exclude)?,
        })
    }

    /// Whether `name` is to be merged.
    pub fn selects(&self, name: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|p| p.matches(name)))
            && !self.exclude.iter().any(|p| p.matches(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_exclude() {
        let s = Selector::new(&["*.weight".into()], &["*.norm.*".into()]).unwrap();
        assert!(s.selects("layers.0.mlp.weight"));
        assert!(!s.selects("layers.0.mlp.bias"));
        assert!(!s.selects("layers.0.norm.weight"));
        let all = Selector::new(&[], &[]).unwrap();
        assert!(all.selects("anything"));
        assert!(Selector::new(&["[".into()], &[]).is_err());
    }
}
