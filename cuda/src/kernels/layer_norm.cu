// Layer normalisation over the last axis, one block per row (any row length).
//
// Numerics as the CPU (ops/layer_norm.rs): μ = (Σx)·(1/d), var = (Σ(x - μ)²)·(1/d) (biased,
// two passes), rstd = 1/√(var + ε), x̂ = (x - μ)·rstd, y = x̂ ⊙ γ + β. The forward pass keeps
// (μ, rstd) per row in `stats` (2 values a row) for the VJPs.

// Block shape of the column-sum kernel (layer_norm_bwd_affine): a tile of 32 columns, each
// summed by LAYER_NORM_ROW_LANES threads over interleaved rows. Must match ops/layer_norm.rs.
#define LAYER_NORM_COL_TILE 32
#define LAYER_NORM_ROW_LANES 16

extern "C" __global__ void layer_norm_fwd(const real* x, const real* gamma, const real* beta,
                                          real* y, real* stats, long long rows, long long cols,
                                          real eps, int affine) {
    __shared__ real scratch[32];
    const real inv_d = (real)1 / (real)cols;
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const real* xr = x + r * cols;
        real* yr = y + r * cols;
        real s = (real)0;
        for (long long i = threadIdx.x; i < cols; i += blockDim.x) s += xr[i];
        const real mu = block_sum(s, scratch) * inv_d;
        real q = (real)0;
        for (long long i = threadIdx.x; i < cols; i += blockDim.x) {
            real c = xr[i] - mu;
            q += c * c;
        }
        const real var = block_sum(q, scratch) * inv_d;
        const real rstd = (real)1 / sqrt(var + eps);
        if (threadIdx.x == 0) {
            stats[2 * r] = mu;
            stats[2 * r + 1] = rstd;
        }
        for (long long i = threadIdx.x; i < cols; i += blockDim.x) {
            real xh = (xr[i] - mu) * rstd;
            yr[i] = affine ? xh * gamma[i] + beta[i] : xh;
        }
    }
}

// VJP of x, with ĝ = g ⊙ γ (or g): dst (+)= rstd·(ĝ - mean(ĝ) - x̂·mean(ĝ ⊙ x̂)).
extern "C" __global__ void layer_norm_bwd_x(const real* g, const real* x, const real* gamma,
                                            const real* stats, real* dst, long long rows,
                                            long long cols, int affine, int acc) {
    __shared__ real scratch[32];
    const real inv_d = (real)1 / (real)cols;
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const real* xr = x + r * cols;
        const real* gr = g + r * cols;
        const real mu = stats[2 * r], rstd = stats[2 * r + 1];
        real sg = (real)0, sgx = (real)0;
        for (long long i = threadIdx.x; i < cols; i += blockDim.x) {
            real gh = affine ? gr[i] * gamma[i] : gr[i];
            real xh = (xr[i] - mu) * rstd;
            sg += gh;
            sgx += gh * xh;
        }
        const real mean_g = block_sum(sg, scratch) * inv_d;
        const real mean_gx = block_sum(sgx, scratch) * inv_d;
        for (long long i = threadIdx.x; i < cols; i += blockDim.x) {
            real gh = affine ? gr[i] * gamma[i] : gr[i];
            real xh = (xr[i] - mu) * rstd;
            store(dst, r * cols + i, rstd * (gh - mean_g - xh * mean_gx), acc);
        }
    }
}

// VJP of γ (beta = 0): dst[c] (+)= Σ_r g[r,c]·(x[r,c] - μ_r)·rstd_r; of β (beta = 1):
// dst[c] (+)= Σ_r g[r,c]. Deterministic column sums: block (LAYER_NORM_COL_TILE,
// LAYER_NORM_ROW_LANES), each lane sums its rows in order, lanes are added in a fixed order.
extern "C" __global__ void layer_norm_bwd_affine(const real* g, const real* x, const real* stats,
                                                 real* dst, long long rows, long long cols,
                                                 int beta, int acc) {
    __shared__ real part[LAYER_NORM_ROW_LANES][LAYER_NORM_COL_TILE + 1];
    for (long long c0 = (long long)blockIdx.x * LAYER_NORM_COL_TILE; c0 < cols;
         c0 += (long long)gridDim.x * LAYER_NORM_COL_TILE) {
        const long long c = c0 + threadIdx.x;
        real s = (real)0;
        if (c < cols) {
            for (long long r = threadIdx.y; r < rows; r += LAYER_NORM_ROW_LANES) {
                real gv = g[r * cols + c];
                s += beta ? gv : gv * (x[r * cols + c] - stats[2 * r]) * stats[2 * r + 1];
            }
        }
        part[threadIdx.y][threadIdx.x] = s;
        __syncthreads();
        if (threadIdx.y == 0 && c < cols) {
            real t = (real)0;
            for (int k = 0; k < LAYER_NORM_ROW_LANES; ++k) t += part[k][threadIdx.x];
            store(dst, c, t, acc);
        }
        __syncthreads();
    }
}
