//! ONNX Runtime's optimized files (what the Hub ships as `onnx/model_O1.onnx` ..
//! `model_O4.onnx`, made here from the shared models by `scripts/ort-optimized-onnx` with
//! ORT's transformer optimizer): the fused `com.microsoft` ops import and raise, and the
//! compiled executable and the interpreter give ONNX Runtime's last hidden state on the same
//! file, on a right-padded ragged batch. On a mask with holes they give what ORT gives on the
//! file's twin made with the raw 2-D mask: the files whose `Attention` takes a 1-D
//! `mask_index` (the optimizer's default for BERT) presume right padding, and ORT then attends
//! to the first `count` keys; bertc takes the mask whose count it is (see the contrib ops of
//! `bertc_import::onnx`), and the test says by how much ORT's own file departs there.

mod common;

use common::*;
use serde_json::Value as Json;
use std::process::Command;

/// The files, and the tolerance against ORT on the same file: O4 is float16, which ORT
/// computes partly in f16 and bertc in f32.
const FILES: [(&str, f32); 6] = [
    ("O1", 1e-4),
    ("O2", 1e-4),
    ("O3", 1e-4),
    ("O2-raw-mask", 1e-4),
    ("O2-mha", 1e-4),
    ("O4", 1e-2),
];

fn check(model: &str) {
    let fixtures = ort_optimized(model);
    let r: Json =
        serde_json::from_str(&std::fs::read_to_string(fixtures.join("reference.json")).unwrap())
            .unwrap();
    let dir = scratch(&format!("ort-optimized-{model}"));
    for (file, tol) in FILES {
        let onnx = fixtures.join(format!("{file}.onnx"));
        let exe = dir.join(format!("{file}-exe"));
        compile(&onnx, &exe, &["--output", "last_hidden_state"]);
        for name in ["padded", "holes"] {
            let batch = &r[name];
            let (ids, args) = id_files(&dir, batch);
            let (_, mask) = ints2(&batch["attention_mask"]);
            let original = floats(&batch["original"]["last_hidden_state"]);
            let same_file = floats(&batch[file]["last_hidden_state"]);
            let width = original.len() / mask.len();
            // on a padded batch the file's own ORT output; with holes, ORT on the file's twin
            // made with the raw mask: the same arithmetic, the mask meaning what it means
            let twin = floats(&batch[file]["raw_mask_twin"]);
            let want = if name == "padded" { &same_file } else { &twin };
            let got = run_ids(Command::new(&exe), 3, &args, &ids);
            let err = max_err(&got, want, Some(&mask), width);
            let ort_departs = max_err(&same_file, &twin, Some(&mask), width);
            let fused_departs = max_err(&same_file, &original, Some(&mask), width);
            eprintln!(
                "{model} {file} {name}: compiled, max abs error {err:.2e} (ORT: the file against its raw-mask twin {ort_departs:.2e}, against the original {fused_departs:.2e})"
            );
            assert!(err <= tol, "{model} {file} {name}: compiled, error {err}");
            let interp = interpret(&onnx, "last_hidden_state", &args, &ids);
            let err = max_err(&interp, want, Some(&mask), width);
            assert!(
                err <= tol,
                "{model} {file} {name}: interpreter, error {err}"
            );
        }
    }
}

#[test]
fn random_models_optimized_by_onnx_runtime_match_it() {
    for model in RANDOM_MODELS {
        check(model);
    }
}

#[test]
fn minilm_optimized_by_onnx_runtime_matches_it() {
    check("all-MiniLM-L6-v2");
}
