//! Per-sample reductions and updates for the fixed-point solvers (kernels in `solver.cu`).
//!
//! A batch is `b` samples of `n` values; histories are `[b, slots, n]`. Reductions come back
//! to the host as f64 (these few scalars per iteration are a solve's only round trips); the
//! coefficients the host derives from them go back as small uploads. `active` / `mask` flags
//! select samples: frozen samples are neither read nor written.

use crate::launch::{launch, linear, rows, Arg};
use crate::{Gpu, GpuBuffer, GpuFloat};
use cudarc::driver::LaunchConfig;

/// Threads of the per-sample reduction blocks.
const REDUCE_THREADS: u32 = 256;

fn check_len<T: GpuFloat>(op: &str, buf: &GpuBuffer<T>, want: usize) {
    assert!(
        buf.len() >= want,
        "{op}: buffer of {} values, needs {want}",
        buf.len()
    );
}

fn flags(gpu: &Gpu, f: &[bool]) -> GpuBuffer<i32> {
    let v: Vec<i32> = f.iter().map(|&a| a as i32).collect();
    gpu.upload(&v)
}

fn reals<T: GpuFloat>(gpu: &Gpu, v: &[f64]) -> GpuBuffer<T> {
    match T::GPU_DTYPE {
        crate::Dtype::F32 => {
            let f: Vec<f32> = v.iter().map(|&x| x as f32).collect();
            retype(gpu.upload(&f))
        }
        crate::Dtype::F64 => retype(gpu.upload(v)),
    }
}

/// Reinterprets a buffer whose element type is known (by `GPU_DTYPE`) to be `T`.
fn retype<U: crate::Element, T: GpuFloat>(buf: GpuBuffer<U>) -> GpuBuffer<T> {
    assert_eq!(std::mem::size_of::<U>(), std::mem::size_of::<T>());
    buf.retype()
}

/// `[(‖fz_s − z_s‖², ‖fz_s‖²)]` for every sample, accumulated in f64 (waits for the device).
pub fn residual_sums<T: GpuFloat>(
    z: &GpuBuffer<T>,
    fz: &GpuBuffer<T>,
    b: usize,
    n: usize,
) -> Vec<(f64, f64)> {
    check_len("residual_sums", z, b * n);
    check_len("residual_sums", fz, b * n);
    let out = z.gpu().alloc::<f64>(2 * b);
    launch::<T>(
        z.gpu(),
        "solver_residual_sums",
        rows(b, REDUCE_THREADS),
        &[
            Arg::Ptr(z.ptr()),
            Arg::Ptr(fz.ptr()),
            Arg::len(n),
            Arg::Ptr(out.ptr()),
        ],
    );
    out.to_vec().chunks(2).map(|c| (c[0], c[1])).collect()
}

/// `out[at + 3s ..][..3] = (a_s·b_s, a_s·a_s, b_s·b_s)` for every sample, in f64, left on the
/// device so that several reductions come back in one download.
pub fn dot3_into<T: GpuFloat>(
    out: &mut GpuBuffer<f64>,
    at: usize,
    a: &GpuBuffer<T>,
    bv: &GpuBuffer<T>,
    b: usize,
    n: usize,
) {
    check_len("dot3", a, b * n);
    check_len("dot3", bv, b * n);
    check_len("dot3", out, at + 3 * b);
    if b == 0 {
        return;
    }
    launch::<T>(
        a.gpu(),
        "solver_dot3",
        rows(b, REDUCE_THREADS),
        &[
            Arg::Ptr(a.ptr()),
            Arg::Ptr(bv.ptr()),
            Arg::len(n),
            Arg::Ptr(f64_at(out, at)),
        ],
    );
}

/// The device address of `buf[at]`.
fn f64_at(buf: &GpuBuffer<f64>, at: usize) -> u64 {
    buf.ptr() + (at * std::mem::size_of::<f64>()) as u64
}

