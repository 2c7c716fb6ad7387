//! Compiled int8 artifacts (`bertc compile --quantize int8`) against the interpreter running
//! the same quantized IR, the oracle whose integer arithmetic the kernels implement, bit for
//! bit: every shared model and output kind on the references' batches (padded, with sequences
//! of different lengths), natively, for aarch64 and riscv64 under qemu and for AVX-512 under
//! the x86 emulator; identical outputs for
//! every thread count; the quantizer and the int8 GEMM bit-exact at the extremes; and the
//! artifact's weights in int8.

mod common;

use common::*;
use std::path::Path;

use bertc_ir::Graph;
use bertc_passes::{run_pass, ActBits, QuantizeInt8};
use serde_json::Value as Json;

/// How far a compiled int8 output may be from the interpreter's: not at all. The quantizer
/// and the int8 GEMM compute the definition's integers, and every fp32 part between them
/// (LayerNorm, attention's scores, softmax and `P V`, GELU, pooling) follows
/// `bertc_numerics`' operations in their order on every target with fused multiply-add, so a
/// value near a rounding boundary of the next quantization lands on the same side. (Before
/// they did, MiniLM's 8-bit activations moved whole integer steps: 4.8e-2 of the output.)
const EXACT: f32 = 0.0;

/// On an x86-64 level without FMA (`--cpu x86-64`, `x86-64-v2`) the portable kernels round
/// each product before adding it, the interpreter does not: the same values to about 1e-7,
/// and a value that lands on the other side of a rounding boundary of an 8-bit quantization
/// moves one integer step, which the layers after it carry on.
const TOL_NO_FMA_A8: f32 = 0.1;

/// The activation choices tested: `--quantize-activations` and the pass setting it means.
const ACTIVATIONS: [(&str, ActBits); 2] = [("wide", ActBits::Widest), ("8", ActBits::Fixed(8))];

/// `bertc compile MODEL -o OUT --quantize int8 --quantize-activations ACTS EXTRA`, which must
/// succeed.
fn compile_int8(model: &Path, out: &Path, acts: &str, extra: &[&str]) {
    let mut args = vec!["--quantize", "int8", "--quantize-activations", acts];
    args.extend_from_slice(extra);
    compile(model, out, &args)
}

/// The graph `bertc compile --quantize int8 --output kind` generates code for, with
/// activations of `abits`.
fn quantized(path: &Path, kind: &str, abits: ActBits) -> Graph {
    let mut g = compiled_graph(path, kind);
    let pass = QuantizeInt8 {
        abits,
        ..QuantizeInt8::default()
    };
    run_pass(&pass, &mut g).unwrap_or_else(|e| panic!("{e}"));
    g
}

/// The largest difference between the executable and the interpreter over `cases`, relative
/// to the output's scale (`against_interpreter`).
fn check(exe: &Path, g: &Graph, cases: &[Json], what: (&str, &str, f32), dir: &Path) -> f32 {
    against_interpreter(&[exe.to_str().unwrap().to_string()], g, cases, what, dir)
}

#[test]
fn int8_executables_match_the_interpreter() {
    let dir = scratch("int8-exe");
    for name in RANDOM_MODELS {
        let path = model_dir(name).join("model.onnx");
        for kind in kinds(name) {
            for (acts, abits) in ACTIVATIONS {
                let exe = dir.join(format!("{name}-{kind}-{acts}"));
                compile_int8(&path, &exe, acts, &["--output", kind]);
                let cases = reference(name)["cases"].as_array().unwrap().clone();
                let g = quantized(&path, kind, abits);
                let err = check(&exe, &g, &cases, (name, kind, EXACT), &dir);
                eprintln!(
                    "{name} {kind} activations {acts}: int8 against the interpreter, relative error {err:.2e}"
                );
            }
        }
    }
}

