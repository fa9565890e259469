//! A family's quantizable parameters in one owner ([`Params`]): its linears and its block
//! norms, keyed by HF name. The parameter half of [`crate::BlockModel`] (reading and replacing
//! linear weights, norm tensors and linear biases) is implemented here once for every family.

use crate::capture::Capturer;
use crate::config::Activation;
use crate::error::{Error, Result};
use crate::linear::{LinearSpec, Linears};
use crate::norm::Norms;
use candle_core::Tensor;

/// The quantizable linears and block norms of a model.
#[derive(Debug, Clone, Default)]
pub struct Params {
    /// Linears by HF prefix.
    pub(crate) linears: Linears,
    /// Block norms by HF prefix.
    pub(crate) norms: Norms,
}

impl Params {
    /// Applies linear `name` to the input `[..., in]` that `input` computes — only when
    /// needed: the capturer's forward cache may hold the output, or the input
    /// ([`Capturer::linear`]); the input (restricted to `rows`) is reported to the capture.
    pub(crate) fn linear<'a, 'b>(
        &self,
        name: &str,
        rows: Option<&Tensor>,
        cap: &mut Capturer<'a, 'b>,
        input: impl FnOnce(&mut Capturer<'a, 'b>) -> Result<Tensor>,
    ) -> Result<Tensor> {
        self.linears.forward(name, rows, None, cap, input)
    }

    /// [`Self::linear`] followed by the activation `act`: `act(layer(x))`, the activation
    /// computed on the real tokens' rows only in capture passes ([`Capturer::linear`]).
    pub(crate) fn linear_act<'a, 'b>(
        &self,
        name: &str,
        rows: Option<&Tensor>,
        act: Activation,
        cap: &mut Capturer<'a, 'b>,
        input: impl FnOnce(&mut Capturer<'a, 'b>) -> Result<Tensor>,
    ) -> Result<Tensor> {
        self.linears.forward(name, rows, Some(act), cap, input)
    }

    /// Applies norm `prefix` over the last dimension of `x`.
    pub(crate) fn norm(&self, prefix: &str, x: &Tensor) -> Result<Tensor> {
        self.norms.forward(prefix, x)
    }

    /// The specs of the linears `names`, as one group.
    pub(crate) fn group<S: AsRef<str>>(&self, names: &[S]) -> Result<Vec<LinearSpec>> {
        self.linears.group(names)
    }

    /// [`crate::BlockModel::linear_weight`].
    pub(crate) fn linear_weight(&self, name: &str) -> Result<Tensor> {
        self.linears.weight(name)
    }

    /// [`crate::BlockModel::set_linear_weight`].
    pub(crate) fn set_linear_weight(&mut self, name: &str, weight: Tensor) -> Result<()> {
        self.linears.set_weight(name, weight)
    }

    /// [`crate::BlockModel::load_block`] for the linears `names`.
    pub(crate) fn load_linears<S: AsRef<str>>(&mut self, names: &[S]) -> Result<()> {
        self.linears.load_resident(names)
    }

    /// [`crate::BlockModel::unload_block`] for the linears `names`.
    pub(crate) fn unload_linears<S: AsRef<str>>(&mut self, names: &[S]) -> Result<()> {
        self.linears.unload(names)
    }

    /// [`crate::BlockModel::tensor`]: a block norm's weight or bias, or a linear's bias.
    pub(crate) fn tensor(&self, name: &str) -> Result<Tensor> {
        if let Some(t) = self.norms.tensor(name) {
            return Ok(t);
        }
        self.linears
            .bias_tensor(name)
            .ok_or_else(|| Error::UnknownTensor(name.to_string()))
    }

    /// [`crate::BlockModel::set_tensor`]: replaces what [`Params::tensor`] reads (same shape).
    pub(crate) fn set_tensor(&mut self, name: &str, value: Tensor) -> Result<()> {
        if self.norms.set_tensor(name, value.clone())?
            || self.linears.set_bias_tensor(name, value)?
        {
            Ok(())
        } else {
            Err(Error::UnknownTensor(name.to_string()))
        }
    }
}
