//! The Hugging Face importer on folders made here from the shared BERT fixture: sharded
//! safetensors with an index, float16 weights, and the sentence-transformers layout with the
//! model in a module folder.

use bertc_interp::{self as interp, Value};
use bertc_ir::Graph;
use safetensors::tensor::{Dtype, TensorView};
use std::path::{Path, PathBuf};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/models/bert-micro-random")
}

/// A fresh folder for one test, removed when it ends.
fn scratch(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("bertc-hf-{tag}-"))
        .tempdir()
        .unwrap()
}

fn run(g: &Graph) -> Vec<f32> {
    let ids = Value::i64(vec![1, 5], vec![2, 73, 1043, 9, 3]);
    let mask = Value::i64(vec![1, 5], vec![1; 5]);
    let types = Value::i64(vec![1, 5], vec![0; 5]);
    let out = interp::run(
        g,
        &[
            ("input_ids", ids),
            ("attention_mask", mask),
            ("token_type_ids", types),
        ],
    )
    .unwrap();
    out[0].1.as_f32().unwrap().to_vec()
}

/// The fixture's tensors as (name, dtype, shape, bytes).
fn tensors() -> Vec<(String, Dtype, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(fixture().join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.dtype(), t.shape().to_vec(), t.data().to_vec()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn write(path: &Path, ts: &[(String, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(String, TensorView)> = ts
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::tensor::serialize_to_file(views, None, path).unwrap();
}

#[test]
fn sharded_safetensors() {
    let tmp = scratch("sharded");
    let d = tmp.path();
    std::fs::copy(fixture().join("config.json"), d.join("config.json")).unwrap();
    let ts = tensors();
    let (a, b) = ts.split_at(ts.len() / 2);
    write(&d.join("model-00001-of-00002.safetensors"), a);
    write(&d.join("model-00002-of-00002.safetensors"), b);
    let mut map = serde_json::Map::new();
    for (t, f) in [
        (a, "model-00001-of-00002.safetensors"),
        (b, "model-00002-of-00002.safetensors"),
    ] {
        for x in t {
            map.insert(x.0.clone(), f.into());
        }
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": map });
    std::fs::write(d.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let sharded = bertc_import::load_model(d).unwrap();
    let single = bertc_import::load_model(&fixture()).unwrap();
    assert_eq!(sharded.to_text(), single.to_text());
    assert_eq!(run(&sharded), run(&single));
}

#[test]
fn float16_weights() {
    let tmp = scratch("f16");
    let d = tmp.path();
    std::fs::copy(fixture().join("config.json"), d.join("config.json")).unwrap();
    let ts: Vec<_> = tensors()
        .into_iter()
        .map(|(n, dt, s, b)| {
            assert_eq!(dt, Dtype::F32);
            let h: Vec<u8> = b
                .chunks_exact(4)
                .flat_map(|c| {
                    half::f16::from_f32(f32::from_le_bytes([c[0], c[1], c[2], c[3]])).to_le_bytes()
                })
                .collect();
            (n, Dtype::F16, s, h)
        })
        .collect();
    write(&d.join("model.safetensors"), &ts);
    let g16 = bertc_import::load_model(d).unwrap();
    let g32 = bertc_import::load_model(&fixture()).unwrap();
    let (a, b) = (run(&g16), run(&g32));
    let err = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(
        err > 0.0 && err < 0.05,
        "f16 weights change the outputs by {err}"
    );
}

#[test]
fn sentence_transformers_module_folder() {
    let tmp = scratch("st");
    let d = tmp.path();
    let m = d.join("0_Transformer");
    std::fs::create_dir_all(&m).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture().join(f), m.join(f)).unwrap();
    }
    std::fs::write(
        d.join("modules.json"),
        r#"[{"idx":0,"name":"0","path":"0_Transformer","type":"sentence_transformers.models.Transformer"},
            {"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"}]"#,
    )
    .unwrap();
    let g = bertc_import::load_model(d).unwrap();
    assert_eq!(run(&g), run(&bertc_import::load_model(&fixture()).unwrap()));
}
