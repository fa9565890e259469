//! HF tensor names → the GGUF names llama.cpp's `convert_hf_to_gguf.py` writes (gguf-py
//! `tensor_mapping.py` / `constants.py`), for the architectures pmq writes as GGUF, and the
//! row permutation the converter applies to Llama's q/k projections (HF stores the rotary halves
//! of each head one after the other; ggml's `llama` rope rotates adjacent pairs).

/// A GGUF architecture pmq can write (`general.architecture`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Bert,
    Llama,
    /// `T5ForConditionalGeneration` (encoder–decoder; `wi` or gated `wi_0`/`wi_1`).
    T5,
}

impl Arch {
    /// The architecture of a checkpoint from its config.json `model_type`.
    pub fn from_model_type(model_type: &str) -> Result<Self, String> {
        match model_type {
            "bert" => Ok(Arch::Bert),
            "llama" => Ok(Arch::Llama),
            "t5" => Ok(Arch::T5),
            other => Err(format!(
                "GGUF output supports bert, llama and t5 checkpoints; {other} is not supported"
            )),
        }
    }

    /// `general.architecture`.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Bert => "bert",
            Arch::Llama => "llama",
            Arch::T5 => "t5",
        }
    }
}

/// Which rotary permutation a Llama tensor's rows get: `permute(w, n_head, n_head_kv)` of the
/// converter, with the number of heads the rows are split into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopePermute {
    /// `q_proj` (weight or bias): `num_attention_heads` heads.
    Query,
    /// `k_proj` (weight or bias): `num_key_value_heads` heads.
    Key,
}

/// Where one HF tensor goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mapped {
    /// Written under this GGUF name, rows permuted when `permute` is set.
    Tensor {
        name: String,
        permute: Option<RopePermute>,
    },
    /// One of several copies of the token embeddings (T5's `shared`, `encoder.embed_tokens`,
    /// `decoder.embed_tokens`): the first one met is written under this name, the others are
    /// skipped, as the converter does.
    FirstOf { name: String },
    /// Not written (the converter drops it too: BERT's pooler, MLM/NSP heads, position ids;
    /// rotary inverse frequencies).
    Skip,
}

/// The GGUF name of HF tensor `hf` of architecture `arch`; an error for a tensor the converter
/// could not map either.
pub fn map_name(arch: Arch, hf: &str) -> Result<Mapped, String> {
    let mapped = match arch {
        Arch::Bert => map_bert(hf),
        Arch::Llama => map_llama(hf),
        Arch::T5 => map_t5(hf),
    };
    mapped.ok_or_else(|| {
        format!(
            "has no GGUF name for architecture {} (llama.cpp's converter cannot map it either)",
            arch.name()
        )
    })
}

/// Splits `<stem>.weight` / `<stem>.bias` (BERT's old `gamma`/`beta` renamed as the converter
/// does) into the stem and the GGUF suffix.
fn split_suffix(hf: &str) -> Option<(&str, &'static str)> {
    for (suffix, out) in [
        (".weight", "weight"),
        (".bias", "bias"),
        (".gamma", "weight"),
        (".beta", "bias"),
    ] {
        if let Some(stem) = hf.strip_suffix(suffix) {
            return Some((stem, out));
        }
    }
    None
}

/// `<layer>.<rest>` with `prefix` stripped: the block index and the rest.
fn block<'a>(stem: &'a str, prefix: &str) -> Option<(usize, &'a str)> {
    let rest = stem.strip_prefix(prefix)?;
    let (idx, rest) = rest.split_once('.')?;
    Some((idx.parse().ok()?, rest))
}

fn map_bert(hf: &str) -> Option<Mapped> {
    let hf = hf.strip_prefix("bert.").unwrap_or(hf);
    if hf == "embeddings.position_ids"
        || hf.starts_with("pooler.")
        || hf.starts_with("cls.")
        || hf.starts_with("classifier.")
    {
        return Some(Mapped::Skip);
    }
    let (stem, suffix) = split_suffix(hf)?;
    let name = match stem {
        "embeddings.word_embeddings" => "token_embd".to_string(),
        "embeddings.position_embeddings" => "position_embd".to_string(),
        "embeddings.token_type_embeddings" => "token_types".to_string(),
        "embeddings.LayerNorm" => "token_embd_norm".to_string(),
        _ => {
            let (n, rest) = block(stem, "encoder.layer.")?;
            let t = match rest {
                "attention.self.query" => "attn_q",
                "attention.self.key" => "attn_k",
                "attention.self.value" => "attn_v",
                "attention.output.dense" => "attn_output",
                "attention.output.LayerNorm" => "attn_output_norm",
                "intermediate.dense" => "ffn_up",
                "output.dense" => "ffn_down",
                "output.LayerNorm" => "layer_output_norm",
                _ => return None,
            };
            format!("blk.{n}.{t}")
        }
    };
    Some(Mapped::Tensor {
        name: format!("{name}.{suffix}"),
        permute: None,
    })
}

