//! The table of a model's quantizable linears ([`LinearSpec`] each): loading by HF name,
//! forward with input capture, and weight swapping.

use crate::capture::Capturer;
use crate::error::{Error, Result};
use crate::tensors::checked;
use crate::weights::WeightStore;
use candle_core::{DType, Tensor};
use std::collections::HashMap;

/// One quantizable linear layer, named by its HF prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LinearSpec {
    /// HF prefix, e.g. `encoder.layer.0.attention.self.query`; the weight is `{name}.weight`.
    pub name: String,
    /// Input features (columns of the weight).
    pub in_features: usize,
    /// Output features (rows of the weight).
    pub out_features: usize,
    /// Whether the layer has a `{name}.bias`.
    pub has_bias: bool,
}

impl LinearSpec {
    /// HF name of the weight tensor.
    pub fn weight_name(&self) -> String {
        format!("{}.weight", self.name)
    }
    /// HF name of the bias tensor (meaningful only when `has_bias`).
    pub fn bias_name(&self) -> String {
        format!("{}.bias", self.name)
    }
}

#[derive(Debug, Clone)]
struct Entry {
    spec: LinearSpec,
    layer: candle_nn::Linear,
}

/// All quantizable linears of a model, keyed by HF prefix.
#[derive(Debug, Clone, Default)]
pub(crate) struct Linears {
    map: HashMap<String, Entry>,
}

impl Linears {
    /// Loads `{name}.weight` `[out, in]` (and `{name}.bias` `[out]` when `bias`).
    pub(crate) fn load(
        &mut self,
        ws: &WeightStore,
        name: &str,
        in_features: usize,
        out_features: usize,
        bias: bool,
    ) -> Result<LinearSpec> {
        let spec = LinearSpec {
            name: name.to_string(),
            in_features,
            out_features,
            has_bias: bias,
        };
        let w = ws.get(&spec.weight_name(), &[out_features, in_features])?;
        let b = if bias {
            Some(ws.get(&spec.bias_name(), &[out_features])?)
        } else {
            None
        };
        self.map.insert(
            name.to_string(),
            Entry {
                spec: spec.clone(),
                layer: candle_nn::Linear::new(w, b),
            },
        );
        Ok(spec)
    }

    fn entry(&self, name: &str) -> Result<&Entry> {
        self.map
            .get(name)
            .ok_or_else(|| Error::UnknownLinear(name.to_string()))
    }

    /// The spec of linear `name`.
    pub(crate) fn spec(&self, name: &str) -> Result<LinearSpec> {
        Ok(self.entry(name)?.spec.clone())
    }

    /// Specs of the given names, as one group.
    pub(crate) fn group<S: AsRef<str>>(&self, names: &[S]) -> Result<Vec<LinearSpec>> {
        names.iter().map(|n| self.spec(n.as_ref())).collect()
    }

    /// Applies linear `name` to the input (`[..., in]`) that `input` computes, through the
    /// capturer ([`Capturer::linear`]: capture, forward cache).
    pub(crate) fn forward<'a, 'b>(
        &self,
        name: &str,
        rows: Option<&Tensor>,
        cap: &mut Capturer<'a, 'b>,
        input: impl FnOnce(&mut Capturer<'a, 'b>) -> Result<Tensor>,
    ) -> Result<Tensor> {
        cap.linear(name, &self.entry(name)?.layer, rows, input)
    }

    /// Replaces the weight of `name`; the shape must stay `[out, in]`.
    pub(crate) fn set_weight(&mut self, name: &str, weight: Tensor) -> Result<()> {
        let e = self
            .map
            .get_mut(name)
            .ok_or_else(|| Error::UnknownLinear(name.to_string()))?;
        let expected = [e.spec.out_features, e.spec.in_features];
        if weight.dims() != expected {
            return Err(Error::Shape {
                name: e.spec.weight_name(),
                location: "set_linear_weight".into(),
                expected: expected.to_vec(),
                found: weight.dims().to_vec(),
            });
        }
        let w = weight
            .to_device(&candle_core::Device::Cpu)?
            .to_dtype(DType::F32)?
            .contiguous()?;
        e.layer = candle_nn::Linear::new(w, e.layer.bias().cloned());
        Ok(())
    }

    /// The current weight of `name`.
    pub(crate) fn weight(&self, name: &str) -> Result<Tensor> {
        Ok(self.entry(name)?.layer.weight().clone())
    }

    /// The bias tensor named `{prefix}.bias`, if that linear has one.
    pub(crate) fn bias_tensor(&self, name: &str) -> Option<Tensor> {
        let prefix = name.strip_suffix(".bias")?;
        self.map.get(prefix)?.layer.bias().cloned()
    }

    /// Replaces the bias tensor `{prefix}.bias`; `Ok(false)` when no linear has that bias.
    pub(crate) fn set_bias_tensor(&mut self, name: &str, value: Tensor) -> Result<bool> {
        let Some(e) = name.strip_suffix(".bias").and_then(|p| self.map.get_mut(p)) else {
            return Ok(false);
        };
        let Some(current) = e.layer.bias() else {
            return Ok(false);
        };
        let value = checked(name, current, value)?;
        e.layer = candle_nn::Linear::new(e.layer.weight().clone(), Some(value));
        Ok(true)
    }
}
