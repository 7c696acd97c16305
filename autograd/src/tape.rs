//! The tape: an append-only list of recorded nodes and the replayable, pruned VJP engine.
//!
//! A node holds its op's backward rule, the tape indices of its differentiable inputs and its
//! shape. Nodes are only appended, so inputs always have smaller indices than the nodes that use
//! them and the index order is a topological order: a reverse sweep never sorts anything.
//!
//! `vjp(outputs, cotangents, wrt)` computes `uᵀ·∂outputs/∂wrt`. Its first call for a given
//! `(outputs, wrt)` pair builds a plan: the nodes that both depend on some `wrt` node and
//! feed some output, and for each such node the inputs that lead to a `wrt` node. Later calls
//! replay the cached plan.
//!
//! Gradient buffers live only as long as they are needed: a node's buffer is taken from the
//! CPU pool ([`crate::pool`]; the caching allocator on a GPU) when the first gradient reaches
//! it, and given back right after the node's own backward rule has run (a `wrt` node keeps its
//! buffer until the result is handed out). The first write into a buffer replaces its
//! contents, later writes accumulate. So a reverse sweep holds the gradients of one "front" of
//! the graph at a time, not one buffer per node, and in steady state (a solver replaying the
//! same VJP) every buffer comes from the pool: [`Tape::vjp_with`] makes no heap allocation.

use crate::device::Device;
use crate::float::Float;
use crate::kernels;
use crate::pool::PooledVec;
use crate::tensor::{Shape, Tensor};
use crate::var::Var;
use smallvec::SmallVec;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// The backward rule of a recorded op.
///
/// `vjp(k, g, dst, acc)` must write (`acc == false`) or add (`acc == true`) the vector-Jacobian
/// product `gᵀ·∂out/∂input_k` into `dst`, which has the element count of input `k`. It is called
/// only for inputs that need a gradient, once per input position (an op whose two inputs are the
/// same variable is called twice, the second time accumulating).
pub trait Backward<T: Float> {
    /// The op's name, for error messages and profiles.
    fn name(&self) -> &'static str;
    /// Writes or accumulates `gᵀ·∂out/∂input_k` into `dst`.
    fn vjp(&self, k: usize, g: &[T], dst: &mut [T], acc: bool);

    /// The gradients of several inputs from one cotangent, for ops that share work between
    /// them (a fused attention computes `∂scores` once for `∂Q`, `∂K`, `∂V`); the tape calls
    /// it only when [`Backward::shares_work`] says so. The default calls [`Backward::vjp`]
    /// for each target. Every target is a different input variable.
    fn vjp_many(&self, g: &[T], targets: &mut [VjpTarget<'_, T>]) {
        for t in targets {
            self.vjp(t.k, g, t.dst, t.acc);
        }
    }

    /// True when [`Backward::vjp_many`] computes several inputs' gradients for less than the
    /// sum of single calls.
    fn shares_work(&self) -> bool {
        false
    }

    /// Overwrites `g` with `gᵀ·∂out/∂input_k` and returns true, when the op can do that in
    /// place (element-wise and row-wise ops whose input `k` has the output's shape); returns
    /// false, leaving `g` untouched, otherwise. When the cotangent is not needed after this
    /// input, the tape then hands the buffer on instead of allocating one and copying: an
    /// `add`'s VJP becomes free, and the reverse sweep holds one buffer less.
    fn vjp_in_place(&self, k: usize, g: &mut [T]) -> bool {
        let _ = (k, g);
        false
    }

    /// [`Backward::vjp`] on device buffers, for ops recorded on CUDA tensors. Ops without a
    /// device rule panic with their name (every op of this crate has one).
    #[cfg(feature = "cuda")]
    fn vjp_gpu(
        &self,
        k: usize,
        g: &deq_cuda::GpuBuffer<T>,
        dst: &mut deq_cuda::GpuBuffer<T>,
        acc: bool,
    ) {
        let _ = (k, g, dst, acc);
        panic!("{}: this op has no CUDA backward rule", self.name())
    }
}

/// One destination of [`Backward::vjp_many`]: input position `k`, its buffer, and whether to
/// accumulate into it.
pub struct VjpTarget<'a, T> {
    /// Input position.
    pub k: usize,
    /// The input's gradient buffer.
    pub dst: &'a mut [T],
    /// Add to `dst` instead of overwriting it.
    pub acc: bool,
}