fn map_llama(hf: &str) -> Option<Mapped> {
    if hf.ends_with("rotary_emb.inv_freq") {
        return Some(Mapped::Skip);
    }
    let (stem, suffix) = split_suffix(hf)?;
    let mut permute = None;
    let name = match stem {
        "model.embed_tokens" => "token_embd".to_string(),
        "model.norm" => "output_norm".to_string(),
        "lm_head" => "output".to_string(),
        _ => {
            let (n, rest) = block(stem, "model.layers.")?;
            let t = match rest {
                "input_layernorm" => "attn_norm",
                "self_attn.q_proj" => {
                    permute = Some(RopePermute::Query);
                    "attn_q"
                }
                "self_attn.k_proj" => {
                    permute = Some(RopePermute::Key);
                    "attn_k"
                }
                "self_attn.v_proj" => "attn_v",
                "self_attn.o_proj" => "attn_output",
                "post_attention_layernorm" => "ffn_norm",
                "mlp.gate_proj" => "ffn_gate",
                "mlp.up_proj" => "ffn_up",
                "mlp.down_proj" => "ffn_down",
                _ => return None,
            };
            format!("blk.{n}.{t}")
        }
    };
    Some(Mapped::Tensor {
        name: format!("{name}.{suffix}"),
        permute,
    })
}

fn map_t5(hf: &str) -> Option<Mapped> {
    if matches!(
        hf,
        "shared.weight" | "encoder.embed_tokens.weight" | "decoder.embed_tokens.weight"
    ) {
        return Some(Mapped::FirstOf {
            name: "token_embd.weight".into(),
        });
    }
    let (stem, suffix) = split_suffix(hf)?;
    let name = match stem {
        "lm_head" => "output".to_string(),
        "encoder.final_layer_norm" => "enc.output_norm".to_string(),
        "decoder.final_layer_norm" => "dec.output_norm".to_string(),
        _ => {
            let (stack, n, rest) = if let Some((n, rest)) = block(stem, "encoder.block.") {
                ("enc", n, rest)
            } else {
                let (n, rest) = block(stem, "decoder.block.")?;
                ("dec", n, rest)
            };
            let ffn = if stack == "enc" { "layer.1" } else { "layer.2" };
            let t = match rest.strip_prefix("layer.0.") {
                Some("layer_norm") => "attn_norm",
                Some("SelfAttention.q") => "attn_q",
                Some("SelfAttention.k") => "attn_k",
                Some("SelfAttention.v") => "attn_v",
                Some("SelfAttention.o") => "attn_o",
                Some("SelfAttention.relative_attention_bias") => "attn_rel_b",
                Some(_) => return None,
                None => match (stack, rest) {
                    ("dec", "layer.1.layer_norm") => "cross_attn_norm",
                    ("dec", "layer.1.EncDecAttention.q") => "cross_attn_q",
                    ("dec", "layer.1.EncDecAttention.k") => "cross_attn_k",
                    ("dec", "layer.1.EncDecAttention.v") => "cross_attn_v",
                    ("dec", "layer.1.EncDecAttention.o") => "cross_attn_o",
                    ("dec", "layer.1.EncDecAttention.relative_attention_bias") => {
                        "cross_attn_rel_b"
                    }
                    _ => match rest.strip_prefix(ffn)?.strip_prefix('.')? {
                        "layer_norm" => "ffn_norm",
                        "DenseReluDense.wi_0" => "ffn_gate",
                        "DenseReluDense.wi" | "DenseReluDense.wi_1" => "ffn_up",
                        "DenseReluDense.wo" => "ffn_down",
                        _ => return None,
                    },
                },
            };
            format!("{stack}.blk.{n}.{t}")
        }
    };
    Some(Mapped::Tensor {
        name: format!("{name}.{suffix}"),
        permute: None,
    })
}

