//! Optimiser updates (Adam/AdamW) and gradient norms.
