//! Sums, means and maxima over an axis, and their VJPs.
