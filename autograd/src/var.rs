//! `Var<T>`: a tensor value that may be recorded on a tape, and the recording switch.
//!
//! Every op takes and returns `Var`s. An op records a node only when one of its operands is
//! on a tape that records (one not paused by [`no_grad`]); otherwise it returns a plain value
//! (a constant) and keeps nothing alive. So one cell written against `Var` serves both the
//! recorded application `f(z*)` and the solver's no-grad iterations, and a no-grad evaluation
//! holds only the live tensors.
//!
//! # Recording is a property of the tape, not of the thread
//!
//! Each tape gets an id from a global, increasing counter when it is created. [`no_grad`]
//! pauses, on the calling thread, every tape that exists when it begins (ids up to the
//! counter's value then) until it returns; tapes created inside it record as usual. A tape
//! is `Rc`-based and never leaves the thread that created it, so all ops on it run on that
//! thread, and a rayon job cannot capture one: any tape a job records on is created inside
//! the job. When a thread blocked in `rayon::join` under `no_grad` runs a job of another
//! computation (work stealing), that job's tapes are newer than the pause and keep
//! recording; with a thread-wide flag they would have recorded nothing.

use crate::float::Float;
use crate::tape::{Backward, CustomVjp, NodeOp, Tape};
use crate::tensor::Tensor;
use smallvec::SmallVec;
use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};

/// The id of the next tape to be created (ids start at 1, so 0 means "no tape").
static NEXT_TAPE_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// Tapes with an id up to this are paused on this thread (0: none is).
    static PAUSED_UP_TO: Cell<u64> = const { Cell::new(0) };
}

/// A fresh tape id, larger than every id handed out before (on any thread).
pub(crate) fn next_tape_id() -> u64 {
    NEXT_TAPE_ID.fetch_add(1, Ordering::Relaxed)
}

impl<T: Float> Tape<T> {
    /// True when ops on this tape record: no [`no_grad`] that began after this tape was
    /// created is active on this thread.
    pub fn is_recording(&self) -> bool {
        self.id() > PAUSED_UP_TO.with(Cell::get)
    }
}

/// True when no tape is paused on this thread: no [`no_grad`] is active here, or none that
/// began after a tape was created (it had nothing to pause).
///
/// This is a property of the thread, not of a computation: a job that work stealing runs
/// inside another computation's `no_grad` sees `false` here although its own tapes record.
/// To decide whether an op on some variable records, ask [`Var::requires_grad`] (or
/// [`Tape::is_recording`]) instead.
pub fn is_recording() -> bool {
    PAUSED_UP_TO.with(Cell::get) == 0
}

/// Runs `f` with every tape that exists now paused on this thread (restored afterwards, even
/// on panic).
///
/// Fixed-point solvers evaluate cells this way: no node is recorded and no intermediate kept.
///
/// Semantics: the tapes paused are exactly those created before this call; a tape created
/// inside `f` records (a gradient check or a spectral-radius estimate run inside `no_grad`
/// works). The pause is per thread and nests: an inner `no_grad` also pauses the tapes
/// created between the two. Work that rayon runs on this thread while `f` waits in a join
/// (another computation's job, stolen) records on its own tapes as usual, because those are
/// created inside the job, after this call began: recording belongs to the computation
/// that owns the tape, not to the OS thread.
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    let _guard = NoGradGuard::new();
    f()
}

/// Pauses every tape that exists when it is made, on this thread, until dropped (see
/// [`no_grad`]).
pub struct NoGradGuard {
    previous: u64,
    /// The guard restores this thread's state: it must be dropped on the thread that made it.
    _not_send: PhantomData<*const ()>,
}

impl NoGradGuard {
    /// Pauses, on this thread, every tape created so far.
    pub fn new() -> Self {
        let newest = NEXT_TAPE_ID.load(Ordering::Relaxed) - 1;
        let previous = PAUSED_UP_TO.with(|p| p.replace(p.get().max(newest)));
        NoGradGuard {
            previous,
            _not_send: PhantomData,
        }
    }
}

impl Default for NoGradGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NoGradGuard {
    fn drop(&mut self) {
        PAUSED_UP_TO.with(|p| p.set(self.previous));
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

    /// True when recorded on a tape (whether or not that tape records now).
    pub fn is_recorded(&self) -> bool {
        self.node.is_some()
    }

    /// True when ops on this variable record: it is on a tape that is not paused by a
    /// [`no_grad`] ([`Tape::is_recording`]). A gradient can flow into it through new ops
    /// exactly when this holds.
    pub fn requires_grad(&self) -> bool {
        self.tape().is_some_and(Tape::is_recording)
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

/// The tape an op on `inputs` records onto: `None` when no input is on a recording tape.
/// Inputs on paused tapes count as constants. Panics when inputs live on different recording
/// tapes.
fn tape_of<'a, T: Float>(op: &str, inputs: &[&'a Var<T>]) -> Option<&'a Tape<T>> {
    let mut found: Option<&Tape<T>> = None;
    for v in inputs {
        if let Some(t) = v.tape() {
            match found {
                Some(f) if f.same(t) => {}
                _ if !t.is_recording() => {}
                None => found = Some(t),
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