/// Every random model and output kind compiled with int8 for `triple` (and `cpu`), with each
/// of `activations`, against the interpreter, run under the target's qemu when the cross tools
/// are installed.
fn int8_cross(triple: &str, cpu: Option<&str>, activations: &[(&str, ActBits)]) {
    let Some(runner) = cross_runner(triple, cpu) else {
        return;
    };
    let dir = scratch(&format!("int8-{triple}{}", cpu.unwrap_or("")));
    for name in RANDOM_MODELS {
        let path = model_dir(name).join("model.onnx");
        for (kind, &(acts, abits)) in kinds(name)
            .into_iter()
            .flat_map(|k| activations.iter().map(move |a| (k, a)))
        {
            let exe = dir.join(format!("{name}-{kind}-{acts}"));
            let mut extra = vec!["--target", triple, "--output", kind];
            if let Some(c) = cpu {
                extra.extend(["--cpu", c]);
            }
            compile_int8(&path, &exe, acts, &extra);
            let mut cmd = runner.clone();
            cmd.push(exe.to_str().unwrap().into());
            let cases = reference(name)["cases"].as_array().unwrap().clone();
            let g = quantized(&path, kind, abits);
            let err = against_interpreter(&cmd, &g, &cases, (name, kind, EXACT), &dir);
            eprintln!(
                "{triple} {cpu:?} {name} {kind} activations {acts}: int8 against the interpreter {err:.2e}"
            );
        }
    }
}

/// The int8 code for AVX-512 targets, with AVX512-VNNI (`--cpu cascadelake`: `vpdpbusd` on
/// 8-bit activations, `vpdpwssd` on wide ones) and without (`x86-64-v4`: the AVX2 int8 tiles
/// beside the AVX-512 f32 ones), as static executables run on one thread under BochsCPU
/// (`scripts/x86-emulate`), which this machine may lack the instructions for; against the
/// interpreter.
#[test]
fn int8_avx512_under_emulation() {
    let repo = emulator::repo_root(env!("CARGO_MANIFEST_DIR"));
    let Some(python) = emulator::x86_emulator(&repo) else {
        return;
    };
    let script = repo.join("scripts/x86-emulate");
    let dir = scratch("int8-emulated");
    let runs = [
        ("cascadelake", ACTIVATIONS[0]),
        ("cascadelake", ACTIVATIONS[1]),
        ("x86-64-v4", ACTIVATIONS[0]),
    ];
    for (cpu, (acts, abits)) in runs {
        for name in ["bert-micro-random", "roberta-micro-random"] {
            let path = model_dir(name).join("model.onnx");
            for kind in ["last_hidden_state", "mean"] {
                let exe = dir.join(format!("{cpu}-{name}-{kind}-{acts}"));
                let extra = ["--cpu", cpu, "--static", "--output", kind];
                compile_int8(&path, &exe, acts, &extra);
                let cmd: Vec<String> = vec![
                    python.to_str().unwrap().into(),
                    script.to_str().unwrap().into(),
                    "--run".into(),
                    exe.to_str().unwrap().into(),
                    "--threads".into(),
                    "1".into(),
                ];
                let cases = reference(name)["cases"].as_array().unwrap().clone();
                let g = quantized(&path, kind, abits);
                let err = against_interpreter(&cmd, &g, &cases, (name, kind, EXACT), &dir);
                eprintln!(
                    "{cpu} {name} {kind} activations {acts} (emulated): int8 against the interpreter {err:.2e}"
                );
            }
        }
    }
}

#[test]
fn int8_aarch64_under_qemu() {
    int8_cross("aarch64-unknown-linux-gnu", None, &ACTIVATIONS[..1]);
}

/// The `sdot` tile (`--cpu neoverse-n1`) on 8-bit activations in fours, and wide ones in pairs
/// on the portable tile.
#[test]
fn int8_aarch64_dotprod_under_qemu() {
    int8_cross(
        "aarch64-unknown-linux-gnu",
        Some("neoverse-n1"),
        &ACTIVATIONS,
    );
}

