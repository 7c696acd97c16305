// Element-wise kernels: unary functions and their derivatives, affine maps, accumulation.
// The unary `kind` codes match `UnaryKind` in ops/elementwise.rs.

#define GELU_C 0.7978845608028654
#define GELU_A 0.044715

__device__ __forceinline__ real unary_apply(int kind, real x, int n) {
    switch (kind) {
        case 0: return -x;
        case 1: return exp(x);
        case 2: return log(x);
        case 3: return tanh(x);
        case 4: { real e = exp(-fabs(x)); real p = (real)1 / ((real)1 + e);
                  return x >= (real)0 ? p : (real)1 - p; }
        case 5: return x > (real)0 ? x : (real)0;
        case 6: return (real)0.5 * x *
                       ((real)1 + tanh((real)GELU_C * (x + (real)GELU_A * x * x * x)));
        case 7: return sqrt(x);
        default: { real r = (real)1; real b = n < 0 ? (real)1 / x : x; int m = n < 0 ? -n : n;
                   for (int i = 0; i < m; ++i) r *= b; return r; }
    }
}

// g * f'(x), given x and y = f(x).
__device__ __forceinline__ real unary_derivative(int kind, real g, real x, real y, int n) {
    switch (kind) {
        case 0: return -g;
        case 1: return g * y;
        case 2: return g / x;
        case 3: return g * ((real)1 - y * y);
        case 4: return g * y * ((real)1 - y);
        case 5: return x > (real)0 ? g : (real)0;
        case 6: { real t = tanh((real)GELU_C * (x + (real)GELU_A * x * x * x));
                  real dt = ((real)1 - t * t) * (real)GELU_C *
                            ((real)1 + (real)3 * (real)GELU_A * x * x);
                  return g * (real)0.5 * ((real)1 + t + x * dt); }
        case 7: return g * (real)0.5 / y;
        default: return g * (real)n * unary_apply(8, x, n - 1);
    }
}

extern "C" __global__ void unary_fwd(int kind, int n, const real* x, real* y, long long len) {
    GRID_STRIDE(i, len) { y[i] = unary_apply(kind, x[i], n); }
}

extern "C" __global__ void unary_bwd(int kind, int n, const real* g, const real* x,
                                     const real* y, real* dst, long long len, int acc) {
    GRID_STRIDE(i, len) { store(dst, i, unary_derivative(kind, g[i], x[i], y[i], n), acc); }
}

// y = scale * x + shift
extern "C" __global__ void affine(const real* x, real scale, real shift, real* y, long long len) {
    GRID_STRIDE(i, len) { y[i] = scale * x[i] + shift; }
}

// dst (+)= scale * src
extern "C" __global__ void scale_into(const real* src, real scale, real* dst, long long len,
                                      int acc) {
    GRID_STRIDE(i, len) { store(dst, i, scale * src[i], acc); }
}

// dst (+)= (*scale_ptr) * src, with the scale read on the device (no host round trip).
extern "C" __global__ void scale_by_device_scalar(const real* src, const real* scale_ptr,
                                                  real* dst, long long len, int acc) {
    real s = *scale_ptr;
    GRID_STRIDE(i, len) { store(dst, i, s * src[i], acc); }
}

extern "C" __global__ void fill(real* dst, real value, long long len) {
    GRID_STRIDE(i, len) { dst[i] = value; }
}
