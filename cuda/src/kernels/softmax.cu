// Softmax and log-softmax over the last axis, one block per row (rows of any length: each
// thread loops over the columns; blocks loop over rows when the grid is smaller than the rows).
//
// Numerics as the CPU (ops/softmax.rs): m = max of the row, lse = m + log Σ exp(x - m)
// (lse = m when m is not finite), then y = exp(x - lse) or y = x - lse.

// The log-sum-exp of row `xr`; every thread of the block gets it.
__device__ real softmax_row_lse(const real* xr, long long cols, real* scratch) {
    real m = -DEQ_INF;
    for (long long i = threadIdx.x; i < cols; i += blockDim.x) m = fmax(m, xr[i]);
    m = block_max(m, scratch);
    if (!isfinite(m)) return m;  // uniform over the block: no thread skips the sum alone
    real s = (real)0;
    for (long long i = threadIdx.x; i < cols; i += blockDim.x) s += exp(xr[i] - m);
    s = block_sum(s, scratch);
    return m + log(s);
}

// y = softmax(x) (log_ = 0) or log_softmax(x) (log_ = 1), rows of `cols` values.
extern "C" __global__ void softmax_fwd(const real* x, real* y, long long rows, long long cols,
                                       int log_) {
    __shared__ real scratch[32];
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const real* xr = x + r * cols;
        real* yr = y + r * cols;
        real lse = softmax_row_lse(xr, cols, scratch);
        for (long long i = threadIdx.x; i < cols; i += blockDim.x)
            yr[i] = log_ ? xr[i] - lse : exp(xr[i] - lse);
    }
}

// VJP from the output y: softmax dst (+)= y ⊙ (g - ⟨g, y⟩); log-softmax dst (+)= g - e^y · Σg.
extern "C" __global__ void softmax_bwd(const real* g, const real* y, real* dst, long long rows,
                                       long long cols, int log_, int acc) {
    __shared__ real scratch[32];
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const real* gr = g + r * cols;
        const real* yr = y + r * cols;
        real s = (real)0;
        for (long long i = threadIdx.x; i < cols; i += blockDim.x)
            s += log_ ? gr[i] : gr[i] * yr[i];
        s = block_sum(s, scratch);
        for (long long i = threadIdx.x; i < cols; i += blockDim.x) {
            real v = log_ ? gr[i] - exp(yr[i]) * s : yr[i] * (gr[i] - s);
            store(dst, r * cols + i, v, acc);
        }
    }
}
