//! Cross compilation: the same models compiled for aarch64 and riscv64 (scalar and with the
//! vector extension), linked with Debian's cross compilers and run under qemu, and for x86-64
//! with AVX-512, linked statically and run under BochsCPU (`scripts/x86-emulate`), match the
//! PyTorch references like the native build.

mod common;

use common::*;
use std::process::Command;

/// Compiles every random model for `triple` and `cpu` (with `extra` arguments) and checks each
/// output kind against the references, running the executable as `runner exe exe_args`.
fn cross_with(triple: &str, cpu: Option<&str>, runner: &[&str], extra: &[&str], exe_args: &[&str]) {
    let dir = scratch(&format!("{triple}{}", cpu.unwrap_or("")));
    let cases: Vec<(&str, &str)> = RANDOM_MODELS
        .iter()
        .flat_map(|&m| kinds(m).into_iter().map(move |k| (m, k)))
        .collect();
    for (name, kind) in cases {
        let exe = dir.join(format!("{name}-{kind}"));
        let mut args: Vec<String> = vec![
            "compile".into(),
            model_dir(name).to_str().unwrap().into(),
            "-o".into(),
            exe.to_str().unwrap().into(),
        ];
        args.extend([
            "--target".into(),
            triple.into(),
            "--output".into(),
            kind.into(),
            "-q".into(),
        ]);
        if let Some(c) = cpu {
            args.extend(["--cpu".into(), c.into()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let o = Command::new(env!("CARGO_BIN_EXE_bertc"))
            .args(&args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let mut runner: Vec<String> = runner.iter().map(|s| s.to_string()).collect();
        runner.push(exe.to_str().unwrap().into());
        runner.extend(exe_args.iter().map(|s| s.to_string()));
        let err = check_exe(&runner, name, kind, &dir);
        eprintln!("{triple} {cpu:?} {name} {kind}: max abs error {err:.2e}");
    }
}

/// `cross_with` under the target's qemu runner, when the cross tools are installed.
fn cross(triple: &str, cpu: Option<&str>) {
    let Some(runner) = cross_runner(triple, cpu) else {
        return;
    };
    let runner: Vec<&str> = runner.iter().map(String::as_str).collect();
    cross_with(triple, cpu, &runner, &[], &[]);
}

/// The AVX-512 code end to end (GEMMs on the 12-row AVX-512 microkernels and their two-panel
/// tiles, attention calling them, the zmm softmax, the glue's CPU check passing): static executables run on one
/// thread (the emulator has no threads) under BochsCPU.
#[test]
fn x86_64_avx512_under_emulation() {
    let repo = emulator::repo_root(env!("CARGO_MANIFEST_DIR"));
    let Some(python) = emulator::x86_emulator(&repo) else {
        return;
    };
    let script = repo.join("scripts/x86-emulate");
    cross_with(
        "x86_64-unknown-linux-gnu",
        Some("x86-64-v4"),
        &[python.to_str().unwrap(), script.to_str().unwrap(), "--run"],
        &["--static"],
        &["--threads", "1"],
    );
}

/// An artifact for a level with the dot product (`--cpu neoverse-n1`) checks the machine's
/// HWCAP at start-up, one with the int8 matrix multiply (`--cpu neoverse-v1`) its HWCAP2: each
/// runs on a core of its level and refuses, with a one-line error naming the feature, on the
/// level below (Cortex-A53, Armv8.0; Neoverse N1, Armv8.2), all under qemu.
#[test]
fn aarch64_artifacts_check_the_cpu_at_start_up() {
    let triple = "aarch64-unknown-linux-gnu";
    let Some(runner) = cross_runner(triple, Some("neoverse-n1")) else {
        return;
    };
    let dir = scratch("aarch64-cpu-check");
    let levels = [
        ("neoverse-n1", "cortex-a53", "dotprod"),
        ("neoverse-v1", "neoverse-n1", "i8mm"),
    ];
    for (level, below, feature) in levels {
        let exe = dir.join(level);
        let o = Command::new(env!("CARGO_BIN_EXE_bertc"))
            .args(["compile", "-q", "--target", triple, "--cpu", level])
            .args(["--quantize", "int8", "--output", "mean", "-o"])
            .arg(&exe)
            .arg(model_dir("bert-micro-random").join("model.onnx"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        for (core, ok) in [(level, true), (below, false)] {
            let o = run_with(
                Command::new(&runner[0])
                    .args(["-cpu", core])
                    .arg(&exe)
                    .args(["--input", "ids"]),
                "2 4 3\n",
            );
            let err = String::from_utf8_lossy(&o.stderr);
            if ok {
                assert!(o.status.success(), "{level} on {core}: {err}");
            } else {
                assert_eq!(o.status.code(), Some(1), "{level} on {core}: {err}");
                assert!(
                    err.contains(feature) && err.contains("lacks") && err.lines().count() == 1,
                    "{level} on {core}: {err}"
                );
            }
        }
    }
}

#[test]
fn aarch64_under_qemu() {
    cross("aarch64-unknown-linux-gnu", None);
}

#[test]
fn riscv64_scalar_under_qemu() {
    cross("riscv64gc-unknown-linux-gnu", None);
}

#[test]
fn riscv64_vector_under_qemu() {
    cross("riscv64gc-unknown-linux-gnu", Some("rv64gcv"));
}

/// The real MiniLM (384 wide, 12 heads of 32) compiled for AVX-512 and run under BochsCPU on
/// the reference's padded batch (lengths 5, 12 and 24): last_hidden_state on the real tokens.
/// Its declared L2 is small enough that attention runs in blocks of 16 keys (the 24-token
/// sequence in two, through the AVX-512 tiles that start from the output); the random models'
/// test above covers attention in one block.
#[test]
fn minilm_avx512_under_emulation() {
    let repo = emulator::repo_root(env!("CARGO_MANIFEST_DIR"));
    let Some(python) = emulator::x86_emulator(&repo) else {
        return;
    };
    let dir = scratch("minilm-avx512");
    let exe = dir.join("minilm");
    let o = Command::new(env!("CARGO_BIN_EXE_bertc"))
        .arg("compile")
        .arg(model_dir("all-MiniLM-L6-v2").join("model.onnx"))
        .arg("-o")
        .arg(&exe)
        .args([
            "--output",
            "last_hidden_state",
            "--cpu",
            "x86-64-v4",
            "--caches",
            "32K,16K,16M",
            "--static",
            "-q",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let b = &reference("all-MiniLM-L6-v2")["batched"];
    std::fs::write(dir.join("mask.txt"), lines(&b["attention_mask"])).unwrap();
    let o = run_with(
        Command::new(python)
            .arg(repo.join("scripts/x86-emulate"))
            .arg("--run")
            .arg(&exe)
            .args(["--input", "ids", "--threads", "1", "--batch", "3", "--mask"])
            .arg(dir.join("mask.txt")),
        &lines(&b["input_ids"]),
    );
    let got = output_floats(&o);
    let (_, mask) = ints2(&b["attention_mask"]);
    let err = max_err(&got, &floats(&b["last_hidden_state"]), Some(&mask), 384);
    eprintln!("minilm x86-64-v4 under emulation: max abs error {err:.2e}");
    assert!(err <= TOL, "{err}");
}
