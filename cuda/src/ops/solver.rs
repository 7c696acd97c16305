//! Per-sample reductions and updates for the fixed-point solvers.
