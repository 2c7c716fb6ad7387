//! Exports by PyTorch's dynamo exporter (`torch.onnx.export(..., dynamo=True)`, the default in
//! current PyTorch: opset 20, ONNX `Gelu`, the attention of `scaled_dot_product_attention`
//! decomposed with the key transpose done on a flattened view), made by `scripts/dynamo-onnx`
//! from the shared random models and kept in `tests/data/dynamo` (small files; making them
//! needs torch). Each raises fully and its compiled executables give the PyTorch references of
//! the model for every output kind, on the references' padded batches with mask holes.

mod common;

use common::*;

fn dynamo_file(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/dynamo")
        .join(format!("{name}.onnx"))
}

#[test]
fn dynamo_exports_match_the_references() {
    let dir = scratch("dynamo");
    for name in RANDOM_MODELS {
        let file = dynamo_file(name);
        for kind in kinds(name).into_iter().filter(|&k| k != "logits") {
            let exe = dir.join(format!("{name}-{kind}"));
            compile(&file, &exe, &["--output", kind]);
            let err = check_exe(&[exe.to_str().unwrap().to_string()], name, kind, &dir);
            eprintln!("{name} dynamo {kind}: max abs error {err:.2e}");
        }
    }
}
