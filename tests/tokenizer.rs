//! The tokenizer compiled into an artifact against the Hugging Face `tokenizers` crate on the
//! same `tokenizer.json`: every shared model (WordPiece and byte-level BPE), the STS Benchmark's
//! sentences (single and as pairs) and a stress set of scripts, marks, control characters and
//! long lines; truncation to the artifact's length (pairs longest first); and the errors of the
//! executable's text input.

mod common;

use common::*;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// The artifact's maximum length in these tests: short enough that STS-B pairs and the long
/// stress lines are truncated.
const MAX_SEQ: usize = 48;

fn sts_lines() -> Vec<Vec<u8>> {
    let mut lines = Vec::new();
    for f in ["sts-train.csv", "sts-dev.csv", "sts-test.csv"] {
        let text = std::fs::read_to_string(shared().join("data/sts-b").join(f)).expect("STS-B");
        for row in text.lines() {
            let cols: Vec<&str> = row.split('\t').collect();
            if cols.len() >= 7 {
                lines.push(cols[5].as_bytes().to_vec());
                lines.push(cols[6].as_bytes().to_vec());
                lines.push(format!("{}\t{}", cols[5], cols[6]).into_bytes());
            }
        }
    }
    lines
}

fn stress_lines() -> Vec<Vec<u8>> {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tokenizer-stress.txt");
    let text = std::fs::read_to_string(file).unwrap();
    let mut lines: Vec<Vec<u8>> = text.lines().map(|l| l.as_bytes().to_vec()).collect();
    // 10k-character lines of several kinds
    let words = "The quick brown fox jumps over the lazy dog's back, naïvely. ".repeat(170);
    for long in [
        "a".repeat(10_000),
        words[..10_000].to_string(),
        "中".repeat(10_000),
        format!("a{}", "\u{301}\u{323}\u{302}".repeat(3_400)),
        "😀".repeat(10_000),
        "1234567890".repeat(1_000),
        "! ".repeat(5_000),
        format!("{}\t{}", "left ".repeat(1_000), "right side ".repeat(900)),
        format!("{}\t{}", "short", "long ".repeat(2_000)),
    ] {
        lines.push(long.into_bytes());
    }
    lines
}

/// The reference: `tokenizers` with the artifact's truncation and no padding.
fn reference(tokenizer: &Path) -> tokenizers::Tokenizer {
    let mut t = tokenizers::Tokenizer::from_file(tokenizer).unwrap();
    t.with_padding(None);
    t.with_truncation(Some(tokenizers::TruncationParams {
        max_length: MAX_SEQ,
        strategy: tokenizers::TruncationStrategy::LongestFirst,
        ..Default::default()
    }))
    .unwrap();
    t
}