/// The `smmla` tile (`--cpu neoverse-v1`) on 8-bit activations in eights, and wide ones in
/// pairs on the portable tile.
#[test]
fn int8_aarch64_i8mm_under_qemu() {
    int8_cross(
        "aarch64-unknown-linux-gnu",
        Some("neoverse-v1"),
        &ACTIVATIONS,
    );
}

#[test]
fn int8_riscv64_scalar_under_qemu() {
    int8_cross("riscv64gc-unknown-linux-gnu", None, &ACTIVATIONS[..1]);
}

#[test]
fn int8_riscv64_vector_under_qemu() {
    int8_cross(
        "riscv64gc-unknown-linux-gnu",
        Some("rv64gcv"),
        &ACTIVATIONS[..1],
    );
}

#[test]
fn minilm_int8_executable_matches_the_interpreter() {
    let dir = scratch("int8-minilm");
    let path = model_dir("all-MiniLM-L6-v2").join("model.onnx");
    for kind in ["last_hidden_state", "mean"] {
        for (acts, abits) in ACTIVATIONS {
            let exe = dir.join(format!("minilm-{kind}-{acts}"));
            compile_int8(&path, &exe, acts, &["--output", kind]);
            // the padded batch of three sentences (5, 12 and 24 tokens)
            let cases = [reference("all-MiniLM-L6-v2")["batched"].clone()];
            let g = quantized(&path, kind, abits);
            let what = ("all-MiniLM-L6-v2", kind, EXACT);
            let err = check(&exe, &g, &cases, what, &dir);
            eprintln!(
                "all-MiniLM-L6-v2 {kind} activations {acts}: int8 against the interpreter, relative error {err:.2e}"
            );
        }
    }
    // the weights (linears and the word embeddings) in int8: about a quarter of fp32
    let fp32 = dir.join("minilm-fp32");
    let o = bertc(&[
        "compile",
        path.to_str().unwrap(),
        "-o",
        fp32.to_str().unwrap(),
        "-q",
        "--output",
        "mean",
    ]);
    assert!(o.status.success());
    let size = |p: &Path| std::fs::metadata(p).unwrap().len() as f64;
    let ratio = size(&dir.join("minilm-mean-8")) / size(&fp32);
    eprintln!("all-MiniLM-L6-v2: the int8 executable is {ratio:.3} of the fp32 one");
    assert!(ratio < 0.3, "int8 executable {ratio} of fp32");
}

/// Every x86-64 level this machine can run (AVX2's int8 pairs, AVX-VNNI's and AVX512-VNNI's
/// fours), whole models at 8-bit and wide activations against the interpreter.
#[test]
fn int8_levels_this_machine_runs_match_the_interpreter() {
    let dir = scratch("int8-levels");
    let name = "bert-small-random";
    let path = model_dir(name).join("model.onnx");
    let cases = reference(name)["cases"].as_array().unwrap().clone();
    for target in &runnable_targets()[1..] {
        let cpu = bertc_targets::CPUS
            .iter()
            .map(|c| c.1)
            .find(|c| {
                bertc_targets::Target::with_cpu(&target.triple, Some(c))
                    .unwrap()
                    .features
                    == target.features
            })
            .expect("a level");
        for (acts, abits) in ACTIVATIONS {
            let exe = dir.join(format!("{cpu}-{acts}"));
            compile_int8(&path, &exe, acts, &["--cpu", cpu, "--output", "mean"]);
            let g = quantized(&path, "mean", abits);
            let err = check(&exe, &g, &cases, (name, "mean", EXACT), &dir);
            eprintln!(
                "--cpu {cpu} activations {acts}: {name} mean against the interpreter {err:.2e}"
            );
        }
    }
}

#[test]
fn int8_thread_counts_give_identical_outputs() {
    let dir = scratch("int8-threads");
    let exe = dir.join("small");
    compile_int8(
        &model_dir("bert-small-random").join("model.onnx"),
        &exe,
        "auto",
        &[],
    );
    let outputs = outputs_by_thread_count(&exe, &dir);
    for o in &outputs[1..] {
        assert!(
            o == &outputs[0],
            "int8 outputs differ between thread counts"
        );
    }
}

