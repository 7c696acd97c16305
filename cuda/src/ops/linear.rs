//! The fused linear layer's bias add and bias gradient (the products go through cuBLAS).
