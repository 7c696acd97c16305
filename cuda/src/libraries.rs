//! Which CUDA libraries this process loaded, from where, and their versions: the first lines a
//! GPU check needs when something fails (a driver older than NVRTC, a cuBLAS from another
//! toolkit).

use crate::error::CudaError;
use cudarc::cublas::sys as blas_sys;
use cudarc::driver::sys as driver_sys;
use cudarc::nvrtc::sys as nvrtc_sys;

/// The CUDA version the driver supports, e.g. `(13, 0)` (from `cuDriverGetVersion`).
pub fn driver_version() -> Result<(i32, i32), CudaError> {
    if !crate::driver_present() {
        return Err(CudaError::NoDriver);
    }
    let mut v = 0;
    // SAFETY: the library is present; `v` is a valid out-pointer.
    unsafe { driver_sys::cuDriverGetVersion(&mut v) }.result()?;
    Ok((v / 1000, (v % 1000) / 10))
}

/// The NVRTC version, e.g. `(13, 0)`.
pub fn nvrtc_version() -> Result<(i32, i32), CudaError> {
    // SAFETY: only a dlopen check.
    if !unsafe { nvrtc_sys::is_culib_present() } {
        return Err(CudaError::MissingLibrary("libnvrtc"));
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: the library is present; both are valid out-pointers.
    unsafe { nvrtc_sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| CudaError::Compile(format!("nvrtcVersion: {e:?}")))?;
    Ok((major, minor))
}

/// The cuBLAS version, e.g. `(13, 0, 2)`.
pub fn cublas_version() -> Result<(i32, i32, i32), CudaError> {
    // SAFETY: only a dlopen check.
    if !unsafe { blas_sys::is_culib_present() } {
        return Err(CudaError::MissingLibrary("libcublas"));
    }
    let get = |p| {
        let mut v = 0;
        // SAFETY: the library is present; `v` is a valid out-pointer.
        unsafe { blas_sys::cublasGetProperty(p, &mut v) }
            .result()
            .map(|()| v)
            .map_err(|e| CudaError::Cublas(format!("cublasGetProperty: {e:?}")))
    };
    use blas_sys::libraryPropertyType as P;
    Ok((
        get(P::MAJOR_VERSION)?,
        get(P::MINOR_VERSION)?,
        get(P::PATCH_LEVEL)?,
    ))
}

/// The CUDA libraries (`libcuda`, `libnvrtc*`, `libcublas*`) mapped into this process, by path,
/// from `/proc/self/maps` (empty where that file does not exist).
pub fn loaded_libraries() -> Vec<String> {
    std::fs::read_to_string("/proc/self/maps")
        .map(|maps| cuda_libraries_in_maps(&maps))
        .unwrap_or_default()
}

/// The distinct paths of CUDA libraries in the text of a `/proc/<pid>/maps` file, sorted.
pub fn cuda_libraries_in_maps(maps: &str) -> Vec<String> {
    let mut paths: Vec<String> = maps
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .filter(|path| {
            let file = path.rsplit('/').next().unwrap_or(path);
            file.starts_with("libcuda.")
                || file.starts_with("libnvrtc")
                || file.starts_with("libcublas")
        })
        .map(str::to_string)
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

/// A few lines for a device report: each library's version (or why it has none) and the
/// paths of the CUDA libraries loaded so far (open a device first to load all three).
pub fn report() -> String {
    let show = |r: Result<String, CudaError>| r.unwrap_or_else(|e| format!("unavailable ({e})"));
    let mut lines = vec![
        format!(
            "CUDA driver: {}",
            show(driver_version().map(|(a, b)| format!("supports CUDA {a}.{b}")))
        ),
        format!(
            "NVRTC: {}",
            show(nvrtc_version().map(|(a, b)| format!("{a}.{b}")))
        ),
        format!(
            "cuBLAS: {}",
            show(cublas_version().map(|(a, b, c)| format!("{a}.{b}.{c}")))
        ),
    ];
    let loaded = loaded_libraries();
    if loaded.is_empty() {
        lines.push("loaded CUDA libraries: none".into());
    }
    for path in loaded {
        lines.push(format!("loaded: {path}"));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::cuda_libraries_in_maps;

    #[test]
    fn the_cuda_libraries_are_picked_out_of_the_memory_map() {
        let maps = "\
7f00-7f10 r--p 00000000 08:01 1 /usr/lib/x86_64-linux-gnu/libcuda.so.580.65.06
7f10-7f20 r-xp 00010000 08:01 1 /usr/lib/x86_64-linux-gnu/libcuda.so.580.65.06
7f20-7f30 r--p 00000000 08:01 2 /usr/local/cuda/lib64/libnvrtc.so.13.0.48
7f30-7f40 r--p 00000000 08:01 3 /usr/local/cuda/lib64/libnvrtc-builtins.so.13.0.48
7f40-7f50 r--p 00000000 08:01 4 /usr/local/cuda/lib64/libcublasLt.so.13.0.2.14
7f50-7f60 r--p 00000000 08:01 5 /usr/local/cuda/lib64/libcublas.so.13.0.2.14
7f60-7f70 r--p 00000000 08:01 6 /usr/lib/x86_64-linux-gnu/libcudart_static.a
7f70-7f80 r--p 00000000 08:01 7 /usr/lib/x86_64-linux-gnu/libc.so.6
7f80-7f90 rw-p 00000000 00:00 0
7f90-7fa0 rw-p 00000000 00:00 0 [heap]
";
        assert_eq!(
            cuda_libraries_in_maps(maps),
            [
                "/usr/lib/x86_64-linux-gnu/libcuda.so.580.65.06",
                "/usr/local/cuda/lib64/libcublas.so.13.0.2.14",
                "/usr/local/cuda/lib64/libcublasLt.so.13.0.2.14",
                "/usr/local/cuda/lib64/libnvrtc-builtins.so.13.0.48",
                "/usr/local/cuda/lib64/libnvrtc.so.13.0.48",
            ]
        );
    }
}
