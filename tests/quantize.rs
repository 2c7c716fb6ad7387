//! `--quantize int8` through the interpreter (the oracle the int8 kernels are checked against
//! in `int8.rs`): the real MiniLM quantized keeps its embeddings close to fp32's on STS-B
//! test sentences, every linear becomes a `qlinear`, and an unknown scheme is refused.

mod common;

use common::*;
use std::process::Command;

fn bertc(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_bertc"))
        .args(args)
        .output()
        .unwrap()
}

fn embed(model: &str, sentences: &[String], quantize: bool) -> Vec<Vec<f32>> {
    let mut args: Vec<&str> = vec!["run", model, "--output", "mean"];
    if quantize {
        args.extend(["--quantize", "int8"]);
    }
    for s in sentences {
        args.extend(["--text", s.as_str()]);
    }
    let o = bertc(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| parse_floats(l.as_bytes()))
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[test]
fn minilm_int8_stays_close_to_fp32() {
    let sts = std::fs::read_to_string(shared().join("data/sts-b/sts-test.csv")).unwrap();
    let sentences: Vec<String> = sts
        .lines()
        .take(12)
        .flat_map(|l| {
            l.split('\t')
                .skip(5)
                .take(2)
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(sentences.len(), 24);
    let model = model_dir("all-MiniLM-L6-v2").join("model.onnx");
    let model = model.to_str().unwrap();
    let fp = embed(model, &sentences, false);
    let q = embed(model, &sentences, true);
    let cos: Vec<f64> = fp.iter().zip(&q).map(|(a, b)| cosine(a, b)).collect();
    let mean = cos.iter().sum::<f64>() / cos.len() as f64;
    let least = cos.iter().cloned().fold(1.0, f64::min);
    eprintln!(
        "int8 vs fp32 on {} sentences: mean cosine {mean:.4}, least {least:.4}",
        cos.len()
    );
    assert!(mean >= 0.99 && least >= 0.97, "mean {mean}, least {least}");
}

#[test]
fn every_linear_becomes_a_qlinear() {
    let model = model_dir("all-MiniLM-L6-v2").join("model.onnx");
    let o = bertc(&[
        "ir",
        model.to_str().unwrap(),
        "--output",
        "mean",
        "--quantize",
        "int8",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    assert_eq!(text.matches("= qlinear(").count(), 24, "{text}");
    assert!(!text.contains("= linear(") && !text.contains("= fused_linear("));
    let o = bertc(&[
        "ir",
        model.to_str().unwrap(),
        "--quantize",
        "int4",
        "--output",
        "mean",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("int4"));
}
