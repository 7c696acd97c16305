// Per-sample reductions and updates for the fixed-point solvers.
//
// A batch is `b` samples of `n` values, row-major. History matrices (Broyden's u and v,
// Anderson's X and G) are laid out [b, slots, n]: sample s, slot i starts at (s*slots + i)*n.
// Reductions accumulate in double whatever `real` is (the CPU solvers do the same) and are
// written to double buffers that the host downloads: these few scalars per iteration are the
// only host round trips of a solve. `active[s] == 0` freezes sample s (neither read nor
// written), and a coefficient of exactly 0 skips its slot (never-written slots may hold NaN).

__device__ double solver_block_sum(double v) {
    __shared__ double scratch[32];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    int nwarps = (blockDim.x + 31) >> 5;
    v = (threadIdx.x < nwarps) ? scratch[threadIdx.x] : 0.0;
    if (warp == 0)
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;  // valid in thread 0
}

// out[2s] = ||fz_s - z_s||^2, out[2s+1] = ||fz_s||^2. Grid: b blocks.
extern "C" __global__ void solver_residual_sums(const real* z, const real* fz, long long n,
                                                double* out) {
    long long s = blockIdx.x;
    const real* zs = z + s * n;
    const real* fs = fz + s * n;
    double d2 = 0.0, f2 = 0.0;
    for (long long j = threadIdx.x; j < n; j += blockDim.x) {
        double f = (double)fs[j], d = f - (double)zs[j];
        d2 += d * d;
        f2 += f * f;
    }
    d2 = solver_block_sum(d2);
    f2 = solver_block_sum(f2);
    if (threadIdx.x == 0) { out[2 * s] = d2; out[2 * s + 1] = f2; }
}

// out[3s..3s+3] = (a_s.b_s, a_s.a_s, b_s.b_s). Grid: b blocks.
extern "C" __global__ void solver_dot3(const real* a, const real* b, long long n, double* out) {
    long long s = blockIdx.x;
    const real* as = a + s * n;
    const real* bs = b + s * n;
    double ab = 0.0, aa = 0.0, bb = 0.0;
    for (long long j = threadIdx.x; j < n; j += blockDim.x) {
        double x = (double)as[j], y = (double)bs[j];
        ab += x * y; aa += x * x; bb += y * y;
    }
    ab = solver_block_sum(ab);
    aa = solver_block_sum(aa);
    bb = solver_block_sum(bb);
    if (threadIdx.x == 0) { out[3 * s] = ab; out[3 * s + 1] = aa; out[3 * s + 2] = bb; }
}

// out[s*slots + i] = x_s . mat[s, i] for i < used, where x_s = x + s * x_stride (a [b, n]
// array, or one slot of a [b, slots, n] history). Grid: (b, used) blocks (the batch on x,
// which allows 2^31 - 1 blocks).
extern "C" __global__ void solver_dots(const real* x, long long x_stride, const real* mat,
                                       long long n, int slots, double* out) {
    long long s = blockIdx.x, i = blockIdx.y;
    const real* xs = x + s * x_stride;
    const real* ms = mat + (s * slots + i) * n;
    double acc = 0.0;
    for (long long j = threadIdx.x; j < n; j += blockDim.x) acc += (double)xs[j] * (double)ms[j];
    acc = solver_block_sum(acc);
    if (threadIdx.x == 0) out[s * slots + i] = acc;
}

// For active s: y_s = base_scale[s] * base_s + sum_i ca[s,i] A[s,i] + sum_i cb[s,i] B[s,i]
// (B may be null), summed in that order (all A terms, then all B terms, as the host solvers
// do). y may alias base. Grid-stride over b*n.
extern "C" __global__ void solver_combine(real* y, const real* base, const real* base_scale,
                                          const real* A, const real* ca, const real* B,
                                          const real* cb, const int* active, long long b,
                                          long long n, int slots) {
    GRID_STRIDE(idx, b * n) {
        long long s = idx / n, j = idx - s * n;
        if (!active[s]) continue;
        real bs = base_scale[s];
        real acc = bs == (real)0 ? (real)0 : bs * base[idx];
        for (int i = 0; i < slots; ++i) {
            real c = ca[s * slots + i];
            if (c != (real)0) acc += c * A[(s * slots + i) * n + j];
        }
        if (B != 0) {
            for (int i = 0; i < slots; ++i) {
                real d = cb[s * slots + i];
                if (d != (real)0) acc += d * B[(s * slots + i) * n + j];
            }
        }
        y[idx] = acc;
    }
}

