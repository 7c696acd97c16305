//! `Var<T>`: a tensor value that may be recorded on a tape, and the recording switch.
//!
//! Every op takes and returns `Var`s. An op records a node only when recording is on for the
//! current thread and at least one operand is on a tape; otherwise it returns a plain value
//! (a constant) and keeps nothing alive. So one cell written against `Var` serves both the
//! recorded application `f(z*)` and the solver's no-grad iterations, and a no-grad evaluation
//! holds only the live tensors.

use crate::float::Float;
use crate::tape::{Backward, CustomVjp, NodeOp, Tape};
use crate::tensor::Tensor;
use smallvec::SmallVec;
use std::cell::Cell;

thread_local! {
    static RECORDING: Cell<bool> = const { Cell::new(true) };
}

/// True when ops on this thread record onto tapes.
pub fn is_recording() -> bool {
    RECORDING.with(Cell::get)
}

/// Runs `f` with recording off on this thread (restored afterwards, even on panic).
///
/// Fixed-point solvers evaluate cells this way: no node is recorded and no intermediate kept.
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    let _guard = NoGradGuard::new();
    f()
}

/// Turns recording off until dropped.
pub struct NoGradGuard {
    previous: bool,
}

impl NoGradGuard {
    /// Turns recording off on this thread.
    pub fn new() -> Self {
        let previous = RECORDING.with(|r| r.replace(false));
        NoGradGuard { previous }
    }
}

impl Default for NoGradGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NoGradGuard {
    fn drop(&mut self) {
        RECORDING.with(|r| r.set(self.previous));
    }
}

/// A tensor value, optionally recorded on a [`Tape`].
#[derive(Clone)]
pub struct Var<T: Float> {
    value: Tensor<T>,
    node: Option<(Tape<T>, u32)>,
}

impl<T: Float> Var<T> {
    /// A value that is not recorded anywhere (gradients never flow into it).
    pub fn constant(value: Tensor<T>) -> Self {
        Var { value, node: None }
    }

    pub(crate) fn on_tape(value: Tensor<T>, tape: Tape<T>, id: u32) -> Self {
        Var {
            value,
            node: Some((tape, id)),
        }
    }

    /// The value.
    pub fn value(&self) -> &Tensor<T> {
        &self.value
    }

    /// The value, consuming the variable.
    pub fn into_value(self) -> Tensor<T> {
        self.value
    }

    /// The shape of the value.
    pub fn shape(&self) -> &[usize] {
        self.value.shape()
    }

    /// The number of elements.
    pub fn numel(&self) -> usize {
        self.value.numel()
    }

    /// The number of dimensions.
    pub fn ndim(&self) -> usize {
        self.value.ndim()
    }

    /// Size of dimension `axis`.
    pub fn dim(&self, axis: usize) -> usize {
        self.value.dim(axis)
    }

    /// The tape and node index, when recorded.
    pub fn node(&self) -> Option<(&Tape<T>, u32)> {
        self.node.as_ref().map(|(t, i)| (t, *i))
    }

    /// The tape this variable is recorded on.
    pub fn tape(&self) -> Option<&Tape<T>> {
        self.node.as_ref().map(|(t, _)| t)
    }

    /// True when recorded on a tape.
    pub fn is_recorded(&self) -> bool {
        self.node.is_some()
    }

    /// The same value as a constant: gradients stop here.
    pub fn detach(&self) -> Var<T> {
        Var::constant(self.value.clone())
    }

    /// The single value of a one-element variable.
    pub fn item(&self) -> T {
        self.value.item()
    }
}

impl<T: Float> std::fmt::Debug for Var<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Var({:?}{})",
            self.value,
            match &self.node {
                Some((_, id)) => format!(", node {id}"),
                None => String::new(),
            }
        )
    }
}

/// The tape an op on `inputs` records onto: `None` when recording is off or no input is
/// recorded. Panics when inputs live on different tapes.
fn tape_of<'a, T: Float>(op: &str, inputs: &[&'a Var<T>]) -> Option<&'a Tape<T>> {
    if !is_recording() {
        return None;
    }
    let mut found: Option<&Tape<T>> = None;
    for v in inputs {
        if let Some(t) = v.tape() {
            match found {
                None => found = Some(t),
                Some(f) if f.same(t) => {}
                Some(_) => panic!("{op}: operands are recorded on different tapes"),
            }
        }
    }
    found
}

fn input_ids<T: Float>(tape: &Tape<T>, inputs: &[&Var<T>]) -> SmallVec<[Option<u32>; 3]> {
    inputs
        .iter()
        .map(|v| v.node().filter(|(t, _)| t.same(tape)).map(|(_, id)| id))
        .collect()
}

/// Wraps an op's output: records it with the backward rule built by `backward` when recording
/// applies (the closure is not called otherwise, so nothing is captured in no-grad mode).
pub fn record<T: Float, B: Backward<T> + 'static>(
    value: Tensor<T>,
    inputs: &[&Var<T>],
    backward: impl FnOnce() -> B,
) -> Var<T> {
    let op_name = std::any::type_name::<B>();
    match tape_of(op_name, inputs) {
        None => Var::constant(value),
        Some(tape) => {
            let ids = input_ids(tape, inputs);
            let id = tape.push(
                NodeOp::Builtin(Box::new(backward())),
                ids,
                value.shape(),
                value.device(),
            );
            Var::on_tape(value, tape.clone(), id)
        }
    }
}

/// A custom op: `value` computed by the caller from `inputs`, with a user VJP.
///
/// `vjp(g, needs)` receives `∂L/∂value` and which inputs need a gradient, and returns one entry
/// per input (`None` where not needed or zero). This is how the DEQ layer attaches its implicit
/// backward solve to the tape (compare `jax.custom_vjp`). The closure runs while the tape that
/// holds this op is sweeping, so it must not record onto that same tape; using other tapes
/// (or none) inside it is fine.
pub fn custom_op<T: Float>(value: Tensor<T>, inputs: &[&Var<T>], vjp: CustomVjp<T>) -> Var<T> {
    match tape_of("custom_op", inputs) {
        None => Var::constant(value),
        Some(tape) => {
            let ids = input_ids(tape, inputs);
            let id = tape.push(NodeOp::Custom(vjp), ids, value.shape(), value.device());
            Var::on_tape(value, tape.clone(), id)
        }
    }
}
