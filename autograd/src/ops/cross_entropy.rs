//! Fused cross-entropy from logits with integer targets, averaged over rows.
//!
//! `L = (1/N) Σ_r (logsumexp(x_r) - x_r[t_r])`; its VJP is `∂x_r = g·(softmax(x_r) - e_{t_r})/N`,
//! computed in one pass from the stored log-sum-exp without materialising the softmax.

use super::softmax::{logsumexp, rows_mut};
use crate::float::Float;
use crate::tape::Backward;
use crate::tensor::Tensor;
use crate::var::{record, Var};

struct CrossEntropyBackward<T: Float> {
    logits: Tensor<T>,
    lse: Vec<T>,
    targets: Vec<u32>,
    classes: usize,
}

impl<T: Float> Backward<T> for CrossEntropyBackward<T> {
    fn name(&self) -> &'static str {
        "cross_entropy"
    }

    fn vjp(&self, _k: usize, g: &[T], dst: &mut [T], acc: bool) {
        let c = self.classes;
        let scale = g[0] / T::from_usize(self.targets.len().max(1));
        let x = self.logits.data();
        rows_mut(dst, c, |r, out| {
            let row = &x[r * c..(r + 1) * c];
            let t = self.targets[r] as usize;
            for i in 0..c {
                let mut v = (row[i] - self.lse[r]).exp();
                if i == t {
                    v -= T::ONE;
                }
                v *= scale;
                out[i] = if acc { out[i] + v } else { v };
            }
        });
    }
}

impl<T: Float> Var<T> {
    /// Mean cross-entropy of `self` (logits `[..., C]`, rows flattened) against one class index
    /// per row. Panics if the counts disagree or a target is out of range.
    pub fn cross_entropy(&self, targets: &[usize]) -> Var<T> {
        let shape = self.shape();
        let c = *shape.last().unwrap_or(&0);
        let rows = if c == 0 { 0 } else { self.numel() / c };
        assert!(
            c > 0 && rows == targets.len(),
            "cross_entropy: logits of shape {shape:?} for {} targets",
            targets.len()
        );
        let x = self.value().data();
        let mut lse = vec![T::ZERO; rows];
        rows_mut(&mut lse, 1, |r, o| o[0] = logsumexp(&x[r * c..(r + 1) * c]));
        let mut total = 0.0f64;
        for (r, &t) in targets.iter().enumerate() {
            assert!(
                t < c,
                "cross_entropy: target {t} out of range for {c} classes"
            );
            total += (lse[r] - x[r * c + t]).to_f64();
        }
        let value = Tensor::scalar(T::from_f64(total / rows.max(1) as f64));
        record(value, &[self], || CrossEntropyBackward {
            logits: self.value().clone(),
            lse,
            targets: targets.iter().map(|&t| t as u32).collect(),
            classes: c,
        })
    }
}
