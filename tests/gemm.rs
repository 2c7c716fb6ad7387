//! The f32 GEMM driver as compiled models run it (`bertc_bench_linear`, the same task loop and
//! tiles), natively on this machine's microkernels and on the portable tiles (`--cpu x86-64`),
//! for the caches it has and for tiny ones that force every part of the blocking: many row
//! groups, k split in blocks whose later tiles start from the output, partial last panels
//! through the stack tile, both task orders. Against an f64 reference; and the result of a
//! blocked run is bit for bit the unblocked one (the k blocks add in the same order).

mod common;

use bertc_targets::{Caches, Target};
use common::{gemm_library, scratch};

fn run(lib: &bertc_runtime::Library, x: &[f32], packed: &[f32], m: usize, n: usize) -> Vec<f32> {
    type Linear = unsafe extern "C" fn(*const f32, *mut f32, i64, *const f32);
    // SAFETY: the symbol is the generated linear with this signature.
    let linear: Linear = unsafe { std::mem::transmute(lib.symbol("bertc_bench_linear").unwrap()) };
    // a canary past the output
    let mut out = vec![777f32; m * n + 16];
    // SAFETY: the buffers have the sizes and layouts the kernel reads and writes.
    unsafe { linear(x.as_ptr(), out.as_mut_ptr(), m as i64, packed.as_ptr()) };
    assert!(
        out[m * n..].iter().all(|&v| v == 777.0),
        "wrote past the output"
    );
    out.truncate(m * n);
    out
}

#[test]
fn blocked_gemm_matches_the_reference_for_any_caches() {
    let dir = scratch("gemm-blocking");
    let tiny = Caches {
        l1d: 1024,
        l2: 16 * 1024,
        l3: 1 << 20,
    };
    let host = Target::host();
    let portable = Target::with_cpu(&host.triple, Some("x86-64")).unwrap();
    let mut targets = vec![("host", host.clone())];
    if host.arch == bertc_targets::Arch::X86_64 {
        targets.push(("portable", portable));
    }
    let mut seed = 5u64;
    let mut rnd = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    };
    // (rows, k, n): few rows and many, k whole and split (with a short last block), full and
    // partial last panels
    for (m, k, n) in [
        (5, 37, 40),
        (64, 300, 16),
        (70, 300, 35),
        (131, 64, 20),
        (200, 1536, 48),
        (97, 17, 33),
    ] {
        let x: Vec<f32> = (0..m * k).map(|_| rnd()).collect();
        let w: Vec<f32> = (0..n * k).map(|_| rnd()).collect();
        let bias: Vec<f32> = (0..n).map(|_| rnd()).collect();
        let packed = bertc_codegen::pack_linear(&w, Some(&bias), n, k);
        for (name, target) in &targets {
            let mut outs = Vec::new();
            for (cname, caches) in [("its caches", target.caches), ("tiny caches", tiny)] {
                let t = Target {
                    caches,
                    ..target.clone()
                };
                let tag = format!("{name}-{}-{m}x{k}x{n}", cname.len());
                let out = run(
                    &gemm_library(&dir, &t, (k, n, None), &tag),
                    &x,
                    &packed,
                    m,
                    n,
                );
                for r in 0..m {
                    for c in 0..n {
                        let want = (0..k).fold(bias[c] as f64, |s, kk| {
                            s + x[r * k + kk] as f64 * w[c * k + kk] as f64
                        });
                        let got = out[r * n + c] as f64;
                        assert!(
                            (got - want).abs() <= 1e-5 * (1.0 + want.abs()) * (k as f64).sqrt(),
                            "{name} with {cname}, {m}x{k}x{n}: row {r} col {c}: {got} vs {want}"
                        );
                    }
                }
                outs.push(out);
            }
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&outs[0]),
                bits(&outs[1]),
                "{name}, {m}x{k}x{n}: blocked for tiny caches, the sums differ"
            );
        }
    }
}
