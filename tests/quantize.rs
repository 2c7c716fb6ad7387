//! `--quantize int8` through the interpreter (the oracle the int8 kernels are checked against
//! in `int8.rs`): the real MiniLM quantized keeps its embeddings close to fp32's on STS-B
//! test sentences, every linear becomes a `qlinear`, and an unknown scheme is refused.

mod common;

use common::*;
use std::process::Command;

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

fn dev_calibration() -> String {
    shared()
        .join("data/sts-b/sts-dev.csv")
        .to_str()
        .unwrap()
        .to_string()
}

/// Every bad quantization argument is a one-line error naming it, before any work.
#[test]
fn quantization_arguments_are_checked() {
    let dir = scratch("quantize-args");
    let model = model_dir("bert-micro-random").join("model.onnx");
    let m = model.to_str().unwrap();
    let out = dir.join("x");
    let out = out.to_str().unwrap();
    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "\n\n").unwrap();
    let missing = dir.join("missing.txt");
    let missing_arg = format!("--calibration {}", missing.display());
    let cases: [(&[&str], &str); 6] = [
        (&["--quantize", "int4"], "int4"),
        (
            &["--quantize", "int8", "--quantize-method", "gptq"],
            "--calibration",
        ),
        (&["--quantize", "int8", "--quantize-method", "obq"], "obq"),
        (
            &["--quantize", "int8", "--quantize-budget=0"],
            "--quantize-budget 0",
        ),
        (
            &[
                "--quantize",
                "int8",
                "--calibration",
                empty.to_str().unwrap(),
            ],
            "no calibration text",
        ),
        (
            &[
                "--quantize",
                "int8",
                "--calibration",
                missing.to_str().unwrap(),
            ],
            &missing_arg,
        ),
    ];
    for (args, want) in cases {
        let mut a = vec!["compile", m, "-o", out];
        a.extend_from_slice(args);
        let o = bertc(&a);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(err.contains(want), "{args:?}: {err}");
        let first = err.lines().next().unwrap_or_default();
        assert!(first.starts_with("error:"), "{args:?}: {err}");
        assert!(!dir.join("x").exists(), "{args:?} wrote an artifact");
    }
}

/// With calibration text, each linear's error is measured and reported; a linear over the
/// budget stays fp32 (here a budget no int8 linear meets: all of them), and the artifact
/// still equals the interpreter on the same decisions.
#[test]
fn linears_over_the_budget_stay_fp32() {
    let dir = scratch("quantize-budget");
    let model = model_dir("bert-micro-random").join("model.onnx");
    let m = model.to_str().unwrap();
    let exe = dir.join("q");
    let cal = dev_calibration();
    let common = [
        "--quantize",
        "int8",
        "--calibration",
        cal.as_str(),
        "--calibration-samples",
        "32",
        "--quantize-budget",
        "0.0001",
    ];
    let html = dir.join("q.html");
    let mut a = vec![
        "compile",
        m,
        "-o",
        exe.to_str().unwrap(),
        "--report",
        html.to_str().unwrap(),
    ];
    a.extend_from_slice(&common);
    let o = bertc(&a);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("0 linears on int8 weights") && err.contains("8 kept in fp32"),
        "{err}"
    );
    assert_eq!(err.matches(" fp32 (activations").count(), 8, "{err}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert_eq!(page.matches("<td class=prec>fp32</td>").count(), 8);
    let input = "2 73 1043 9 17 88 3\n2 150 3\n";
    let got = output_floats(&run_with(
        Command::new(&exe).args(["--input", "ids"]),
        input,
    ));
    let mut r = vec!["run", m];
    r.extend_from_slice(&common);
    let want = output_floats(&run_with(
        Command::new(env!("CARGO_BIN_EXE_bertc")).args(&r),
        input,
    ));
    let err = got
        .iter()
        .zip(&want)
        .fold(0f32, |e, (a, b)| e.max((a - b).abs()));
    assert!(err < 1e-3, "compiled against the interpreter: {err}");
}

/// GPTQ rounding with the calibration Hessians measures at most round to nearest's error on
/// the held-out rows, layer by layer, and the report shows both.
#[test]
fn gptq_is_measured_against_round_to_nearest() {
    let dir = scratch("quantize-gptq");
    let model = model_dir("bert-small-random").join("model.onnx");
    let cal = dev_calibration();
    let html = dir.join("g.html");
    let o = bertc(&[
        "compile",
        model.to_str().unwrap(),
        "-o",
        dir.join("g").to_str().unwrap(),
        "--quantize",
        "int8",
        "--calibration",
        &cal,
        "--calibration-samples",
        "64",
        "--report",
        html.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let mut better = 0;
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("error rtn")).collect();
    assert!(!lines.is_empty(), "{err}");
    for l in &lines {
        let pct = |key: &str| -> f64 {
            let at = l.find(key).unwrap() + key.len();
            l[at..]
                .trim_start()
                .split('%')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        let (rtn, gptq) = (pct("error rtn"), pct("gptq"));
        better += usize::from(gptq < rtn);
    }
    eprintln!("gptq below rtn on {better} of {} linears", lines.len());
    assert!(better * 2 > lines.len(), "{err}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("error gptq"));
}

/// `--quantize int8` without `--calibration`: where `auto` gives 8-bit activations (a target
/// with AVX512-VNNI) the linears are measured on the built-in calibration text (their lines
/// printed, some smoothed or widened); where it does not (AVX2), nothing is measured; a model
/// without a tokenizer gets 8-bit activations unmeasured, with a note saying so.
#[test]
fn int8_measures_8_bit_linears_on_the_built_in_text() {
    let dir = scratch("q8-builtin");
    let model = model_dir("bert-small-random").join("model.onnx");
    let compile = |model: &std::path::Path, cpu: &str| {
        let out = dir.join(format!("m-{cpu}"));
        let o = bertc(&[
            "compile",
            model.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--quantize",
            "int8",
            "--cpu",
            cpu,
            "--output",
            "mean",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stderr).to_string()
    };
    let vnni = compile(&model, "cascadelake");
    assert!(vnni.contains("int8 (activations 8 bits"), "{vnni}");
    assert!(!vnni.contains("Note:"), "{vnni}");
    let avx2 = compile(&model, "x86-64-v3");
    assert!(!avx2.contains("(activations"), "{avx2}");
    assert!(avx2.contains("activations 16 bits per row"), "{avx2}");
    // the ONNX file alone: no tokenizer beside it
    let alone = dir.join("alone");
    std::fs::create_dir_all(&alone).unwrap();
    std::fs::copy(&model, alone.join("model.onnx")).unwrap();
    let bare = compile(&alone.join("model.onnx"), "cascadelake");
    assert!(
        bare.contains("Note: 8-bit activations, not measured"),
        "{bare}"
    );
    assert!(!bare.contains("(activations"), "{bare}");
}
