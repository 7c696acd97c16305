// Fused mean cross-entropy from logits with one integer target per row.
//
// Numerics as the CPU (ops/cross_entropy.rs): per row m = max, s = Σ exp(x - m),
// lse = m + log s, row loss lse - x[t] (in `real`); with the gradient, (softmax - e_t)/N is
// exp(x - m)·(inv_n / s), minus inv_n at the target. The mean is summed in double.

// Block size of cross_entropy_mean. Must match ops/cross_entropy.rs.
#define CROSS_ENTROPY_MEAN_THREADS 256

// Per row (one block per row): loss[r] = lse_r - x[r, t_r]; with want_grad also the unit
// gradient of the mean loss, with inv_n = 1/rows, into grad (same shape as x).
extern "C" __global__ void cross_entropy_rows(const real* x, const int* targets, real* loss,
                                              real* grad, long long rows, long long cols,
                                              int want_grad) {
    __shared__ real scratch[32];
    const real inv_n = (real)1 / (real)rows;
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const real* xr = x + r * cols;
        const long long t = targets[r];
        real m = -DEQ_INF;
        for (long long i = threadIdx.x; i < cols; i += blockDim.x) m = fmax(m, xr[i]);
        m = block_max(m, scratch);
        real s = (real)0;
        for (long long i = threadIdx.x; i < cols; i += blockDim.x) s += exp(xr[i] - m);
        s = block_sum(s, scratch);
        if (want_grad) {
            real* gr = grad + r * cols;
            const real scale = inv_n / s;
            for (long long i = threadIdx.x; i < cols; i += blockDim.x) {
                real v = exp(xr[i] - m) * scale;
                gr[i] = i == t ? v - inv_n : v;
            }
        }
        if (threadIdx.x == 0) loss[r] = (m + log(s)) - xr[t];
    }
}

__device__ __forceinline__ double cross_entropy_warp_sum(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// out[0] = (Σ_r loss[r]) / max(rows, 1), summed in double in a fixed order by one block of
// CROSS_ENTROPY_MEAN_THREADS threads.
extern "C" __global__ void cross_entropy_mean(const real* loss, real* out, long long rows) {
    __shared__ double scratch[CROSS_ENTROPY_MEAN_THREADS / 32];
    double s = 0.0;
    for (long long r = threadIdx.x; r < rows; r += blockDim.x) s += (double)loss[r];
    s = cross_entropy_warp_sum(s);
    if ((threadIdx.x & 31) == 0) scratch[threadIdx.x >> 5] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
        double total = 0.0;
        for (int w = 0; w < (int)(blockDim.x >> 5); ++w) total += scratch[w];
        out[0] = (real)(total / (double)(rows > 0 ? rows : 1));
    }
}
