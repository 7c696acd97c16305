//! # deq-autograd: tensors and replayable reverse-mode autodiff
//!
//! The engine under every `deq` figure. It is built for the access pattern of deep equilibrium
//! models: a fixed-point solver calls a vector-Jacobian product (VJP) dozens of times per
//! training step on **one** recorded application of a cell `f(z*)`.
//!
//! - [`Tensor<T>`]: contiguous row-major values for `T = f32` or `f64` ([`Float`]), shared
//!   storage, shape in a small vector. One generic code path: a cell written once runs in f32
//!   for training and in f64 for gradient checks.
//! - [`Var<T>`]: a tensor that may be recorded on a [`Tape`]. Ops are methods on `Var`; they
//!   record only when an operand lives on a tape that records ([`no_grad`] pauses the tapes
//!   that exist when it begins, on its thread), so a no-grad evaluation keeps no
//!   intermediates.
//! - [`Tape::vjp`]: `uᵀ·∂y/∂x` for any outputs, cotangents and inputs, callable any number of
//!   times on one recording. The reverse order is pruned once per `(outputs, wrt)` pair and
//!   cached: a VJP with respect to `z` alone skips every weight-gradient product. Gradient
//!   buffers are reused across calls.
//! - [`custom_op`]: a value with a user VJP closure (the DEQ layer's implicit backward).
//! - [`gradcheck()`]: each input's VJP against central finite differences in f64.
//!
//! ```
//! use deq_autograd::{Tape, Tensor, Var};
//! let tape = Tape::<f64>::new();
//! let w = tape.leaf(Tensor::from_vec(vec![0.5, -0.3, 0.2, 0.1], &[2, 2]));
//! let z = tape.leaf(Tensor::from_vec(vec![1.0, 2.0], &[1, 2]));
//! // y = tanh(z Wᵀ)
//! let y = z.matmul_t(&w, false, true).tanh();
//! let u = Tensor::ones(&[1, 2]);
//! // The same recording serves any number of VJPs; this one skips ∂W entirely.
//! for _ in 0..3 {
//!     let gz = tape.vjp(&[&y], &[&u], &[&z]);
//!     assert_eq!(gz[0].shape(), &[1, 2]);
//! }
//! ```
//!
//! # The math
//!
//! `tape.vjp(ys, us, xs)` returns, for every `x_j`, `Σ_i u_iᵀ·∂y_i/∂x_j` (zeros for an `x_j`
//! that no output depends on), by one reverse sweep over the recorded nodes in reverse
//! recording order: each node's backward rule maps the cotangent of its output to cotangents
//! of its inputs, and cotangents reaching one variable are summed. A [`custom_op`]'s closure is
//! that rule, supplied by the user; [`gradcheck()`] is how to verify it: with a random `u` it
//! compares `∂⟨u, f(x)⟩/∂x_j` with `(⟨u, f(x + h·e_k)⟩ − ⟨u, f(x − h·e_k)⟩) / 2h` for every
//! element `k`, and reports the largest absolute error and that error over the larger of the
//! two gradients' max-norms. Implicit cells have a fuller check, `deq_solvers::check_cell`
//! (op-level VJPs and the implicit gradient through the solver).
//!
//! ```
//! use deq_autograd::{custom_op, gradcheck, GradcheckOptions, Tensor, Var};
//! // y = x³ with a hand-written VJP g·3x²; gradcheck would flag a wrong factor.
//! let cube = |v: &[Var<f64>]| {
//!     let x = v[0].value().clone();
//!     let y = x.map(|t| t * t * t);
//!     custom_op(y, &[&v[0]], Box::new(move |g: &Tensor<f64>, _needs: &[bool]| {
//!         vec![Some(Tensor::from_fn(g.shape(), |i| 3.0 * x.data()[i].powi(2) * g.data()[i]))]
//!     }))
//! };
//! let x = Tensor::from_vec(vec![0.5, -1.0, 2.0], &[3]);
//! let report = gradcheck(cube, &[x], &GradcheckOptions::default());
//! println!("{report}");
//! assert!(report.passed());
//! ```
//!
//! Shape mismatches in ops are programmer errors and panic with the op name and both shapes.

#![warn(missing_docs)]

pub mod cpu;
#[cfg(feature = "cuda")]
mod cuda;
pub mod device;
pub mod float;
pub mod gradcheck;
pub mod kernels;
pub mod ops;
pub mod pool;
pub mod rng;
pub mod tape;
pub mod tensor;
pub mod var;

pub use device::Device;
pub use float::{DType, Float};
pub use gradcheck::{gradcheck, GradcheckOptions, GradcheckReport, InputReport};
pub use kernels::matmul_counters;
pub use ops::attention::{causal_attention_composed, RelativePositions};
pub use ops::attention_dropout::AttentionDropout;
pub use ops::mask::{dropout_mask, Mask};
pub use ops::matmul::matmul_tensor;
pub use rng::Rng;
pub use tape::{Backward, CustomVjp, Tape, VjpTarget};
pub use tensor::{shape_of, Shape, Tensor};
pub use var::{custom_op, is_recording, no_grad, record, NoGradGuard, Var};
