//! sentence-transformers folders with `Dense` modules after the pooling (Tanh, Identity
//! without bias then ReLU, GELU; with and without `Normalize`; mean, CLS and max pooling) and
//! with the other pooling modes (last token, mean over the square root of the length,
//! position-weighted mean) and several concatenated (named in a list, or as the flags of
//! sentence-transformers before 5, concatenated in their legacy order), as
//! sentence-transformers 5 saves them (`pooling_mode` named, `2_Dense/model.safetensors`):
//! the compiled executable, fed text, and `bertc run --text` give `SentenceTransformer.encode()`
//! within 1e-4. `scripts/st-pipelines` made the folders from the shared BERT fixture; the
//! committed part (`tests/data/st-pipelines/`) is what differs from the shared model: the
//! modules' files and the reference, so a folder here is the shared model's files plus those.

mod common;

use common::*;
use serde_json::Value as Json;
use std::path::{Path, PathBuf};
use std::process::Command;

const VARIANTS: [&str; 9] = [
    "mean-dense-tanh-normalize",
    "cls-dense-identity-relu",
    "max-dense-gelu",
    "lasttoken",
    "mean-sqrt-len",
    "weightedmean-normalize",
    "cls-max-mean-dense",
    "mean-lasttoken-normalize",
    "legacy-mean-cls",
];

fn committed(variant: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/st-pipelines")
        .join(variant)
}

/// Copies the files of `from` (recursively) into `to`.
fn copy_tree(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&dst).unwrap();
            copy_tree(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

#[test]
fn dense_modules_compile_to_what_sentence_transformers_encodes() {
    for variant in VARIANTS {
        let dir = scratch(&format!("st-{variant}"));
        for f in ["config.json", "model.safetensors", "tokenizer.json"] {
            std::fs::copy(model_dir("bert-micro-random").join(f), dir.join(f)).unwrap();
        }
        copy_tree(&committed(variant), &dir);
        let r: Json =
            serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
                .unwrap();
        let texts: Vec<&str> = r["texts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        let want = floats(&r["embedding"]);
        let width = want.len() / texts.len();
        let exe = dir.join("embedder");
        compile(&dir, &exe, &[]);
        let got = output_floats(&run_with(
            &mut Command::new(&exe),
            &(texts.join("\n") + "\n"),
        ));
        let err = max_err(&got, &want, None, width);
        eprintln!("{variant}: compiled, max abs error {err:.2e} against encode()");
        assert!(err <= 1e-4, "{variant}: compiled, error {err}");
        let mut run = Command::new(env!("CARGO_BIN_EXE_bertc"));
        run.arg("run").arg(&*dir);
        for t in &texts {
            run.args(["--text", t]);
        }
        let got = output_floats(&run_with(&mut run, ""));
        let err = max_err(&got, &want, None, width);
        eprintln!("{variant}: interpreter, max abs error {err:.2e}");
        assert!(err <= 1e-4, "{variant}: interpreter, error {err}");
        // padding-free execution with holes in the mask: the positions a weighted mean weighs
        // by and the last token are the padded batch's, as interpreted
        let ids = "2 73 1043 9 17 88 3\n2 150 41 3 0 0 0\n2 5 6 7 8 9 3\n";
        let mask = dir.join("mask.txt");
        std::fs::write(&mask, "1 1 0 1 1 0 1\n1 1 0 1 0 0 0\n1 1 1 1 1 1 1\n").unwrap();
        let exe_out = output_floats(&run_with(
            Command::new(&exe)
                .args(["--input", "ids", "--batch", "3", "--mask"])
                .arg(&mask),
            ids,
        ));
        let interp = output_floats(&run_with(
            Command::new(env!("CARGO_BIN_EXE_bertc"))
                .arg("run")
                .arg(&*dir)
                .arg("--mask")
                .arg(&mask),
            ids,
        ));
        let err = max_err(&exe_out, &interp, None, width);
        eprintln!("{variant}: holes, compiled against the interpreter {err:.2e}");
        assert!(err <= 1e-5, "{variant}: holes, error {err}");
        // a pooled output needs each sequence's first token: the error names the line, not
        // the first line of its batch
        std::fs::write(&mask, "1 1 0 1 1 0 1\n0 1 1 1 0 0 0\n1 1 1 1 1 1 1\n").unwrap();
        let o = run_with(
            Command::new(&exe)
                .args(["--input", "ids", "--batch", "3", "--mask"])
                .arg(&mask),
            ids,
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && o.stdout.is_empty() && err.starts_with("error: input line 2:"),
            "{variant}: {err}"
        );
    }
}

#[test]
fn unsupported_dense_modules_are_one_line_errors() {
    let dir = scratch("st-dense-errors");
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(model_dir("bert-micro-random").join(f), dir.join(f)).unwrap();
    }
    copy_tree(&committed("max-dense-gelu"), &dir);
    let dense = dir.join("2_Dense/config.json");
    let good = std::fs::read_to_string(&dense).unwrap();
    let exe = dir.join("embedder");
    for what in ["activation_function", "linear.weight", "pytorch_model.bin"] {
        match what {
            "activation_function" => std::fs::write(&dense, good.replace("GELU", "SiLU")).unwrap(),
            "linear.weight" => std::fs::write(
                &dense,
                good.replace("\"out_features\": 16", "\"out_features\": 17"),
            )
            .unwrap(),
            _ => {
                std::fs::write(&dense, &good).unwrap();
                std::fs::rename(
                    dir.join("2_Dense/model.safetensors"),
                    dir.join("2_Dense/pytorch_model.bin"),
                )
                .unwrap();
            }
        }
        let o = bertc(&[
            "compile",
            dir.to_str().unwrap(),
            "-o",
            exe.to_str().unwrap(),
            "-q",
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && !exe.exists(), "{what}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{what}: {err}");
        assert!(
            err.contains(what) && err.contains("2_Dense"),
            "{what}: {err}"
        );
    }
}
