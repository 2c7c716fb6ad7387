//! Every shared model, through both importers, raised and run by the interpreter, against
//! the PyTorch references in `reference.json` (max abs error 1e-4 on valid tokens).

mod common;

use bertc_passes::OutputKind;
use common::*;
use serde_json::Value as Json;
use std::path::Path;

const TOL: f32 = 1e-4;

fn check_random(name: &str, path: &Path) {
    let g = load_raised(path);
    let r = reference(name);
    let mut checked = 0;
    for case in r["cases"].as_array().unwrap() {
        let (ids, mask) = (&case["input_ids"], &case["attention_mask"]);
        let types = case.get("token_type_ids");
        let (_, mv) = ints2(mask);
        let lhs = floats(&case["last_hidden_state"]);
        let width = lhs.len() / mv.len();
        let mut expect: Vec<(OutputKind, Vec<f32>, bool)> = vec![
            (OutputKind::LastHiddenState, lhs.clone(), true),
            (OutputKind::Mean, floats(&case["mean_pooled"]), false),
            // the CLS row of the reference's last hidden state
            (
                OutputKind::Cls,
                lhs.chunks(width * (mv.len() / case["input_ids"].as_array().unwrap().len()))
                    .flat_map(|seq| seq[..width].to_vec())
                    .collect(),
                false,
            ),
        ];
        if let Some(p) = case.get("pooler_output") {
            expect.push((OutputKind::Pooler, floats(p), false));
        }
        if let Some(l) = case.get("logits") {
            expect.push((OutputKind::Logits, floats(l), false));
        }
        for (kind, want, per_token) in expect {
            let got = run_kind(&g, kind, ids, mask, types);
            let w = if per_token { width } else { want.len() };
            let err = max_err(&got, &want, per_token.then_some(&mv[..]), w);
            eprintln!(
                "{name} {} {} {kind}: max abs error {err:.2e}",
                path.display(),
                case["name"]
            );
            assert!(
                err <= TOL,
                "{name} {}: {kind} differs by {err}",
                case["name"]
            );
            checked += 1;
        }
    }
    assert!(checked >= 9, "too few comparisons ({checked})");
}

macro_rules! random_model_tests {
    ($($test_onnx:ident, $test_hf:ident: $name:literal;)*) => {$(
        #[test]
        fn $test_onnx() {
            check_random($name, &model_dir($name).join("model.onnx"));
        }
        #[test]
        fn $test_hf() {
            check_random($name, &model_dir($name));
        }
    )*};
}

random_model_tests! {
    bert_micro_onnx, bert_micro_hf: "bert-micro-random";
    bert_small_onnx, bert_small_hf: "bert-small-random";
    roberta_micro_onnx, roberta_micro_hf: "roberta-micro-random";
    distilbert_micro_onnx, distilbert_micro_hf: "distilbert-micro-random";
    electra_micro_onnx, electra_micro_hf: "electra-micro-random";
}

fn check_minilm(path: &Path) {
    let g = load_raised(path);
    let r = reference("all-MiniLM-L6-v2");
    let b = &r["batched"];
    let (ids, mask, types) = (&b["input_ids"], &b["attention_mask"], &b["token_type_ids"]);
    let (_, mv) = ints2(mask);
    let got = run_kind(&g, OutputKind::LastHiddenState, ids, mask, Some(types));
    let err = max_err(&got, &floats(&b["last_hidden_state"]), Some(&mv), 384);
    eprintln!(
        "minilm {} batched last_hidden_state: {err:.2e}",
        path.display()
    );
    assert!(err <= TOL);
    let got = run_kind(&g, OutputKind::Mean, ids, mask, Some(types));
    let err = max_err(&got, &floats(&b["mean_pooled"]), None, 384);
    eprintln!("minilm {} batched mean: {err:.2e}", path.display());
    assert!(err <= TOL);
    for ind in r["individual"].as_array().unwrap() {
        let wrap = |k: &str| Json::Array(vec![ind[k].clone()]);
        let got = run_kind(
            &g,
            OutputKind::Mean,
            &wrap("input_ids"),
            &wrap("attention_mask"),
            Some(&wrap("token_type_ids")),
        );
        let err = max_err(&got, &floats(&ind["mean_pooled"]), None, 384);
        eprintln!(
            "minilm {} {:?} mean: {err:.2e}",
            path.display(),
            ind["text"]
        );
        assert!(err <= TOL);
    }
}

#[test]
fn minilm_onnx() {
    check_minilm(&model_dir("all-MiniLM-L6-v2").join("model.onnx"));
}

#[test]
fn minilm_safetensors() {
    check_minilm(&minilm_hf_dir());
}

/// The interpreter runs the op soup as imported, before any pass.
#[test]
fn interpreter_runs_op_soup() {
    let name = "bert-small-random";
    let g = bertc_import::load_model(&model_dir(name).join("model.onnx")).unwrap();
    assert!(g.op_counts().iter().any(|(op, _)| *op == "softmax"));
    let r = reference(name);
    let case = &r["cases"][1];
    let got = run_kind(
        &g,
        OutputKind::Logits,
        &case["input_ids"],
        &case["attention_mask"],
        case.get("token_type_ids"),
    );
    let err = max_err(&got, &floats(&case["logits"]), None, 3);
    assert!(err <= TOL, "{err}");
}
