//! The norms inside blocks (LayerNorm, RMSNorm), keyed by HF prefix so that their parameters
//! can be read and replaced by tensor name (an AWQ fold divides them by its scales).

use crate::error::{Error, Result};
use crate::tensors::checked;
use crate::weights::WeightStore;
use candle_core::{Module, Tensor};
use std::collections::HashMap;

#[derive(Debug, Clone)]
struct Norm {
    weight: Tensor,
    bias: Option<Tensor>,
    eps: f64,
    /// RMSNorm (no mean removal, no bias) instead of LayerNorm.
    rms: bool,
}

/// All block norms of a model.
#[derive(Debug, Clone, Default)]
pub(crate) struct Norms {
    map: HashMap<String, Norm>,
}

impl Norms {
    /// Loads a LayerNorm `{prefix}.weight` and `{prefix}.bias` (`[dim]`); returns `prefix`.
    pub(crate) fn load_layer_norm(
        &mut self,
        ws: &WeightStore,
        prefix: &str,
        dim: usize,
        eps: f64,
    ) -> Result<String> {
        let norm = Norm {
            weight: ws.get(&format!("{prefix}.weight"), &[dim])?,
            bias: Some(ws.get(&format!("{prefix}.bias"), &[dim])?),
            eps,
            rms: false,
        };
        self.map.insert(prefix.to_string(), norm);
        Ok(prefix.to_string())
    }

    /// Loads an RMSNorm `{prefix}.weight` (`[dim]`); returns `prefix`.
    pub(crate) fn load_rms_norm(
        &mut self,
        ws: &WeightStore,
        prefix: &str,
        dim: usize,
        eps: f64,
    ) -> Result<String> {
        let norm = Norm {
            weight: ws.get(&format!("{prefix}.weight"), &[dim])?,
            bias: None,
            eps,
            rms: true,
        };
        self.map.insert(prefix.to_string(), norm);
        Ok(prefix.to_string())
    }

    /// Applies norm `prefix` over the last dimension of `x`.
    pub(crate) fn forward(&self, prefix: &str, x: &Tensor) -> Result<Tensor> {
        let n = self
            .map
            .get(prefix)
            .ok_or_else(|| Error::UnknownTensor(format!("{prefix}.weight")))?;
        if n.rms {
            return Ok(candle_nn::ops::rms_norm(
                &x.contiguous()?,
                &n.weight,
                n.eps as f32,
            )?);
        }
        let bias = n.bias.clone().expect("LayerNorms have a bias");
        Ok(candle_nn::LayerNorm::new(n.weight.clone(), bias, n.eps).forward(x)?)
    }

    fn slot(&self, name: &str) -> Option<(&Norm, bool)> {
        let (prefix, part) = name.rsplit_once('.')?;
        let n = self.map.get(prefix)?;
        match part {
            "weight" => Some((n, true)),
            "bias" if n.bias.is_some() => Some((n, false)),
            _ => None,
        }
    }

    /// The norm tensor `name` (`{prefix}.weight` or a LayerNorm's `{prefix}.bias`), if any.
    pub(crate) fn tensor(&self, name: &str) -> Option<Tensor> {
        let (n, weight) = self.slot(name)?;
        Some(if weight {
            n.weight.clone()
        } else {
            n.bias.clone().expect("checked")
        })
    }

    /// Replaces `name` when it is a norm tensor; `Ok(false)` when it is not one.
    pub(crate) fn set_tensor(&mut self, name: &str, value: Tensor) -> Result<bool> {
        let Some((n, weight)) = self.slot(name) else {
            return Ok(false);
        };
        let value = checked(name, &n.weight, value)?;
        let (prefix, _) = name.rsplit_once('.').expect("checked by slot");
        let n = self.map.get_mut(prefix).expect("checked by slot");
        if weight {
            n.weight = value;
        } else {
            n.bias = Some(value);
        }
        Ok(true)
    }
}
