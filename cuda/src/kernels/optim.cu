// Optimiser updates, one thread per parameter value.

// Adam / AdamW, in the form of models/src/optim.rs:
//   g' = g + wd * p (coupled decay only); m = b1 m + (1 - b1) g'; v = b2 v + (1 - b2) g'^2;
//   p -= decay * p (decoupled only); p -= step * m / (sqrt(v * inv_bc2) + eps).
extern "C" __global__ void optim_adam(real* p, const real* g, real* m, real* v, long long n,
                                      real b1, real b2, real step, real inv_bc2, real eps,
                                      real wd, real decay, int decoupled) {
    GRID_STRIDE(j, n) {
        real gj = g[j];
        real pj = p[j];
        if (!decoupled) gj += wd * pj;
        real mj = b1 * m[j] + ((real)1 - b1) * gj;
        real vj = b2 * v[j] + ((real)1 - b2) * gj * gj;
        m[j] = mj;
        v[j] = vj;
        real upd = step * mj / (sqrt(vj * inv_bc2) + eps);
        if (decoupled) pj -= decay * pj;
        p[j] = pj - upd;
    }
}

// out[0] (+)= sum of squares of x, in double: one block per chunk, atomics across blocks
// (the order of a float sum does not matter at the precision a clipping threshold needs).
extern "C" __global__ void optim_sum_squares(const real* x, long long n, double* out) {
    __shared__ double scratch[32];
    double acc = 0.0;
    GRID_STRIDE(j, n) { double v = (double)x[j]; acc += v * v; }
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) scratch[warp] = acc;
    __syncthreads();
    if (warp == 0) {
        int nwarps = (blockDim.x + 31) >> 5;
        acc = (threadIdx.x < nwarps) ? scratch[threadIdx.x] : 0.0;
        for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
        if (threadIdx.x == 0) atomicAdd(out, acc);
    }
}