/// The backward rule of a custom op: given `∂L/∂out` and which inputs need a gradient, the
/// gradients of those inputs (`None` for the others).
pub type CustomVjp<T> = Box<dyn Fn(&Tensor<T>, &[bool]) -> Vec<Option<Tensor<T>>>>;

pub(crate) enum NodeOp<T: Float> {
    Leaf,
    Builtin(Box<dyn Backward<T>>),
    Custom(CustomVjp<T>),
}

pub(crate) struct Node<T: Float> {
    op: NodeOp<T>,
    /// Tape index of each input, `None` for constants.
    inputs: SmallVec<[Option<u32>; 3]>,
    shape: Shape,
    device: Device,
}

/// One step of a plan: run the backward rule of `node` for the input positions listed.
struct Step {
    node: u32,
    positions: SmallVec<[u8; 3]>,
    /// Give the node's gradient buffer back after this step (false for `wrt` nodes).
    release: bool,
}

/// The pruned reverse order for one `(outputs, wrt)` pair.
struct Plan {
    steps: Vec<Step>,
}

/// One node's gradient buffer, on the node's device.
enum GradBuf<T: Float> {
    Cpu(PooledVec<T>),
    #[cfg(feature = "cuda")]
    Cuda(deq_cuda::GpuBuffer<T>),
}

impl<T: Float> GradBuf<T> {
    /// A buffer of `numel` values on `device`, contents unspecified (the first write replaces).
    fn new(numel: usize, device: Device) -> Self {
        match device {
            Device::Cpu => GradBuf::Cpu(PooledVec::new(crate::pool::take(numel))),
            #[cfg(feature = "cuda")]
            Device::Cuda(n) => {
                let gpu = deq_cuda::Gpu::open(n).expect("tape: a recorded device is open");
                GradBuf::Cuda(gpu.alloc(numel))
            }
            #[cfg(not(feature = "cuda"))]
            Device::Cuda(_) => unreachable!("no cuda tensors without the cuda feature"),
        }
    }

    /// Writes (`acc == false`) or adds a tensor's values.
    fn write(&mut self, t: &Tensor<T>, acc: bool) {
        match self {
            GradBuf::Cpu(v) => kernels::write(v, t.data(), acc),
            #[cfg(feature = "cuda")]
            GradBuf::Cuda(b) => {
                let src = t.gpu().expect("tape: gradient on the node's device");
                deq_cuda::ops::elementwise::scale_into(src, 1.0, b, acc);
            }
        }
    }

    /// The values as a tensor of `shape`, moving the buffer (no copy).
    fn into_tensor(self, shape: &[usize]) -> Tensor<T> {
        match self {
            GradBuf::Cpu(v) => Tensor::from_vec(v.into_vec(), shape),
            #[cfg(feature = "cuda")]
            GradBuf::Cuda(b) => Tensor::from_gpu(b, shape),
        }
    }

    /// The values as a tensor of `shape` (a copy).
    fn to_tensor(&self, shape: &[usize]) -> Tensor<T> {
        match self {
            GradBuf::Cpu(v) => Tensor::from_vec(v.to_vec(), shape),
            #[cfg(feature = "cuda")]
            GradBuf::Cuda(b) => Tensor::from_gpu(b.clone(), shape),
        }
    }

    fn host_slice(&self) -> &[T] {
        match self {
            GradBuf::Cpu(v) => v,
            #[cfg(feature = "cuda")]
            GradBuf::Cuda(b) => panic!(
                "vjp_with: the gradient lives on cuda:{}; use Tape::vjp for device tensors",
                b.gpu().ordinal()
            ),
        }
    }
}

/// Gradient buffers of one sweep: `Some` while a node's gradient is live.
struct Workspace<T: Float> {
    grads: Vec<Option<GradBuf<T>>>,
}

impl<T: Float> Default for Workspace<T> {
    fn default() -> Self {
        Workspace { grads: Vec::new() }
    }
}

