//! Finite-difference check of the training gradients on a tiny random BERT in f64:
//! `∂L/∂θ ≈ (L(θ + h) − L(θ − h)) / 2h` for entries of every kind of parameter (embeddings,
//! LayerNorms, attention, FFN, head). Fails if any gradient stops (e.g. a fused kernel without
//! backward) or is wrong.

use candle_core::{DType, Device, Tensor, Var};
use pmq_finetune::bert::{mean_pool, TrainBert};
use pmq_finetune::full::{cross_entropy, HeadVars};
use pmq_models::TextTokenizer;
use pmq_testkit::{synthetic_task, write_tiny_bert, TinyBert};
use rand::rngs::StdRng;
use rand::SeedableRng;

struct Setup {
    model: TrainBert,
    head: HeadVars,
    ids: Tensor,
    mask: Tensor,
    labels: Tensor,
}

impl Setup {
    fn loss(&self) -> Tensor {
        let h = self.model.forward(&self.ids, &self.mask).unwrap();
        let e = mean_pool(&h, &self.mask).unwrap();
        cross_entropy(&self.head.logits(&e).unwrap(), &self.labels).unwrap()
    }

    fn loss_value(&self) -> f64 {
        self.loss().to_scalar::<f64>().unwrap()
    }
}

fn setup(dir: &std::path::Path) -> Setup {
    let shape = TinyBert {
        hidden: 8,
        heads: 2,
        intermediate: 12,
        layers: 2,
        max_positions: 24,
    };
    write_tiny_bert(dir, shape, 11);
    let model = TrainBert::load(dir, DType::F64).unwrap();
    let head = HeadVars::init(2, 8, DType::F64, &mut StdRng::seed_from_u64(1)).unwrap();
    // a larger head so the loss is sensitive to the encoder
    head.w.set(&(head.w.as_tensor() * 50.0).unwrap()).unwrap();
    let task = synthetic_task("t", 3, 0, 7);
    let tok = TextTokenizer::from_file(&dir.join("tokenizer.json"), 12).unwrap();
    let texts: Vec<&str> = task.train.iter().map(|e| e.text.as_str()).collect();
    let batch = tok.batch(&texts).unwrap();
    let mask = batch.attention_mask.unwrap().to_dtype(DType::F64).unwrap();
    let labels: Vec<u32> = task.train.iter().map(|e| e.label as u32).collect();
    Setup {
        model,
        head,
        ids: batch.input_ids.unwrap(),
        mask,
        labels: Tensor::new(labels.as_slice(), &Device::Cpu).unwrap(),
    }
}

/// Sets flat entry `i` of `var` to `value`.
fn set_entry(var: &Var, i: usize, value: f64) {
    let shape = var.as_tensor().shape().clone();
    let mut v: Vec<f64> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
    v[i] = value;
    var.set(&Tensor::from_vec(v, shape, &Device::Cpu).unwrap())
        .unwrap();
}

fn check(
    s: &Setup,
    name: &str,
    var: &Var,
    entries: &[usize],
    grads: &candle_core::backprop::GradStore,
) {
    let g = grads
        .get(var.as_tensor())
        .unwrap_or_else(|| panic!("no gradient reached `{name}`"));
    let g: Vec<f64> = g.flatten_all().unwrap().to_vec1().unwrap();
    // softmax is shift-invariant, so the key bias (which shifts a whole score row) has an
    // exactly zero gradient; every other parameter must receive one
    if !name.ends_with("attention.self.key.bias") {
        assert!(
            g.iter().any(|x| x.abs() > 1e-10),
            "gradient of `{name}` is zero"
        );
    }
    let h = 1e-5;
    for &i in entries {
        let orig: f64 = var
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()[i];
        set_entry(var, i, orig + h);
        let up = s.loss_value();
        set_entry(var, i, orig - h);
        let down = s.loss_value();
        set_entry(var, i, orig);
        let fd = (up - down) / (2.0 * h);
        let tol = 1e-6 + 1e-4 * fd.abs().max(g[i].abs());
        assert!(
            (fd - g[i]).abs() <= tol,
            "`{name}`[{i}]: autograd {} vs finite difference {fd}",
            g[i]
        );
    }
}

#[test]
fn gradients_match_finite_differences() {
    let tmp = tempfile::tempdir().unwrap();
    let s = setup(tmp.path());
    let grads = s.loss().backward().unwrap();
    let ids: Vec<u32> = s.ids.flatten_all().unwrap().to_vec1().unwrap();
    let hidden = 8;
    let mut checked = 0;
    for (name, var) in s.model.params() {
        let n = var.as_tensor().elem_count();
        let entries: Vec<usize> = if name.contains("word_embeddings") {
            // rows of tokens that occur in the batch
            vec![ids[1] as usize * hidden, ids[2] as usize * hidden + 3]
        } else if name.contains("position_embeddings") {
            vec![0, hidden + 5]
        } else if name.contains("token_type") {
            vec![2]
        } else {
            vec![0, n / 2, n - 1]
        };
        check(&s, name, var, &entries, &grads);
        checked += 1;
    }
    assert_eq!(checked, s.model.params().len());
    check(&s, "head.weight", &s.head.w, &[0, 9], &grads);
    check(&s, "head.bias", &s.head.b, &[0, 1], &grads);
}

/// In the training dtype (f32, where candle's fused kernels exist and would be picked by a
/// careless forward), every parameter still receives a gradient.
#[test]
fn every_parameter_gets_a_gradient_in_f32() {
    let tmp = tempfile::tempdir().unwrap();
    write_tiny_bert(tmp.path(), TinyBert::default(), 2);
    let model = TrainBert::load(tmp.path(), DType::F32).unwrap();
    let head = HeadVars::init(2, 16, DType::F32, &mut StdRng::seed_from_u64(1)).unwrap();
    let task = synthetic_task("t", 4, 0, 7);
    let tok = TextTokenizer::from_file(&tmp.path().join("tokenizer.json"), 12).unwrap();
    let texts: Vec<&str> = task.train.iter().map(|e| e.text.as_str()).collect();
    let batch = tok.batch(&texts).unwrap();
    let mask = batch.attention_mask.unwrap().to_dtype(DType::F32).unwrap();
    let ids = batch.input_ids.unwrap();
    let labels: Vec<u32> = task.train.iter().map(|e| e.label as u32).collect();
    let e = mean_pool(&model.forward(&ids, &mask).unwrap(), &mask).unwrap();
    let loss = cross_entropy(
        &head.logits(&e).unwrap(),
        &Tensor::new(labels.as_slice(), &Device::Cpu).unwrap(),
    )
    .unwrap();
    let grads = loss.backward().unwrap();
    for (name, var) in model.params() {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient reached `{name}`"));
        let max = g
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            max > 0.0 || name.ends_with("attention.self.key.bias"),
            "gradient of `{name}` is zero"
        );
    }
}
