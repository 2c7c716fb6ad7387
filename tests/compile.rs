//! `bertc compile`: executables for every shared model and output kind against the PyTorch
//! references, byte-identical artifacts, libc-only dependencies, and the error cases.

mod common;

use common::*;
use std::process::Command;

#[test]
fn executables_match_the_references() {
    let dir = scratch("exe");
    for name in RANDOM_MODELS {
        for (fmt, path) in [
            ("onnx", model_dir(name).join("model.onnx")),
            ("hf", model_dir(name)),
        ] {
            for kind in kinds(name) {
                let exe = dir.join(format!("{name}-{fmt}-{kind}"));
                compile(&path, &exe, &["--output", kind]);
                let err = check_exe(&[exe.to_str().unwrap().to_string()], name, kind, &dir);
                eprintln!("{name} {fmt} {kind}: max abs error {err:.2e}");
            }
        }
    }
}

/// Attention in blocks of keys (the online softmax, flash attention's schedule): with caches
/// this small a block is 16 keys, so the references' 128- and 256-token sequences run through
/// 8 to 16 blocks, padded batches and pairs through several. Against the PyTorch references,
/// and the same bits for every thread count.
#[test]
fn attention_in_key_blocks_matches_the_references() {
    let dir = scratch("key-blocks");
    let tiny = ["--caches", "1K,16K,1M"];
    for name in RANDOM_MODELS {
        let model = model_dir(name).join("model.onnx");
        let o = bertc(
            &[
                &[
                    "ir",
                    model.to_str().unwrap(),
                    "--output",
                    "last_hidden_state",
                ][..],
                &["--lowered"],
                &tiny[..],
            ]
            .concat(),
        );
        let text = String::from_utf8_lossy(&o.stdout);
        if !text.contains("tiles of 48 queries") {
            // no GEMM attention on this machine (the portable kernel is row by row)
            eprintln!("{name}: skipped, attention is portable here");
            continue;
        }
        assert!(text.contains("keys in blocks of 16"), "{name}: {text}");
        let kind = "last_hidden_state";
        let exe = dir.join(format!("{name}-blocks"));
        compile(&model, &exe, &[&["--output", kind][..], &tiny[..]].concat());
        let err = check_exe(&[exe.to_str().unwrap().to_string()], name, kind, &dir);
        eprintln!("{name} in blocks of 16 keys: max abs error {err:.2e}");
    }
    let exe = dir.join("small-threads");
    compile(
        &model_dir("bert-small-random").join("model.onnx"),
        &exe,
        &tiny,
    );
    let outputs = outputs_by_thread_count(&exe, &dir);
    for o in &outputs[1..] {
        assert!(o == &outputs[0], "outputs differ between thread counts");
    }
}

/// A batch of sequences of `seq` tokens of which the first `lens[i]` are real, but for a hole
/// of four tokens in sequence `hole`'s mask: the case and each sequence's real tokens.
fn batch_case(lens: &[usize], seq: usize, hole: usize) -> (serde_json::Value, Vec<usize>) {
    let ids: Vec<Vec<usize>> = (0..lens.len())
        .map(|i| (0..seq).map(|t| (i * 131 + t * 17) % 1900 + 100).collect())
        .collect();
    let mask: Vec<Vec<u8>> = lens
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            (0..seq)
                .map(|t| u8::from(t < len && !(i == hole && (10..14).contains(&t))))
                .collect()
        })
        .collect();
    let real = mask
        .iter()
        .map(|m| m.iter().map(|&x| x as usize).sum())
        .collect();
    let case = serde_json::json!({"input_ids": ids, "attention_mask": mask});
    (case, real)
}

/// A batch with more real tokens than one forward runs (a 64 KiB L3 makes it 256) runs in
/// chunks of whole sequences: the same bits as in one forward, since no sequence's result
/// depends on the others; per-token and pooled outputs, fp32 and int8, a mask with a hole.
#[test]
fn big_batches_run_in_chunks_with_the_same_results() {
    let dir = scratch("chunks");
    let model = model_dir("bert-micro-random").join("model.onnx");
    // six sequences, 495 real tokens: at 256, chunks of 224, 181 and 90
    let (lens, seq) = ([128usize, 100, 50, 128, 3, 90], 128);
    let (case, _) = batch_case(&lens, seq, 1);
    let small = ["--caches", "32K,256K,64K"];
    for (kind, extra) in [
        ("last_hidden_state", &[][..]),
        ("mean", &[][..]),
        ("mean", &["--quantize", "int8"][..]),
    ] {
        let args = [&["--output", kind][..], extra].concat();
        let text = bertc(
            &[
                &["ir", model.to_str().unwrap(), "--lowered"][..],
                &args,
                &small,
            ]
            .concat(),
        );
        let text = String::from_utf8_lossy(&text.stdout);
        assert!(text.contains("chunks of up to 256 real tokens"), "{text}");
        let run = |extra: &[&str], tag: &str| {
            let exe = dir.join(format!("{kind}-{}-{tag}", extra.len()));
            compile(&model, &exe, &[&args[..], extra].concat());
            run_case(
                &[exe.to_str().unwrap().to_string()],
                &case,
                &dir,
                lens.len(),
            )
        };
        let (chunked, whole) = (run(&small, "chunked"), run(&[], "whole"));
        let bits = |v: &[Vec<f32>]| v.iter().flatten().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&chunked), bits(&whole), "{kind} {extra:?}");
    }
}