/// Plan keys: `[outputs.len(), outputs…, wrt…]`, looked up by slice without allocating.
type PlanKey = Vec<u32>;

/// Ids of a call's outputs or `wrt` variables, on the stack for the usual few.
type Ids = SmallVec<[u32; 8]>;

pub(crate) struct TapeInner<T: Float> {
    nodes: Vec<Node<T>>,
    plans: HashMap<PlanKey, Rc<Plan>>,
    ws: Workspace<T>,
}

/// A recording of tensor operations, shared by the [`Var`]s recorded on it.
///
/// Create one, put leaves on it with [`Tape::leaf`], compute with `Var` ops, then call
/// [`Tape::vjp`] as often as needed. Clones refer to the same tape.
#[derive(Clone)]
pub struct Tape<T: Float> {
    inner: Rc<RefCell<TapeInner<T>>>,
    /// Creation order, for [`no_grad`](crate::no_grad): it pauses the tapes older than it.
    id: u64,
}

impl<T: Float> Default for Tape<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Float> Tape<T> {
    /// An empty tape.
    pub fn new() -> Self {
        Tape {
            inner: Rc::new(RefCell::new(TapeInner {
                nodes: Vec::new(),
                plans: HashMap::new(),
                ws: Workspace::default(),
            })),
            id: crate::var::next_tape_id(),
        }
    }

    /// This tape's id: unique, and larger than the id of every tape created before it.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// A differentiable input: a variable recorded on this tape with no inputs of its own.
    pub fn leaf(&self, value: Tensor<T>) -> Var<T> {
        let id = self.push(NodeOp::Leaf, SmallVec::new(), value.shape(), value.device());
        Var::on_tape(value, self.clone(), id)
    }

    /// Number of recorded nodes (leaves included).
    pub fn len(&self) -> usize {
        self.inner.borrow().nodes.len()
    }

    /// True when nothing has been recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when both handles refer to the same tape.
    pub fn same(&self, other: &Tape<T>) -> bool {
        Rc::ptr_eq(&self.inner, &other.inner)
    }

    /// Frees the gradient buffers kept between VJPs. Buffers are given back to the pool as
    /// soon as a sweep no longer needs them, so this only shrinks the per-node slot table.
    pub fn release_buffers(&self) {
        let mut inner = self.inner.borrow_mut();
        inner.ws = Workspace::default();
    }

    pub(crate) fn push(
        &self,
        op: NodeOp<T>,
        inputs: SmallVec<[Option<u32>; 3]>,
        shape: &[usize],
        device: Device,
    ) -> u32 {
        let mut inner = self.inner.borrow_mut();
        let id = inner.nodes.len();
        assert!(id < u32::MAX as usize, "tape: too many nodes");
        inner.nodes.push(Node {
            op,
            inputs,
            shape: Shape::from_slice(shape),
            device,
        });
        id as u32
    }

    /// The vector-Jacobian product `Σ_i cotangents[i]ᵀ · ∂outputs[i]/∂wrt[j]` for every `j`.
    ///
    /// Any number of calls may be made on one recording; each computes only what `wrt` needs
    /// (a VJP with respect to `z` alone skips every weight-gradient product). A `wrt` variable
    /// that no output depends on gets zeros. Panics if a variable is not on this tape or a
    /// cotangent's shape differs from its output's.
    pub fn vjp(
        &self,
        outputs: &[&Var<T>],
        cotangents: &[&Tensor<T>],
        wrt: &[&Var<T>],
    ) -> Vec<Tensor<T>> {
        let mut result: Vec<Option<Tensor<T>>> = vec![None; wrt.len()];
        self.vjp_buffers(outputs, cotangents, wrt, |j, grad, owned| {
            let shape = wrt[j].shape();
            result[j] = Some(match (grad, owned) {
                (_, Some(g)) => g.into_tensor(shape),
                (Some(g), None) => g.to_tensor(shape),
                (None, None) => Tensor::zeros_on(shape, wrt[j].value().device()),
            });
        });
        result.into_iter().map(|t| t.expect("vjp result")).collect()
    }

