//! Structured pruning end to end through the command line, on the shared models: the latency
//! profile (here and as a profiler executable for a board, run under qemu), pruned artifacts
//! against the interpreter on the pruned IR, blocks that lose every head or neuron, the HTML
//! report, and `bertc eval` against the PyTorch STS-B figure of all-MiniLM-L6-v2.

mod common;

use common::*;
use serde_json::Value as Json;
use std::path::Path;
use std::process::Command;

fn bertc() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bertc"))
}

fn ok(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "{:?} failed: {}",
        cmd,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn micro() -> String {
    model_dir("bert-micro-random")
        .join("model.onnx")
        .to_str()
        .unwrap()
        .to_string()
}

fn calibration() -> String {
    shared()
        .join("data/sts-b/sts-train.csv")
        .to_str()
        .unwrap()
        .to_string()
}

/// A hand-made profile for bert-micro (hidden 32, 2 heads, FFN 64) with the given block costs.
fn profile(dir: &Path, name: &str, attn_ms: f64, ffn_ms: f64) -> String {
    let p = serde_json::json!({
        "format": 1, "machine": "test", "target": "x86_64-unknown-linux-gnu",
        "cpu_features": [], "date": "2026-01-01T00:00:00Z", "batch": 1, "seq": 16,
        "threads": 1, "hidden": 32, "heads": 2, "head_dim": 16, "intermediate": 64, "layers": 2,
        "runs": 1, "base_ms": 0.1, "model_ms": 0.0,
        "attention": (0..=2).map(|k| serde_json::json!({"kept": k, "ms": attn_ms * k as f64 / 2.0})).collect::<Vec<_>>(),
        "ffn": (0..=4).map(|i| serde_json::json!({"kept": i * 16, "ms": ffn_ms * i as f64 / 4.0})).collect::<Vec<_>>(),
    });
    let f = dir.join(name);
    std::fs::write(&f, p.to_string()).unwrap();
    f.to_str().unwrap().to_string()
}

fn prune_args(profile: &str, latency: &str) -> Vec<String> {
    [
        "--latency",
        latency,
        "--profile",
        profile,
        "--calibration",
        &calibration(),
        "--calibration-samples",
        "48",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

const INPUT: &str = "2 73 1043 9 17 88 3\n2 150 3\n2 5 6 7 8 9 10 11 12 13 3\n";

fn floats(text: &str) -> Vec<Vec<f32>> {
    text.lines()
        .map(|l| l.split_whitespace().map(|v| v.parse().unwrap()).collect())
        .collect()
}

/// Compiles the pruned model to an executable and runs the interpreter on the same pruned IR
/// (`bertc run` with the same flags): they agree within 1e-4. Returns the pruned IR's text.
fn pruned_matches_interpreter(dir: &Path, args: &[String], tag: &str) -> String {
    let exe = dir.join(tag);
    for kind in ["last_hidden_state", "mean"] {
        ok(bertc()
            .args([
                "compile",
                &micro(),
                "-o",
                exe.to_str().unwrap(),
                "--output",
                kind,
                "-q",
            ])
            .args(args));
        let got = run_with(Command::new(&exe).args(["--input", "ids"]), INPUT);
        assert!(
            got.status.success(),
            "{}",
            String::from_utf8_lossy(&got.stderr)
        );
        let want = run_with(
            bertc().args(["run", &micro(), "--output", kind]).args(args),
            INPUT,
        );
        assert!(
            want.status.success(),
            "{}",
            String::from_utf8_lossy(&want.stderr)
        );
        let (g, w) = (
            floats(&String::from_utf8_lossy(&got.stdout)),
            floats(&String::from_utf8_lossy(&want.stdout)),
        );
        assert_eq!(g.len(), 3);
        for (a, b) in g.iter().zip(&w) {
            assert_eq!(a.len(), b.len());
            let err = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(
                err < TOL,
                "{tag} {kind}: compiled and interpreted differ by {err}"
            );
        }
    }
    ok(bertc().args(["ir", &micro()]).args(args))
}

#[test]
fn blocks_losing_every_head_or_neuron() {
    let dir = scratch("prune-extremes");
    // attention dear, FFN cheap: a latency of base + a little forces every head out
    let heads = profile(&dir, "heads.json", 10.0, 0.001);
    let ir = pruned_matches_interpreter(&dir, &prune_args(&heads, "0.2"), "no-heads");
    assert_eq!(ir.matches("attention(").count(), 0, "{ir}");
    assert_eq!(ir.matches("gelu(").count(), 2, "{ir}");
    // the other way round: every FFN neuron out, the heads stay
    let ffn = profile(&dir, "ffn.json", 0.001, 10.0);
    let ir = pruned_matches_interpreter(&dir, &prune_args(&ffn, "0.2"), "no-ffn");
    assert_eq!(ir.matches("attention(").count(), 2, "{ir}");
    assert_eq!(ir.matches("gelu(").count(), 0, "{ir}");
    // nothing left: the embedding and the LayerNorms
    let all = profile(&dir, "all.json", 10.0, 10.0);
    let ir = pruned_matches_interpreter(&dir, &prune_args(&all, "0.1001"), "nothing");
    assert_eq!(
        ir.matches("attention(").count() + ir.matches("gelu(").count(),
        0,
        "{ir}"
    );
}

#[test]
fn profile_then_prune_with_the_measured_profile() {
    let dir = scratch("prune-profile");
    let p = dir.join("micro.json");
    ok(bertc().args([
        "profile",
        &micro(),
        "--batch",
        "2",
        "--seq",
        "16",
        "--threads",
        "1",
        "--ffn-step",
        "16",
        "--runs",
        "5",
        "-o",
        p.to_str().unwrap(),
    ]));
    let j: Json = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    assert_eq!(
        (
            j["hidden"].as_u64(),
            j["heads"].as_u64(),
            j["intermediate"].as_u64()
        ),
        (Some(32), Some(2), Some(64))
    );
    assert_eq!(
        (
            j["batch"].as_u64(),
            j["seq"].as_u64(),
            j["threads"].as_u64()
        ),
        (Some(2), Some(16), Some(1))
    );
    let kept = |k: &str| -> Vec<u64> {
        j[k].as_array()
            .unwrap()
            .iter()
            .map(|p| p["kept"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(kept("attention"), [0, 1, 2]);
    assert_eq!(kept("ffn"), [0, 16, 32, 48, 64]);
    assert!(j["base_ms"].as_f64().unwrap() > 0.0);
    assert!(j["date"].as_str().unwrap().starts_with("20"));
    assert!(!j["machine"].as_str().unwrap().is_empty());
    // a 1.3x speedup on the measured profile
    let args: Vec<String> = [
        "--speedup",
        "1.3",
        "--profile",
        p.to_str().unwrap(),
        "--calibration",
        &calibration(),
        "--calibration-samples",
        "48",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    pruned_matches_interpreter(&dir, &args, "sped-up");
    // the magnitude baseline too
    let mut m = args.clone();
    m.extend(["--prune-method".into(), "magnitude".into()]);
    pruned_matches_interpreter(&dir, &m, "magnitude");
}

/// The error of `bertc compile MODEL EXTRA` pruned to a 1 ms latency on profile `p`, which
/// must fail.
fn refused(dir: &Path, model: &str, p: &str, extra: &[&str]) -> String {
    let m = model_dir(model).join("model.onnx");
    let o = bertc()
        .args([
            "compile",
            m.to_str().unwrap(),
            "-o",
            dir.join("x").to_str().unwrap(),
        ])
        .args(extra)
        .args(prune_args(p, "1"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn profile_of_the_wrong_shape_is_refused() {
    let dir = scratch("prune-wrong-profile");
    let p = profile(&dir, "micro.json", 1.0, 1.0);
    let err = refused(&dir, "bert-small-random", &p, &[]);
    assert!(
        err.contains("micro.json") && err.contains("hidden 32"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// Pruning for an int8 artifact needs a profile measured with int8 layers (and the other
/// way round): a one-line error naming the profile and the command that measures it.
#[test]
fn profile_of_the_other_precision_is_refused() {
    let dir = scratch("prune-precision");
    let p = profile(&dir, "fp32.json", 1.0, 1.0);
    let err = refused(&dir, "bert-micro-random", &p, &["--quantize", "int8"]);
    assert!(
        err.contains("fp32.json") && err.contains("bertc profile --quantize int8"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn report_is_one_self_contained_page() {
    let dir = scratch("prune-report");
    let p = profile(&dir, "p.json", 1.0, 1.0);
    let html = dir.join("r.html");
    let sts = dir.join("sts.csv");
    // a few STS rows for the accuracy cards
    let rows: Vec<String> = std::fs::read_to_string(shared().join("data/sts-b/sts-dev.csv"))
        .unwrap()
        .lines()
        .take(40)
        .map(str::to_string)
        .collect();
    std::fs::write(&sts, rows.join("\n")).unwrap();
    ok(bertc()
        .args([
            "compile",
            &micro(),
            "-o",
            dir.join("m").to_str().unwrap(),
            "-q",
        ])
        .args(prune_args(&p, "1.2"))
        .args([
            "--report",
            html.to_str().unwrap(),
            "--sts",
            sts.to_str().unwrap(),
        ]));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.starts_with("<!doctype html>"));
    assert_eq!(page.matches("<svg").count(), 2);
    assert!(page.contains("STS-B Spearman"));
    assert!(!page.contains("<script") && !page.contains("src=") && !page.contains("href="));
}

/// all-MiniLM-L6-v2 on the STS-B test split: 82.03 in fp32 PyTorch (sentence-transformers).
#[test]
fn eval_sts_matches_pytorch_on_minilm() {
    let m = model_dir("all-MiniLM-L6-v2").join("model.onnx");
    let sts = shared().join("data/sts-b/sts-test.csv");
    let out = ok(bertc().args(["eval", m.to_str().unwrap(), "--sts", sts.to_str().unwrap()]));
    let sp: f64 = out
        .split("Spearman x100 ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!((sp - 82.03).abs() <= 0.01, "{out}");
    assert!(out.contains("1379 pairs"), "{out}");
}

#[test]
fn cross_profiler_runs_on_the_board() {
    let Some(runner) = cross_runner("aarch64-unknown-linux-gnu", None) else {
        return;
    };
    let dir = scratch("prune-cross-profile");
    let exe = dir.join("profiler");
    ok(bertc().args([
        "profile",
        &micro(),
        "--target",
        "aarch64-unknown-linux-gnu",
        "--emit",
        "exe",
        "--seq",
        "8",
        "--threads",
        "1",
        "--ffn-step",
        "32",
        "--runs",
        "3",
        "-o",
        exe.to_str().unwrap(),
    ]));
    let out = dir.join("board.json");
    ok(Command::new(&runner[0])
        .args(&runner[1..])
        .args([exe.to_str().unwrap(), out.to_str().unwrap()]));
    let j: Json = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(j["target"].as_str(), Some("aarch64-unknown-linux-gnu"));
    assert_eq!(j["ffn"].as_array().unwrap().len(), 3);
    assert_eq!(j["attention"].as_array().unwrap().len(), 3);
}

/// `--speedup` without `--calibration`, run from an empty folder (no `../shared` in reach):
/// the built-in calibration set is used and the pruned model runs.
#[test]
fn prune_from_an_empty_folder_uses_the_built_in_calibration() {
    let dir = scratch("prune-empty");
    let work = dir.join("empty");
    std::fs::create_dir_all(&work).unwrap();
    let p = profile(&dir, "p.json", 1.0, 2.0);
    let exe = dir.join("half");
    let out = ok(bertc().current_dir(&work).args([
        "compile",
        &micro(),
        "-o",
        exe.to_str().unwrap(),
        "--speedup",
        "2",
        "--profile",
        &p,
    ]));
    assert!(out.is_empty());
    assert_eq!(
        std::fs::read_dir(&work).unwrap().count(),
        0,
        "nothing written in the folder"
    );
    let got = run_with(&mut Command::new(&exe), "A man is playing a guitar.\n");
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
}