/// Where the vector of each sample starts in a dot product: a `[b, n]` array, or slot `k` of
/// a `[b, slots, n]` history.
#[derive(Clone, Copy, Debug)]
pub enum Rows {
    /// Sample `s` at `s·n`.
    Plain,
    /// Sample `s` at `(s·slots + k)·n`.
    Slot {
        /// The slot.
        k: usize,
        /// Slots per sample.
        slots: usize,
    },
}

/// `out[s·slots + i] = x_s · mat[s, i]` for `i < used` (other entries 0), in f64 (waits).
pub fn dots<T: GpuFloat>(
    x: &GpuBuffer<T>,
    layout: Rows,
    mat: &GpuBuffer<T>,
    b: usize,
    n: usize,
    slots: usize,
    used: usize,
) -> Vec<f64> {
    let mut out = mat.gpu().zeros::<f64>(b * slots);
    dots_into(&mut out, 0, x, layout, mat, b, n, slots, used);
    out.to_vec()
}

/// [`dots`] left on the device: `out[at + s·slots + i] = x_s · mat[s, i]` for `i < used`;
/// the other entries are not written (the caller zeroes them), so that several reductions
/// come back in one download.
#[allow(clippy::too_many_arguments)]
pub fn dots_into<T: GpuFloat>(
    out: &mut GpuBuffer<f64>,
    at: usize,
    x: &GpuBuffer<T>,
    layout: Rows,
    mat: &GpuBuffer<T>,
    b: usize,
    n: usize,
    slots: usize,
    used: usize,
) {
    assert!(used <= slots, "dots: {used} slots used of {slots}");
    check_len("dots", mat, b * slots * n);
    check_len("dots", out, at + b * slots);
    if used == 0 || b == 0 {
        return;
    }
    let (offset, stride) = match layout {
        Rows::Plain => (0, n),
        Rows::Slot { k, slots: s } => (k * n, s * n),
    };
    check_len("dots", x, offset + (b - 1) * stride + n);
    let cfg = LaunchConfig {
        grid_dim: (b as u32, used as u32, 1),
        block_dim: (REDUCE_THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    let x_ptr = x.ptr() + (offset * std::mem::size_of::<T>()) as u64;
    launch::<T>(
        mat.gpu(),
        "solver_dots",
        cfg,
        &[
            Arg::Ptr(x_ptr),
            Arg::len(stride),
            Arg::Ptr(mat.ptr()),
            Arg::len(n),
            Arg::I32(slots as i32),
            Arg::Ptr(f64_at(out, at)),
        ],
    );
}

/// For active samples: `y_s = base_scale[s]·base_s + Σ_i ca[s,i]·A[s,i] (+ Σ_i cb[s,i]·B[s,i])`,
/// where `base` is `y` itself when `None`. Coefficients of exactly 0 skip their slot.
#[allow(clippy::too_many_arguments)]
pub fn combine<T: GpuFloat>(
    y: &mut GpuBuffer<T>,
    base: Option<&GpuBuffer<T>>,
    base_scale: &[f64],
    a: &GpuBuffer<T>,
    ca: &[f64],
    second: Option<(&GpuBuffer<T>, &[f64])>,
    active: &[bool],
    n: usize,
    slots: usize,
) {
    let b = active.len();
    check_len("combine", y, b * n);
    check_len("combine", a, b * slots * n);
    assert!(
        base_scale.len() == b && ca.len() == b * slots,
        "combine: coefficient counts"
    );
    let gpu = y.gpu().clone();
    let base_ptr = base.map_or(y.ptr(), |x| {
        check_len("combine", x, b * n);
        x.ptr()
    });
    let scales = reals::<T>(&gpu, base_scale);
    let ca = reals::<T>(&gpu, ca);
    let (b_ptr, cb) = match second {
        Some((m, c)) => {
            check_len("combine", m, b * slots * n);
            assert_eq!(c.len(), b * slots, "combine: coefficient counts");
            (m.ptr(), Some(reals::<T>(&gpu, c)))
        }
        None => (0, None),
    };
    let act = flags(&gpu, active);
    launch::<T>(
        &gpu,
        "solver_combine",
        linear(b * n),
        &[
            Arg::Ptr(y.ptr()),
            Arg::Ptr(base_ptr),
            Arg::Ptr(scales.ptr()),
            Arg::Ptr(a.ptr()),
            Arg::Ptr(ca.ptr()),
            Arg::Ptr(b_ptr),
            Arg::Ptr(cb.as_ref().map_or(0, |c| c.ptr())),
            Arg::Ptr(act.ptr()),
            Arg::len(b),
            Arg::len(n),
            Arg::I32(slots as i32),
        ],
    );
}

/// For active samples: `y_s += alpha·x_s`.
pub fn axpy_rows<T: GpuFloat>(
    y: &mut GpuBuffer<T>,
    x: &GpuBuffer<T>,
    alpha: f64,
    active: &[bool],
    n: usize,
) {
    let b = active.len();
    check_len("axpy_rows", y, b * n);
    check_len("axpy_rows", x, b * n);
    let act = flags(y.gpu(), active);
    launch::<T>(
        y.gpu(),
        "solver_axpy_rows",
        linear(b * n),
        &[
            Arg::Ptr(y.ptr()),
            Arg::Ptr(x.ptr()),
            Arg::real::<T>(alpha),
            Arg::Ptr(act.ptr()),
            Arg::len(b),
            Arg::len(n),
        ],
    );
}

/// For samples with `mask[s]`: `dst_s = src_s`.
pub fn copy_rows<T: GpuFloat>(dst: &mut GpuBuffer<T>, src: &GpuBuffer<T>, mask: &[bool], n: usize) {
    let b = mask.len();
    if !mask.iter().any(|&m| m) {
        return;
    }
    check_len("copy_rows", dst, b * n);
    check_len("copy_rows", src, b * n);
    let m = flags(dst.gpu(), mask);
    launch::<T>(
        dst.gpu(),
        "solver_copy_rows",
        linear(b * n),
        &[
            Arg::Ptr(dst.ptr()),
            Arg::Ptr(src.ptr()),
            Arg::Ptr(m.ptr()),
            Arg::len(b),
            Arg::len(n),
        ],
    );
}

/// For active samples: `z_s = τ·fz_s + (1 − τ)·z_s`.
pub fn naive_step<T: GpuFloat>(
    z: &mut GpuBuffer<T>,
    fz: &GpuBuffer<T>,
    tau: f64,
    active: &[bool],
    n: usize,
) {
    let b = active.len();
    check_len("naive_step", z, b * n);
    check_len("naive_step", fz, b * n);
    let act = flags(z.gpu(), active);
    launch::<T>(
        z.gpu(),
        "solver_naive_step",
        linear(b * n),
        &[
            Arg::Ptr(z.ptr()),
            Arg::Ptr(fz.ptr()),
            Arg::real::<T>(tau),
            Arg::Ptr(act.ptr()),
            Arg::len(b),
            Arg::len(n),
        ],
    );
}

/// Broyden's residual bookkeeping for active samples: `g' = fz − z`, `dg = g' − g` (when
/// `started`), `g = g'`.
#[allow(clippy::too_many_arguments)]
pub fn broyden_residual<T: GpuFloat>(
    z: &GpuBuffer<T>,
    fz: &GpuBuffer<T>,
    g: &mut GpuBuffer<T>,
    dg: &mut GpuBuffer<T>,
    active: &[bool],
    started: bool,
    n: usize,
) {
    let b = active.len();
    for buf in [z, fz, &*g, &*dg] {
        check_len("broyden_residual", buf, b * n);
    }
    let act = flags(z.gpu(), active);
    launch::<T>(
        z.gpu(),
        "solver_broyden_residual",
        linear(b * n),
        &[
            Arg::Ptr(z.ptr()),
            Arg::Ptr(fz.ptr()),
            Arg::Ptr(g.ptr()),
            Arg::Ptr(dg.ptr()),
            Arg::Ptr(act.ptr()),
            Arg::flag(started),
            Arg::len(b),
            Arg::len(n),
        ],
    );
}

/// Broyden's new pair: for samples with `k[s] = Some(slot)`, that slot of `u` and `v` becomes
/// `(dz + dg + Σ cu·u_i)·inv_denom[s]` and `−dz + Σ cv·v_i`; `None` leaves the sample alone.
/// The caller zeroes the coefficients of the written slot and of slots not held.
#[allow(clippy::too_many_arguments)]
pub fn broyden_pair<T: GpuFloat>(
    dz: &GpuBuffer<T>,
    dg: &GpuBuffer<T>,
    u: &mut GpuBuffer<T>,
    v: &mut GpuBuffer<T>,
    cu: &[f64],
    cv: &[f64],
    k: &[Option<usize>],
    inv_denom: &[f64],
    n: usize,
    slots: usize,
) {
    let b = k.len();
    check_len("broyden_pair", dz, b * n);
    check_len("broyden_pair", dg, b * n);
    check_len("broyden_pair", u, b * slots * n);
    check_len("broyden_pair", v, b * slots * n);
    assert!(
        cu.len() == b * slots && cv.len() == b * slots && inv_denom.len() == b,
        "broyden_pair: coefficient counts"
    );
    assert!(
        k.iter().flatten().all(|&k| k < slots),
        "broyden_pair: slot out of range"
    );
    let gpu = u.gpu().clone();
    let (cu, cv, inv) = (
        reals::<T>(&gpu, cu),
        reals::<T>(&gpu, cv),
        reals::<T>(&gpu, inv_denom),
    );
    let ks: Vec<i32> = k.iter().map(|k| k.map_or(-1, |k| k as i32)).collect();
    let ks = gpu.upload(&ks);
    launch::<T>(
        &gpu,
        "solver_broyden_pair",
        linear(b * n),
        &[
            Arg::Ptr(dz.ptr()),
            Arg::Ptr(dg.ptr()),
            Arg::Ptr(u.ptr()),
            Arg::Ptr(v.ptr()),
            Arg::Ptr(cu.ptr()),
            Arg::Ptr(cv.ptr()),
            Arg::Ptr(ks.ptr()),
            Arg::Ptr(inv.ptr()),
            Arg::len(b),
            Arg::len(n),
            Arg::I32(slots as i32),
        ],
    );
}

/// Anderson's history write for active samples: `X[s,k] = z_s`, `G[s,k] = fz_s − z_s`.
#[allow(clippy::too_many_arguments)]
pub fn anderson_record<T: GpuFloat>(
    z: &GpuBuffer<T>,
    fz: &GpuBuffer<T>,
    x: &mut GpuBuffer<T>,
    g: &mut GpuBuffer<T>,
    active: &[bool],
    k: usize,
    n: usize,
    slots: usize,
) {
    let b = active.len();
    check_len("anderson_record", z, b * n);
    check_len("anderson_record", fz, b * n);
    check_len("anderson_record", x, b * slots * n);
    check_len("anderson_record", g, b * slots * n);
    assert!(k < slots, "anderson_record: slot {k} of {slots}");
    let act = flags(z.gpu(), active);
    launch::<T>(
        z.gpu(),
        "solver_anderson_record",
        linear(b * n),
        &[
            Arg::Ptr(z.ptr()),
            Arg::Ptr(fz.ptr()),
            Arg::Ptr(x.ptr()),
            Arg::Ptr(g.ptr()),
            Arg::Ptr(act.ptr()),
            Arg::I32(k as i32),
            Arg::len(b),
            Arg::len(n),
            Arg::I32(slots as i32),
        ],
    );
}
