//! The AVX-512 microkernels, and the GEMM drivers (f32, and int8 on AVX512-VNNI) that call
//! them, against an f64 reference (the int8 one bit for bit),
//! run under BochsCPU (an emulated x86-64 CPU with AVX-512; `scripts/x86-emulate`), since the
//! machines the tests run on may lack AVX-512. The emulator is a Python package: `scripts/setup-x86-emulator` installs it into
//! `target/x86-emu-venv`, or `BERTC_X86_EMULATOR` names a Python that has it. Without it the
//! test says so and passes, unless `BERTC_REQUIRE_EMULATOR=1` (set by CI), where it fails.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{avx512_kernel, MicroEpi, AVX512_MR};
use crate::lower::Act;
use bertc_ir::GeluApprox;

const CODE: u64 = 0x1000_0000;
const A: u64 = 0x2000_0000;
const B: u64 = 0x3000_0000;
const C: u64 = 0x4000_0000;
const RES: u64 = 0x5000_0000;
const STACK: u64 = 0x6000_0000;
/// A page holding `hlt` (0xf4), where the functions return to: the run stops there.
const HLT: u64 = 0x7000_0000;

#[path = "../../../../../tests/common/emulator.rs"]
mod emulator;

/// A fresh folder, removed when the test ends.
fn tempdir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(tag).tempdir().unwrap()
}

