//! The two arguments every writer takes: what to write and where.

use crate::{PackedLinear, ReplacedTensors};
use pmq_io::TensorStore;
use std::collections::BTreeMap;
use std::path::Path;

/// A quantized model to write: the source checkpoint (every tensor not quantized is copied
/// from it), the quantized linears by HF prefix, and the unquantized tensors the method
/// changed (e.g. the norms and biases an AWQ fold changed; written in their source dtype).
#[derive(Clone, Copy)]
pub struct QuantizedModel<'a> {
    pub src: &'a TensorStore,
    pub layers: &'a BTreeMap<String, PackedLinear>,
    pub replaced: Option<&'a ReplacedTensors>,
}

impl<'a> QuantizedModel<'a> {
    /// The source with these quantized linears and nothing else changed.
    pub fn new(src: &'a TensorStore, layers: &'a BTreeMap<String, PackedLinear>) -> Self {
        Self {
            src,
            layers,
            replaced: None,
        }
    }

    /// The same, with `replaced` tensors stored instead of the source's.
    pub fn with_replaced(self, replaced: &'a ReplacedTensors) -> Self {
        Self {
            replaced: Some(replaced),
            ..self
        }
    }
}

/// Where a writer puts the model: the output directory, extra files written into it (name,
/// contents; e.g. reports) and whether an existing directory may be replaced (only once the
/// new one is complete).
#[derive(Clone, Copy)]
pub struct Destination<'a> {
    pub dir: &'a Path,
    pub extra_files: &'a [(&'a str, Vec<u8>)],
    pub overwrite: bool,
}

impl<'a> Destination<'a> {
    /// `dir`, no extra files, no overwrite.
    pub fn new(dir: &'a Path) -> Self {
        Self {
            dir,
            extra_files: &[],
            overwrite: false,
        }
    }
}
