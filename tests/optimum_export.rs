//! Exports by `optimum-cli export onnx` (`scripts/optimum-onnx`; the bert-micro-random exports
//! for feature extraction and text classification are kept in `tests/data/optimum`, since
//! making them needs torch): compiled for their outputs, they give what ONNX Runtime gives on
//! the same file (`scripts/ort-reference`), on a ragged batch with a mask hole. They are
//! compiled from the export's folder, as `bertc compile ./export -o model`.

mod common;

use common::*;
use serde_json::Value as Json;
use std::path::Path;
use std::process::Command;

fn check(task: &str, output: &str, per_token: bool) {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/optimum/bert-micro-random")
        .join(task);
    let dir = scratch(&format!("optimum-{task}"));
    let file = folder.join("model.onnx");
    let refs = dir.join("reference.json");
    let o = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/ort-reference"))
        .args([&file, &refs])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: Json = serde_json::from_str(&std::fs::read_to_string(&refs).unwrap()).unwrap();
    let (ids, args) = id_files(&dir, &r);
    let (_, mask) = ints2(&r["attention_mask"]);
    let want = floats(&r["outputs"][output]);
    let exe = dir.join("exe");
    // from the export's folder, as a user names it (it has no safetensors: its model.onnx)
    compile(&folder, &exe, &["--output", output]);
    let got = run_ids(Command::new(&exe), 3, &args, &ids);
    let width = if per_token {
        want.len() / mask.len()
    } else {
        want.len() / 3
    };
    let err = max_err(&got, &want, per_token.then_some(&mask[..]), width);
    eprintln!("optimum {task} {output}: compiled, max abs error {err:.2e} against ORT");
    assert!(err <= TOL, "optimum {task} {output}: {err}");
    let got = interpret(&file, output, &args, &ids);
    let err = max_err(&got, &want, per_token.then_some(&mask[..]), width);
    assert!(err <= TOL, "optimum {task} {output} interpreter: {err}");
}

#[test]
fn optimum_feature_extraction_export_matches_onnx_runtime() {
    check("feature-extraction", "last_hidden_state", true);
}

#[test]
fn optimum_text_classification_export_matches_onnx_runtime() {
    check("text-classification", "logits", false);
}
