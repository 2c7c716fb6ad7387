//! Exports with the pooling and normalization in the graph (as sentence-transformers ONNX
//! files from third-party packages are: `scripts/pooled-onnx` builds them from the shared
//! models with the `onnx` package): mean pooling by ReduceSum over a Clip-ped count with
//! ReduceL2 normalization, max pooling over a masked state, the first token with
//! LpNormalization. They raise to `mean_pool`, `max_pool`, the CLS gather and `l2_normalize`,
//! and the compiled executable and the interpreter give ONNX Runtime's `sentence_embedding` on
//! the same file, on a batch with padding and a mask hole.

mod common;

use common::*;
use std::process::Command;

#[test]
fn pooling_in_the_graph_matches_onnx_runtime() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for model in ["bert-micro-random", "all-MiniLM-L6-v2"] {
        let dir = scratch(&format!("pooled-{model}"));
        let o = Command::new(repo.join("scripts/pooled-onnx"))
            .arg(model_dir(model).join("model.onnx"))
            .arg(&dir)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
                .unwrap();
        std::fs::write(dir.join("mask.txt"), lines(&r["attention_mask"])).unwrap();
        let ids = lines(&r["input_ids"]);
        for (kind, ops) in [
            ("mean-l2", ["mean_pool(", "l2_normalize("]),
            ("max", ["max_pool(", "max_pool("]),
            ("cls-lp", ["axis=1", "l2_normalize("]),
        ] {
            let file = dir.join(format!("{kind}.onnx"));
            let ir = bertc(&["ir", file.to_str().unwrap()]);
            let text = String::from_utf8_lossy(&ir.stdout);
            for op in ops {
                assert!(text.contains(op), "{model} {kind}: no {op} in\n{text}");
            }
            let want = floats(&r[kind]["sentence_embedding"]);
            let mask = dir.join("mask.txt");
            let mask = mask.to_str().unwrap();
            // the executable: its default output is the graph's sentence_embedding
            let exe = dir.join(format!("{kind}-exe"));
            compile(&file, &exe, &[]);
            let got = output_floats(&run_with(
                Command::new(&exe).args(["--input", "ids", "--batch", "3", "--mask", mask]),
                &ids,
            ));
            let err = max_err(&got, &want, None, want.len() / 3);
            eprintln!("{model} {kind}: compiled, max abs error {err:.2e} against ONNX Runtime");
            assert!(err <= 1e-4, "{model} {kind}: {err}");
            // the interpreter
            let got = output_floats(&run_with(
                Command::new(env!("CARGO_BIN_EXE_bertc")).args([
                    "run",
                    file.to_str().unwrap(),
                    "--output",
                    "embedding",
                    "--mask",
                    mask,
                ]),
                &ids,
            ));
            let err = max_err(&got, &want, None, want.len() / 3);
            assert!(err <= 1e-4, "{model} {kind} interpreter: {err}");
        }
    }
}
