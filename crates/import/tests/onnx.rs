//! The ONNX importer on models built here: weights from typed fields, from external data, in
//! float16; opset checks; symbolic input dimensions.

use bertc_import::onnx::proto::*;
use bertc_import::ImportError;
use bertc_interp::{self as interp, Value};
use prost::Message;
use std::path::{Path, PathBuf};

/// A fresh folder for one test, removed when it ends.
fn scratch(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("bertc-onnx-{tag}-"))
        .tempdir()
        .unwrap()
}

fn vi(name: &str, elem: i32, dims: &[Result<i64, &str>]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor {
                elem_type: elem,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| match d {
                            Ok(v) => Dimension {
                                dim_value: Some(*v),
                                dim_param: None,
                            },
                            Err(p) => Dimension {
                                dim_value: None,
                                dim_param: Some(p.to_string()),
                            },
                        })
                        .collect(),
                }),
            }),
        }),
    }
}

fn node(op: &str, ins: &[&str], out: &str) -> NodeProto {
    NodeProto {
        input: ins.iter().map(|s| s.to_string()).collect(),
        output: vec![out.into()],
        name: out.into(),
        op_type: op.into(),
        ..Default::default()
    }
}

/// `y = x @ W + b` with `x[batch, seq, 3]`, `W[3, 2]` given by `w`.
fn model(w: TensorProto, opset: i64) -> ModelProto {
    let b = TensorProto {
        name: "b".into(),
        dims: vec![2],
        data_type: 1,
        float_data: vec![0.5, -0.5],
        ..Default::default()
    };
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: opset,
        }],
        graph: Some(GraphProto {
            node: vec![
                node("MatMul", &["x", "W"], "mm"),
                node("Add", &["mm", "b"], "y"),
            ],
            initializer: vec![w, b],
            input: vec![vi("x", 1, &[Err("batch"), Err("sequence"), Ok(3)])],
            output: vec![vi("y", 1, &[Err("batch"), Err("sequence"), Ok(2)])],
            ..Default::default()
        }),
        ..Default::default()
    }
}

const W: [f32; 6] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];

fn check(path: &Path) {
    let g = bertc_import::load_model(path).unwrap_or_else(|e| panic!("{e}"));
    let out = interp::run(&g, &[("x", Value::f32(vec![1, 1, 3], vec![1.0, 1.0, 1.0]))]).unwrap();
    // column sums of W plus the bias: [1+3+5, 2+4+6] + [0.5, -0.5]
    assert_eq!(out[0].1.as_f32().unwrap(), &[9.5, 11.5]);
}

fn save(m: &ModelProto, dir: &Path) -> PathBuf {
    let p = dir.join("m.onnx");
    std::fs::write(&p, m.encode_to_vec()).unwrap();
    p
}

#[test]
fn weights_from_typed_fields_raw_data_and_f16() {
    let tmp = scratch("fields");
    let d = tmp.path();
    let typed = TensorProto {
        name: "W".into(),
        dims: vec![3, 2],
        data_type: 1,
        float_data: W.to_vec(),
        ..Default::default()
    };
    check(&save(&model(typed, 17), d));
    let raw: Vec<u8> = W.iter().flat_map(|v| v.to_le_bytes()).collect();
    let raw = TensorProto {
        name: "W".into(),
        dims: vec![3, 2],
        data_type: 1,
        raw_data: raw.into(),
        ..Default::default()
    };
    check(&save(&model(raw, 13), d));
    // float16 weights: MatMul of f32 by f16 does not type-check, so cast them first
    let half: Vec<i32> = W
        .iter()
        .map(|&v| half::f16::from_f32(v).to_bits() as i32)
        .collect();
    let mut m = model(
        TensorProto {
            name: "W16".into(),
            dims: vec![3, 2],
            data_type: 10,
            int32_data: half,
            ..Default::default()
        },
        17,
    );
    let g = m.graph.as_mut().unwrap();
    g.node.insert(
        0,
        NodeProto {
            attribute: vec![AttributeProto {
                name: "to".into(),
                i: 1,
                r#type: 2,
                ..Default::default()
            }],
            ..node("Cast", &["W16"], "W")
        },
    );
    check(&save(&m, d));
}

#[test]
fn weights_from_external_data() {
    let tmp = scratch("external");
    let d = tmp.path();
    let mut bytes = vec![0u8; 16];
    bytes.extend(W.iter().flat_map(|v| v.to_le_bytes()));
    std::fs::write(d.join("weights.bin"), &bytes).unwrap();
    let ext = |k: &str, v: &str| StringStringEntryProto {
        key: k.into(),
        value: v.into(),
    };
    let w = TensorProto {
        name: "W".into(),
        dims: vec![3, 2],
        data_type: 1,
        data_location: 1,
        external_data: vec![
            ext("location", "weights.bin"),
            ext("offset", "16"),
            ext("length", "24"),
        ],
        ..Default::default()
    };
    check(&save(&model(w.clone(), 17), d));
    // a length beyond the file, and a path outside the model's folder
    let mut bad = w.clone();
    bad.external_data[2].value = "4000".into();
    let e = bertc_import::load_model(&save(&model(bad, 17), d)).unwrap_err();
    assert!(
        matches!(e, ImportError::Tensor { .. }) && e.to_string().contains("beyond the end"),
        "{e}"
    );
    let mut bad = w;
    bad.external_data[0].value = "../weights.bin".into();
    let e = bertc_import::load_model(&save(&model(bad, 17), d)).unwrap_err();
    assert!(e.to_string().contains("plain relative path"), "{e}");
}

#[test]
fn tensor_sizes_and_opsets_are_checked() {
    let tmp = scratch("checks");
    let d = tmp.path();
    let short = TensorProto {
        name: "W".into(),
        dims: vec![3, 2],
        data_type: 1,
        float_data: vec![1.0; 5],
        ..Default::default()
    };
    let e = bertc_import::load_model(&save(&model(short, 17), d)).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}: tensor 'W': holds 20 bytes but 3x2 of f32 need 24",
            d.join("m.onnx").display()
        )
    );
    let w = TensorProto {
        name: "W".into(),
        dims: vec![3, 2],
        data_type: 1,
        float_data: W.to_vec(),
        ..Default::default()
    };
    let e = bertc_import::load_model(&save(&model(w.clone(), 7), d)).unwrap_err();
    assert!(e.to_string().contains("opset 7 is not supported"), "{e}");
    // an input whose third axis is symbolic
    let mut m = model(w, 17);
    m.graph.as_mut().unwrap().input[0] = vi("x", 1, &[Err("batch"), Err("sequence"), Err("width")]);
    let e = bertc_import::load_model(&save(&m, d)).unwrap_err();
    assert!(e.to_string().contains("symbolic dimension 'width'"), "{e}");
}
