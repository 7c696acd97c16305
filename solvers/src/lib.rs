//! Fixed-point solvers and the implicit (DEQ) layer. Filled in by the solvers issue.
