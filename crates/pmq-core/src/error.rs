/// Errors of the math core. Each names the matrix (or setting) and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("{what}: shape {got_rows}×{got_cols}, expected {expected}")]
    Shape {
        what: String,
        got_rows: usize,
        got_cols: usize,
        expected: String,
    },
    #[error("{what} contains a non-finite value ({value}) at row {row}, column {col}")]
    NonFinite {
        what: String,
        row: usize,
        col: usize,
        value: f64,
    },
    #[error(
        "{what} is not positive definite even with damping {percdamp} × mean(diag) = {damping} \
         (automatic increase stops at {max_percdamp})"
    )]
    NotPositiveDefinite {
        what: String,
        percdamp: f64,
        damping: f64,
        max_percdamp: f64,
    },
    #[error("invalid quantization setting: {0}")]
    Config(String),
    /// A linear system the method needs has no unique solution.
    #[error("{0}")]
    Singular(String),
    #[error("packing: {0}")]
    Packing(String),
}
