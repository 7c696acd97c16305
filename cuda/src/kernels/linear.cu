// Linear-layer kernels (the products themselves go through cuBLAS, see blas.rs): the bias
// broadcast over rows, the bias gradient as a deterministic column sum, and the zero-depth
// GEMM case of blas.rs.

// Column sums use blocks of LINEAR_TILE columns by up to LINEAR_TILE row lanes.
#define LINEAR_TILE 32

// y[r, c] = bias[c] for every row r of a row-major rows x cols matrix (len = rows * cols).
extern "C" __global__ void linear_bias_rows(const real* bias, real* y, long long cols,
                                            long long len) {
    GRID_STRIDE(i, len) { y[i] = bias[i % cols]; }
}

// dst[c] (+)= sum over r of g[r * cols + c]: the bias gradient (and any sum over leading
// rows). Launch with blockDim = (LINEAR_TILE, ty), ty <= LINEAR_TILE, any grid: block x
// handles column tiles blockIdx.x, blockIdx.x + gridDim.x, ...; lane (tx, ty) sums rows
// ty, ty + blockDim.y, ... of column tile*32 + tx (reads coalesced along tx), then lane ty = 0
// adds the blockDim.y partial sums in a fixed order. No atomics: the result is the same on
// every run.
extern "C" __global__ void linear_bias_grad(const real* g, real* dst, long long rows,
                                            long long cols, int acc) {
    __shared__ real part[LINEAR_TILE][LINEAR_TILE + 1];
    long long tiles = (cols + LINEAR_TILE - 1) / LINEAR_TILE;
    int tx = threadIdx.x, ty = threadIdx.y;
    for (long long tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
        long long c = tile * LINEAR_TILE + tx;
        real s = (real)0;
        if (c < cols) {
            for (long long r = ty; r < rows; r += blockDim.y) s += g[r * cols + c];
        }
        part[ty][tx] = s;
        __syncthreads();
        if (ty == 0 && c < cols) {
            real t = (real)0;
            for (int k = 0; k < (int)blockDim.y; ++k) t += part[k][tx];
            store(dst, c, t, acc);
        }
        __syncthreads();
    }
}

// c[b * stride + j] = beta * c[...] for j < size, b < batch; exactly 0 when beta is 0 (the
// old values are not read, they may be uninitialised). The result of a GEMM with k = 0.
extern "C" __global__ void linear_scale_blocks(real* c, long long batch, long long stride,
                                               long long size, real beta) {
    GRID_STRIDE(i, batch * size) {
        long long at = (i / size) * stride + i % size;
        c[at] = beta == (real)0 ? (real)0 : beta * c[at];
    }
}
