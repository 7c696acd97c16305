//! The gated state update of an LSTM-style cell (TrellisNet's), fused into one op.
//!
//! Per row, from the pre-activations `p = [p_i, p_f, p_o, p_g]` (`[..., 4H]`) and the previous
//! cell state `c₋` (`[..., H]`):
//!
//! `i = σ(p_i)`, `f = σ(p_f)`, `o = σ(p_o)`, `g = tanh(p_g)`, `c = f·c₋ + i·g`,
//! `h = o·tanh(c)`, and the output is `[h, c]` (`[..., 2H]`).
//!
//! VJP, with the cotangent split as `[ḡ_h, ḡ_c]`: `ċ = ḡ_c + ḡ_h·o·(1 − tanh²c)`, then
//! `∂p_i = ċ·g·i(1 − i)`, `∂p_f = ċ·c₋·f(1 − f)`, `∂p_o = ḡ_h·tanh c·o(1 − o)`,
//! `∂p_g = ċ·i·(1 − g²)` and `∂c₋ = ċ·f`.
//!
//! One pass over each row, where the composition (four narrows, five activations, four
//! products, a sum and a concatenation) makes eleven passes and as many tensors. A recording
//! keeps the activated gates and `tanh c` (the VJP then computes no transcendental, which
//! matters when an implicit backward replays it once per solver iteration) and `c₋`. The loops
//! are in `crate::cpu::lstm_gates`; on a CUDA device the op is the composition of the device's
//! element-wise kernels.

use crate::cpu::lstm_gates as cpu;
use crate::device::Device;
use crate::float::Float;
use crate::tape::{Backward, VjpTarget};
use crate::tensor::{Shape, Tensor};
use crate::var::{record, Var};

struct LstmGatesBackward<T: Float> {
    /// `[i, f, o, g]` per row, activated.
    gates: Tensor<T>,
    /// `tanh c` per row.
    tanh_c: Tensor<T>,
    c_prev: Tensor<T>,
    hidden: usize,
}

impl<T: Float> LstmGatesBackward<T> {
    fn run(&self, g: &[T], pre: Option<cpu::Dst<'_, T>>, c_prev: Option<cpu::Dst<'_, T>>) {
        let kept = cpu::Kept {
            gates: self.gates.data(),
            tanh_c: self.tanh_c.data(),
            c_prev: self.c_prev.data(),
        };
        cpu::backward(kept, g, self.hidden, pre, c_prev);
    }
}

impl<T: Float> Backward<T> for LstmGatesBackward<T> {
    fn name(&self) -> &'static str {
        "lstm_gates"
    }

    /// Both gradients come from one `ċ` per entry: one pass for the two.
    fn shares_work(&self) -> bool {
        true
    }

    fn vjp_many(&self, g: &[T], targets: &mut [VjpTarget<'_, T>]) {
        let (mut pre, mut c_prev) = (None, None);
        for t in targets.iter_mut() {
            let dst = cpu::Dst {
                buf: &mut *t.dst,
                acc: t.acc,
            };
            match t.k {
                0 => pre = Some(dst),
                _ => c_prev = Some(dst),
            }
        }
        self.run(g, pre, c_prev);
    }

    fn vjp(&self, k: usize, g: &[T], dst: &mut [T], acc: bool) {
        let dst = Some(cpu::Dst { buf: dst, acc });
        match k {
            0 => self.run(g, dst, None),
            _ => self.run(g, None, dst),
        }
    }
}

/// The composition of the same update from element-wise ops (the CUDA path, and the
/// reference the fused op is tested against).
pub fn lstm_gates_composed<T: Float>(pre: &Var<T>, c_prev: &Var<T>) -> Var<T> {
    let (last, h) = (pre.shape().len() - 1, c_prev.dim(c_prev.shape().len() - 1));
    let gate = |k: usize| pre.narrow(last, k * h, h);
    let (i, f, o, g) = (
        gate(0).sigmoid(),
        gate(1).sigmoid(),
        gate(2).sigmoid(),
        gate(3).tanh(),
    );
    let c = f.mul(c_prev).add(&i.mul(&g));
    let h_new = o.mul(&c.tanh());
    Var::concat(&[&h_new, &c], last)
}

impl<T: Float> Var<T> {
    /// The LSTM-style update `[h, c]` (`[..., 2H]`) from the gate pre-activations `self`
    /// (`[..., 4H]`, ordered input, forget, output, candidate) and the previous cell state
    /// `c_prev` (`[..., H]`): `c = σ(p_f)·c_prev + σ(p_i)·tanh(p_g)`, `h = σ(p_o)·tanh(c)`.
    /// See the module docs for the VJP.
    pub fn lstm_gates(&self, c_prev: &Var<T>) -> Var<T> {
        let (ps, cs) = (self.shape(), c_prev.shape());
        let ok = !ps.is_empty()
            && ps.len() == cs.len()
            && ps[..ps.len() - 1] == cs[..cs.len() - 1]
            && ps[ps.len() - 1] == 4 * cs[cs.len() - 1];
        assert!(
            ok,
            "lstm_gates: pre-activation shape {ps:?} and cell state shape {cs:?} are not \
             compatible (need [..., 4H] and [..., H])"
        );
        crate::device::common_device("lstm_gates", &[self.value(), c_prev.value()]);
        if self.value().device() != Device::Cpu {
            return lstm_gates_composed(self, c_prev);
        }
        let hidden = cs[cs.len() - 1];
        let rows = c_prev.numel().checked_div(hidden).unwrap_or(0);
        let mut shape = Shape::from_slice(&cs[..cs.len() - 1]);
        shape.push(2 * hidden);
        let mut out = crate::pool::take(rows * 2 * hidden);
        let recording = self.requires_grad() || c_prev.requires_grad();
        let mut keep = recording.then(|| {
            (
                crate::pool::take(rows * 4 * hidden),
                crate::pool::take(rows * hidden),
            )
        });
        cpu::forward(
            self.value().data(),
            c_prev.value().data(),
            hidden,
            &mut out,
            keep.as_mut().map(|(g, t)| (&mut g[..], &mut t[..])),
        );
        let value = Tensor::from_vec(out, &shape);
        record(value, &[self, c_prev], || {
            let (gates, tanh_c) = keep.expect("kept when recording");
            LstmGatesBackward {
                gates: Tensor::from_vec(gates, ps),
                tanh_c: Tensor::from_vec(tanh_c, cs),
                c_prev: c_prev.value().clone(),
                hidden,
            }
        })
    }
}
