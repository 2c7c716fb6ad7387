//! The `bertc` binary: snapshots of `inspect` and `ir`, the I/O contract of `run`, and a
//! one-line error with a non-zero exit for every kind of bad input.

mod common;

use common::*;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn bertc(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_bertc"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bertc");
    // bertc may fail before reading its input: ignore a broken pipe
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

fn ok(args: &[&str], stdin: &str) -> String {
    let o = bertc(args, stdin);
    assert!(
        o.status.success(),
        "bertc {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// Runs bertc expecting failure; returns its one-line error.
fn fails(args: &[&str], stdin: &str) -> String {
    let o = bertc(args, stdin);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(
        o.status.code(),
        Some(1),
        "bertc {args:?} should fail with exit 1, stderr: {err}"
    );
    assert!(!err.contains("panicked"), "bertc {args:?} panicked: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "error is not one line: {err}"
    );
    assert!(err.starts_with("error: "), "{err}");
    err
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A copy of a model folder whose files can be damaged.
fn copy_model(name: &str, tag: &str) -> common::Scratch {
    let d = scratch(tag);
    for f in [
        "config.json",
        "model.safetensors",
        "model.onnx",
        "tokenizer.json",
    ] {
        std::fs::copy(model_dir(name).join(f), d.join(f)).unwrap();
    }
    d
}

#[test]
fn inspect_snapshots() {
    for name in RANDOM_MODELS.iter().chain(["all-MiniLM-L6-v2"].iter()) {
        let onnx = ok(&["inspect", p(&model_dir(name).join("model.onnx"))], "");
        insta::assert_snapshot!(format!("inspect-{name}-onnx"), onnx);
    }
    for name in RANDOM_MODELS {
        let hf = ok(&["inspect", p(&model_dir(name))], "");
        insta::assert_snapshot!(format!("inspect-{name}-hf"), hf);
    }
}

#[test]
fn raised_ir_snapshots() {
    for name in RANDOM_MODELS.iter().chain(["all-MiniLM-L6-v2"].iter()) {
        let ir = ok(&["ir", p(&model_dir(name).join("model.onnx"))], "");
        insta::assert_snapshot!(format!("ir-{name}"), ir);
    }
    let raw = ok(
        &[
            "ir",
            "--raw",
            p(&model_dir("bert-micro-random").join("model.onnx")),
        ],
        "",
    );
    insta::assert_snapshot!("ir-raw-bert-micro-random-onnx", raw);
    let raw = ok(&["ir", "--raw", p(&model_dir("bert-micro-random"))], "");
    insta::assert_snapshot!("ir-raw-bert-micro-random-hf", raw);
}

#[test]
fn run_follows_the_io_contract() {
    let r = reference("bert-micro-random");
    let case = &r["cases"][1]; // batch3_padded
    let line = |k: &str| -> String {
        case[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| {
                row.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let d = scratch("io");
    std::fs::write(d.join("mask.txt"), line("attention_mask")).unwrap();
    std::fs::write(d.join("types.txt"), line("token_type_ids")).unwrap();
    let model = model_dir("bert-micro-random");
    let out = ok(
        &[
            "run",
            p(&model),
            "--output",
            "mean",
            "--mask",
            p(&d.join("mask.txt")),
            "--type-ids",
            p(&d.join("types.txt")),
        ],
        &line("input_ids"),
    );
    let want = floats(&case["mean_pooled"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "one output line per input line");
    let got: Vec<f32> = lines
        .iter()
        .flat_map(|l| l.split(' ').map(|v| v.parse::<f32>().unwrap()))
        .collect();
    assert!(max_err(&got, &want, None, 32) <= 1e-4);
    // the printed values round-trip: printing what was parsed gives the same text
    for l in &lines {
        let again: Vec<String> = l
            .split(' ')
            .map(|v| format!("{:e}", v.parse::<f32>().unwrap()))
            .collect();
        assert_eq!(&again.join(" "), l);
    }
    // --text tokenizes with the model's tokenizer.json (the `single` case's text)
    let single = &r["cases"][0];
    let out = ok(
        &[
            "run",
            p(&model),
            "--output",
            "pooler",
            "--text",
            single["texts"][0].as_str().unwrap(),
        ],
        "",
    );
    let got: Vec<f32> = out.split_whitespace().map(|v| v.parse().unwrap()).collect();
    assert!(max_err(&got, &floats(&single["pooler_output"]), None, 32) <= 1e-4);
}

#[test]
fn malformed_models_are_one_line_errors() {
    let onnx = std::fs::read(model_dir("bert-micro-random").join("model.onnx")).unwrap();
    let d = scratch("onnx");
    // truncated ONNX
    std::fs::write(d.join("trunc.onnx"), &onnx[..onnx.len() / 2]).unwrap();
    let e = fails(&["inspect", p(&d.join("trunc.onnx"))], "");
    assert!(
        e.contains("trunc.onnx") && e.contains("not a valid ONNX model"),
        "{e}"
    );
    // garbage
    let garbage: Vec<u8> = (0..5000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(d.join("garbage.onnx"), &garbage).unwrap();
    let e = fails(&["ir", p(&d.join("garbage.onnx"))], "");
    assert!(e.contains("garbage.onnx"), "{e}");
    // an unsupported op: rename the pooler's Tanh (same length, so the protobuf stays valid)
    // (field 4 of NodeProto, op_type, length 4: bytes 0x22 0x04)
    let pos = onnx.windows(6).position(|w| w == b"\x22\x04Tanh").unwrap();
    let mut bad = onnx.clone();
    bad[pos + 2..pos + 6].copy_from_slice(b"Tanx");
    std::fs::write(d.join("op.onnx"), &bad).unwrap();
    let e = fails(&["run", p(&d.join("op.onnx"))], "2 3");
    assert!(
        e.contains("unsupported op 'Tanx'") && e.contains("op.onnx") && e.contains("node"),
        "{e}"
    );
    // a missing file
    let e = fails(&["inspect", p(&d.join("missing.onnx"))], "");
    assert!(
        e.contains("missing.onnx") && e.contains("cannot read"),
        "{e}"
    );
}

#[test]
fn malformed_hf_folders_are_one_line_errors() {
    // truncated safetensors
    let d = copy_model("bert-micro-random", "trunc-st");
    let st = std::fs::read(d.join("model.safetensors")).unwrap();
    std::fs::write(d.join("model.safetensors"), &st[..st.len() - 1000]).unwrap();
    let e = fails(&["inspect", p(&d)], "");
    assert!(
        e.contains("model.safetensors") && e.contains("not a valid safetensors file"),
        "{e}"
    );
    // a header whose offsets lie: move the last tensor's end past the data
    let d = copy_model("bert-micro-random", "lying-st");
    let n = u64::from_le_bytes(st[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&st[8..8 + n]).unwrap();
    let data_len = st.len() - 8 - n;
    let lie = header.replace(&format!(",{data_len}]"), &format!(",{}]", data_len + 4096));
    assert_ne!(lie, header, "fixture header has the expected form");
    let mut bytes = (lie.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(lie.as_bytes());
    bytes.extend_from_slice(&st[8 + n..]);
    std::fs::write(d.join("model.safetensors"), bytes).unwrap();
    let e = fails(&["ir", p(&d)], "");
    assert!(e.contains("not a valid safetensors file"), "{e}");
    // a config without a key the architecture needs
    let d = copy_model("bert-micro-random", "config");
    let cfg = std::fs::read_to_string(d.join("config.json")).unwrap();
    let mut j: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    j.as_object_mut().unwrap().remove("hidden_size");
    std::fs::write(d.join("config.json"), j.to_string()).unwrap();
    let e = fails(&["inspect", p(&d)], "");
    assert!(
        e.contains("config.json") && e.contains("'hidden_size'"),
        "{e}"
    );
    // no config at all
    std::fs::remove_file(d.join("config.json")).unwrap();
    let e = fails(&["inspect", p(&d)], "");
    assert!(e.contains("config.json"), "{e}");
    // a weight whose shape disagrees with the config
    let d = copy_model("bert-micro-random", "shape");
    let mut j: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    j["intermediate_size"] = 65.into();
    std::fs::write(d.join("config.json"), j.to_string()).unwrap();
    let e = fails(&["inspect", p(&d)], "");
    assert!(
        e.contains("intermediate.dense.weight") && e.contains("shape"),
        "{e}"
    );
}

#[test]
fn bad_inputs_are_one_line_errors() {
    let onnx = model_dir("bert-micro-random").join("model.onnx");
    let hf = model_dir("bert-micro-random");
    for m in [p(&onnx), p(&hf)] {
        let e = fails(&["run", m], "2 73 3\n2 5000 3\n");
        assert!(
            e.contains("line 2") && e.contains("token id 5000") && e.contains("2006"),
            "{e}"
        );
        let e = fails(&["run", m], "2 -1 3\n");
        assert!(e.contains("token id -1"), "{e}");
        let long: Vec<String> = (0..129).map(|_| "5".to_string()).collect();
        let e = fails(&["run", m], &long.join(" "));
        assert!(e.contains("129 tokens") && e.contains("128"), "{e}");
        let e = fails(&["run", m], "2 x 3\n");
        assert!(
            e.contains("line 1") && e.contains("'x' is not an integer"),
            "{e}"
        );
        let e = fails(&["run", m], "2 3\n\n");
        assert!(e.contains("line 2") && e.contains("empty"), "{e}");
        let e = fails(&["run", m, "--output", "logits"], "2 3\n");
        assert!(e.contains("no classifier"), "{e}");
    }
    let d = scratch("badmask");
    std::fs::write(d.join("mask.txt"), "1 2 1\n").unwrap();
    let e = fails(
        &["run", p(&hf), "--mask", p(&d.join("mask.txt"))],
        "2 4 3\n",
    );
    assert!(e.contains("not 0 or 1"), "{e}");
    std::fs::write(d.join("types.txt"), "0 5 0\n").unwrap();
    let e = fails(
        &["run", p(&hf), "--type-ids", p(&d.join("types.txt"))],
        "2 4 3\n",
    );
    assert!(e.contains("token type id 5"), "{e}");
    std::fs::write(d.join("short.txt"), "0 0\n").unwrap();
    let e = fails(
        &["run", p(&hf), "--type-ids", p(&d.join("short.txt"))],
        "2 4 3\n",
    );
    assert!(e.contains("2 values for 3 token ids"), "{e}");
    let e = fails(
        &[
            "run",
            p(&model_dir("distilbert-micro-random")),
            "--type-ids",
            p(&d.join("types.txt")),
        ],
        "2 4 3\n",
    );
    assert!(e.contains("no token type ids"), "{e}");
}

#[test]
fn ir_lowered_prints_the_program_for_a_target() {
    let m = model_dir("bert-micro-random").join("model.onnx");
    let text = ok(
        &[
            "ir",
            p(&m),
            "--output",
            "mean",
            "--lowered",
            "--target",
            "aarch64-unknown-linux-gnu",
        ],
        "",
    );
    assert!(text.starts_with("program for aarch64 NEON: "), "{text}");
    assert!(text.contains("= mean_pool b"), "{text}");
    assert!(text.contains("[portable tiles of 1.."), "{text}");
    let e = fails(
        &[
            "ir",
            p(&m),
            "--output",
            "mean",
            "--lowered",
            "--cpu",
            "x86-64-v9",
        ],
        "",
    );
    assert!(e.contains("unknown cpu 'x86-64-v9'"), "{e}");
}
