//! Programs that embed a compiled model: the C example (static library), the Python example
//! (ctypes on the shared library), the Rust example and `bertc-runtime` (dlopen), each against
//! the PyTorch references.

mod common;

use bertc_runtime::Artifact;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn single() -> (Vec<i64>, Vec<f32>, String) {
    let r = reference("bert-micro-random");
    let c = &r["cases"][0];
    let (_, ids) = ints2(&c["input_ids"]);
    (
        ids,
        floats(&c["mean_pooled"]),
        c["texts"][0].as_str().unwrap().to_string(),
    )
}

#[test]
fn c_program_with_the_static_library() {
    let out = scratch("c");
    let o = Command::new(root().join("examples/embed-c/build.sh"))
        .env("BERTC", env!("CARGO_BIN_EXE_bertc"))
        .env("OUT", &out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (_, want, text) = single();
    let o = Command::new(out.join("embed"))
        .args([&text, &text])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines: Vec<&[u8]> = o
        .stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(lines.len(), 2);
    for l in lines {
        let err = max_err(&parse_floats(l), &want, None, want.len());
        assert!(err <= TOL, "{err}");
    }
}

#[test]
fn python_with_ctypes() {
    let out = scratch("py");
    compile(
        &root().join("examples/bert-micro-random"),
        &out.join("encoder"),
        &["--emit", "sharedlib", "--output", "mean"],
    );
    let (ids, want, text) = single();
    let line = ids
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(" ");
    // text through the library's tokenizer, and ids
    for (input, extra) in [(&text, None), (&line, Some("--ids"))] {
        let o = run_with(
            Command::new("python3")
                .arg(root().join("examples/python/embed.py"))
                .arg(out.join("libencoder.so"))
                .arg("encoder")
                .args(extra),
            &format!("{input}\n{input}\n"),
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let out = String::from_utf8(o.stdout).unwrap();
        assert_eq!(out.lines().count(), 2);
        for l in out.lines() {
            let err = max_err(&parse_floats(l.as_bytes()), &want, None, want.len());
            assert!(err <= TOL, "{extra:?}: {err}");
        }
    }
}

#[test]
fn rust_example_through_the_runtime() {
    let out = scratch("rust");
    compile(
        &root().join("examples/bert-micro-random"),
        &out.join("encoder"),
        &["--emit", "sharedlib", "--output", "mean"],
    );
    // cargo test builds the package's examples into target/<profile>/examples
    let dir = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let exe = dir.join("examples/embed-rust");
    assert!(
        exe.exists(),
        "{} is not built (a plain `cargo test` builds the examples; a filtered run does not)",
        exe.display()
    );
    let (_, want, text) = single();
    let o = Command::new(exe)
        .arg(out.join("libencoder.so"))
        .arg("encoder")
        .arg(&text)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = max_err(&parse_floats(&o.stdout), &want, None, want.len());
    assert!(err <= TOL, "{err}");
}

#[test]
fn runtime_runs_a_padded_batch_and_reports_errors() {
    let out = scratch("runtime");
    let name = "bert-small-random";
    compile(
        &model_dir(name).join("model.onnx"),
        &out.join("cls3"),
        &["--emit", "sharedlib", "--output", "logits"],
    );
    let art = Arc::new(Artifact::open(&out.join("libcls3.so"), "cls3").unwrap());
    let mut m = art.model(1).unwrap();
    let r = reference(name);
    let c = &r["cases"][1];
    let (shape, ids) = ints2(&c["input_ids"]);
    let (_, mask) = ints2(&c["attention_mask"]);
    let i32s = |v: &[i64]| v.iter().map(|&x| x as i32).collect::<Vec<_>>();
    let got = m
        .run(&i32s(&ids), Some(&i32s(&mask)), None, shape[0], shape[1])
        .unwrap();
    let err = max_err(&got, &floats(&c["logits"]), None, 3);
    assert!(err <= TOL, "{err}");
    let e = m.run(&[2, 99999, 3], None, None, 1, 3).unwrap_err();
    assert_eq!(e.to_string(), "a token id is out of the vocabulary");
    let e = m.run(&[2, 5, 3], Some(&[1, 2, 1]), None, 1, 3).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("an attention mask value is not 0 or 1"),
        "{e}"
    );
    // pooled outputs read the first token: it must not be masked
    let e = m
        .run(&[0, 2, 5, 3], Some(&[0, 1, 1, 1]), None, 1, 4)
        .unwrap_err();
    assert!(e.to_string().contains("first token is masked"), "{e}");
    let long = vec![5; 257];
    let e = m.run(&long, None, None, 1, 257).unwrap_err();
    assert_eq!(
        e.to_string(),
        "the sequence is longer than the model's maximum"
    );
    let e = m.run(&[2, 5], None, None, 1, 3).unwrap_err();
    assert!(e.to_string().contains("ids has 2 values"), "{e}");
    let e = Artifact::open(&out.join("libcls3.so"), "other")
        .err()
        .unwrap();
    assert!(e.to_string().contains("no symbol 'other_create'"), "{e}");
}

/// Every shared model and output kind through `bertc-runtime` on a shared library.
#[test]
fn runtime_matches_the_references_for_every_model_and_kind() {
    let out = scratch("runtime-all");
    for name in RANDOM_MODELS {
        let r = reference(name);
        for kind in kinds(name) {
            let lib = out.join(format!("{name}-{kind}").replace('-', "_"));
            compile(
                &model_dir(name).join("model.onnx"),
                &lib,
                &["--emit", "sharedlib", "--output", kind],
            );
            let stem = lib.file_name().unwrap().to_str().unwrap().to_string();
            let art = Arc::new(Artifact::open(&out.join(format!("lib{stem}.so")), &stem).unwrap());
            let mut m = art.model(0).unwrap();
            for case in r["cases"].as_array().unwrap() {
                let (shape, ids) = ints2(&case["input_ids"]);
                let (_, mask) = ints2(&case["attention_mask"]);
                let i32s = |v: &[i64]| v.iter().map(|&x| x as i32).collect::<Vec<_>>();
                let types = case.get("token_type_ids").map(|t| i32s(&ints2(t).1));
                let types = types.filter(|_| {
                    r["inputs"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|i| i == "token_type_ids")
                });
                let got = m
                    .run(
                        &i32s(&ids),
                        Some(&i32s(&mask)),
                        types.as_deref(),
                        shape[0],
                        shape[1],
                    )
                    .unwrap();
                let (want, per_token, width) = expected(case, kind);
                let w = if per_token {
                    width
                } else {
                    want.len() / shape[0]
                };
                let err = max_err(&got, &want, per_token.then_some(&mask[..]), w);
                assert!(err <= TOL, "{name} {kind} {}: {err}", case["name"]);
            }
        }
    }
}

#[test]
fn flops_count_the_real_tokens_and_pairs() {
    let out = scratch("flops");
    let dir = model_dir("bert-micro-random");
    compile(
        &dir.join("model.onnx"),
        &out.join("fl"),
        &["--emit", "sharedlib"],
    );
    // the expected count from config.json: per layer and token the q, k, v, output, up and
    // down projections; per layer and (query, key) pair the scores and the weighted sum
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let (h, i, l) = (
        cfg["hidden_size"].as_f64().unwrap(),
        cfg["intermediate_size"].as_f64().unwrap(),
        cfg["num_hidden_layers"].as_f64().unwrap(),
    );
    let per_token = l * (2.0 * h * 4.0 * h + 2.0 * 2.0 * h * i);
    let per_pair = l * 2.0 * 2.0 * h;
    let lib = bertc_runtime::Library::open(&out.join("libfl.so")).unwrap();
    type FlopsFn = unsafe extern "C" fn(*const i32, i32, i32) -> f64;
    // SAFETY: NAME_flops has this signature (see the header).
    let flops = unsafe {
        std::mem::transmute::<*mut std::ffi::c_void, FlopsFn>(lib.symbol("fl_flops").unwrap())
    };
    // two sequences of 5 and 3 real tokens, padded to 6
    let mask = [1, 1, 1, 1, 1, 0, 1, 1, 1, 0, 0, 0];
    // SAFETY: the mask holds batch * seq values.
    let got = unsafe { flops(mask.as_ptr(), 2, 6) };
    let want = per_token * 8.0 + per_pair * (25.0 + 9.0);
    assert_eq!(got, want);
    let all = unsafe { flops(std::ptr::null(), 2, 6) };
    assert_eq!(all, per_token * 12.0 + per_pair * 72.0);
}

/// The real all-MiniLM-L6-v2 as a sentence-transformers folder compiles to what
/// `SentenceTransformer.encode()` returns (mean pooling, then `2_Normalize`): text in through
/// the executable, C (`NAME_run_text`), Rust (`bertc-runtime`) and Python (ctypes), against
/// the reference's `sentence_embedding`.
#[test]
fn minilm_folder_embeds_text_as_sentence_transformers() {
    let out = scratch("st");
    let folder = minilm_hf_dir();
    let r = reference("all-MiniLM-L6-v2");
    let cases = r["individual"].as_array().unwrap();
    let texts: Vec<String> = cases
        .iter()
        .map(|c| c["text"].as_str().unwrap().to_string())
        .collect();
    let want: Vec<Vec<f32>> = cases
        .iter()
        .map(|c| floats(&c["sentence_embedding"]))
        .collect();
    let check = |what: &str, got: &[Vec<f32>]| {
        assert_eq!(got.len(), want.len(), "{what}");
        for (g, w) in got.iter().zip(&want) {
            let err = max_err(g, w, None, w.len());
            assert!(err <= 1e-4, "{what}: max abs error {err:e}");
        }
    };
    let lines = |b: &[u8]| -> Vec<Vec<f32>> {
        String::from_utf8_lossy(b)
            .lines()
            .map(|l| parse_floats(l.as_bytes()))
            .collect()
    };
    // the executable, no --output: the folder's own pipeline
    let exe = out.join("minilm");
    compile(&folder, &exe, &[]);
    let o = run_with(&mut Command::new(&exe), &(texts.join("\n") + "\n"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    check("executable", &lines(&o.stdout));
    // C, through the example program on a static library
    compile(&folder, &out.join("encoder"), &["--emit", "staticlib"]);
    let cexe = out.join("embed");
    let o = Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&cexe)
        .arg(root().join("examples/embed-c/main.c"))
        .arg(format!("-I{}", out.display()))
        .arg(out.join("libencoder.a"))
        .args(["-lpthread", "-lm"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = Command::new(&cexe).args(&texts).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    check("C run_text", &lines(&o.stdout));
    // Rust, one batch of all three
    compile(&folder, &out.join("st"), &["--emit", "sharedlib"]);
    let art = Arc::new(Artifact::open(&out.join("libst.so"), "st").unwrap());
    let mut m = art.model(0).unwrap();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let (got, tokens) = m.run_text(&refs, None).unwrap();
    let ids = |c: &serde_json::Value| -> Vec<i64> {
        c["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect()
    };
    let counts: Vec<usize> = cases.iter().map(|c| ids(c).len()).collect();
    assert_eq!(tokens, counts);
    check(
        "runtime",
        &got.chunks(384).map(<[f32]>::to_vec).collect::<Vec<_>>(),
    );
    let e = art.tokenize("Hello world!", None, true).unwrap();
    assert_eq!(e.ids, ids(&cases[0]));
    // Python
    let o = run_with(
        Command::new("python3")
            .arg(root().join("examples/python/embed.py"))
            .arg(out.join("libst.so"))
            .arg("st"),
        &(texts.join("\n") + "\n"),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    check("python", &lines(&o.stdout));
}
