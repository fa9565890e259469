//! The two arguments every writer takes: what to write and where.

use crate::replaced::check_replaced;
use crate::{FormatError, PackedLinear, ReplacedTensors};
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

    /// The replaced tensors (none when not given).
    pub fn replaced(&self) -> &'a ReplacedTensors {
        static NONE: ReplacedTensors = ReplacedTensors::new();
        self.replaced.unwrap_or(&NONE)
    }

    /// Checks the model before anything is written: every quantized linear is a 2-D tensor of
    /// the source with the layer's shape, every replaced tensor a source tensor that is not
    /// quantized, with as many values.
    pub(crate) fn check(&self) -> Result<(), FormatError> {
        check_layers(self.src, self.layers)?;
        check_replaced(self.src, self.layers, self.replaced())
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

/// Checks that every quantized layer matches a 2-D `<prefix>.weight` of the source.
fn check_layers(
    src: &TensorStore,
    layers: &BTreeMap<String, PackedLinear>,
) -> Result<(), FormatError> {
    for (prefix, layer) in layers {
        let name = format!("{prefix}.weight");
        let info = src.info(&name).ok_or_else(|| {
            FormatError::tensor(
                src.root(),
                &name,
                "is quantized but the source model has no such tensor",
            )
        })?;
        if info.shape != [layer.rows, layer.cols] {
            return Err(FormatError::tensor(
                src.root(),
                &name,
                format!(
                    "has shape {:?} but its quantized layer is [{}, {}]",
                    info.shape, layer.rows, layer.cols
                ),
            ));
        }
    }
    Ok(())
}