/// A batch with at least 8 units (whole sequences of at most 128 real tokens) a thread runs
/// with the threads side by side, each a whole forward on its own units and workspace: the
/// same bits as on one thread (one forward at a time) and as each sequence alone, per-token
/// and pooled, fp32 and int8; 48 sequences of 1 to 128 real tokens (30 units), one with a hole
/// in its mask, on 2 and 3 threads (16 and 24 units needed), and on 7 (56: not side by side).
#[test]
fn threads_side_by_side_give_the_same_bits() {
    let dir = scratch("side-by-side");
    let model = model_dir("bert-micro-random").join("model.onnx");
    let (n, seq) = (48usize, 128usize);
    let lens: Vec<usize> = (0..n).map(|i| (i * 37) % seq + 1).collect();
    let (case, real) = batch_case(&lens, seq, 5);
    // the glue's units: whole sequences while their real tokens stay within 128
    let mut units = 0;
    let mut i = 0;
    while i < n {
        let mut tokens = real[i];
        i += 1;
        while i < n && tokens + real[i] <= 128 {
            tokens += real[i];
            i += 1;
        }
        units += 1;
    }
    assert!((24..56).contains(&units), "{units} units");
    for (kind, extra) in [
        ("last_hidden_state", &[][..]),
        ("mean", &[][..]),
        ("mean", &["--quantize", "int8"][..]),
    ] {
        let exe = dir.join(format!("{kind}-{}", extra.len()));
        compile(&model, &exe, &[&["--output", kind][..], extra].concat());
        let run = |threads: &str, batch: usize| {
            let exe = [
                exe.to_str().unwrap().to_string(),
                "--threads".into(),
                threads.into(),
            ];
            let got = run_case(&exe, &case, &dir, batch);
            got.iter()
                .flatten()
                .map(|f| f.to_bits())
                .collect::<Vec<_>>()
        };
        let one = run("1", n);
        assert_eq!(one, run("1", 1), "{kind} {extra:?}: one thread, batch 1");
        for threads in ["2", "3", "7"] {
            assert_eq!(one, run(threads, n), "{kind} {extra:?}: {threads} threads");
        }
    }
}

#[test]
fn minilm_executable_matches_the_reference() {
    let dir = scratch("minilm");
    let r = reference("all-MiniLM-L6-v2");
    for (fmt, path) in [
        ("onnx", model_dir("all-MiniLM-L6-v2").join("model.onnx")),
        ("hf", minilm_hf_dir()),
    ] {
        let exe = dir.join(format!("minilm-{fmt}"));
        let t = std::time::Instant::now();
        compile(&path, &exe, &["--output", "mean"]);
        eprintln!(
            "minilm {fmt}: compiled in {:.2}s",
            t.elapsed().as_secs_f64()
        );
        let b = &r["batched"];
        std::fs::write(dir.join("mask.txt"), lines(&b["attention_mask"])).unwrap();
        let o = run_with(
            Command::new(&exe).args([
                "--input",
                "ids",
                "--mask",
                dir.join("mask.txt").to_str().unwrap(),
                "--batch",
                "3",
            ]),
            &lines(&b["input_ids"]),
        );
        let got = output_floats(&o);
        let err = max_err(&got, &floats(&b["mean_pooled"]), None, 384);
        eprintln!("minilm {fmt} mean: max abs error {err:.2e}");
        assert!(err <= TOL);
    }
}

