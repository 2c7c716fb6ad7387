//! Snapshots of the IR before and after each pass of `canonicalize` on the smallest shared
//! model (as Cranelift's filetests keep the expected output beside the input), and a check
//! that every pass keeps the numbers: the interpreter gives the same outputs after each pass.

use bertc_interp::{self as interp, Value};
use bertc_ir::Graph;
use bertc_passes::{canonical_pipeline, run_pass};
use std::path::Path;

fn model() -> Graph {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/models/bert-micro-random/model.onnx");
    bertc_import::load_model(&p).unwrap()
}

fn outputs(g: &Graph) -> Vec<Vec<f32>> {
    // two sequences, the second padded, with token types
    let ids = Value::i64(
        vec![2, 7],
        vec![2, 73, 1043, 9, 17, 88, 3, 2, 150, 3, 0, 0, 0, 0],
    );
    let mask = Value::i64(vec![2, 7], vec![1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0]);
    let types = Value::i64(vec![2, 7], vec![0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0]);
    let out = interp::run(
        g,
        &[
            ("input_ids", ids),
            ("attention_mask", mask),
            ("token_type_ids", types),
        ],
    )
    .unwrap();
    out.into_iter()
        .map(|(_, v)| v.as_f32().unwrap().to_vec())
        .collect()
}

#[test]
fn each_pass_before_and_after() {
    let mut g = model();
    let reference = outputs(&g);
    insta::assert_snapshot!("00-imported", g.to_text());
    for (i, pass) in canonical_pipeline().iter().enumerate() {
        let report = run_pass(pass.as_ref(), &mut g).unwrap();
        let name = format!("{:02}-after-{}", i + 1, pass.name());
        insta::assert_snapshot!(name, format!("# {report}\n{}", g.to_text()));
        let now = outputs(&g);
        for (a, b) in now.iter().zip(&reference) {
            // rows of padded tokens are included: raising keeps them finite and close too
            let err = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(
                err < 1e-5,
                "pass {} changed the outputs by {err}",
                pass.name()
            );
        }
    }
}

#[test]
fn fusion_passes_before_and_after() {
    let mut g = model();
    bertc_passes::canonicalize(&mut g).unwrap();
    let reference = outputs(&g);
    insta::assert_snapshot!("fuse-00-raised", g.to_text());
    for (i, pass) in bertc_passes::optimize_pipeline().iter().enumerate() {
        let report = run_pass(pass.as_ref(), &mut g).unwrap();
        let name = format!("fuse-{:02}-after-{}", i + 1, pass.name());
        insta::assert_snapshot!(name, format!("# {report}\n{}", g.to_text()));
        for (a, b) in outputs(&g).iter().zip(&reference) {
            let err = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max);
            assert!(
                err < 1e-5,
                "pass {} changed the outputs by {err}",
                pass.name()
            );
        }
    }
    let counts = g.op_counts();
    // per layer: attention output + residual, FFN up + GELU, FFN down + residual; pooler + tanh
    assert!(
        counts
            .iter()
            .any(|(op, n)| *op == "fused_linear" && *n == 2 * 3 + 1),
        "{counts:?}"
    );
    assert!(!counts.iter().any(|(op, _)| *op == "gelu"), "{counts:?}");
    // every attention reads one fused q/k/v projection
    assert!(
        counts
            .iter()
            .any(|(op, n)| *op == "qkv_attention" && *n == 2),
        "{counts:?}"
    );
    assert!(
        !counts.iter().any(|(op, _)| *op == "attention"),
        "{counts:?}"
    );
}
