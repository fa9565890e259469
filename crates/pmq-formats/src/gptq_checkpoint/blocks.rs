//! Where transformers' GPTQ loader (optimum's `GPTQQuantizer.convert_model`) finds the quantized
//! linears: it replaces every `nn.Linear` whose module path starts with `block_name_to_quantize`
//! (found by a list of known patterns when absent — `model.layers`, `transformer.h`, …, but not
//! BERT's `encoder.layer`, CLIP's `vision_model.encoder.layers` or T5's two stacks), then keeps
//! only those whose path ends with an entry of `modules_in_block_to_quantize` when that is given.
//!
//! [`block_layout`] derives both from the quantized linears' names: the module path before the
//! first numeric component is the block stack (`encoder.layer.3.attention.self.query` →
//! `encoder.layer`). One stack: `block_name_to_quantize` is its path. Several stacks (T5's
//! `encoder.block` and `decoder.block`): the prefix is empty — every linear — and
//! `modules_in_block_to_quantize` lists the linears' paths inside a block, so that nothing
//! else (`lm_head`) is replaced; this is used only when no unquantized linear of the checkpoint
//! ends with one of those paths.

use pmq_io::TensorStore;
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// `(stack, path inside the block)` of a linear named `stack.<index>.path`.
fn split(name: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = name.split('.').collect();
    let i = parts
        .iter()
        .position(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))?;
    if i == 0 || i + 1 >= parts.len() {
        return None;
    }
    Some((parts[..i].join("."), parts[i + 1..].join(".")))
}

/// The `quantization_config` entries that let transformers/optimum find the quantized linears
/// `names` of the checkpoint `src`; empty when they cannot be described (a linear outside any
/// numbered block), in which case optimum's own detection applies.
pub(super) fn block_layout<'a>(
    names: impl IntoIterator<Item = &'a String>,
    src: &TensorStore,
) -> serde_json::Map<String, Value> {
    // the module paths of the checkpoint's matrices (candidate linears)
    let matrices: Vec<String> = src
        .names()
        .iter()
        .filter(|t| src.info(t).is_some_and(|i| i.shape.len() == 2))
        .filter_map(|t| t.strip_suffix(".weight").map(str::to_string))
        .collect();
    layout(names, &matrices)
}

/// [`block_layout`] for quantized linears `names` among the matrices `matrices` (module paths).
fn layout<'a>(
    names: impl IntoIterator<Item = &'a String>,
    matrices: &[String],
) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    let mut stacks = BTreeSet::new();
    let mut inner = BTreeSet::new();
    let mut quantized = BTreeSet::new();
    for n in names {
        let Some((stack, path)) = split(n) else {
            return out;
        };
        stacks.insert(stack);
        inner.insert(path);
        quantized.insert(n.as_str());
    }
    match stacks.len() {
        0 => {}
        1 => {
            let stack = stacks.into_iter().next().expect("one stack");
            out.insert("block_name_to_quantize".into(), json!(stack));
        }
        _ => {
            // every other linear must stay out of the suffix filter
            let clash = matrices.iter().any(|m| {
                !quantized.contains(m.as_str())
                    && inner
                        .iter()
                        .any(|p| m == p || m.ends_with(&format!(".{p}")))
            });
            if !clash {
                out.insert("block_name_to_quantize".into(), json!(""));
                out.insert(
                    "modules_in_block_to_quantize".into(),
                    json!([inner.into_iter().collect::<Vec<_>>()]),
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{layout, split};
    use serde_json::json;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn one_stack_is_named_several_are_filtered_by_path() {
        let bert = names(&[
            "encoder.layer.0.attention.self.query",
            "encoder.layer.1.output.dense",
        ]);
        let mut all = bert.clone();
        all.push("pooler.dense".into());
        let l = layout(&bert, &all);
        assert_eq!(l["block_name_to_quantize"], json!("encoder.layer"));
        assert!(!l.contains_key("modules_in_block_to_quantize"));

        let t5 = names(&[
            "encoder.block.0.layer.0.SelfAttention.q",
            "decoder.block.0.layer.1.EncDecAttention.k",
        ]);
        let mut all = t5.clone();
        all.push("lm_head".into());
        let l = layout(&t5, &all);
        assert_eq!(l["block_name_to_quantize"], json!(""));
        assert_eq!(
            l["modules_in_block_to_quantize"],
            json!([["layer.0.SelfAttention.q", "layer.1.EncDecAttention.k"]])
        );
        // an unquantized linear that the path filter would also catch: nothing is written
        all.push("extra.layer.0.SelfAttention.q".into());
        assert!(layout(&t5, &all).is_empty());
        // a quantized linear outside any numbered block: nothing is written
        let mut odd = t5.clone();
        odd.push("lm_head".into());
        assert!(layout(&odd, &all).is_empty());
    }

    #[test]
    fn splits_at_the_block_index() {
        assert_eq!(
            split("encoder.layer.3.attention.self.query"),
            Some(("encoder.layer".into(), "attention.self.query".into()))
        );
        assert_eq!(
            split("model.layers.10.mlp.down_proj"),
            Some(("model.layers".into(), "mlp.down_proj".into()))
        );
        assert_eq!(split("lm_head"), None);
        assert_eq!(split("0.weight"), None);
        assert_eq!(split("layers.2"), None);
    }
}