#[test]
fn artifacts_are_byte_identical_and_need_only_libc() {
    let dir = scratch("same");
    let model = model_dir("bert-small-random").join("model.onnx");
    for emit in ["exe", "staticlib", "sharedlib", "obj"] {
        let mut bytes = Vec::new();
        for i in 0..2 {
            let sub = dir.join(format!("{emit}{i}"));
            std::fs::create_dir_all(&sub).unwrap();
            compile(
                &model,
                &sub.join("m"),
                &["--emit", emit, "--output", "logits"],
            );
            let file = match emit {
                "exe" => "m",
                "staticlib" => "libm.a",
                "sharedlib" => "libm.so",
                _ => "m.o",
            };
            bytes.push(std::fs::read(sub.join(file)).unwrap());
            if emit != "exe" {
                bytes.push(std::fs::read(sub.join("m.h")).unwrap());
            }
        }
        let half = bytes.len() / 2;
        assert!(
            bytes[..half] == bytes[half..],
            "{emit}: two compiles differ"
        );
    }
    for f in [dir.join("exe0/m"), dir.join("sharedlib0/libm.so")] {
        let o = Command::new("readelf")
            .arg("-d")
            .arg(&f)
            .output()
            .expect("readelf");
        let text = String::from_utf8_lossy(&o.stdout);
        let needed: Vec<&str> = text.lines().filter(|l| l.contains("(NEEDED)")).collect();
        assert_eq!(needed.len(), 1, "{}: {needed:?}", f.display());
        assert!(needed[0].contains("[libc.so.6]"), "{needed:?}");
    }
}

#[test]
fn the_header_is_stable() {
    let dir = scratch("header");
    compile(
        &model_dir("bert-small-random").join("model.onnx"),
        &dir.join("classifier"),
        &["--emit", "staticlib", "--output", "logits"],
    );
    let h = std::fs::read_to_string(dir.join("classifier.h")).unwrap();
    insta::assert_snapshot!("header-bert-small-random-logits", h);
}

fn fails(args: &[&str]) -> String {
    let o = bertc(args);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
    assert!(
        !err.contains("panicked")
            && err.trim_end().lines().count() == 1
            && err.starts_with("error: "),
        "{err}"
    );
    err
}

#[test]
fn compile_errors_are_one_line() {
    let dir = scratch("errors");
    let model = model_dir("bert-micro-random").join("model.onnx");
    let m = model.to_str().unwrap();
    let out = dir.join("x");
    let o = out.to_str().unwrap();
    let e = fails(&[
        "compile",
        m,
        "-o",
        o,
        "--target",
        "sparc64-unknown-linux-gnu",
    ]);
    assert!(
        e.contains("unknown target 'sparc64-unknown-linux-gnu'"),
        "{e}"
    );
    let e = fails(&["compile", m, "-o", o, "--cpu", "pentium2"]);
    assert!(e.contains("unknown cpu 'pentium2'"), "{e}");
    // a malformed --caches is an argument error (clap's: exit status 2), naming the option
    for bad in ["32K,512K", "0,1M,8M", "32K,1X,8M"] {
        let r = bertc(&["compile", m, "-o", o, "--caches", bad]);
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(2), "{err}");
        assert!(
            err.lines()
                .next()
                .unwrap()
                .contains(&format!("invalid value '{bad}' for '--caches"))
                && err.contains("expected the L1d, L2 and L3 sizes"),
            "{err}"
        );
    }
    assert!(!out.exists());
    let e = fails(&["compile", m, "-o", o, "--output", "logits"]);
    assert!(e.contains("no classifier"), "{e}");
    let e = fails(&["compile", m, "-o", o, "--max-seq", "4000"]);
    assert!(e.contains("--max-seq 4000") && e.contains("128"), "{e}");
    // a missing cross linker: run bertc with a PATH that has no C compilers
    let empty = dir.join("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bertc"))
        .args([
            "compile",
            m,
            "-o",
            o,
            "--target",
            "aarch64-unknown-linux-gnu",
        ])
        .env("PATH", &empty)
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        e.contains("'aarch64-linux-gnu-gcc' not found") && e.contains("gcc-aarch64-linux-gnu"),
        "{e}"
    );
}