// For active s: y_s += alpha * x_s.
extern "C" __global__ void solver_axpy_rows(real* y, const real* x, real alpha,
                                            const int* active, long long b, long long n) {
    GRID_STRIDE(idx, b * n) {
        if (active[idx / n]) y[idx] += alpha * x[idx];
    }
}

// For s with mask[s]: dst_s = src_s (the monitor's best-iterate copies, both ways).
extern "C" __global__ void solver_copy_rows(real* dst, const real* src, const int* mask,
                                            long long b, long long n) {
    GRID_STRIDE(idx, b * n) {
        if (mask[idx / n]) dst[idx] = src[idx];
    }
}

// For active s: z_s = tau * fz_s + (1 - tau) * z_s.
extern "C" __global__ void solver_naive_step(real* z, const real* fz, real tau,
                                             const int* active, long long b, long long n) {
    GRID_STRIDE(idx, b * n) {
        if (active[idx / n]) z[idx] = tau == (real)1 ? fz[idx] : tau * fz[idx] + ((real)1 - tau) * z[idx];
    }
}

// Broyden residual bookkeeping for active s: g' = fz - z; dg = g' - g (when `started`); g = g'.
extern "C" __global__ void solver_broyden_residual(const real* z, const real* fz, real* g,
                                                   real* dg, const int* active, int started,
                                                   long long b, long long n) {
    GRID_STRIDE(idx, b * n) {
        if (!active[idx / n]) continue;
        real gn = fz[idx] - z[idx];
        if (started) dg[idx] = gn - g[idx];
        g[idx] = gn;
    }
}

// Broyden's new pair in slot k[s] for samples with k[s] >= 0 (-1: no update):
// u_k = (dz + dg + sum_i cu[s,i] u_i) * inv_denom[s],  v_k = -dz + sum_i cv[s,i] v_i,
// in the order of the host solver; the host zeroed the coefficients of slot k and of unheld
// slots.
extern "C" __global__ void solver_broyden_pair(const real* dz, const real* dg, real* u, real* v,
                                               const real* cu, const real* cv, const int* k,
                                               const real* inv_denom, long long b, long long n,
                                               int slots) {
    GRID_STRIDE(idx, b * n) {
        long long s = idx / n, j = idx - s * n;
        int ks = k[s];
        if (ks < 0) continue;
        real un = dz[idx] + dg[idx];
        real vn = -dz[idx];
        for (int i = 0; i < slots; ++i) {
            real a = cu[s * slots + i];
            if (a != (real)0) un += a * u[(s * slots + i) * n + j];
        }
        un *= inv_denom[s];
        for (int i = 0; i < slots; ++i) {
            real c = cv[s * slots + i];
            if (c != (real)0) vn += c * v[(s * slots + i) * n + j];
        }
        long long dst = (s * slots + ks) * n + j;
        u[dst] = un;
        v[dst] = vn;
    }
}

// Anderson's history write for active s: X[s, k] = z_s, G[s, k] = fz_s - z_s.
extern "C" __global__ void solver_anderson_record(const real* z, const real* fz, real* X, real* G,
                                                  const int* active, int k, long long b,
                                                  long long n, int slots) {
    GRID_STRIDE(idx, b * n) {
        long long s = idx / n, j = idx - s * n;
        if (!active[s]) continue;
        long long dst = (s * slots + k) * n + j;
        X[dst] = z[idx];
        G[dst] = fz[idx] - z[idx];
    }
}