fn run_exe(exe: &Path, args: &[&str], stdin: &[u8]) -> std::process::Output {
    let mut child = Command::new(exe)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

fn compile_exe(model: &str, dir: &Path) -> std::path::PathBuf {
    let exe = dir.join(model);
    embedder(&model_dir(model).join("model.onnx"), &exe, &[]);
    exe
}

/// `bertc compile MODEL -o EXE --output mean --max-seq MAX_SEQ EXTRA`: an embedder that reads
/// text, for the tokenizer comparisons.
fn embedder(model: &Path, exe: &Path, extra: &[&str]) {
    let max = MAX_SEQ.to_string();
    compile(
        model,
        exe,
        &[&["--output", "mean", "--max-seq", &max][..], extra].concat(),
    );
}

/// The STS-B and stress lines through `exe --tokenize` give `tok`'s ids and type ids.
fn assert_ids_of(model: &str, exe: &Path, tok: &tokenizers::Tokenizer) {
    let mut lines = sts_lines();
    lines.extend(stress_lines());
    let input: Vec<u8> = lines.join(&b'\n');
    {
        let out = run_exe(exe, &["--tokenize", "--format", "json"], &input);
        assert!(
            out.status.success(),
            "{model}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got: Vec<serde_json::Value> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(got.len(), lines.len(), "{model}: one line out per line in");
        let mut checked = 0;
        for (line, g) in lines.iter().zip(&got) {
            let text = std::str::from_utf8(line).unwrap();
            let enc = match text.split_once('\t') {
                Some((a, b)) => tok.encode((a, b), true),
                None => tok.encode(text, true),
            }
            .unwrap();
            let ids: Vec<u64> = enc.get_ids().iter().map(|&i| i as u64).collect();
            let types: Vec<u64> = enc.get_type_ids().iter().map(|&i| i as u64).collect();
            let as_vec = |k: &str| -> Vec<u64> {
                g[k].as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap())
                    .collect()
            };
            let short: String = text.chars().take(80).collect();
            assert_eq!(as_vec("input_ids"), ids, "{model}: ids of {short:?}");
            assert_eq!(
                as_vec("token_type_ids"),
                types,
                "{model}: type ids of {short:?}"
            );
            checked += 1;
        }
        eprintln!("{model}: {checked} lines tokenized as tokenizers does");
    }
}

#[test]
fn token_ids_are_those_of_hugging_face_tokenizers() {
    let dir = scratch("tokenizer");
    let mut models = RANDOM_MODELS.to_vec();
    models.push("all-MiniLM-L6-v2");
    for model in models {
        let exe = compile_exe(model, &dir);
        let tok = reference(&model_dir(model).join("tokenizer.json"));
        assert_ids_of(model, &exe, &tok);
    }
}

/// SentencePiece's Unigram as XLM-RoBERTa has it (`tests/data/unigram/tokenizer.json`, made by
/// `scripts/unigram-tokenizer`: sentencepiece's nmt_nfkc charsmap, Strip, Replace, Metaspace,
/// a 2000-piece Unigram model) compiled into an artifact of a model with enough embedding rows:
/// the same ids as `tokenizers` on the STS-B and stress lines (graphemes, emoji sequences,
/// Hangul jamo, conjuncts, compatibility forms).
#[test]
fn unigram_token_ids_are_those_of_hugging_face_tokenizers() {
    let dir = scratch("tokenizer-unigram");
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/unigram/tokenizer.json");
    let exe = dir.join("unigram");
    let m = model_dir("bert-micro-random").join("model.onnx");
    embedder(&m, &exe, &["--tokenizer", file.to_str().unwrap()]);
    assert_ids_of("unigram", &exe, &reference(&file));
}

/// A folder with XLM-RoBERTa's `sentencepiece.bpe.model` and no `tokenizer.json`: the artifact
/// tokenizes as the `tokenizer.json` transformers' AutoTokenizer made of the same model file
/// (`scripts/unigram-tokenizer`), on the STS-B and stress lines.
#[test]
fn sentencepiece_folders_tokenize_as_transformers_converts_them() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/unigram");
    let dir = scratch("tokenizer-spm-folder");
    std::fs::copy(
        model_dir("bert-micro-random").join("model.onnx"),
        dir.join("model.onnx"),
    )
    .unwrap();
    let spm = "sentencepiece.bpe.model";
    std::fs::copy(data.join(spm), dir.join(spm)).unwrap();
    let exe = dir.join("embedder");
    embedder(&dir.join("model.onnx"), &exe, &[]);
    assert_ids_of(
        "sentencepiece folder",
        &exe,
        &reference(&data.join("tokenizer.json")),
    );
}