#[test]
fn executable_rejects_bad_input_lines() {
    let dir = scratch("badexe");
    let exe = dir.join("micro");
    compile(&model_dir("bert-micro-random"), &exe, &[]);
    let run = |stdin: &str, args: &[&str]| {
        let o = run_with(
            Command::new(&exe).args(["--input", "ids"]).args(args),
            stdin,
        );
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert_eq!(o.status.code(), Some(1), "{stdin:?}: {err}");
        assert!(
            err.starts_with("error: ") && err.trim_end().lines().count() == 1,
            "{err}"
        );
        assert!(
            o.stdout.is_empty(),
            "nothing is printed before the input is checked"
        );
        err
    };
    assert!(run("2 73 3\n2 5000 3\n", &[]).contains("input line 2: token id 5000 is out of range"));
    assert!(run("2 -4 3\n", &[]).contains("token id -4"));
    assert!(run("2 x 3\n", &[]).contains("input line 1: 'x' is not an integer"));
    assert!(run("2 3\n\n", &[]).contains("input line 2: empty sequence"));
    assert!(run("2 99999999999 3\n", &[]).contains("is not an integer"));
    let long = vec!["5"; 129].join(" ");
    assert!(run(&long, &[]).contains("129 tokens, more than the model's maximum of 128"));
    std::fs::write(dir.join("m.txt"), "1 2 1\n").unwrap();
    assert!(
        run("2 4 3\n", &["--mask", dir.join("m.txt").to_str().unwrap()])
            .contains("value 2 is not 0 or 1")
    );
    assert!(run("2 4 3\n", &["--threads", "many"]).contains("--threads"));
    assert!(run("2 4 3\n", &["--bogus", "1"]).contains("unknown argument '--bogus'"));
}

#[test]
fn executables_check_the_cpu_at_start_up() {
    let dir = scratch("cpu");
    let exe = dir.join("v4");
    compile(
        &model_dir("bert-micro-random"),
        &exe,
        &["--cpu", "x86-64-v4"],
    );
    let o = run_with(Command::new(&exe).args(["--input", "ids"]), "2 4 3\n");
    let host_has_avx512 = bertc_targets::Target::host().has("avx512f");
    if host_has_avx512 {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    } else {
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1));
        assert!(
            err.contains("compiled for a CPU with")
                && err.contains("avx512f")
                && err.contains("lacks"),
            "{err}"
        );
    }
}

#[test]
fn thread_counts_give_identical_outputs() {
    let dir = scratch("threads");
    let exe = dir.join("small");
    compile(
        &model_dir("bert-small-random").join("model.onnx"),
        &exe,
        &[],
    );
    let outputs = outputs_by_thread_count(&exe, &dir);
    // work is split into the same tiles whatever the thread count: the bits agree
    for o in &outputs[1..] {
        assert!(o == &outputs[0], "outputs differ between thread counts");
    }
}

/// Every activation the GEMM epilogue applies in registers (GELU erf and tanh, ReLU, and tanh
/// in the BERT pooler), checked against the interpreter: bert-micro's Hugging Face folder
/// with `hidden_act` switched, sequences long enough for several attention tiles and both
/// GEMM task orders (at most and more than 64 rows).
#[test]
fn every_fused_activation_matches_the_interpreter() {
    let src = model_dir("bert-micro-random");
    let ids: String = [5usize, 13, 70, 100]
        .iter()
        .map(|&n| {
            (0..n)
                .map(|i| (100 + (i * 37) % 1900).to_string())
                .collect::<Vec<_>>()
                .join(" ")
                + "\n"
        })
        .collect();
    for act in ["gelu", "gelu_new", "relu"] {
        let dir = scratch(&format!("act-{act}"));
        for f in ["model.safetensors", "tokenizer.json"] {
            std::fs::copy(src.join(f), dir.join(f)).unwrap();
        }
        let cfg = std::fs::read_to_string(src.join("config.json")).unwrap();
        let cfg = cfg.replace(
            "\"hidden_act\": \"gelu\"",
            &format!("\"hidden_act\": \"{act}\""),
        );
        assert!(cfg.contains(&format!("\"hidden_act\": \"{act}\"")));
        std::fs::write(dir.join("config.json"), cfg).unwrap();
        for output in ["last_hidden_state", "pooler"] {
            let exe = dir.join(format!("m-{output}"));
            compile(&dir, &exe, &["--output", output]);
            let got = run_with(Command::new(&exe).args(["--input", "ids"]), &ids);
            assert!(
                got.status.success(),
                "{}",
                String::from_utf8_lossy(&got.stderr)
            );
            let want = run_with(
                Command::new(env!("CARGO_BIN_EXE_bertc")).args([
                    "run",
                    dir.to_str().unwrap(),
                    "--output",
                    output,
                ]),
                &ids,
            );
            assert!(
                want.status.success(),
                "{}",
                String::from_utf8_lossy(&want.stderr)
            );
            let (g, w) = (parse_floats(&got.stdout), parse_floats(&want.stdout));
            assert_eq!(g.len(), w.len(), "{act} {output}");
            let err = g
                .iter()
                .zip(&w)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(err <= 1e-4, "{act} {output}: max error {err}");
        }
    }
}
