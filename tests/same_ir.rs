//! The ONNX importer plus raising and the Hugging Face importer give the same IR for the same
//! model: the same text (ops, shapes, attributes, canonical weight names) and the same weights
//! byte for byte.

mod common;

use bertc_ir::{Graph, Op};
use common::*;
use std::collections::BTreeMap;
use std::path::Path;

fn weights(g: &Graph) -> BTreeMap<String, Vec<u8>> {
    g.canonical_order()
        .into_iter()
        .filter_map(|n| match g.op(n) {
            Op::Const { name, value } => Some((name.clone(), value.data.to_vec())),
            _ => None,
        })
        .collect()
}

fn assert_same(onnx: &Path, hf: &Path, outputs: Option<&[&str]>) {
    let mut a = load_raised(onnx);
    let mut b = load_raised(hf);
    if let Some(o) = outputs {
        a.retain_outputs(o).unwrap();
        b.retain_outputs(o).unwrap();
    }
    // fully raised: no op soup left
    for g in [&a, &b] {
        for (op, _) in g.op_counts() {
            assert!(
                [
                    "embedding",
                    "layer_norm",
                    "linear",
                    "attention",
                    "gelu",
                    "add",
                    "gather",
                    "tanh"
                ]
                .contains(&op),
                "{op} left after raising {}",
                onnx.display()
            );
        }
    }
    let (ta, tb) = (a.to_text(), b.to_text());
    assert_eq!(
        ta,
        tb,
        "raised IR differs between {} and {}",
        onnx.display(),
        hf.display()
    );
    let (wa, wb) = (weights(&a), weights(&b));
    assert_eq!(wa.keys().collect::<Vec<_>>(), wb.keys().collect::<Vec<_>>());
    for (k, v) in &wa {
        assert!(v == &wb[k], "weight {k} differs");
    }
}

#[test]
fn random_models_raise_to_the_same_ir() {
    for name in RANDOM_MODELS {
        let dir = model_dir(name);
        assert_same(&dir.join("model.onnx"), &dir, None);
    }
}

#[test]
fn minilm_raises_to_the_same_ir() {
    // the ONNX export has no pooler output; compare what both have
    assert_same(
        &model_dir("all-MiniLM-L6-v2").join("model.onnx"),
        &minilm_hf_dir(),
        Some(&["last_hidden_state"]),
    );
}

/// ONNX Runtime's fused forms (`com.microsoft` EmbedLayerNormalization, Attention or
/// MultiHeadAttention, SkipLayerNormalization, BiasGelu; `scripts/ort-optimized-onnx`) raise
/// to the IR of the unfused export they were made from, weights included. (O3 and O4 differ
/// from it on purpose: the tanh GELU, and float16 weights.)
#[test]
fn onnx_runtime_fused_files_raise_to_the_unfused_ir() {
    for name in RANDOM_MODELS.iter().chain(&["all-MiniLM-L6-v2"]) {
        let dir = ort_optimized(name);
        for file in ["O1", "O2", "O2-raw-mask", "O2-mha"] {
            assert_same(
                &dir.join(format!("{file}.onnx")),
                &model_dir(name).join("model.onnx"),
                Some(&["last_hidden_state"]),
            );
        }
    }
}

/// PyTorch's dynamo exports (`tests/data/dynamo`) raise to the IR of the classic exports,
/// weights included; only the attention scale may differ in its last bit, because the dynamo
/// exporter scales q and k each by the square root of the scale and their product rounds so.
#[test]
fn dynamo_exports_raise_to_the_classic_ir() {
    for name in RANDOM_MODELS {
        let dynamo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/dynamo")
            .join(format!("{name}.onnx"));
        let (mut a, mut b) = (
            load_raised(&dynamo),
            load_raised(&model_dir(name).join("model.onnx")),
        );
        // the export is of the encoder (AutoModel): compare what both return
        let keep: Vec<String> = a
            .outputs
            .iter()
            .map(|(n, _)| n.clone())
            .filter(|n| b.outputs.iter().any(|(m, _)| m == n))
            .collect();
        let keep: Vec<&str> = keep.iter().map(String::as_str).collect();
        a.retain_outputs(&keep).unwrap();
        b.retain_outputs(&keep).unwrap();
        let (ta, tb) = (a.to_text(), b.to_text());
        let (wa, wb): (Vec<&str>, Vec<&str>) = (
            ta.split_whitespace().collect(),
            tb.split_whitespace().collect(),
        );
        assert_eq!(wa.len(), wb.len(), "{name}:\n{ta}\n{tb}");
        for (x, y) in wa.iter().zip(&wb) {
            match (x.strip_prefix("scale="), y.strip_prefix("scale=")) {
                (Some(sx), Some(sy)) => {
                    let (fx, fy): (f32, f32) = (sx.parse().unwrap(), sy.parse().unwrap());
                    assert!(
                        (fx - fy).abs() <= f32::EPSILON * fy.abs(),
                        "{name}: {x} {y}"
                    );
                }
                _ => assert_eq!(x, y, "{name}: raised IR differs"),
            }
        }
        let (wa, wb) = (weights(&a), weights(&b));
        assert_eq!(wa, wb, "{name}: weights differ");
    }
}
