//! The device layer on a real GPU: opening, copies, the caching allocator, GEMM against a
//! host reference for every transpose pair. Without a GPU each test prints why it skips
//! (the rules of `deq_cuda::harness`: only a missing driver, device or library skips, and
//! nothing skips with `DEQ_REQUIRE_GPU=1`).

use deq_cuda::blas::{gemm, Operand};
use deq_cuda::harness::{compare, gpu_required, run_or_skip, test_gpu};
use deq_cuda::{libraries, ErrorKind, Gpu};

#[test]
fn opening_reports_the_device_or_why_there_is_none() {
    // Prints the facts a GPU check needs first, whether or not the device opens: the device,
    // how its kernels were loaded, and which CUDA libraries (paths and versions) this process
    // uses; then applies the harness's rules to the outcome.
    let opened = Gpu::open(0);
    match &opened {
        Ok(g) => {
            let (major, minor) = g.compute_capability();
            eprintln!("\ncuda:0 is {} (compute {major}.{minor})", g.name());
            let [f32_image, f64_image] = g.kernel_images();
            eprintln!("kernels: f32 {f32_image}; f64 {f64_image}");
        }
        Err(e) => eprintln!("\ncuda:0 did not open: {e}"),
    }
    eprintln!("{}", libraries::report());
    run_or_skip(
        "opening_reports_the_device_or_why_there_is_none",
        opened,
        gpu_required(),
    );
    // A device far beyond any machine's count is always "no CUDA device" (or no driver),
    // an error that says there is no GPU to use, not a fault.
    let err = Gpu::open(4096).expect_err("no machine has 4097 GPUs");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("no CUDA"), "{err}");
}

#[test]
fn copies_round_trip_and_the_pool_reuses_blocks() {
    let Some(g) = test_gpu("copies_round_trip_and_the_pool_reuses_blocks") else {
        return;
    };
    let host: Vec<f32> = (0..1000).map(|i| i as f32 * 0.5 - 3.0).collect();
    let buf = g.upload(&host);
    assert_eq!(buf.to_vec(), host);
    let copy = buf.clone();
    assert_eq!(copy.to_vec(), host);
    assert!(g.zeros::<f64>(333).to_vec().iter().all(|&v| v == 0.0));
    let before = g.memory_stats();
    drop(copy);
    let after_free = g.memory_stats();
    assert!(after_free.cached_bytes > before.cached_bytes);
    assert!(after_free.live_bytes < before.live_bytes);
    let again = g.alloc::<f32>(1000);
    let reused = g.memory_stats();
    assert_eq!(
        reused.cached_bytes, before.cached_bytes,
        "the freed block is handed out again"
    );
    drop(again);
    assert!(g.upload::<f32>(&[]).is_empty());
}

fn host_gemm(a: &[f64], b: &[f64], m: usize, n: usize, k: usize, ta: bool, tb: bool) -> Vec<f64> {
    let at = |i: usize, p: usize| if ta { a[p * m + i] } else { a[i * k + p] };
    let bt = |p: usize, j: usize| if tb { b[j * k + p] } else { b[p * n + j] };
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = (0..k).map(|p| at(i, p) * bt(p, j)).sum();
        }
    }
    c
}

#[test]
fn gemm_matches_the_host_for_every_transpose() {
    let Some(g) = test_gpu("gemm_matches_the_host_for_every_transpose") else {
        return;
    };
    let (m, n, k) = (7, 13, 5);
    let a: Vec<f64> = (0..m * k).map(|i| (i as f64 * 0.37).sin()).collect();
    let b: Vec<f64> = (0..k * n).map(|i| (i as f64 * 0.11).cos()).collect();
    let (da, db) = (g.upload(&a), g.upload(&b));
    for ta in [false, true] {
        for tb in [false, true] {
            let (ar, ac) = if ta { (k, m) } else { (m, k) };
            let (br, bc) = if tb { (n, k) } else { (k, n) };
            let mut c = g.zeros::<f64>(m * n);
            gemm(
                &mut c,
                Operand::matrix(&da, ar, ac, ta),
                Operand::matrix(&db, br, bc, tb),
                1,
                1.0,
                0.0,
            );
            let want = host_gemm(&a, &b, m, n, k, ta, tb);
            if let Err(e) = compare(&c.to_vec(), &want, 1e-12) {
                panic!("ta={ta} tb={tb}: {e}");
            }
        }
    }
}