/// The converter's `permute(w, n_head)` as a row map: output row `j` is input row `perm[j]`.
/// `w.reshape(n_head, 2, rows / n_head / 2, …).swapaxes(1, 2).reshape(rows, …)`: within each
/// head of `hd = rows / n_head` rows, output row `2i + t` is input row `t · hd/2 + i`.
pub fn rope_permutation(rows: usize, n_head: usize) -> Result<Vec<usize>, String> {
    if n_head == 0 || !rows.is_multiple_of(2 * n_head) {
        return Err(format!(
            "has {rows} rows, which do not split into {n_head} heads of an even size"
        ));
    }
    let hd = rows / n_head;
    let half = hd / 2;
    let mut perm = Vec::with_capacity(rows);
    for h in 0..n_head {
        for i in 0..half {
            for t in 0..2 {
                perm.push(h * hd + t * half + i);
            }
        }
    }
    Ok(perm)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str) -> Mapped {
        Mapped::Tensor {
            name: name.into(),
            permute: None,
        }
    }

    #[test]
    fn bert_names() {
        let m = |n| map_name(Arch::Bert, n).unwrap();
        assert_eq!(
            m("embeddings.word_embeddings.weight"),
            t("token_embd.weight")
        );
        assert_eq!(
            m("bert.embeddings.LayerNorm.bias"),
            t("token_embd_norm.bias")
        );
        assert_eq!(m("embeddings.LayerNorm.gamma"), t("token_embd_norm.weight"));
        assert_eq!(
            m("encoder.layer.11.attention.output.LayerNorm.weight"),
            t("blk.11.attn_output_norm.weight")
        );
        assert_eq!(
            m("encoder.layer.0.output.dense.bias"),
            t("blk.0.ffn_down.bias")
        );
        assert_eq!(m("pooler.dense.weight"), Mapped::Skip);
        assert_eq!(m("embeddings.position_ids"), Mapped::Skip);
        assert!(map_name(Arch::Bert, "encoder.layer.0.weird.weight").is_err());
    }

    #[test]
    fn llama_names() {
        let m = |n| map_name(Arch::Llama, n).unwrap();
        assert_eq!(
            m("model.layers.3.self_attn.k_proj.weight"),
            Mapped::Tensor {
                name: "blk.3.attn_k.weight".into(),
                permute: Some(RopePermute::Key)
            }
        );
        assert_eq!(
            m("model.layers.1.mlp.gate_proj.weight"),
            t("blk.1.ffn_gate.weight")
        );
        assert_eq!(m("lm_head.weight"), t("output.weight"));
        assert_eq!(m("model.norm.weight"), t("output_norm.weight"));
    }

    #[test]
    fn t5_names() {
        let m = |n| map_name(Arch::T5, n).unwrap();
        let first = Mapped::FirstOf {
            name: "token_embd.weight".into(),
        };
        assert_eq!(m("shared.weight"), first);
        assert_eq!(m("decoder.embed_tokens.weight"), first);
        assert_eq!(
            m("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
            t("enc.blk.0.attn_rel_b.weight")
        );
        assert_eq!(
            m("encoder.block.1.layer.1.DenseReluDense.wi.weight"),
            t("enc.blk.1.ffn_up.weight")
        );
        assert_eq!(
            m("encoder.block.1.layer.1.layer_norm.weight"),
            t("enc.blk.1.ffn_norm.weight")
        );
        assert_eq!(
            m("decoder.block.3.layer.1.EncDecAttention.o.weight"),
            t("dec.blk.3.cross_attn_o.weight")
        );
        assert_eq!(
            m("decoder.block.3.layer.1.layer_norm.weight"),
            t("dec.blk.3.cross_attn_norm.weight")
        );
        assert_eq!(
            m("decoder.block.0.layer.2.DenseReluDense.wi_0.weight"),
            t("dec.blk.0.ffn_gate.weight")
        );
        assert_eq!(
            m("decoder.block.0.layer.2.DenseReluDense.wi_1.weight"),
            t("dec.blk.0.ffn_up.weight")
        );
        assert_eq!(
            m("decoder.block.0.layer.2.DenseReluDense.wo.weight"),
            t("dec.blk.0.ffn_down.weight")
        );
        assert_eq!(
            m("decoder.final_layer_norm.weight"),
            t("dec.output_norm.weight")
        );
        assert_eq!(m("lm_head.weight"), t("output.weight"));
        // the encoder has no cross-attention and its feed-forward is layer 1
        assert!(map_name(Arch::T5, "encoder.block.0.layer.2.DenseReluDense.wo.weight").is_err());
        assert!(map_name(Arch::T5, "encoder.block.0.layer.1.EncDecAttention.q.weight").is_err());
    }

    #[test]
    fn permutation_of_one_head() {
        // hd = 8: [0 1 2 3 | 4 5 6 7] → pairs (0,4) (1,5) (2,6) (3,7)
        assert_eq!(rope_permutation(8, 1).unwrap(), [0, 4, 1, 5, 2, 6, 3, 7]);
        assert!(rope_permutation(12, 4).is_err());
    }
}
