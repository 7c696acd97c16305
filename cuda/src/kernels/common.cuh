// Shared helpers for every kernel file. `real` is float or double (set by the compiler driver).
//
// Conventions: element counts and offsets are `long long`; 1-D kernels use grid-stride loops
// (launch with any grid); row kernels use one block per row, blockDim.x a power of two <= 1024.
// `acc` selects write (0) or accumulate (1) into the destination, mirroring the CPU VJPs.

#define DEQ_MAX_DIMS 6

// NVRTC has no <math.h>; +inf as a float (exactly representable in double too).
#define DEQ_INF __int_as_float(0x7f800000)

#define GRID_STRIDE(i, n) \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
         i += (long long)blockDim.x * gridDim.x)

// Writes or accumulates one value.
__device__ __forceinline__ void store(real* dst, long long i, real v, int acc) {
    if (acc) dst[i] += v; else dst[i] = v;
}

// Dims and strides of up to DEQ_MAX_DIMS axes, passed by value (matches `Dims` in launch.rs).
struct Dims {
    long long size[DEQ_MAX_DIMS];
    long long stride_a[DEQ_MAX_DIMS];
    long long stride_b[DEQ_MAX_DIMS];
    long long stride_c[DEQ_MAX_DIMS];
    int ndim;
};

// Offsets of a row-major linear index `i` (over `d.size`) in the three stride sets.
__device__ __forceinline__ void offsets(const Dims& d, long long i, long long* oa, long long* ob,
                                        long long* oc) {
    long long a = 0, b = 0, c = 0;
    for (int ax = d.ndim - 1; ax >= 0; --ax) {
        long long coord = i % d.size[ax];
        i /= d.size[ax];
        a += coord * d.stride_a[ax];
        b += coord * d.stride_b[ax];
        c += coord * d.stride_c[ax];
    }
    *oa = a; *ob = b; *oc = c;
}

__device__ __forceinline__ real warp_sum(real v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ real warp_max(real v) {
    for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over the block; every thread gets the result. `scratch` holds >= 32 values.
__device__ real block_sum(real v, real* scratch) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    int nwarps = (blockDim.x + 31) >> 5;
    v = (threadIdx.x < nwarps) ? scratch[threadIdx.x] : (real)0;
    if (warp == 0) v = warp_sum(v);
    if (threadIdx.x == 0) scratch[0] = v;
    __syncthreads();
    v = scratch[0];
    __syncthreads();
    return v;
}

// Max over the block; every thread gets the result.
__device__ real block_max(real v, real* scratch) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    int nwarps = (blockDim.x + 31) >> 5;
    v = (threadIdx.x < nwarps) ? scratch[threadIdx.x] : (real)(-DEQ_INF);
    if (warp == 0) v = warp_max(v);
    if (threadIdx.x == 0) scratch[0] = v;
    __syncthreads();
    v = scratch[0];
    __syncthreads();
    return v;
}
