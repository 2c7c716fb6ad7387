//! The lowered program's text (buffers, weight layouts, steps and the kernels chosen for a
//! target) for every shared model on x86-64 with AVX2, and for the smallest model on every
//! target: a change of kernel choice, tiling, weight layout or memory plan shows here, in a
//! review diff, before it shows in numbers.

mod common;

use bertc_passes::ActBits;

use bertc_passes::{optimize, select_output, OutputKind};
use bertc_targets::Target;
use common::*;

fn lowered(model: &str, kind: OutputKind, triple: &str, cpu: &str) -> String {
    let path = model_dir(model).join("model.onnx");
    let mut g = load_raised(&path);
    select_output(&mut g, kind).unwrap();
    optimize(&mut g).unwrap();
    let target = Target::with_cpu(triple, Some(cpu)).unwrap();
    bertc_codegen::lowered_text(&g, &target).unwrap()
}

#[test]
fn every_shared_model_for_avx2() {
    let mut models: Vec<&str> = RANDOM_MODELS.to_vec();
    models.push("all-MiniLM-L6-v2");
    for m in models {
        let text = lowered(m, OutputKind::Mean, "x86_64-unknown-linux-gnu", "x86-64-v3");
        insta::assert_snapshot!(format!("{m}-x86-64-v3-mean"), text);
    }
    let text = lowered(
        "bert-small-random",
        OutputKind::Logits,
        "x86_64-unknown-linux-gnu",
        "x86-64-v3",
    );
    insta::assert_snapshot!("bert-small-random-x86-64-v3-logits", text);
}

#[test]
fn the_smallest_model_on_every_target() {
    for (triple, cpu) in [
        ("x86_64-unknown-linux-gnu", "x86-64"),
        ("x86_64-unknown-linux-gnu", "x86-64-v4"),
        ("aarch64-unknown-linux-gnu", "generic"),
        ("riscv64gc-unknown-linux-gnu", "rv64gc"),
        ("riscv64gc-unknown-linux-gnu", "rv64gcv"),
    ] {
        let text = lowered(
            "bert-micro-random",
            OutputKind::LastHiddenState,
            triple,
            cpu,
        );
        insta::assert_snapshot!(format!("bert-micro-random-{cpu}-last_hidden_state"), text);
    }
}

/// The int8 program (quantize steps, int8 panels, the int8 word table) for the smallest
/// model on every target, and MiniLM's on AVX2.
#[test]
fn int8_programs() {
    let qa = |model: &str, triple: &str, cpu: &str, abits| {
        let path = model_dir(model).join("model.onnx");
        let mut g = load_raised(&path);
        select_output(&mut g, OutputKind::Mean).unwrap();
        optimize(&mut g).unwrap();
        let pass = bertc_passes::QuantizeInt8 {
            abits,
            ..Default::default()
        };
        bertc_passes::run_pass(&pass, &mut g).unwrap();
        let target = Target::with_cpu(triple, Some(cpu)).unwrap();
        bertc_codegen::lowered_text(&g, &target).unwrap()
    };
    let q = |model: &str, triple: &str, cpu: &str| qa(model, triple, cpu, ActBits::Widest);
    // 8-bit activations: k in fours for AVX512-VNNI's vpdpbusd, for AVX-VNNI's VEX form on
    // ymm and for aarch64's sdot (rows in fours from the portable quantizer); in eights for
    // aarch64's smmla
    for (triple, cpu) in [
        ("x86_64-unknown-linux-gnu", "cascadelake"),
        ("x86_64-unknown-linux-gnu", "alderlake"),
        ("aarch64-unknown-linux-gnu", "neoverse-n1"),
        ("aarch64-unknown-linux-gnu", "neoverse-v1"),
    ] {
        let text = qa("bert-micro-random", triple, cpu, ActBits::Fixed(8));
        insta::assert_snapshot!(format!("bert-micro-random-{cpu}-mean-int8-a8"), text);
    }
    for (triple, cpu) in [
        ("x86_64-unknown-linux-gnu", "x86-64"),
        ("x86_64-unknown-linux-gnu", "x86-64-v3"),
        ("x86_64-unknown-linux-gnu", "cascadelake"),
        ("aarch64-unknown-linux-gnu", "generic"),
        ("riscv64gc-unknown-linux-gnu", "rv64gcv"),
    ] {
        let text = q("bert-micro-random", triple, cpu);
        insta::assert_snapshot!(format!("bert-micro-random-{cpu}-mean-int8"), text);
    }
    let text = q("all-MiniLM-L6-v2", "x86_64-unknown-linux-gnu", "x86-64-v3");
    insta::assert_snapshot!("all-MiniLM-L6-v2-x86-64-v3-mean-int8", text);
}
