//! Trainable building blocks shared by the training encoders: linears and LayerNorms over
//! `candle_core::Var`s, loaded from a checkpoint under their HF names. Only ops with a backward
//! pass are used (LayerNorm as `mean`/`var` arithmetic, [`candle_nn::ops::layer_norm_slow`]).

use anyhow::{Context, Result};
use candle_core::{DType, Tensor, Var};
use pmq_models::WeightStore;

#[derive(Debug)]
pub(crate) struct Lin {
    pub(crate) w: Var,
    pub(crate) b: Option<Var>,
}

impl Lin {
    /// `x W^T + b` for `x` `[b, s, in]` (or `[b, in]`), as one 2-D matmul.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.rank() == 2 {
            let y = x.matmul(&self.w.as_tensor().t()?)?;
            return Ok(match &self.b {
                Some(b) => y.broadcast_add(b.as_tensor())?,
                None => y,
            });
        }
        let (b, s, i) = x.dims3()?;
        let y = x.reshape((b * s, i))?.matmul(&self.w.as_tensor().t()?)?;
        let y = match &self.b {
            Some(b) => y.broadcast_add(b.as_tensor())?,
            None => y,
        };
        let o = y.dim(1)?;
        Ok(y.reshape((b, s, o))?)
    }
}

#[derive(Debug)]
pub(crate) struct Norm {
    w: Var,
    b: Var,
    eps: f32,
}

impl Norm {
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::layer_norm_slow(
            x,
            self.w.as_tensor(),
            self.b.as_tensor(),
            self.eps,
        )?)
    }
}

/// Loads checkpoint tensors as `Var`s in the training dtype, recording their names.
pub(crate) struct Loader<'a> {
    pub(crate) ws: &'a WeightStore,
    pub(crate) dtype: DType,
    pub(crate) prefix: &'a str,
    pub(crate) params: Vec<(String, Var)>,
}

impl Loader<'_> {
    pub(crate) fn var(&mut self, name: &str, shape: &[usize]) -> Result<Var> {
        let full = format!("{}{name}", self.prefix);
        let t = self
            .ws
            .get(&full, shape)
            .with_context(|| format!("loading `{full}` from {}", self.ws.source()))?
            .to_dtype(self.dtype)?;
        let v = Var::from_tensor(&t)?;
        self.params.push((full, v.clone()));
        Ok(v)
    }

    pub(crate) fn lin(&mut self, name: &str, i: usize, o: usize) -> Result<Lin> {
        Ok(Lin {
            w: self.var(&format!("{name}.weight"), &[o, i])?,
            b: Some(self.var(&format!("{name}.bias"), &[o])?),
        })
    }

    /// A linear without bias.
    pub(crate) fn lin_no_bias(&mut self, name: &str, i: usize, o: usize) -> Result<Lin> {
        Ok(Lin {
            w: self.var(&format!("{name}.weight"), &[o, i])?,
            b: None,
        })
    }

    pub(crate) fn norm(&mut self, name: &str, h: usize, eps: f64) -> Result<Norm> {
        Ok(Norm {
            w: self.var(&format!("{name}.weight"), &[h])?,
            b: self.var(&format!("{name}.bias"), &[h])?,
            eps: eps as f32,
        })
    }
}
