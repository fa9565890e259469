//! Capturing linears' inputs during a forward pass: the public callback type ([`CaptureFn`]) and
//! the wrapper that feeds it the unpadded input rows of each linear.

use crate::error::{Error, Result};
use crate::tensors::token_rows;
use candle_core::{Tensor, TensorId};

/// The capture callback: receives a linear's name and its input as `[tokens, in_features]`
/// with padding tokens already removed. Linears fed the same tensor one after the other (q, k,
/// v; gate, up) receive the very same rows tensor (equal [`Tensor::id`]). Returning an error
/// aborts the forward pass.
pub type CaptureFn<'a> = dyn FnMut(&str, &Tensor) -> Result<()> + 'a;

/// Wraps the optional capture callback for the duration of one block forward.
pub(crate) struct Capturer<'a, 'b> {
    f: Option<&'a mut CaptureFn<'b>>,
    /// The last input sent and its flattened rows: linears fed the same tensor (q, k, v) get
    /// the very same rows tensor, so callers can recognise shared inputs by tensor id.
    last: Option<((TensorId, Option<TensorId>), Tensor)>,
}

impl<'a, 'b> Capturer<'a, 'b> {
    /// A capturer around `f`; without a callback every [`Capturer::emit`] is a no-op.
    pub(crate) fn new(f: Option<&'a mut CaptureFn<'b>>) -> Self {
        Self { f, last: None }
    }

    /// Sends `x` (`[..., in]`, flattened to rows and restricted to `rows`) to the callback.
    pub(crate) fn emit(&mut self, name: &str, x: &Tensor, rows: Option<&Tensor>) -> Result<()> {
        let Some(f) = self.f.as_mut() else {
            return Ok(());
        };
        let key = (x.id(), rows.map(Tensor::id));
        let flat = match &self.last {
            Some((k, flat)) if *k == key => flat.clone(),
            _ => {
                let flat = token_rows(x, rows)?;
                self.last = Some((key, flat.clone()));
                flat
            }
        };
        f(name, &flat).map_err(|e| match e {
            e @ (Error::Capture { .. } | Error::CaptureDone) => e,
            other => Error::Capture {
                linear: name.to_string(),
                msg: other.to_string(),
            },
        })
    }
}