fn repo() -> PathBuf {
    emulator::repo_root(env!("CARGO_MANIFEST_DIR"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn floats_hex(v: &[f32]) -> String {
    hex(&v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>())
}

fn unhex_floats(s: &str) -> Vec<f32> {
    let b: Vec<u8> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect();
    b.chunks(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Deterministic values in [-2, 2).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
    }
}

fn act_ref(act: Option<Act>, x: f64) -> f64 {
    match act {
        None => x,
        Some(Act::Relu) => x.max(0.0),
        Some(Act::Tanh) => x.tanh(),
        Some(Act::Gelu(GeluApprox::Erf)) => 0.5 * x * (1.0 + libm::erf(x / 2f64.sqrt())),
        Some(Act::Gelu(GeluApprox::Tanh)) => {
            let c = (2.0 / std::f64::consts::PI).sqrt();
            0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
        }
    }
}

struct Case {
    mr: usize,
    k: usize,
    epi: MicroEpi,
    want: Vec<f64>,
    /// The tile's columns (16, or 32 for a two-panel tile).
    cols: usize,
    /// The output rows' values beyond the tile's columns, which must stay untouched.
    canary: f32,
}

/// Column stride of the output and residual (floats): wider than the tile.
const LDC: usize = 37;

#[test]
fn avx512_kernels_match_the_reference_under_emulation() {
    let Some(python) = emulator_or_skip() else {
        return;
    };
    let acts = [
        None,
        Some(Act::Relu),
        Some(Act::Tanh),
        Some(Act::Gelu(GeluApprox::Erf)),
        Some(Act::Gelu(GeluApprox::Tanh)),
    ];
    let mut rng = Lcg(7);
    let mut jobs = Vec::new();
    let mut cases = Vec::new();
    for mr in 1..=AVX512_MR {
        for (i, act) in acts.iter().enumerate() {
            for (residual, wide) in [(false, false), (true, false), (false, true), (true, true)] {
                let prefetch = (mr + i) % 2 == 0;
                // depths with and without a tail after the 4-step loop, and below 4
                let k = [1, 3, 4, 7, 37][(mr + i + residual as usize) % 5];
                // a later k block's tile: from the output's partial sums, no bias row
                let accumulate = (mr + i) % 3 == 0;
                let epi = MicroEpi {
                    act: *act,
                    residual,
                    prefetch,
                    accumulate,
                    wide,
                };
                // a two-panel tile's second panel right after the first
                let cols = if wide { 32 } else { 16 };
                let lda = k + 3;
                let a: Vec<f32> = (0..mr * lda).map(|_| rng.next()).collect();
                let panel: Vec<f32> = (0..(k + 1) * cols).map(|_| rng.next() * 0.5).collect();
                let res: Vec<f32> = (0..mr * LDC).map(|_| rng.next()).collect();
                let canary = 1234.5;
                let c: Vec<f32> = (0..mr * LDC)
                    .map(|e| {
                        if accumulate && e % LDC < cols {
                            rng.next()
                        } else {
                            canary
                        }
                    })
                    .collect();
                let w0 = if accumulate { 0 } else { 16 };
                let mut want = vec![0f64; mr * cols];
                for r in 0..mr {
                    for j in 0..cols {
                        let p = &panel[(j / 16) * (k + 1) * 16..];
                        let mut s = if accumulate {
                            c[r * LDC + j] as f64
                        } else {
                            p[j % 16] as f64
                        };
                        for kk in 0..k {
                            s += a[r * lda + kk] as f64 * p[w0 + kk * 16 + j % 16] as f64;
                        }
                        let mut v = act_ref(*act, s);
                        if residual {
                            v += res[r * LDC + j] as f64;
                        }
                        want[r * cols + j] = v;
                    }
                }
                // the stack: return address, then the residual, prefetch address and step, the
                // second panel's offset
                let mut stack = vec![HLT];
                if residual {
                    stack.push(RES);
                }
                if prefetch {
                    stack.extend([B, 22]);
                }
                if wide {
                    stack.push((k as u64 + 1) * 64);
                }
                let stack_bytes: Vec<u8> = stack.iter().flat_map(|v| v.to_le_bytes()).collect();
                let code = avx512_kernel(mr, epi).unwrap();
                // each job's code at its own address: the emulator caches decoded code
                let code_addr = CODE + 0x1_0000 * jobs.len() as u64;
                jobs.push(format!(
                    r#"{{"code_addr":{code_addr},"code":"{}","regions":[{},{},{},{},{},{}],"regs":{{"rdi":{A},"rsi":{},"rdx":{B},"rcx":{C},"r8":{},"r9":{k},"rsp":{}}},"read":[{{"addr":{C},"len":{}}}]}}"#,
                    hex(&code),
                    region(A, &floats_hex(&a)),
                    region(B, &floats_hex(&panel)),
                    region(C, &floats_hex(&c)),
                    region(RES, &floats_hex(&res)),
                    region(STACK + 0x800, &hex(&stack_bytes)),
                    region(HLT, "f4"),
                    lda * 4,
                    LDC * 4,
                    STACK + 0x800,
                    mr * LDC * 4,
                ));
                cases.push(Case {
                    mr,
                    k,
                    epi,
                    want,
                    cols,
                    canary,
                });
            }
        }
    }
    let v = emulate(&python, &jobs, "kernels");
    let results = v["results"].as_array().expect("results");
    assert_eq!(results.len(), cases.len());
    for (case, r) in cases.iter().zip(results) {
        let what = format!("mr {} k {} {:?}", case.mr, case.k, case.epi);
        assert!(r["ok"].as_bool().unwrap(), "{what}: {}", r["error"]);
        let got = unhex_floats(r["read"][0].as_str().unwrap());
        for row in 0..case.mr {
            for j in 0..LDC {
                let g = got[row * LDC + j];
                if j >= case.cols {
                    assert_eq!(g, case.canary, "{what}: row {row} col {j} written");
                    continue;
                }
                let w = case.want[row * case.cols + j];
                assert!(
                    (g as f64 - w).abs() <= 1e-5 * (1.0 + w.abs()),
                    "{what}: row {row} col {j}: {g} vs {w}"
                );
            }
        }
    }
}

/// The emulator's Python, or `None` (the test skips) unless `BERTC_REQUIRE_EMULATOR=1`.
fn emulator_or_skip() -> Option<PathBuf> {
    emulator::x86_emulator(&repo())
}

/// Runs the jobs (JSON objects, see `scripts/x86-emulate`) and returns the emulator's answer.
fn emulate(python: &Path, jobs: &[String], tag: &str) -> serde_json::Value {
    let tmp = tempdir(&format!("bertc-x86-emu-{tag}"));
    let dir = tmp.path();
    let job_file = dir.join("jobs.json");
    std::fs::write(&job_file, format!(r#"{{"jobs":[{}]}}"#, jobs.join(","))).unwrap();
    let out = Command::new(python)
        .arg(repo().join("scripts/x86-emulate"))
        .arg(&job_file)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", python.display()));
    if std::env::var_os("BERTC_KEEP_JOBS").is_some() {
        eprintln!("kept {}", tmp.keep().display());
    }
    assert!(
        out.status.success(),
        "x86-emulate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("emulator output")
}

fn region(addr: u64, data: &str) -> String {
    format!(r#"{{"addr":{addr},"data":"{data}"}}"#)
}

/// The loadable segments of an ELF64 file as (address from `base`, bytes).
fn elf_segments(elf: &[u8], base: u64) -> Vec<(u64, Vec<u8>)> {
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap());
    let (phoff, phentsize, phnum) = (u64_at(0x20) as usize, u16_at(0x36), u16_at(0x38));
    (0..phnum)
        .map(|i| phoff + i * phentsize)
        .filter(|&ph| u32::from_le_bytes(elf[ph..ph + 4].try_into().unwrap()) == 1)
        .map(|ph| {
            let (off, vaddr) = (u64_at(ph + 8) as usize, u64_at(ph + 16));
            let (filesz, memsz) = (u64_at(ph + 32) as usize, u64_at(ph + 40) as usize);
            let mut data = elf[off..off + filesz].to_vec();
            data.resize(memsz, 0);
            (base + vaddr, data)
        })
        .collect()
}

/// The whole GEMM driver for an AVX-512 target (the Cranelift task loop over row blocks and
/// panels, both task orders, row groups and k blocks, partial last panels through the stack
/// tile, prefetch shares, all row counts of the microkernel) as `bertc bench --gemm` builds it, linked into a shared
/// object and run under the emulator on all its tasks, against an f64 reference.
#[test]
fn avx512_linear_driver_matches_the_reference_under_emulation() {
    let Some(python) = emulator_or_skip() else {
        return;
    };
    let target =
        bertc_targets::Target::with_cpu("x86_64-unknown-linux-gnu", Some("x86-64-v4")).unwrap();
    // (rows, k, n, tiny caches): few rows and many (above SMALL_ROWS), full and partial last
    // panels; with tiny caches, many row groups and k split in blocks (the later ones start
    // from the output)
    let shapes = [
        (5, 37, 40, false),
        (12, 8, 16, false),
        (23, 5, 50, false),
        (70, 6, 35, false),
        (131, 4, 20, false),
        (75, 9, 80, false),
        (30, 70, 20, true),
        (90, 100, 35, true),
        (66, 20, 96, true),
    ];
    let tiny = bertc_targets::Caches {
        l1d: 1024,
        l2: 16 * 1024,
        l3: 1 << 20,
    };
    let tmp = tempdir("bertc-x86-emu-link");
    let dir = tmp.path();
    let mut rng = Lcg(11);
    let mut jobs = Vec::new();
    let mut wants = Vec::new();
    for (i, &(rows, k, n, small)) in shapes.iter().enumerate() {
        let t = bertc_targets::Target {
            caches: if small { tiny } else { target.caches },
            ..target.clone()
        };
        let (obj, _) = crate::compile_gemm_bench(&t, k, n, None).unwrap();
        let x: Vec<f32> = (0..rows * k).map(|_| rng.next()).collect();
        let w: Vec<f32> = (0..n * k).map(|_| rng.next()).collect();
        let bias: Vec<f32> = (0..n).map(|_| rng.next()).collect();
        let packed = crate::lower::pack_linear(&w, Some(&bias), n, k);
        let canary = 777.0f32;
        let want: Vec<f64> = (0..rows * n)
            .map(|e| {
                let (r, c) = (e / n, e % n);
                (0..k).fold(bias[c] as f64, |s, kk| {
                    s + x[r * k + kk] as f64 * w[c * k + kk] as f64
                })
            })
            .collect();
        let (a, b) = (floats_hex(&x), floats_hex(&packed));
        jobs.push(linear_job(dir, i, &obj, [&a, &b], rows, rows * n, canary));
        wants.push((rows, k, n, want, canary));
    }
    let v = emulate(&python, &jobs, "driver");
    let results = v["results"].as_array().expect("results");
    for ((rows, k, n, want, canary), r) in wants.iter().zip(results) {
        let what = format!("{rows}x{k}x{n}");
        assert!(r["ok"].as_bool().unwrap(), "{what}: {}", r["error"]);
        let got = unhex_floats(r["read"][0].as_str().unwrap());
        for (e, w) in want.iter().enumerate() {
            let g = got[e] as f64;
            assert!(
                (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
                "{what}: row {} col {}: {g} vs {w}",
                e / n,
                e % n
            );
        }
        assert!(
            got[rows * n..].iter().all(|g| g == canary),
            "{what}: wrote past the output"
        );
    }
}

/// A job running the GEMM bench object `obj` (`bertc_bench_linear(a, c, rows, b)`, linked
/// into a shared object in `dir`, the `i`-th at its own address) on the input rows `a` and
/// the packed weights `b` (hex), with an output of `out` floats and 16 `canary` floats after
/// it; the job reads the output and the canaries back.
fn linear_job(
    dir: &Path,
    i: usize,
    obj: &[u8],
    [a, b]: [&str; 2],
    rows: usize,
    out: usize,
    canary: f32,
) -> String {
    let (o, so) = (dir.join(format!("g{i}.o")), dir.join(format!("g{i}.so")));
    std::fs::write(&o, obj).unwrap();
    let st = Command::new("cc")
        .args(["-shared", "-nostdlib", "-o"])
        .arg(&so)
        .arg(&o)
        .status()
        .expect("cc");
    assert!(st.success());
    let nm = Command::new("nm").arg("-D").arg(&so).output().expect("nm");
    let nm = String::from_utf8(nm.stdout).unwrap();
    let entry = nm
        .lines()
        .find(|l| l.ends_with(" bertc_bench_linear"))
        .and_then(|l| u64::from_str_radix(l.split(' ').next()?, 16).ok())
        .expect("bertc_bench_linear in nm -D");
    let relocs = Command::new("readelf").arg("-r").arg(&so).output();
    let relocs = String::from_utf8(relocs.expect("readelf").stdout).unwrap();
    assert!(relocs.contains("no relocations"), "{relocs}");
    let base = CODE + 0x100_0000 * i as u64;
    let mut regions: Vec<String> = elf_segments(&std::fs::read(&so).unwrap(), base)
        .into_iter()
        .map(|(addr, data)| region(addr, &hex(&data)))
        .collect();
    // the driver is a Cranelift function: a 64 KiB stack, rsp 8 below 16-byte alignment
    let rsp = STACK + 0xfff8;
    regions.extend([
        region(A, a),
        region(B, b),
        region(C, &floats_hex(&vec![canary; out + 16])),
        region(STACK, &hex(&vec![0u8; 0xfff8])),
        region(rsp, &hex(&HLT.to_le_bytes())),
        region(HLT, "f4"),
    ]);
    format!(
        r#"{{"code_addr":{},"code":"","regions":[{}],"regs":{{"rdi":{A},"rsi":{C},"rdx":{rows},"rcx":{B},"rsp":{rsp}}},"read":[{{"addr":{C},"len":{}}}]}}"#,
        base + entry,
        regions.join(","),
        (out + 16) * 4
    )
}

/// The int8 GEMM driver for AVX512-VNNI (`--cpu cascadelake`) on both formats: 8-bit
/// activations in fours with `vpdpbusd` on zmm, 16-bit ones in pairs with `vpdpwssd`; every
/// tile height, partial last panels, both task orders; activations and weights at their
/// extremes (±q, ±127); bit for bit against `fma(Σ x w, s_row · s_col, bias)` computed here.
/// (AVX-VNNI's VEX `vpdpbusd`, `--cpu alderlake`, is not here: BochsCPU raises #UD on it; it
/// is tested natively on machines that have it, `tests/int8.rs`.)
#[test]
fn avx512vnni_int8_driver_is_exact_under_emulation() {
    let cpu = "cascadelake";
    use crate::lower::{pack_qlinear, quantized_row, QFormat};
    let Some(python) = emulator_or_skip() else {
        return;
    };
    let target = bertc_targets::Target::with_cpu("x86_64-unknown-linux-gnu", Some(cpu)).unwrap();
    let tmp = tempdir(&format!("bertc-x86-emu-int8-{cpu}"));
    let dir = tmp.path();
    let mut seed = 5u64;
    let mut rnd = move |n: i64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((seed >> 33) as i64 % (2 * n + 1)) - n
    };
    let shapes = [
        (5, 37, 40),
        (12, 8, 16),
        (23, 6, 50),
        (70, 129, 35),
        (131, 4, 20),
        (80, 36, 96),
    ];
    let mut jobs = Vec::new();
    let mut wants = Vec::new();
    for (i, (&(rows, k, n), abits)) in shapes.iter().flat_map(|s| [(s, 8u8), (s, 16)]).enumerate() {
        let format = QFormat::for_bits(crate::Isa::for_target(&target).int8_format(), abits, k);
        assert_eq!(format == QFormat::Quads, abits == 8);
        let q = (1i64 << (abits - 1)) - 1;
        let x: Vec<i32> = (0..rows * k)
            .map(|e| match e / k {
                0 => q as i32,
                1 => [q, -q][e % 2] as i32,
                _ => rnd(q) as i32,
            })
            .collect();
        let w: Vec<i8> = (0..n * k)
            .map(|e| match e / k {
                0 => 127,
                1 => -127,
                _ => rnd(127) as i8,
            })
            .collect();
        let rs: Vec<f32> = (0..rows).map(|r| 1e-3 * (r + 1) as f32).collect();
        let cs: Vec<f32> = (0..n).map(|j| 0.5 / (j + 3) as f32).collect();
        let bias: Vec<f32> = (0..n).map(|j| j as f32 * 0.25 - 1.0).collect();
        let a: Vec<u8> = (0..rows)
            .flat_map(|r| quantized_row(&x[r * k..(r + 1) * k], rs[r], format))
            .collect();
        let b = pack_qlinear(&w, &cs, &bias, n, k, format);
        let (obj, _) = crate::compile_gemm_bench(&target, k, n, Some(abits)).unwrap();
        let canary = 777.0f32;
        jobs.push(linear_job(
            dir,
            i,
            &obj,
            [&hex(&a), &hex(&b)],
            rows,
            rows * n,
            canary,
        ));
        let want: Vec<f32> = (0..rows * n)
            .map(|e| {
                let (r, c) = (e / n, e % n);
                let acc: i64 = (0..k)
                    .map(|kk| x[r * k + kk] as i64 * w[c * k + kk] as i64)
                    .sum();
                (acc as f32).mul_add(rs[r] * cs[c], bias[c])
            })
            .collect();
        wants.push((rows, k, n, abits, want, canary));
    }
    let v = emulate(&python, &jobs, &format!("int8-driver-{cpu}"));
    let results = v["results"].as_array().expect("results");
    assert_eq!(results.len(), wants.len());
    for ((rows, k, n, abits, want, canary), r) in wants.iter().zip(results) {
        let what = format!("{cpu} {rows}x{k}x{n} at {abits} bits");
        assert!(r["ok"].as_bool().unwrap(), "{what}: {}", r["error"]);
        let got = unhex_floats(r["read"][0].as_str().unwrap());
        for (e, w) in want.iter().enumerate() {
            assert_eq!(
                got[e].to_bits(),
                w.to_bits(),
                "{what}: row {} col {}: {} vs {w}",
                e / n,
                e % n,
                got[e]
            );
        }
        assert!(
            got[rows * n..].iter().all(|g| g == canary),
            "{what}: wrote past the output"
        );
    }
}

/// The hand-written layer norms (AVX2 and AVX-512) under the emulator against
/// `bertc_numerics::layer_norm_row`, bit for bit: widths with every kind of tail (none, under
/// 8, 8 and more, for the AVX2 kernel's two halves of 16 lanes), rows far from a zero mean, in
/// place and not; nothing past the rows is written.
#[test]
fn layer_norm_kernels_equal_the_numerics_under_emulation() {
    use super::{avx2_layer_norm, avx512_layer_norm};
    let Some(python) = emulator_or_skip() else {
        return;
    };
    let widths = [
        1, 2, 7, 8, 9, 15, 16, 17, 23, 24, 25, 31, 32, 33, 40, 100, 384, 391,
    ];
    type Kernel = fn(f32) -> crate::isa::Code;
    let kernels: [(&str, Kernel); 2] = [("avx2", avx2_layer_norm), ("avx512", avx512_layer_norm)];
    let (rows, canary) = (3, 1234.5f32);
    let mut rng = Lcg(11);
    let (mut jobs, mut cases) = (Vec::new(), Vec::new());
    for (name, kernel) in kernels {
        for (i, &w) in widths.iter().enumerate() {
            let in_place = i % 2 == 1;
            let eps = [1e-12, 1e-5][i % 2];
            // rows around 0, 1000 and -3, at different scales
            let x: Vec<f32> = (0..rows * w)
                .map(|e| rng.next() * [1.0, 0.01, 30.0][e / w] + [0.0, 1000.0, -3.0][e / w])
                .collect();
            let gamma: Vec<f32> = (0..w).map(|_| rng.next()).collect();
            let beta: Vec<f32> = (0..w).map(|_| rng.next()).collect();
            let mut want = vec![0f32; rows * w];
            for (xr, o) in x.chunks(w).zip(want.chunks_mut(w)) {
                bertc_numerics::layer_norm_row(xr, &gamma, &beta, eps, o);
            }
            // the output rows, then 16 canaries; in place, the input rows there
            let mut out = if in_place {
                x.clone()
            } else {
                vec![canary; rows * w]
            };
            out.extend([canary; 16]);
            let xa = if in_place { C } else { A };
            let code = kernel(eps).unwrap();
            let code_addr = CODE + 0x1_0000 * jobs.len() as u64;
            jobs.push(format!(
                r#"{{"code_addr":{code_addr},"code":"{}","regions":[{},{},{},{},{},{}],"regs":{{"rdi":{xa},"rsi":{C},"rdx":{rows},"rcx":{B},"r8":{RES},"r9":{w},"rsp":{}}},"read":[{{"addr":{C},"len":{}}}]}}"#,
                hex(&code),
                region(A, &floats_hex(&x)),
                region(B, &floats_hex(&gamma)),
                region(C, &floats_hex(&out)),
                region(RES, &floats_hex(&beta)),
                region(STACK + 0x800, &hex(&HLT.to_le_bytes())),
                region(HLT, "f4"),
                STACK + 0x800,
                out.len() * 4,
            ));
            cases.push((format!("{name} width {w} in place {in_place}"), want));
        }
    }
    let v = emulate(&python, &jobs, "layer-norm");
    let results = v["results"].as_array().expect("results");
    assert_eq!(results.len(), cases.len());
    for ((what, want), r) in cases.iter().zip(results) {
        assert!(r["ok"].as_bool().unwrap(), "{what}: {}", r["error"]);
        let got = unhex_floats(r["read"][0].as_str().unwrap());
        for (j, g) in got.iter().enumerate() {
            match want.get(j) {
                Some(w) => assert_eq!(g.to_bits(), w.to_bits(), "{what}: element {j}: {g} vs {w}"),
                None => assert_eq!(*g, canary, "{what}: element {j} past the rows written"),
            }
        }
    }
}

/// The hand-written softmax blocks (AVX2 and AVX-512) under the emulator against
/// `bertc_numerics` (`p = exp(s x - m)` with `m` the maximum of the scaled scores and the
/// running one, their 16-lane sum, `alpha = exp(m_old - m)`, `l = fma(alpha, l_old, sum)`),
/// bit for bit: lengths with every kind of tail, a row's first block and a later one,
/// exponents down to the lower clamp.
#[test]
fn softmax_kernels_equal_the_numerics_under_emulation() {
    use super::{avx2_softmax, avx512_softmax};
    let Some(python) = emulator_or_skip() else {
        return;
    };
    type Kernel = fn(f32) -> crate::isa::Code;
    let kernels: [(&str, Kernel); 2] = [("avx2", avx2_softmax), ("avx512", avx512_softmax)];
    let rows = 3;
    let mut rng = Lcg(13);
    let (mut jobs, mut cases) = (Vec::new(), Vec::new());
    for (name, kernel) in kernels {
        for (i, len) in [1usize, 5, 8, 9, 16, 17, 31, 40, 64, 71, 128, 130]
            .into_iter()
            .enumerate()
        {
            let first = i % 2 == 0;
            // a head's scale on scores of a few units, and scale 1 on scores down to -100,
            // whose exponentials reach the clamp and 2^-126
            let (scale, spread, shift) = match i % 3 {
                2 => (1.0, 26.0, -48.0),
                _ => (0.176_776_7f32, 4.0, 0.0),
            };
            let ld = len.next_multiple_of(16) + 16;
            let s: Vec<f32> = (0..rows * ld)
                .map(|_| rng.next() * spread + shift)
                .collect();
            let state: Vec<f32> = (0..rows)
                .flat_map(|_| match first {
                    true => [f32::MIN, 0.0, 0.0, 0.0],
                    false => [rng.next() * 4.0, rng.next().abs() * 10.0, 0.0, 0.0],
                })
                .collect();
            let mut want = Vec::new();
            for r in 0..rows {
                let row: Vec<f32> = s[r * ld..r * ld + len].iter().map(|&x| x * scale).collect();
                let (m_old, l_old) = (state[4 * r], state[4 * r + 1]);
                let m = row.iter().fold(f32::MIN, |a, &b| a.max(b)).max(m_old);
                let p: Vec<f32> = row.iter().map(|&x| bertc_numerics::exp(x - m)).collect();
                let sum = bertc_numerics::sum(p.iter().copied());
                let alpha = bertc_numerics::exp(m_old - m);
                want.push((p, [m, alpha.mul_add(l_old, sum), alpha]));
            }
            let code = kernel(scale).unwrap();
            let code_addr = CODE + 0x1_0000 * jobs.len() as u64;
            jobs.push(format!(
                r#"{{"code_addr":{code_addr},"code":"{}","regions":[{},{},{},{}],"regs":{{"rdi":{A},"rsi":{},"rdx":{rows},"rcx":{len},"r8":{B},"rsp":{}}},"read":[{{"addr":{A},"len":{}}},{{"addr":{B},"len":{}}}]}}"#,
                hex(&code),
                region(A, &floats_hex(&s)),
                region(B, &floats_hex(&state)),
                region(STACK + 0x800, &hex(&HLT.to_le_bytes())),
                region(HLT, "f4"),
                ld * 4,
                STACK + 0x800,
                s.len() * 4,
                state.len() * 4,
            ));
            cases.push((format!("{name} len {len} first {first}"), ld, want));
        }
    }
    let v = emulate(&python, &jobs, "softmax");
    let results = v["results"].as_array().expect("results");
    assert_eq!(results.len(), cases.len());
    for ((what, ld, want), r) in cases.iter().zip(results) {
        assert!(r["ok"].as_bool().unwrap(), "{what}: {}", r["error"]);
        let got = unhex_floats(r["read"][0].as_str().unwrap());
        let st = unhex_floats(r["read"][1].as_str().unwrap());
        for (row, (p, s)) in want.iter().enumerate() {
            for (j, w) in p.iter().enumerate() {
                let g = got[row * ld + j];
                assert_eq!(
                    g.to_bits(),
                    w.to_bits(),
                    "{what}: row {row} p[{j}]: {g} vs {w}"
                );
            }
            for (j, w) in s.iter().enumerate() {
                let g = st[4 * row + j];
                assert_eq!(
                    g.to_bits(),
                    w.to_bits(),
                    "{what}: row {row} state[{j}]: {g} vs {w}"
                );
            }
        }
    }
}