    /// Like [`Tape::vjp`], but hands each gradient to `sink(j, grad)` as a borrowed slice
    /// (`None` when `wrt[j]` does not influence the outputs, i.e. the gradient is zero). In
    /// steady state it makes no heap allocation: the plan is cached and every gradient buffer
    /// comes from the CPU pool and goes back to it (tested with a counting allocator).
    pub fn vjp_with(
        &self,
        outputs: &[&Var<T>],
        cotangents: &[&Tensor<T>],
        wrt: &[&Var<T>],
        mut sink: impl FnMut(usize, Option<&[T]>),
    ) {
        self.vjp_buffers(outputs, cotangents, wrt, |j, g, owned| match (g, owned) {
            (_, Some(g)) => sink(j, Some(g.host_slice())),
            (g, None) => sink(j, g.map(GradBuf::host_slice)),
        });
    }

    /// `addend + cotangentᵀ·∂output/∂wrt` for one output and one variable, summed in the
    /// gradient's own buffer: the adjoint iteration's `g + yᵀJ` as one pass over the values
    /// on the CPU and one kernel on a device, with no copy and no separate add op. `addend`
    /// must have `wrt`'s shape and device (a programmer error otherwise: panics with both); a
    /// `wrt` that the output does not depend on gives `addend` itself.
    pub fn vjp_plus(
        &self,
        output: &Var<T>,
        cotangent: &Tensor<T>,
        wrt: &Var<T>,
        addend: &Tensor<T>,
    ) -> Tensor<T> {
        assert_eq!(
            addend.shape(),
            wrt.shape(),
            "vjp_plus: addend shape {:?} differs from wrt shape {:?}",
            addend.shape(),
            wrt.shape()
        );
        assert_eq!(
            addend.device(),
            wrt.value().device(),
            "vjp_plus: addend on {} for a wrt on {}",
            addend.device(),
            wrt.value().device()
        );
        let mut out = None;
        self.vjp_buffers(&[output], &[cotangent], &[wrt], |_, borrowed, owned| {
            out = Some(match (owned, borrowed) {
                (Some(mut g), _) => {
                    g.write(addend, true);
                    g.into_tensor(wrt.shape())
                }
                (None, Some(_)) => unreachable!("a lone wrt variable's buffer is handed over"),
                (None, None) => addend.clone(),
            });
        });
        out.expect("vjp_buffers reports the one wrt variable")
    }

    /// Runs one sweep, then hands `wrt[j]`'s gradient to `sink(j, borrowed, owned)`: `owned`
    /// when the buffer can be moved out (the last `wrt` entry naming that node), `borrowed`
    /// otherwise, both `None` for a zero gradient.
    fn vjp_buffers(
        &self,
        outputs: &[&Var<T>],
        cotangents: &[&Tensor<T>],
        wrt: &[&Var<T>],
        mut sink: impl FnMut(usize, Option<&GradBuf<T>>, Option<GradBuf<T>>),
    ) {
        assert_eq!(
            outputs.len(),
            cotangents.len(),
            "vjp: {} outputs but {} cotangents",
            outputs.len(),
            cotangents.len()
        );
        let out_ids: Ids = outputs.iter().map(|v| self.id_of(v, "output")).collect();
        let wrt_ids: Ids = wrt.iter().map(|v| self.id_of(v, "wrt")).collect();
        for (o, c) in outputs.iter().zip(cotangents) {
            assert_eq!(
                o.shape(),
                c.shape(),
                "vjp: cotangent shape {:?} differs from output shape {:?}",
                c.shape(),
                o.shape()
            );
        }
        let mut guard = self.inner.borrow_mut();
        let inner = &mut *guard;
        let plan = plan_for(inner, &out_ids, &wrt_ids);
        let TapeInner { nodes, ws, .. } = inner;
        if ws.grads.len() < nodes.len() {
            ws.grads.resize_with(nodes.len(), || None);
        }
        for (&id, c) in out_ids.iter().zip(cotangents) {
            let i = id as usize;
            assert_eq!(
                c.device(),
                nodes[i].device,
                "vjp: cotangent on {} for an output on {}",
                c.device(),
                nodes[i].device
            );
            let acc = ws.grads[i].is_some();
            ws.grads[i]
                .get_or_insert_with(|| GradBuf::new(c.numel(), nodes[i].device))
                .write(c, acc);
        }
        for step in &plan.steps {
            run_step(nodes, ws, step);
        }
        for (j, &id) in wrt_ids.iter().enumerate() {
            let i = id as usize;
            let last = !wrt_ids[j + 1..].contains(&id);
            if last {
                sink(j, None, ws.grads[i].take());
            } else {
                sink(j, ws.grads[i].as_ref(), None);
            }
        }
        // Anything still live (outputs that are not wrt and had no step) goes back.
        for &id in out_ids.iter() {
            ws.grads[id as usize] = None;
        }
    }

