//! Fused mean cross-entropy over rows of logits, with the gradient formed in the same pass.
