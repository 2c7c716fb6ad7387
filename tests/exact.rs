//! Compiled fp32 artifacts against the interpreter on the same IR, bit for bit: every shared
//! model and output kind on the references' batches (padded, sequences of different
//! lengths), natively (this machine's kernels, and the AVX2 level's), and for aarch64 and
//! riscv64 (scalar and V) under qemu. Both follow `bertc_numerics`: each GEMM output one
//! fused multiply-add chain from its bias, sums in 16 lanes folded in halves, the same
//! polynomials for exp, erf and tanh. (The int8 artifacts' counterpart is in `int8.rs`.)

mod common;

use common::*;

/// `models` with `kinds` (all of a model's when `None`) compiled with `extra` and run as
/// `runner` + the executable, against the interpreter, bit for bit.
fn exact(tag: &str, models: &[&str], kinds_of: Option<&[&str]>, extra: &[&str], runner: &[String]) {
    let dir = scratch(tag);
    for &name in models {
        let path = model_dir(name).join("model.onnx");
        let cases = reference(name)["cases"].as_array().unwrap().clone();
        let kinds = kinds_of.map_or_else(|| kinds(name), |k| k.to_vec());
        for kind in kinds {
            let exe = dir.join(format!("{name}-{kind}"));
            let mut args = vec!["--output", kind];
            args.extend_from_slice(extra);
            compile(&path, &exe, &args);
            let mut cmd = runner.to_vec();
            cmd.push(exe.to_str().unwrap().into());
            let g = compiled_graph(&path, kind);
            against_interpreter(&cmd, &g, &cases, (name, kind, 0.0), &dir);
            eprintln!("{tag}: {name} {kind} equals the interpreter");
        }
    }
}

#[test]
fn fp32_executables_equal_the_interpreter() {
    exact("exact-native", &RANDOM_MODELS, None, &[], &[]);
    // the real MiniLM on its padded batch of three sentences
    let dir = scratch("exact-minilm");
    let path = model_dir("all-MiniLM-L6-v2").join("model.onnx");
    let cases = [reference("all-MiniLM-L6-v2")["batched"].clone()];
    for kind in ["last_hidden_state", "mean"] {
        let exe = dir.join(kind);
        compile(&path, &exe, &["--output", kind]);
        let g = compiled_graph(&path, kind);
        let cmd = [exe.to_str().unwrap().to_string()];
        against_interpreter(&cmd, &g, &cases, ("all-MiniLM-L6-v2", kind, 0.0), &dir);
    }
}

/// The AVX2 level's kernels (8-lane softmax, 6-row tiles) on a machine that may have AVX-512.
#[test]
fn fp32_avx2_level_equals_the_interpreter() {
    let host = bertc_targets::Target::host();
    if host.arch != bertc_targets::Arch::X86_64 || !host.has("avx2") || !host.has("fma") {
        eprintln!("skipped: this machine cannot run --cpu x86-64-v3");
        return;
    }
    let models = ["bert-small-random", "roberta-micro-random"];
    let extra = ["--cpu", "x86-64-v3"];
    exact(
        "exact-avx2",
        &models,
        Some(&["last_hidden_state", "mean"]),
        &extra,
        &[],
    );
}

/// The portable kernels for `triple` (and `cpu`) under its qemu, when the cross tools are
/// installed.
fn cross(triple: &str, cpu: Option<&str>) {
    let Some(runner) = cross_runner(triple, cpu) else {
        return;
    };
    let mut extra = vec!["--target", triple];
    if let Some(c) = cpu {
        extra.extend(["--cpu", c]);
    }
    let models = ["bert-micro-random", "roberta-micro-random"];
    let kinds = ["last_hidden_state", "mean", "pooler"];
    let tag = format!("exact-{triple}{}", cpu.unwrap_or(""));
    exact(&tag, &models, Some(&kinds), &extra, &runner);
}

#[test]
fn fp32_aarch64_under_qemu() {
    cross("aarch64-unknown-linux-gnu", None);
}

#[test]
fn fp32_riscv64_scalar_under_qemu() {
    cross("riscv64gc-unknown-linux-gnu", None);
}

#[test]
fn fp32_riscv64_vector_under_qemu() {
    cross("riscv64gc-unknown-linux-gnu", Some("rv64gcv"));
}

/// Heads narrower than 4 or not a multiple of 4 wide: the GEMM attention packs K four keys
/// and four dimensions at a time and the rest one float at a time. The micro models' folders
/// with more heads of the same hidden size (bert-micro: 16 heads of 2, distilbert-micro: 8 of
/// 6), natively, bit for bit, on their references' batches (sequences of several lengths).
#[test]
fn narrow_and_odd_heads_equal_the_interpreter() {
    let cases = [
        (
            "bert-micro-random",
            "\"num_attention_heads\": 2",
            "\"num_attention_heads\": 16",
        ),
        (
            "distilbert-micro-random",
            "\"n_heads\": 3",
            "\"n_heads\": 8",
        ),
    ];
    for (name, from, to) in cases {
        let src = model_dir(name);
        let dir = scratch(&format!("heads-{name}"));
        for f in ["model.safetensors", "tokenizer.json"] {
            std::fs::copy(src.join(f), dir.join(f)).unwrap();
        }
        let cfg = std::fs::read_to_string(src.join("config.json")).unwrap();
        assert!(cfg.contains(from), "{name}: {from}");
        std::fs::write(dir.join("config.json"), cfg.replace(from, to)).unwrap();
        let kind = "last_hidden_state";
        let exe = dir.join(kind);
        compile(&dir, &exe, &["--output", kind]);
        let g = compiled_graph(&dir, kind);
        let cases = reference(name)["cases"].as_array().unwrap().clone();
        let cmd = [exe.to_str().unwrap().to_string()];
        against_interpreter(&cmd, &g, &cases, (name, kind, 0.0), &dir);
        eprintln!("{name} with {to}: equals the interpreter");
    }
}
