//! Cross compilation: the same models compiled for aarch64 and riscv64 (scalar and with the
//! vector extension), linked with Debian's cross compilers and run under qemu, match the
//! PyTorch references like the native build.

mod common;

use common::*;
use std::process::Command;

fn cross(triple: &str, cpu: Option<&str>, qemu: &[&str]) {
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
        let o = Command::new(env!("CARGO_BIN_EXE_bertc"))
            .args(&args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let mut runner: Vec<String> = qemu.iter().map(|s| s.to_string()).collect();
        runner.push(exe.to_str().unwrap().into());
        let err = check_exe(&runner, name, kind, &dir);
        eprintln!("{triple} {cpu:?} {name} {kind}: max abs error {err:.2e}");
    }
}

#[test]
fn aarch64_under_qemu() {
    cross("aarch64-unknown-linux-gnu", None, &["qemu-aarch64-static"]);
}

#[test]
fn riscv64_scalar_under_qemu() {
    cross(
        "riscv64gc-unknown-linux-gnu",
        None,
        &["qemu-riscv64-static", "-cpu", "rv64"],
    );
}

#[test]
fn riscv64_vector_under_qemu() {
    cross(
        "riscv64gc-unknown-linux-gnu",
        Some("rv64gcv"),
        &[
            "qemu-riscv64-static",
            "-cpu",
            "rv64,v=true,vlen=128,elen=64,vext_spec=v1.0",
        ],
    );
}
