//! The table of a model's quantizable linears ([`LinearSpec`] each): loading by HF name,
//! forward with input capture, and weight swapping.

use crate::capture::Capturer;
use crate::config::Activation;
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

/// Where a linear's weight is.
#[derive(Debug, Clone)]
enum Weight {
    /// In memory as f32: read from the checkpoint (`replaced: false`) or set by the caller.
    Resident { w: Tensor, replaced: bool },
    /// In the (memory-mapped) checkpoint of a streamed model, read when needed.
    Stored,
    /// Replaced by the caller, then unloaded: gone.
    Released,
}

#[derive(Debug, Clone)]
struct Entry {
    spec: LinearSpec,
    weight: Weight,
    bias: Option<Tensor>,
}

impl Entry {
    /// The f32 weight `[out, in]`: the resident one, or read from the checkpoint `store`.
    fn weight(&self, store: Option<&WeightStore>) -> Result<Tensor> {
        match (&self.weight, store) {
            (Weight::Resident { w, .. }, _) => Ok(w.clone()),
            (Weight::Stored, Some(ws)) => ws.get(
                &self.spec.weight_name(),
                &[self.spec.out_features, self.spec.in_features],
            ),
            (Weight::Released, _) => Err(Error::input(format!(
                "the weight of linear `{}` was replaced and then unloaded with its block; it is no longer available",
                self.spec.name
            ))),
            (Weight::Stored, None) => Err(Error::input(format!(
                "the weight of linear `{}` is in no checkpoint (internal error: a stored weight without its store)",
                self.spec.name
            ))),
        }
    }
}

/// All quantizable linears of a model, keyed by HF prefix. Biases are always in memory; the
/// weights of a model read from a streamed store ([`WeightStore::open_dir_streamed`]) stay in
/// the checkpoint until [`Linears::load`]ed into memory and go back there when
/// [`Linears::unload`]ed.
#[derive(Debug, Clone, Default)]
pub(crate) struct Linears {
    map: HashMap<String, Entry>,
    /// The streamed store the weights were read from (`None`: every weight is resident).
    store: Option<WeightStore>,
}

impl Linears {
    /// Loads `{name}.weight` `[out, in]` (and `{name}.bias` `[out]` when `bias`). From a
    /// streamed store the weight is read (its shape and values checked) and left there.
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
        let weight = if ws.streamed() {
            drop(w);
            self.store.get_or_insert_with(|| ws.clone());
            Weight::Stored
        } else {
            Weight::Resident { w, replaced: false }
        };
        let bias = if bias {
            Some(ws.get(&spec.bias_name(), &[out_features])?)
        } else {
            None
        };
        self.map.insert(
            name.to_string(),
            Entry {
                spec: spec.clone(),
                weight,
                bias,
            },
        );
        Ok(spec)
    }

    fn entry(&self, name: &str) -> Result<&Entry> {
        self.map
            .get(name)
            .ok_or_else(|| Error::UnknownLinear(name.to_string()))
    }

    fn entry_mut(&mut self, name: &str) -> Result<&mut Entry> {
        find_mut(&mut self.map, name)
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
    /// capturer ([`Capturer::linear`]: capture, forward cache). A weight still in the
    /// checkpoint is read for this one call. With `act`, the activation follows the linear.
    pub(crate) fn forward<'a, 'b>(
        &self,
        name: &str,
        rows: Option<&Tensor>,
        act: Option<Activation>,
        cap: &mut Capturer<'a, 'b>,
        input: impl FnOnce(&mut Capturer<'a, 'b>) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let e = self.entry(name)?;
        let layer = candle_nn::Linear::new(e.weight(self.store.as_ref())?, e.bias.clone());
        cap.linear(name, &layer, rows, act, input)
    }

    /// Replaces the weight of `name`; the shape must stay `[out, in]`.
    pub(crate) fn set_weight(&mut self, name: &str, weight: Tensor) -> Result<()> {
        let e = self.entry_mut(name)?;
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
        e.weight = Weight::Resident { w, replaced: true };
        Ok(())
    }

    /// The current weight of `name`.
    pub(crate) fn weight(&self, name: &str) -> Result<Tensor> {
        self.entry(name)?.weight(self.store.as_ref())
    }

    /// Reads the weights of `names` that are in the checkpoint into memory.
    pub(crate) fn load_resident<S: AsRef<str>>(&mut self, names: &[S]) -> Result<()> {
        for name in names {
            // the map and the store are disjoint fields: no copy of the store per linear
            let e = find_mut(&mut self.map, name.as_ref())?;
            if let Weight::Stored = e.weight {
                e.weight = Weight::Resident {
                    w: e.weight(self.store.as_ref())?,
                    replaced: false,
                };
            }
        }
        Ok(())
    }

    /// Gives back the memory of the weights of `names` read from a streamed checkpoint: one
    /// still as read goes back to the checkpoint, a replaced one is dropped (using it later is
    /// an error). Weights of a model not read from a streamed store stay as they are.
    pub(crate) fn unload<S: AsRef<str>>(&mut self, names: &[S]) -> Result<()> {
        if self.store.is_none() {
            return Ok(());
        }
        for name in names {
            let e = self.entry_mut(name.as_ref())?;
            e.weight = match e.weight {
                Weight::Resident {
                    replaced: false, ..
                }
                | Weight::Stored => Weight::Stored,
                Weight::Resident { replaced: true, .. } | Weight::Released => Weight::Released,
            };
        }
        Ok(())
    }

    /// The bias tensor named `{prefix}.bias`, if that linear has one.
    pub(crate) fn bias_tensor(&self, name: &str) -> Option<Tensor> {
        let prefix = name.strip_suffix(".bias")?;
        self.map.get(prefix)?.bias.clone()
    }

    /// Replaces the bias tensor `{prefix}.bias`; `Ok(false)` when no linear has that bias.
    pub(crate) fn set_bias_tensor(&mut self, name: &str, value: Tensor) -> Result<bool> {
        let Some(e) = name.strip_suffix(".bias").and_then(|p| self.map.get_mut(p)) else {
            return Ok(false);
        };
        let Some(current) = e.bias.as_ref() else {
            return Ok(false);
        };
        e.bias = Some(checked(name, current, value)?);
        Ok(true)
    }
}

/// Linear `name` of `map`, for changing it.
fn find_mut<'m>(map: &'m mut HashMap<String, Entry>, name: &str) -> Result<&'m mut Entry> {
    map.get_mut(name)
        .ok_or_else(|| Error::UnknownLinear(name.to_string()))
}
