//! Named parameter storage. Layers hold [`ParamId`]s; a forward pass turns the stored tensors
//! into variables (tape leaves when training, constants when evaluating) and layers look theirs
//! up by id.

use deq_autograd::{Float, Rng, Tape, Tensor, Var};

/// Index of a parameter in a [`ParamStore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ParamId(pub usize);

/// Ordered, named parameters. Names are unique and become checkpoint tensor names.
#[derive(Clone, Debug, Default)]
pub struct ParamStore<T: Float> {
    names: Vec<String>,
    values: Vec<Tensor<T>>,
}

impl<T: Float> ParamStore<T> {
    /// An empty store.
    pub fn new() -> Self {
        ParamStore {
            names: Vec::new(),
            values: Vec::new(),
        }
    }

    /// Adds a parameter; panics on a duplicate name (a programmer error).
    pub fn add(&mut self, name: &str, value: Tensor<T>) -> ParamId {
        assert!(
            !self.names.iter().any(|n| n == name),
            "ParamStore::add: duplicate parameter name {name}"
        );
        self.names.push(name.to_string());
        self.values.push(value);
        ParamId(self.values.len() - 1)
    }

    /// Adds a `[out, inp]` weight drawn uniformly from `±bound` (PyTorch's default for linear
    /// layers uses `bound = 1/√inp`).
    pub fn uniform(&mut self, name: &str, shape: &[usize], bound: f64, rng: &mut Rng) -> ParamId {
        self.add(name, Tensor::rand_uniform(shape, -bound, bound, rng))
    }

    /// Number of parameters (tensors).
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Total number of scalar parameters.
    pub fn numel(&self) -> usize {
        self.values.iter().map(Tensor::numel).sum()
    }

    /// The names, in order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The values, in order.
    pub fn values(&self) -> &[Tensor<T>] {
        &self.values
    }

    /// Mutable values (for optimizers and checkpoint loading).
    pub fn values_mut(&mut self) -> &mut [Tensor<T>] {
        &mut self.values
    }

    /// One value.
    pub fn get(&self, id: ParamId) -> &Tensor<T> {
        &self.values[id.0]
    }

    /// Every parameter as a leaf on `tape` (for a training step).
    pub fn leaves(&self, tape: &Tape<T>) -> Vec<Var<T>> {
        self.values.iter().map(|v| tape.leaf(v.clone())).collect()
    }

    /// Every parameter as a constant (for evaluation).
    pub fn constants(&self) -> Vec<Var<T>> {
        self.values.iter().cloned().map(Var::constant).collect()
    }

    /// The same parameters converted to another float type (f32 training weights to f64 for
    /// gradient checks).
    pub fn cast<U: Float>(&self) -> ParamStore<U> {
        ParamStore {
            names: self.names.clone(),
            values: self.values.iter().map(Tensor::cast).collect(),
        }
    }
}
