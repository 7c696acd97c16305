//! Dropout on attention probabilities (the reference's `dropatt`) as a stateless mask: whether
//! probability `[b, h, i, j]` is kept is a hash of a seed and the entry's flat index, so the
//! fused attention regenerates the mask in its backward pass instead of storing a
//! `[B, H, T, K]` tensor, and an implicit layer that applies its cell many times (every
//! solver iteration, the adjoint's VJPs, the Jacobian penalty) sees one mask per seed.
//!
//! A kept probability is scaled by `1/(1 − p)`, so the expected weights are the softmax's:
//! `Ã = A ⊙ M/(1 − p)` and `out = Ã·V`. The softmax itself, and its log-sum-exp, are those of
//! the undropped scores.

use crate::device::{Device, DeviceError};
use crate::float::Float;
use crate::tensor::Tensor;
use std::any::Any;
use std::cell::RefCell;

/// A dropout mask on attention probabilities: drop rate `p` in `[0, 1)` and the seed it is
/// drawn from. Draw a fresh seed per forward pass (one solve) and reuse it for every
/// application of the cell within it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionDropout {
    p: f64,
    seed: u64,
    /// Entries whose hash's top 32 bits fall below this are dropped.
    threshold: u64,
}

impl AttentionDropout {
    /// A mask dropping each probability with rate `p`. Panics unless `0 ≤ p < 1` (a
    /// programmer's value; configurations are validated before they get here).
    pub fn new(p: f64, seed: u64) -> Self {
        assert!(
            (0.0..1.0).contains(&p),
            "attention dropout: rate {p} is not in [0, 1)"
        );
        AttentionDropout {
            p,
            seed,
            threshold: (p * 4294967296.0) as u64,
        }
    }

    /// The drop rate.
    pub fn rate(&self) -> f64 {
        self.p
    }

    /// The factor `1/(1 − p)` of kept probabilities.
    pub fn keep_scale(&self) -> f64 {
        1.0 / (1.0 - self.p)
    }

    /// Whether entry `index` (flat, row-major over `[B, H, T, K]`) is kept: splitmix64's
    /// finaliser of the seed and the index, its top 32 bits against `p·2³²`.
    #[inline(always)]
    pub fn keeps(&self, index: u64) -> bool {
        let mut z = self
            .seed
            .wrapping_add(index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 32) >= self.threshold
    }

    /// Row `row` of the mask (entries `row·k .. row·k + len`) applied in place: kept entries
    /// scaled by `1/(1 − p)`, dropped ones 0.
    #[inline]
    pub(crate) fn apply_row<T: Float>(&self, row: usize, k: usize, values: &mut [T]) {
        let scale = T::from_f64(self.keep_scale());
        let base = (row * k) as u64;
        for (j, v) in values.iter_mut().enumerate() {
            *v = if self.keeps(base + j as u64) {
                *v * scale
            } else {
                T::ZERO
            };
        }
    }

    /// The mask as a `shape` tensor of `1/(1 − p)` (kept) and 0 (dropped), for the composed
    /// attention that the fused op is tested against.
    pub fn mask<T: Float>(&self, shape: &[usize]) -> Tensor<T> {
        let n: usize = shape.iter().product();
        let scale = T::from_f64(self.keep_scale());
        let values = (0..n as u64)
            .map(|i| if self.keeps(i) { scale } else { T::ZERO })
            .collect();
        Tensor::from_vec(values, shape)
    }

    /// [`AttentionDropout::mask`] on `device`, built once per mask: every application of a
    /// cell within one solve (each solver iteration, each adjoint VJP) asks for the same
    /// mask, which costs a hash per entry and, on a GPU, an upload. The last mask built on
    /// this thread is kept (one `[B, H, T, K]` tensor) and returned while the seed, rate,
    /// shape, device and float type stay the same.
    pub fn mask_on<T: Float>(
        &self,
        shape: &[usize],
        device: Device,
    ) -> Result<Tensor<T>, DeviceError> {
        let key = MaskKey {
            seed: self.seed,
            rate: self.p.to_bits(),
            shape: shape.to_vec(),
            device,
        };
        let hit = LAST_MASK.with_borrow(|last| {
            last.as_ref()
                .filter(|(k, _)| *k == key)
                .and_then(|(_, t)| t.downcast_ref::<Tensor<T>>().cloned())
        });
        if let Some(mask) = hit {
            return Ok(mask);
        }
        let mask = self.mask::<T>(shape).to_device(device)?;
        LAST_MASK.with_borrow_mut(|last| *last = Some((key, Box::new(mask.clone()))));
        Ok(mask)
    }
}

/// What identifies a built mask.
#[derive(PartialEq)]
struct MaskKey {
    seed: u64,
    rate: u64,
    shape: Vec<usize>,
    device: Device,
}

thread_local! {
    /// The last mask [`AttentionDropout::mask_on`] built on this thread.
    static LAST_MASK: RefCell<Option<(MaskKey, Box<dyn Any>)>> = const { RefCell::new(None) };
}
