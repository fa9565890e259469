//! AdamW with parameter groups, global gradient-norm clipping and a linear warm-up/decay
//! learning-rate schedule.
//!
//! Per step `t` with clip factor `c = min(1, max_norm / ‖g‖₂)` over all gradients:
//!
//! ```text
//! m ← β₁ m + (1 − β₁) c g          v ← β₂ v + (1 − β₂) (c g)²
//! θ ← θ (1 − η λ) − η m̂ / (√v̂ + ε),   m̂ = m / (1 − β₁ᵗ), v̂ = v / (1 − β₂ᵗ)
//! ```
//!
//! (Loshchilov & Hutter's decoupled weight decay, as `torch.optim.AdamW`), where
//! `η = lr_group · schedule(step)` and
//! `schedule(i) = (i + 1) / (w + 1)` for `i < w` warm-up steps, else `(T − i) / (T − w)`.

use anyhow::Result;
use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

/// Parameters that share a learning rate and weight decay.
pub struct ParamGroup {
    pub vars: Vec<Var>,
    pub lr: f64,
    pub weight_decay: f64,
}

struct Slot {
    var: Var,
    m: Tensor,
    v: Tensor,
}

struct Group {
    slots: Vec<Slot>,
    lr: f64,
    weight_decay: f64,
}

/// AdamW over several parameter groups.
pub struct AdamW {
    groups: Vec<Group>,
    t: i32,
    beta1: f64,
    beta2: f64,
    eps: f64,
}

impl AdamW {
    /// Zero moments for every variable (β₁ = 0.9, β₂ = 0.999, ε = 1e-8, as torch).
    pub fn new(groups: Vec<ParamGroup>) -> Result<Self> {
        let groups = groups
            .into_iter()
            .map(|g| {
                let slots = g
                    .vars
                    .into_iter()
                    .map(|var| {
                        Ok(Slot {
                            m: var.as_tensor().zeros_like()?,
                            v: var.as_tensor().zeros_like()?,
                            var,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(Group {
                    slots,
                    lr: g.lr,
                    weight_decay: g.weight_decay,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            groups,
            t: 0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        })
    }

    /// Global L2 norm of the gradients of all optimised variables.
    pub fn grad_norm(&self, grads: &GradStore) -> Result<f64> {
        let mut sq = 0f64;
        for slot in self.groups.iter().flat_map(|g| &g.slots) {
            if let Some(g) = grads.get(slot.var.as_tensor()) {
                sq += g
                    .sqr()?
                    .sum_all()?
                    .to_dtype(DType::F64)?
                    .to_scalar::<f64>()?;
            }
        }
        Ok(sq.sqrt())
    }

    /// One update with every group's learning rate multiplied by `lr_scale`; gradients are
    /// clipped to a global norm of `max_norm` when given. Returns the norm before clipping.
    pub fn step(&mut self, grads: &GradStore, lr_scale: f64, max_norm: Option<f64>) -> Result<f64> {
        let norm = self.grad_norm(grads)?;
        let clip = match max_norm {
            Some(m) if norm > m => m / (norm + 1e-6),
            _ => 1.0,
        };
        self.t += 1;
        let (b1, b2) = (self.beta1, self.beta2);
        let bc1 = 1.0 - b1.powi(self.t);
        let bc2 = 1.0 - b2.powi(self.t);
        for group in &mut self.groups {
            let lr = group.lr * lr_scale;
            for slot in &mut group.slots {
                let Some(g) = grads.get(slot.var.as_tensor()) else {
                    continue;
                };
                let g = if clip != 1.0 { (g * clip)? } else { g.clone() };
                slot.m = ((&slot.m * b1)? + (&g * (1.0 - b1))?)?;
                slot.v = ((&slot.v * b2)? + (g.sqr()? * (1.0 - b2))?)?;
                let denom = ((&slot.v / bc2)?.sqrt()? + self.eps)?;
                let update = ((&slot.m / bc1)? / denom)?;
                let theta = slot.var.as_tensor();
                let decayed = if group.weight_decay > 0.0 {
                    (theta * (1.0 - lr * group.weight_decay))?
                } else {
                    theta.clone()
                };
                slot.var.set(&(decayed - (update * lr)?)?)?;
            }
        }
        Ok(norm)
    }
}

/// Linear warm-up then linear decay to zero: the learning-rate factor of step `i` of `total`.
pub fn schedule(i: usize, total: usize, warmup: usize) -> f64 {
    if i < warmup {
        (i + 1) as f64 / (warmup + 1) as f64
    } else {
        total.saturating_sub(i) as f64 / total.saturating_sub(warmup).max(1) as f64
    }
}

/// Whether a parameter is exempt from weight decay (biases and LayerNorm weights, the
/// convention of BERT fine-tuning).
pub fn no_decay(name: &str) -> bool {
    name.ends_with(".bias") || name.contains("LayerNorm") || name == "bias"
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn schedule_warms_up_then_decays() {
        let f: Vec<f64> = (0..10).map(|i| schedule(i, 10, 2)).collect();
        assert!((f[0] - 1.0 / 3.0).abs() < 1e-12 && (f[1] - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(f[2], 1.0);
        assert!(f.windows(2).skip(2).all(|w| w[1] < w[0]));
        assert!(f[9] > 0.0);
        assert_eq!(schedule(0, 1, 0), 1.0);
    }

    #[test]
    fn adamw_minimises_a_quadratic_and_matches_the_torch_formula() {
        // one step from θ = 1 with g = 2θ: m̂ = g, v̂ = g², so θ' = θ(1 − ηλ) − η·g/(|g| + ε)
        let v = Var::new(&[1.0f64, -2.0], &Device::Cpu).unwrap();
        let mut opt = AdamW::new(vec![ParamGroup {
            vars: vec![v.clone()],
            lr: 0.1,
            weight_decay: 0.5,
        }])
        .unwrap();
        let loss = v.as_tensor().sqr().unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        opt.step(&grads, 1.0, None).unwrap();
        let got = v.as_tensor().to_vec1::<f64>().unwrap();
        let want = [
            1.0 * 0.95 - 0.1 * 2.0 / (2.0 + 1e-8),
            -2.0 * 0.95 + 0.1 * 4.0 / (4.0 + 1e-8),
        ];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{got:?} vs {want:?}");
        }
        for _ in 0..300 {
            let loss = v.as_tensor().sqr().unwrap().sum_all().unwrap();
            let grads = loss.backward().unwrap();
            opt.step(&grads, 1.0, Some(1.0)).unwrap();
        }
        let end = v.as_tensor().to_vec1::<f64>().unwrap();
        assert!(end.iter().all(|x| x.abs() < 0.05), "{end:?}");
    }

    #[test]
    fn clipping_scales_the_gradient() {
        let v = Var::new(&[3.0f64, 4.0], &Device::Cpu).unwrap();
        let opt = AdamW::new(vec![ParamGroup {
            vars: vec![v.clone()],
            lr: 0.1,
            weight_decay: 0.0,
        }])
        .unwrap();
        let loss = (v.as_tensor().sqr().unwrap().sum_all().unwrap() * 0.5).unwrap();
        let grads = loss.backward().unwrap();
        assert!((opt.grad_norm(&grads).unwrap() - 5.0).abs() < 1e-12);
    }

    #[test]
    fn decay_exemptions() {
        assert!(no_decay("encoder.layer.0.output.dense.bias"));
        assert!(no_decay("embeddings.LayerNorm.weight"));
        assert!(!no_decay("encoder.layer.0.output.dense.weight"));
        assert!(!no_decay("embeddings.word_embeddings.weight"));
    }
}
