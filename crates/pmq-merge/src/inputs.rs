//! Loading one tensor from the base and every expert, as f32, with finiteness checks.

use rayon::prelude::*;

use crate::checkpoint::Checkpoint;
use crate::MergeError;

/// The opened base and experts.
pub struct Inputs {
    pub base: Checkpoint,
    pub experts: Vec<Checkpoint>,
}

/// One tensor of the base and of every expert, as f32.
pub struct Loaded {
    pub base: Vec<f32>,
    pub experts: Vec<Vec<f32>>,
}

impl Loaded {
    /// Task vectors τᵢ = Wᵢ − W₀, in f32 (the arithmetic of a f32 PyTorch state dict).
    pub fn task_vectors(&self) -> Vec<Vec<f32>> {
        self.experts
            .iter()
            .map(|w| w.iter().zip(&self.base).map(|(a, b)| a - b).collect())
            .collect()
    }
}

impl Inputs {
    /// Number of experts K.
    pub fn k(&self) -> usize {
        self.experts.len()
    }

    /// Reads `name` from the base and all experts (in parallel), failing on NaN/±inf with the
    /// tensor and checkpoint named.
    pub fn load(&self, name: &str) -> Result<Loaded, MergeError> {
        let base = read_checked(&self.base, name)?;
        let experts = self
            .experts
            .par_iter()
            .map(|e| read_checked(e, name))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Loaded { base, experts })
    }
}

fn read_checked(ckpt: &Checkpoint, name: &str) -> Result<Vec<f32>, MergeError> {
    let values = ckpt.store.read_f32(name)?;
    if let Some((index, &value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(MergeError::NonFinite {
            tensor: name.to_string(),
            source_name: ckpt.label.clone(),
            index,
            value,
        });
    }
    Ok(values)
}