/// SentencePiece folders bertc does not convert fail at compile time with one line naming the
/// file: a model file that is not a ModelProto, a SentencePiece model of another name.
#[test]
fn sentencepiece_folders_it_cannot_convert_fail_at_compile_time() {
    for (file, contents, says) in [
        (
            "sentencepiece.bpe.model",
            &b"\xff\xff not protobuf"[..],
            "not a SentencePiece model",
        ),
        ("spiece.model", &b"\x0a\x00"[..], "is not supported"),
    ] {
        let dir = scratch(&format!("tokenizer-spm-bad-{file}"));
        std::fs::copy(
            model_dir("bert-micro-random").join("model.onnx"),
            dir.join("model.onnx"),
        )
        .unwrap();
        std::fs::write(dir.join(file), contents).unwrap();
        let out = bertc(&[
            "compile",
            dir.join("model.onnx").to_str().unwrap(),
            "-o",
            dir.join("x").to_str().unwrap(),
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{file}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(file) && err.contains(says), "{err}");
    }
}

/// A folder with vocabulary files but no `tokenizer.json` (as Google's BERT checkpoints and
/// old saves have it): the artifact tokenizes as the `tokenizer.json` transformers makes of the
/// same files. References: for the uncased BERT folders the shared `tokenizer.json` (written
/// by transformers for that vocabulary); for a cased BERT folder (`do_lower_case: false`) and
/// RoBERTa's `vocab.json` + `merges.txt`, what `scripts/hf-fast-tokenizer` (transformers
/// 4.57's `AutoTokenizer`) wrote (`tests/data/vocab-folders/`). `bertc run --text` reads the
/// same folders.
#[test]
fn vocab_folders_tokenize_as_transformers_converts_them() {
    let refs = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/vocab-folders");
    let cases = [
        ("bert-micro-random", false, None),
        ("all-MiniLM-L6-v2", false, None),
        (
            "bert-micro-random",
            true,
            Some(refs.join("bert-micro-random-cased.tokenizer.json")),
        ),
        (
            "roberta-micro-random",
            false,
            Some(refs.join("roberta-micro-random.tokenizer.json")),
        ),
    ];
    for (model, cased, reference_file) in cases {
        let label = format!("{model}{}", if cased { " (cased)" } else { "" });
        let dir = scratch(&format!("vocab-{model}-{cased}"));
        for f in [
            "model.onnx",
            "vocab.txt",
            "vocab.json",
            "merges.txt",
            "special_tokens_map.json",
        ] {
            if model_dir(model).join(f).is_file() {
                std::fs::copy(model_dir(model).join(f), dir.join(f)).unwrap();
            }
        }
        let config =
            std::fs::read_to_string(model_dir(model).join("tokenizer_config.json")).unwrap();
        let mut c: serde_json::Value = serde_json::from_str(&config).unwrap();
        if cased {
            c["do_lower_case"] = false.into();
        }
        std::fs::write(dir.join("tokenizer_config.json"), c.to_string()).unwrap();
        let want = reference_file.unwrap_or_else(|| model_dir(model).join("tokenizer.json"));
        let exe = dir.join("embedder");
        embedder(&dir.join("model.onnx"), &exe, &[]);
        assert_ids_of(&label, &exe, &reference(&want));
        let o = bertc(&[
            "run",
            dir.join("model.onnx").to_str().unwrap(),
            "--text",
            "Café au lait <mask>",
            "--output",
            "mean",
        ]);
        assert!(
            o.status.success(),
            "{label}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

/// `--no-truncate` makes a long text an error; bad lines are one-line errors naming the line,
/// with nothing printed and exit status 1.
#[test]
fn text_input_errors_name_the_line() {
    let dir = scratch("tokenizer-errors");
    let exe = compile_exe("bert-micro-random", &dir);
    let long = "word ".repeat(100);
    let cases: Vec<(Vec<u8>, Vec<&str>, &str)> = vec![
        (
            b"fine\n\xff\xfe bad\n".to_vec(),
            vec![],
            "input line 2: the text is not valid UTF-8",
        ),
        (
            b"overlong \xc0\x80\n".to_vec(),
            vec![],
            "input line 1: the text is not valid UTF-8",
        ),
        (
            b"ok\nsurrogate \xed\xa0\x80\n".to_vec(),
            vec![],
            "input line 2: the text is not valid UTF-8",
        ),
        (
            b"cut \xe2\x82".to_vec(),
            vec![],
            "input line 1: the text is not valid UTF-8",
        ),
        (
            b"a\tb\tc\n".to_vec(),
            vec![],
            "input line 1: more than one tab",
        ),
        (
            format!("short\n{long}\n").into_bytes(),
            vec!["--no-truncate"],
            "input line 2: more than the model's maximum of 48 tokens",
        ),
        (
            [b"x\n".to_vec(), vec![b'a'; (1 << 20) + 1]].concat(),
            vec![],
            "standard input line 2: longer than the limit of 1048576 bytes",
        ),
    ];
    for (input, args, want) in cases {
        let out = run_exe(&exe, &args, &input);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{want}: {err}");
        assert!(out.stdout.is_empty(), "{want}: printed {:?}", out.stdout);
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.contains(want), "expected {want:?} in {err:?}");
    }
    // truncated by default: the long line runs
    let out = run_exe(&exe, &[], format!("{long}\n").as_bytes());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A `tokenizer.json` of a kind the artifact tokenizer does not implement fails at compile
/// time with one line naming the file and the kind.
#[test]
fn unsupported_tokenizer_kinds_fail_at_compile_time() {
    let dir = scratch("tokenizer-kinds");
    let src =
        std::fs::read_to_string(model_dir("bert-micro-random").join("tokenizer.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&src).unwrap();
    v["model"]["type"] = "WordLevel".into();
    let file = dir.join("tokenizer.json");
    std::fs::write(&file, v.to_string()).unwrap();
    let m = model_dir("bert-micro-random").join("model.onnx");
    let out = bertc(&[
        "compile",
        m.to_str().unwrap(),
        "-o",
        dir.join("x").to_str().unwrap(),
        "--tokenizer",
        file.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains(file.to_str().unwrap()) && err.contains("model WordLevel is not supported"),
        "{err}"
    );
}

/// A cross-encoder's pair line: the same logits as its token ids and type ids (from
/// `tokenizers`) through `--input ids`, and with `--format json` the `id2label` classes with
/// softmax scores, best first.
#[test]
fn classifier_takes_pairs_and_prints_labels() {
    let dir = scratch("tokenizer-labels");
    let exe = dir.join("cls");
    let model = model_dir("bert-small-random");
    compile(&model.join("model.onnx"), &exe, &["--output", "logits"]);
    let (a, b) = ("A man is playing a guitar.", "Someone plays music.");
    let out = run_exe(
        &exe,
        &["--format", "json"],
        format!("{a}\t{b}\n").as_bytes(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let logits: Vec<f64> = j["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let labels = j["labels"].as_array().unwrap();
    assert_eq!(labels.len(), logits.len());
    let max = logits.iter().cloned().fold(f64::MIN, f64::max);
    let z: f64 = logits.iter().map(|l| (l - max).exp()).sum();
    let mut last = 1.0;
    for l in labels {
        let name = l["label"].as_str().unwrap();
        let i: usize = name.strip_prefix("LABEL_").unwrap().parse().unwrap();
        let score = l["score"].as_f64().unwrap();
        assert!(
            (score - (logits[i] - max).exp() / z).abs() < 1e-6,
            "{name}: {score}"
        );
        assert!(score <= last, "best first");
        last = score;
    }
    // the same pair as ids and type ids
    let tok = tokenizers::Tokenizer::from_file(model.join("tokenizer.json")).unwrap();
    let enc = tok.encode((a, b), true).unwrap();
    let join = |v: &[u32]| {
        v.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    std::fs::write(dir.join("types.txt"), join(enc.get_type_ids()) + "\n").unwrap();
    assert!(enc.get_type_ids().contains(&1));
    let t = dir.join("types.txt");
    let ids = run_exe(
        &exe,
        &["--input", "ids", "--type-ids", t.to_str().unwrap()],
        (join(enc.get_ids()) + "\n").as_bytes(),
    );
    assert!(
        ids.status.success(),
        "{}",
        String::from_utf8_lossy(&ids.stderr)
    );
    let plain: Vec<f64> = String::from_utf8(ids.stdout)
        .unwrap()
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(plain, logits);
}

/// The tokenizer adds at most its vocabulary's text plus 1 MB to an artifact.
#[test]
fn the_tokenizer_adds_at_most_the_vocabulary_and_a_megabyte() {
    let dir = scratch("tokenizer-size");
    let unigram = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/unigram/tokenizer.json");
    for (model, tokenizer) in [
        (
            "all-MiniLM-L6-v2",
            model_dir("all-MiniLM-L6-v2").join("tokenizer.json"),
        ),
        (
            "roberta-micro-random",
            model_dir("roberta-micro-random").join("tokenizer.json"),
        ),
        ("bert-micro-random", unigram),
    ] {
        let m = model_dir(model).join("model.onnx");
        let (with, without) = (
            dir.join(format!("{model}-t")),
            dir.join(format!("{model}-ids")),
        );
        let tok_arg = tokenizer.to_str().unwrap();
        compile(&m, &with, &["--output", "mean", "--tokenizer", tok_arg]);
        compile(&m, &without, &["--output", "mean", "--tokenizer", "none"]);
        let size = |p: &Path| std::fs::metadata(p).unwrap().len();
        let added = size(&with) - size(&without);
        let tok: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&tokenizer).unwrap()).unwrap();
        // a map of tokens to ids, or Unigram's list of [piece, score]
        let v = &tok["model"]["vocab"];
        let vocab: u64 = match v.as_object() {
            Some(o) => o.keys().map(|k| k.len() as u64 + 1).sum(),
            None => v
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p[0].as_str().unwrap().len() as u64 + 1)
                .sum(),
        };
        eprintln!(
            "{}: the tokenizer adds {added} bytes (vocabulary {vocab} bytes)",
            tokenizer.display()
        );
        assert!(added <= vocab + 1_000_000, "{model}: {added} bytes");
    }
}