/// Compiles the int8 bench object for `k -> n` on this machine into a shared library.
fn bench_library(
    dir: &Path,
    target: &bertc_targets::Target,
    k: usize,
    n: usize,
    abits: u8,
) -> bertc_runtime::Library {
    let level = target.features.len();
    let tag = format!("g{k}x{n}a{abits}-{level}-{}", target.has("avxvnni"));
    gemm_library(dir, target, (k, n, Some(abits)), &tag)
}

/// How `target`'s int8 kernels read rows of `abits`-bit activations at depth `k`.
fn format_for(target: &bertc_targets::Target, abits: u8, k: usize) -> bertc_codegen::QFormat {
    let isa = bertc_codegen::Isa::for_target(target);
    bertc_codegen::QFormat::for_bits(isa.int8_format(), abits, k)
}

/// This machine, and every x86-64 `--cpu` level with AVX2 that it can run (each level's int8
/// kernels: AVX2's pairs, AVX-VNNI's fours, AVX512-VNNI's fours and pairs).
fn runnable_targets() -> Vec<bertc_targets::Target> {
    let host = bertc_targets::Target::host();
    let mut v = vec![host.clone()];
    if host.arch == bertc_targets::Arch::X86_64 {
        for cpu in ["x86-64-v3", "alderlake", "x86-64-v4", "cascadelake"] {
            let t = bertc_targets::Target::with_cpu(&host.triple, Some(cpu)).unwrap();
            match t.features.iter().find(|f| !host.has(f)) {
                None => v.push(t),
                // AVX-VNNI has no emulator here (BochsCPU lacks it): say what is not run
                Some(f) => {
                    eprintln!("skipped: --cpu {cpu}'s int8 kernels (this machine lacks {f})")
                }
            }
        }
    }
    v
}

/// The row quantizers this machine can run (its own and every x86-64 level it has) against the interpreter's definition
/// (`bertc_interp::quantize_row`), bit for bit: ordinary rows, a row of zeros, rows with an
/// infinity or a NaN (all zeros, scale 0), ties (halves), odd and short widths.
#[test]
fn int8_quantizer_matches_the_definition() {
    let dir = scratch("int8-quantize");
    let cases = [384usize, 1536, 37, 1, 15, 17]
        .into_iter()
        .flat_map(|k| [(k, bertc_ir::qlinear_max_abits(k)), (k, 8)]);
    let targets = runnable_targets();
    for (target, (k, abits)) in targets
        .iter()
        .flat_map(|t| cases.clone().map(move |c| (t, c)))
    {
        let lib = bench_library(&dir, target, k, 16, abits);
        type Quantize = unsafe extern "C" fn(*const f32, *mut f32, i64);
        // SAFETY: the symbol is the generated quantizer with this signature.
        let quantize: Quantize =
            unsafe { std::mem::transmute(lib.symbol("bertc_bench_quantize").unwrap()) };
        let format = format_for(target, abits, k);
        let rows = 12;
        let mut x: Vec<f32> = (0..rows * k)
            .map(|i| ((i * 7919 % 2003) as f32 - 1001.0) / 97.0)
            .collect();
        x[k..2 * k].iter_mut().for_each(|v| *v = 0.0);
        x[2 * k + k / 2] = f32::INFINITY;
        x[3 * k] = f32::NAN;
        // a row whose maximum is a power of two times q: x · inv lands on halves
        let q = ((1i32 << (abits - 1)) - 1) as f32;
        for (i, v) in x[4 * k..5 * k].iter_mut().enumerate() {
            *v = (i as f32 + 0.5) * 2.0 / q;
        }
        x[5 * k] = -1e30;
        let lda = bertc_codegen::quant_row_floats(k, format);
        let mut out = vec![f32::NAN; rows * lda];
        // SAFETY: x holds rows x k floats, out rows x lda.
        unsafe { quantize(x.as_ptr(), out.as_mut_ptr(), rows as i64) };
        for r in 0..rows {
            let mut want = vec![0i32; k];
            let s = bertc_interp::quantize_row(&x[r * k..(r + 1) * k], abits, &mut want);
            let row: Vec<u8> = out[r * lda..(r + 1) * lda]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            // the whole row as the definition's integers and scale give it (values, pad,
            // the fours' sum term, scale), up to the alignment floats after it
            let expected = bertc_codegen::quantized_row(&want, s, format);
            let used = format.scale_offset(k) + 4;
            assert_eq!(
                &row[..used],
                &expected[..used],
                "k {k} row {r} at {abits} bits ({format:?})"
            );
        }
    }
}

