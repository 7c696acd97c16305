//! Layer normalisation over the last axis (optionally affine), and its VJPs.
