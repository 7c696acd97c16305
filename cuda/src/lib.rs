//! GPU buffers, kernels and cuBLAS GEMM for `deq`.
//!
//! This crate is a placeholder until the CUDA backend issue lands: the autograd engine already
//! routes every tensor through a [`Device`](https://docs.rs/deq-autograd) seam, and this crate
//! will provide the `Cuda(n)` side of it through cudarc with dynamic loading, so that the
//! workspace keeps building and testing on machines without a driver.