/// The int8 GEMM kernels this machine can run (its own and every x86-64 level it has: the
/// ISA's microkernels, or the portable
/// tiles) against the definition computed here in i64 with the f32 fused multiply-add, bit
/// for bit: activations and weights at their extremes (±q, ±127), depths with and without an
/// odd tail, row counts on both task orders, partial last panels.
#[test]
fn int8_gemm_is_exact_at_the_extremes() {
    use bertc_codegen::{pack_qlinear, quantized_row};
    let dir = scratch("int8-gemm");
    let mut seed = 7u64;
    let mut rnd = move |n: i64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((seed >> 33) as i64 % (2 * n + 1)) - n
    };
    let shapes = [
        (7, 384, 40, 16),
        (70, 1536, 16, 14),
        (13, 37, 33, 16),
        (1, 1, 1, 8),
        (66, 129, 20, 8),
        (80, 260, 96, 8),
        (80, 260, 96, 16),
        (7, 384, 40, 8),
        (70, 1536, 16, 8),
        (13, 37, 33, 8),
        (25, 6, 17, 8),
    ];
    let targets = runnable_targets();
    for (target, &(m, k, n, abits)) in targets
        .iter()
        .flat_map(|t| shapes.iter().map(move |s| (t, s)))
    {
        let lib = bench_library(&dir, target, k, n, abits);
        let format = format_for(target, abits, k);
        type Linear = unsafe extern "C" fn(*const f32, *mut f32, i64, *const f32);
        // SAFETY: the symbol is the generated linear with this signature.
        let linear: Linear =
            unsafe { std::mem::transmute(lib.symbol("bertc_bench_linear").unwrap()) };
        let q = (1i64 << (abits - 1)) - 1;
        // rows: the first all +q, the second alternating ±q, the rest random in [-q, q]
        let x: Vec<i64> = (0..m * k)
            .map(|i| match i / k {
                0 => q,
                1 => {
                    if i % 2 == 0 {
                        q
                    } else {
                        -q
                    }
                }
                _ => rnd(q),
            })
            .collect();
        // weights: the first column all 127, the second all -127, the rest random
        let w: Vec<i8> = (0..n * k)
            .map(|i| match i / k {
                0 => 127,
                1 => -127,
                _ => rnd(127) as i8,
            })
            .collect();
        let rs: Vec<f32> = (0..m).map(|r| 1e-3 * (r + 1) as f32).collect();
        let cs: Vec<f32> = (0..n).map(|j| 0.5 / (j + 3) as f32).collect();
        let bias: Vec<f32> = (0..n).map(|j| j as f32 * 0.25 - 1.0).collect();
        let rows: Vec<u8> = (0..m)
            .flat_map(|r| {
                let xr: Vec<i32> = x[r * k..(r + 1) * k].iter().map(|&v| v as i32).collect();
                quantized_row(&xr, rs[r], format)
            })
            .collect();
        let words = |b: &[u8]| -> Vec<f32> {
            b.chunks(4)
                .map(|c| {
                    let mut v = [0u8; 4];
                    v[..c.len()].copy_from_slice(c);
                    f32::from_le_bytes(v)
                })
                .collect()
        };
        let (xa, pa) = (
            words(&rows),
            words(&pack_qlinear(&w, &cs, &bias, n, k, format)),
        );
        let mut out = vec![0f32; m * n];
        // SAFETY: the buffers have the sizes and layouts the kernel reads and writes.
        unsafe { linear(xa.as_ptr(), out.as_mut_ptr(), m as i64, pa.as_ptr()) };
        for r in 0..m {
            for j in 0..n {
                let acc: i64 = (0..k).map(|kk| x[r * k + kk] * w[j * k + kk] as i64).sum();
                assert!(acc.abs() < i32::MAX as i64);
                let want = (acc as f32).mul_add(rs[r] * cs[j], bias[j]);
                assert_eq!(
                    out[r * n + j].to_bits(),
                    want.to_bits(),
                    "{m}x{k}x{n} at {abits} bits, row {r} col {j}: {} vs {want}",
                    out[r * n + j]
                );
            }
        }
    }
}