    fn id_of(&self, v: &Var<T>, role: &str) -> u32 {
        match v.node() {
            Some((tape, id)) if tape.same(self) => id,
            Some(_) => panic!("vjp: {role} variable belongs to another tape"),
            None => panic!(
                "vjp: {role} variable of shape {:?} is not recorded on a tape \
                 (was it computed with recording off, or is it a constant?)",
                v.shape()
            ),
        }
    }
}

/// The CPU buffer of input `p`, taken out of the workspace (allocated when no gradient has
/// reached it yet) with whether the op must accumulate into it.
fn take_input<T: Float>(nodes: &[Node<T>], ws: &mut Workspace<T>, p: usize) -> (GradBuf<T>, bool) {
    match ws.grads[p].take() {
        Some(b) => (b, true),
        None => {
            let numel: usize = nodes[p].shape.iter().product();
            (GradBuf::new(numel, nodes[p].device), false)
        }
    }
}

fn run_step<T: Float>(nodes: &[Node<T>], ws: &mut Workspace<T>, step: &Step) {
    let i = step.node as usize;
    // No gradient reached this node in this sweep (a custom op returned `None` for it): it is
    // zero and contributes nothing.
    let Some(mut g) = ws.grads[i].take() else {
        return;
    };
    let node = &nodes[i];
    let mut consumed = false;
    match &node.op {
        NodeOp::Leaf => {}
        NodeOp::Builtin(op) => {
            let input =
                |k: u8| node.inputs[k as usize].expect("planned input is recorded") as usize;
            let distinct = step.positions.len() > 1
                && op.shares_work()
                && step
                    .positions
                    .iter()
                    .enumerate()
                    .all(|(a, &k)| step.positions[..a].iter().all(|&k2| input(k2) != input(k)));
            match &g {
                GradBuf::Cpu(gv) if distinct => {
                    // All inputs at once, so the op can share work between their gradients.
                    let mut bufs: SmallVec<[(usize, GradBuf<T>, bool); 4]> = step
                        .positions
                        .iter()
                        .map(|&k| {
                            let p = input(k);
                            let (b, acc) = take_input(nodes, ws, p);
                            (p, b, acc)
                        })
                        .collect();
                    {
                        let mut targets: SmallVec<[VjpTarget<'_, T>; 4]> = step
                            .positions
                            .iter()
                            .zip(bufs.iter_mut())
                            .map(
                                |#[cfg_attr(not(feature = "cuda"), allow(unused_variables))]
                                 (&k, (p, b, acc))| match b {
                                    GradBuf::Cpu(v) => VjpTarget {
                                        k: k as usize,
                                        dst: &mut v[..],
                                        acc: *acc,
                                    },
                                    #[cfg(feature = "cuda")]
                                    GradBuf::Cuda(_) => panic!(
                                        "{}: input on {} but the op ran on {}",
                                        op.name(),
                                        nodes[*p].device,
                                        node.device
                                    ),
                                },
                            )
                            .collect();
                        op.vjp_many(gv, &mut targets);
                    }
                    for (p, b, _) in bufs {
                        ws.grads[p] = Some(b);
                    }
                }
                _ => {
                    let last = step.positions.len() - 1;
                    for (n, &k) in step.positions.iter().enumerate() {
                        let p = input(k);
                        // The last input may take the cotangent's buffer over, transformed in
                        // place, when nothing reads the cotangent afterwards.
                        if n == last && step.release && ws.grads[p].is_none() {
                            #[cfg_attr(not(feature = "cuda"), allow(irrefutable_let_patterns))]
                            if let GradBuf::Cpu(gv) = &mut g {
                                let numel: usize = nodes[p].shape.iter().product();
                                if gv.len() == numel && op.vjp_in_place(k as usize, gv) {
                                    consumed = true;
                                    break;
                                }
                            }
                        }
                        let (mut dst, acc) = take_input(nodes, ws, p);
                        match (&g, &mut dst) {
                            (GradBuf::Cpu(g), GradBuf::Cpu(d)) => op.vjp(k as usize, g, d, acc),
                            #[cfg(feature = "cuda")]
                            (GradBuf::Cuda(g), GradBuf::Cuda(d)) => {
                                op.vjp_gpu(k as usize, g, d, acc)
                            }
                            #[cfg(feature = "cuda")]
                            _ => panic!(
                                "{}: input on {} but the op ran on {}",
                                op.name(),
                                nodes[p].device,
                                node.device
                            ),
                        }
                        ws.grads[p] = Some(dst);
                    }
                    if consumed {
                        ws.grads[input(step.positions[last])] = Some(g);
                        return;
                    }
                }
            }
        }
        NodeOp::Custom(f) => {
            let mut needs: SmallVec<[bool; 8]> = SmallVec::from_elem(false, node.inputs.len());
            for &k in &step.positions {
                needs[k as usize] = true;
            }
            let g_t = g.to_tensor(&node.shape);
            let grads = f(&g_t, &needs);
            drop(g_t);
            for &k in &step.positions {
                let p = node.inputs[k as usize].expect("planned input is recorded") as usize;
                if let Some(grad) = grads.get(k as usize).and_then(|x| x.as_ref()) {
                    let numel: usize = nodes[p].shape.iter().product();
                    assert_eq!(
                        grad.numel(),
                        numel,
                        "custom op: gradient {k} has {} elements, its input has {numel}",
                        grad.numel()
                    );
                    let (mut dst, acc) = take_input(nodes, ws, p);
                    dst.write(grad, acc);
                    ws.grads[p] = Some(dst);
                }
            }
        }
    }
    if !step.release {
        ws.grads[i] = Some(g);
    }
}

fn plan_for<T: Float>(inner: &mut TapeInner<T>, outs: &[u32], wrt: &[u32]) -> Rc<Plan> {
    let mut key: SmallVec<[u32; 32]> = SmallVec::new();
    key.push(outs.len() as u32);
    key.extend_from_slice(outs);
    key.extend_from_slice(wrt);
    if let Some(p) = inner.plans.get(&key[..]) {
        return p.clone();
    }
    let nodes = &inner.nodes;
    let top = outs.iter().copied().max().map_or(0, |m| m as usize + 1);
    // needs[i]: node i is a wrt node or depends on one.
    let mut needs = vec![false; top];
    for &w in wrt {
        if (w as usize) < top {
            needs[w as usize] = true;
        }
    }
    for i in 0..top {
        if !needs[i] {
            needs[i] = nodes[i]
                .inputs
                .iter()
                .any(|p| p.is_some_and(|p| needs[p as usize]));
        }
    }
    // reach[i]: some output depends on node i (through nodes that need gradients).
    let mut reach = vec![false; top];
    for &o in outs {
        reach[o as usize] = true;
    }
    let mut steps = Vec::new();
    for i in (0..top).rev() {
        if !(reach[i] && needs[i]) {
            continue;
        }
        let mut positions = SmallVec::new();
        for (k, p) in nodes[i].inputs.iter().enumerate() {
            if let Some(p) = *p {
                if needs[p as usize] {
                    positions.push(k as u8);
                    reach[p as usize] = true;
                }
            }
        }
        if !positions.is_empty() {
            steps.push(Step {
                node: i as u32,
                positions,
                release: !wrt.contains(&(i as u32)),
            });
        }
    }
    let plan = Rc::new(Plan { steps });
    inner.plans.insert(key.to_vec(), plan.clone());
    plan
}
