//! Layers, DEQ cells, language models, optimizers and data for `deq`.
//!
//! Empty until the models issue lands; see the workspace README for the plan.
