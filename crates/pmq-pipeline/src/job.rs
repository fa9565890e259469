//! The types shared by the pipeline loop and the block strategies: one block's work, the
//! results so far, and the conversions between candle tensors and faer matrices.

use crate::config::PipelineConfig;
use crate::experts::Experts;
use crate::progress::Progress;
use crate::report::{LinearRecord, Phases};
use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use faer::{Mat, MatRef};
use pmq_core::matrix::{from_row_major_f32, to_row_major_f32};
use pmq_core::QuantizedLayer;
use pmq_formats::PackedLinear;
use pmq_models::{BlockModel, OutputMemo, State};
use std::collections::{BTreeMap, BTreeSet};

/// One block's work for a strategy: the model, the calibration states entering the block
/// (per task, per batch), the experts and the settings.
pub(crate) struct BlockJob<'a> {
    pub block: usize,
    pub model: &'a mut dyn BlockModel,
    pub states: &'a [Vec<State>],
    pub experts: &'a Experts,
    pub cfg: &'a PipelineConfig,
    pub progress: &'a dyn Progress,
    /// Where the time goes (added to by the strategies).
    pub timing: &'a mut Phases,
    /// One forward cache per calibration state (same layout as `states`).
    pub memos: &'a mut [Vec<OutputMemo>],
}

/// Everything quantized so far.
#[derive(Default)]
pub(crate) struct Results {
    pub layers: BTreeMap<String, PackedLinear>,
    pub records: Vec<LinearRecord>,
    /// Names of unquantized tensors changed in the model.
    pub changed: BTreeSet<String>,
}

impl Results {
    /// Stores a quantized linear and its report entry.
    pub fn push(&mut self, record: LinearRecord, layer: QuantizedLayer) {
        self.layers
            .insert(record.name.clone(), PackedLinear::from(layer));
        self.records.push(record);
    }
}

/// A 2-D tensor as an f64 matrix.
pub(crate) fn tensor_to_mat(t: &Tensor) -> Result<Mat<f64>> {
    let (r, c) = t.dims2()?;
    let v: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    Ok(from_row_major_f32(r, c, &v))
}

/// An f64 matrix as a 2-D f32 tensor.
pub(crate) fn mat_to_tensor(m: MatRef<'_, f64>) -> Result<Tensor> {
    Ok(Tensor::from_vec(
        to_row_major_f32(m),
        (m.nrows(), m.ncols()),
        &Device::Cpu,
    )?)
}
