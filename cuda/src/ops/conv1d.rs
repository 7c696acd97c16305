//! Causal 1-D convolution and its VJPs.