/// SmoothQuant (`Rounding` with `smooth` in the driver: each linear's input channels
/// multiplied at run time, its weight columns divided, chosen on calibration text where it
/// measures better) compiled against the interpreter running the same quantized graph
/// (`bertc run` with the same flags), 8-bit activations, on texts through the model's
/// tokenizer; the compile output must say that some linears were smoothed, so that the path
/// is exercised.
#[test]
fn smoothed_int8_executable_matches_the_interpreter() {
    let dir = scratch("int8-smooth");
    let model = model_dir("bert-small-random").join("model.onnx");
    let cal = shared().join("data/sts-b/sts-train.csv");
    let flags = [
        "--quantize",
        "int8",
        "--quantize-activations",
        "8",
        "--calibration",
        cal.to_str().unwrap(),
        "--calibration-samples",
        "64",
        "--output",
        "mean",
    ];
    let texts = [
        "A man is playing a guitar.",
        "Three dogs run across a snowy field while children watch from the fence.",
        "short",
    ];
    let text_file = dir.join("texts.txt");
    std::fs::write(&text_file, texts.join("\n") + "\n").unwrap();
    let parse = |b: &[u8]| -> Vec<Vec<f32>> {
        String::from_utf8_lossy(b)
            .lines()
            .map(|l| l.split_whitespace().map(|v| v.parse().unwrap()).collect())
            .collect()
    };
    let mut args = vec!["run", model.to_str().unwrap()];
    args.extend(flags);
    for t in texts {
        args.extend(["--text", t]);
    }
    let r = bertc(&args);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let want = parse(&r.stdout);
    assert_eq!(want.len(), texts.len());
    // this machine's kernels, and the portable quantizer and tile (`--cpu x86-64`: SSE only)
    for cpu in ["native", "x86-64"] {
        let exe = dir.join(format!("smooth-{cpu}"));
        let mut args = vec![
            "compile",
            model.to_str().unwrap(),
            "-o",
            exe.to_str().unwrap(),
        ];
        args.extend(flags);
        args.extend(["--cpu", cpu]);
        let o = bertc(&args);
        let log = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{log}");
        assert!(log.contains("smoothed"), "no linear was smoothed:\n{log}");
        let out = std::process::Command::new(&exe)
            .stdin(std::fs::File::open(&text_file).unwrap())
            .output()
            .unwrap();
        assert!(out.status.success());
        let got = parse(&out.stdout);
        assert_eq!(got.len(), texts.len());
        for (g, w) in got.iter().zip(&want) {
            let scale = w.iter().fold(1f32, |m, v| m.max(v.abs()));
            let err = g.iter().zip(w).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
            eprintln!("{cpu}: smoothed int8 against the interpreter: relative error {err:.2e}");
            let tol = if cpu == "native" {
                EXACT
            } else {
                TOL_NO_FMA_A8
            };
            assert!(err <= tol, "{cpu}: relative error {err:e}");
        }
    }
}
