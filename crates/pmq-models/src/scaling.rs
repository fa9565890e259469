//! What an AWQ-style quantizer needs to know about a block's structure: which linears share an
//! input, where an input-channel scaling `s` of those linears can be undone *exactly* (by
//! dividing the tensors that produce the input by `s`), and which part of the block to watch
//! while searching `s` (AutoAWQ's `module2inspect`).
//!
//! # The fold table
//!
//! Scaling the input columns of the linears of a group by `s` (`W ← W·diag(s)`) and dividing
//! the producer of their input by `s` leaves the model's function unchanged only when that
//! producer's output reaches nothing but those linears, through maps that commute with a
//! positive per-channel scaling:
//!
//! | family | group | `1/s` folded into | why |
//! |---|---|---|---|
//! | BERT (post-LN) | q, k, v | — | the LayerNorm output is also the residual |
//! | | attention.output.dense | value rows + bias | attention is linear in V |
//! | | intermediate.dense | — | the LayerNorm output is also the residual |
//! | | output.dense | — | GELU between |
//! | CLIP vision (pre-LN) | q, k, v | layer_norm1 (γ, β) | |
//! | | out_proj | v_proj rows + bias | attention is linear in V |
//! | | fc1 | layer_norm2 (γ, β) | |
//! | | fc2 | — | quick_gelu between |
//! | Llama (pre-RMSNorm) | q, k, v | input_layernorm (γ) | |
//! | | o_proj | v_proj rows (+ bias) only without GQA | with GQA one V channel feeds several o_proj columns |
//! | | gate, up | post_attention_layernorm (γ) | |
//! | | down | up_proj rows (+ bias) | `act(gate)·up` is linear in up |
//! | T5 (pre-RMSNorm) | self q, k, v | layer.0.layer_norm (γ) | |
//! | | self o | self v rows | |
//! | | cross q | layer.1.layer_norm (γ) | |
//! | | cross k, v | — | they read the final encoder norm, shared by every decoder block |
//! | | cross o | cross v rows | |
//! | | wi (ReLU) / wi_0, wi_1 (gated) | FF layer_norm (γ) | |
//! | | wo | wi rows (ReLU: positively homogeneous) / wi_1 rows (gated) | none for a non-gated, non-ReLU activation |
//!
//! A group without a fold is quantized without scaling (`s = 1`).

/// A part of a block whose output measures a scaling group's error (AutoAWQ's
/// `module2inspect`). Its output is taken before the residual add.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubBlock {
    /// Self-attention: the output of its output projection.
    SelfAttention,
    /// Cross-attention (T5 decoder blocks): the output of its output projection.
    CrossAttention,
    /// The feed-forward network: the output of its last linear.
    Mlp,
}

/// Where `1/s` can be folded exactly, by tensor name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScaleFold {
    /// A LayerNorm/RMSNorm whose output only the group reads: `γ ← γ/s`, `β ← β/s`.
    Norm {
        /// `….weight`
        weight: String,
        /// `….bias` (LayerNorm only).
        bias: Option<String>,
    },
    /// A linear whose output channels reach the group only through channel-wise positively
    /// homogeneous maps (attention-weighted sums, ReLU, a gate product): its rows and bias are
    /// divided by `s`.
    Linear {
        /// The linear's prefix (its weight is `{linear}.weight`).
        linear: String,
        /// `{linear}.bias` when it has one.
        bias: Option<String>,
    },
}

impl ScaleFold {
    /// The fold target as one readable string (for reports).
    pub fn describe(&self) -> String {
        match self {
            ScaleFold::Norm { weight, .. } => {
                weight.strip_suffix(".weight").unwrap_or(weight).to_string()
            }
            ScaleFold::Linear { linear, .. } => format!("{linear} (rows)"),
        }
    }
}

/// Linears that read the same input and are scaled together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalingGroup {
    /// The linears' prefixes.
    pub linears: Vec<String>,
    /// Where `1/s` goes; `None` when no exact fold exists (the group is not scaled).
    pub fold: Option<ScaleFold>,
    /// The part of the block whose output measures the error; `None` means the linears' own
    /// outputs (then the group has one linear).
    pub inspect: Option<SubBlock>,
}

/// A block's scaling groups (every quantizable linear of the block in exactly one group) and
/// the linears whose weights should not be clipped (queries and keys: through `q·kᵀ` the
/// output error of a clipped weight is hard to predict).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwqLayout {
    /// The groups in forward order.
    pub groups: Vec<ScalingGroup>,
    /// Query and key projections.
    pub skip_clip: Vec<String>,
}

impl ScalingGroup {
    /// A group whose `1/s` folds into `fold`.
    pub fn folded(linears: &[&String], fold: ScaleFold, inspect: Option<SubBlock>) -> Self {
        Self {
            linears: linears.iter().map(|s| s.to_string()).collect(),
            fold: Some(fold),
            inspect,
        }
    }

    /// A group without an exact fold.
    pub fn unscaled(linears: &[&String], inspect: Option<SubBlock>) -> Self {
        Self {
            linears: linears.iter().map(|s| s.to_string()).collect(),
            fold: None,
            inspect,
        }
    }
}

impl ScaleFold {
    /// Fold into the norm with HF prefix `prefix` (bias when `bias`).
    pub fn norm(prefix: &str, bias: bool) -> Self {
        ScaleFold::Norm {
            weight: format!("{prefix}.weight"),
            bias: bias.then(|| format!("{prefix}.bias")),
        }
    }

    /// Fold into the rows of linear `prefix` (and its bias when `bias`).
    pub fn linear(prefix: &str, bias: bool) -> Self {
        ScaleFold::Linear {
            linear: prefix.to_string(),
            bias: bias.then(|| format!("{prefix}.bias")),
        }
    }
}
