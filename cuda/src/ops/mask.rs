//! Masked fill and dropout with a given mask, and their VJPs.
