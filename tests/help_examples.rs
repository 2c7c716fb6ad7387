//! Every example that `bertc --help` and each command's `--help` show runs as written, in the
//! order shown, in a folder holding the files they name (`model.onnx` and its tokenizer, a
//! Hugging Face folder `my-model`, calibration text, a small STS file, id/mask/type files): a
//! user who copies them gets what they promise. Lines for another architecture run when its
//! cross tools are installed; a line marked `# on the board` is left to the board.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

/// The example command lines of a help text: the lines after `Example:`/`Examples:` that are
/// indented, `\` continuations joined, trailing `# comments` kept (the shell ignores them).
fn examples(help: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut on = false;
    let mut cont = false;
    for line in help.lines() {
        if line.starts_with("Example") {
            on = true;
            continue;
        }
        if !on {
            continue;
        }
        if !line.starts_with("  ") {
            on = false;
            cont = false;
            continue;
        }
        let l = line.trim();
        if cont {
            let last = out.last_mut().unwrap();
            last.push(' ');
            last.push_str(l.trim_end_matches('\\').trim_end());
        } else {
            out.push(l.trim_end_matches('\\').trim_end().to_string());
        }
        cont = l.ends_with('\\');
    }
    out
}

fn world(dir: &Path) {
    let micro = model_dir("bert-micro-random");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(micro.join("model.onnx"), dir.join("model.onnx")).unwrap();
    for f in [
        "tokenizer.json",
        "vocab.txt",
        "config.json",
        "special_tokens_map.json",
        "tokenizer_config.json",
    ] {
        std::fs::copy(micro.join(f), dir.join(f)).unwrap();
    }
    std::os::unix::fs::symlink(&micro, dir.join("my-model")).unwrap();
    std::os::unix::fs::symlink(repo.join("examples"), dir.join("examples")).unwrap();
    let texts = "A man is playing a guitar.\nThe cat sleeps on the sofa.\nA woman is slicing an onion.\nTwo dogs run in a field.\nThe stock market fell today.\nHe reads a book in the park.\n";
    std::fs::write(dir.join("texts.txt"), texts.repeat(4)).unwrap();
    let sts: String = (0..12)
        .map(|i| {
            let l: Vec<&str> = texts.lines().collect();
            format!(
                "main-captions\tMSRvid\t2012test\t{i:04}\t{}.0\t{}\t{}\n",
                i % 6,
                l[i % 6],
                l[(i * 5 + 1) % 6]
            )
        })
        .collect();
    std::fs::write(dir.join("sts-test.csv"), sts).unwrap();
    std::fs::write(dir.join("ids.txt"), "2 73 1043 3\n2 9 3\n").unwrap();
    std::fs::write(dir.join("mask.txt"), "1 1 1 1\n1 1 1\n").unwrap();
    std::fs::write(dir.join("types.txt"), "0 0 0 0\n0 0 0\n").unwrap();
    let bin = dir.join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_bertc"), bin.join("bertc")).unwrap();
}

/// `bash ARGS` in `dir` with `PATH` set to `path`.
fn bash(args: &[&str], dir: &Path, path: &str) -> std::process::Output {
    Command::new("bash")
        .args(args)
        .current_dir(dir)
        .env("PATH", path)
        .output()
        .unwrap()
}

/// The examples time and profile models: run one test of this file at a time, so that neither
/// measures the other's load.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn every_help_example_runs() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = scratch("help-examples");
    world(&dir);
    let path = format!(
        "{}:{}",
        dir.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let cross = cross_runner("aarch64-unknown-linux-gnu", None).is_some();
    let mut ran = 0;
    for cmd in [
        "", "compile", "profile", "eval", "bench", "inspect", "ir", "run",
    ] {
        let mut args: Vec<&str> = vec![];
        if !cmd.is_empty() {
            args.push(cmd);
        }
        args.push("--help");
        let out = Command::new(env!("CARGO_BIN_EXE_bertc"))
            .args(&args)
            .output()
            .unwrap();
        assert!(out.status.success());
        let help = String::from_utf8(out.stdout).unwrap();
        let lines = examples(&help);
        assert!(!lines.is_empty(), "bertc {cmd} --help shows no examples");
        for line in lines {
            if line.contains("# on the board") || (line.contains("aarch64") && !cross) {
                eprintln!("not run here: {line}");
                continue;
            }
            let o = bash(&["-o", "pipefail", "-c", &line], &dir, &path);
            assert!(
                o.status.success(),
                "bertc {cmd} --help: `{line}` failed:\n{}",
                String::from_utf8_lossy(&o.stderr)
            );
            ran += 1;
        }
    }
    eprintln!("{ran} examples ran");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The README's examples: each ```` ```sh ```` block runs as one script (`set -e -o pipefail`),
/// and the `$ ` lines of ```` ```console ```` blocks, in a folder laid out like a checkout
/// (`examples/`, `../shared` beside it) with `bertc` on the path. `cargo run --release --`
/// stands for `bertc`; `cargo test` is this test suite and is not run again. ```` ```text ````
/// blocks are synopses, not examples.
#[test]
fn every_readme_example_runs() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let base = scratch("readme-examples");
    let dir = base.join("bertc");
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink(shared().canonicalize().unwrap(), base.join("shared")).unwrap();
    world(&dir);
    let path = format!(
        "{}:{}",
        dir.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let mut blocks: Vec<String> = Vec::new();
    let mut cur: Option<(String, String)> = None;
    for line in readme.lines() {
        match (&mut cur, line.strip_prefix("```")) {
            (None, Some(kind)) => cur = Some((kind.to_string(), String::new())),
            (Some((kind, body)), Some(_)) => {
                let script = match kind.as_str() {
                    "sh" => body.clone(),
                    "console" => body
                        .lines()
                        .filter_map(|l| l.strip_prefix("$ "))
                        .map(|l| format!("{l}\n"))
                        .collect(),
                    _ => String::new(),
                };
                if !script.trim().is_empty() {
                    blocks.push(script);
                }
                cur = None;
            }
            (Some((_, body)), None) => {
                let l = line.replace("cargo run --release --", "bertc");
                if !l.trim_start().starts_with("cargo test") {
                    body.push_str(&l);
                    body.push('\n');
                }
            }
            (None, None) => {}
        }
    }
    assert!(blocks.len() >= 3, "README has its examples");
    for script in &blocks {
        let o = bash(&["-e", "-o", "pipefail", "-c", script], &dir, &path);
        assert!(
            o.status.success(),
            "README example failed:\n{script}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    eprintln!("{} README blocks ran", blocks.len());
    let _ = std::fs::remove_dir_all(&base);
}
