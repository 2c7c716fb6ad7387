//! Fuzzing bertc's input parsers: the ONNX decoder and importer, a Hugging Face folder's
//! safetensors (header and index) and `config.json`, `tokenizer.json`, and a generated
//! executable's input (stdin lines, mask and type-id files). A campaign mutates seed files
//! (the shared models and their companions) with a structure-aware mutator
//! ([`mutate`]) and runs a target on each input: a panic, an abnormal exit (a signal, an exit
//! code other than 0 or 1, an error that is not one line) or an input that takes longer than
//! the time limit is a finding, saved with the input that caused it. No nightly toolchain is
//! needed (the mutator is not coverage-guided); `tests/fuzz_smoke.rs` runs every target
//! briefly.

pub mod mutate;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mutate::Rng;

/// What a campaign exercises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// `bertc_import::onnx::import_bytes` on an `.onnx` file.
    Onnx,
    /// The Hugging Face importer on a folder whose `model.safetensors` (or index) is mutated.
    Safetensors,
    /// The Hugging Face importer on a folder whose `config.json` is mutated.
    Config,
    /// `TextSpec::from_json` on a `tokenizer.json`.
    Tokenizer,
    /// A compiled executable on mutated stdin, mask and type-id files and flags.
    ExeInput,
}

impl Target {
    pub const ALL: [Target; 5] = [
        Target::Onnx,
        Target::Safetensors,
        Target::Config,
        Target::Tokenizer,
        Target::ExeInput,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Target::Onnx => "onnx",
            Target::Safetensors => "safetensors",
            Target::Config => "config",
            Target::Tokenizer => "tokenizer",
            Target::ExeInput => "exe-input",
        }
    }

    pub fn from_name(s: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.name() == s)
    }

    /// For `Safetensors` and `Config`: the first model folder under `models` (sorted) with a
    /// `config.json` and a `model.safetensors` small enough to copy each execution, whose
    /// other files go beside the mutated one (the importer reads `config.json` first, so
    /// without one a safetensors input would never be parsed).
    pub fn companion_folder(self, models: &Path) -> Option<PathBuf> {
        if !matches!(self, Target::Safetensors | Target::Config) {
            return None;
        }
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(models)
            .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        dirs.sort();
        dirs.into_iter().find(|d| {
            let small =
                std::fs::metadata(d.join("model.safetensors")).is_ok_and(|m| m.len() < 8 << 20);
            small && d.join("config.json").is_file()
        })
    }

    /// The seed files of this target under a shared `models` folder (or a folder of seeds).
    pub fn seeds(self, models: &Path) -> Vec<Vec<u8>> {
        let file = match self {
            Target::Onnx => "model.onnx",
            Target::Safetensors => "model.safetensors",
            Target::Config => "config.json",
            Target::Tokenizer => "tokenizer.json",
            Target::ExeInput => return exe_seeds(),
        };
        let mut out = Vec::new();
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(models)
            .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        dirs.sort();
        for d in dirs {
            // the big real model is left out of the ONNX and safetensors seeds: each input
            // would take seconds to copy and mutate
            let p = d.join(file);
            let size = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            if size > 0 && (size < 8 << 20 || matches!(self, Target::Config | Target::Tokenizer)) {
                if let Ok(b) = std::fs::read(&p) {
                    out.push(b);
                }
            }
        }
        out
    }

    fn mutate(self, rng: &mut Rng, data: &mut Vec<u8>, other: &[u8]) {
        match self {
            Target::Onnx => mutate::onnx(rng, data, other),
            Target::Config | Target::Tokenizer => mutate::json(rng, data, other),
            Target::Safetensors => safetensors_mutation(rng, data, other),
            Target::ExeInput => mutate::bytes(rng, data, other),
        }
    }
}

/// Mutates the JSON header of a safetensors file structurally, or its bytes.
fn safetensors_mutation(rng: &mut Rng, data: &mut Vec<u8>, other: &[u8]) {
    if data.len() < 8 || rng.chance(3) {
        return mutate::bytes(rng, data, other);
    }
    let n = u64::from_le_bytes(data[..8].try_into().unwrap_or([0; 8])) as usize;
    if n == 0 || 8 + n > data.len() {
        return mutate::bytes(rng, data, other);
    }
    let mut header = data[8..8 + n].to_vec();
    mutate::json(rng, &mut header, other);
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    out.extend_from_slice(&data[8 + n..]);
    *data = out;
}

/// Seeds for the executable's input: `flags byte | stdin \0 mask \0 type ids`.
fn exe_seeds() -> Vec<Vec<u8>> {
    let mk = |flags: u8, stdin: &str, mask: &str, types: &str| {
        let mut v = vec![flags];
        v.extend_from_slice(stdin.as_bytes());
        v.push(0);
        v.extend_from_slice(mask.as_bytes());
        v.push(0);
        v.extend_from_slice(types.as_bytes());
        v
    };
    vec![
        mk(
            0,
            "2 73 1043 9 3\n2 150 3 0 0\n",
            "1 1 1 1 1\n1 1 1 0 0\n",
            "",
        ),
        mk(
            1,
            "2 73 1043 9 3\n2 150 3\n",
            "1 1 1 1 1\n1 1 1\n",
            "0 0 0 1 1\n0 0 0\n",
        ),
        mk(2, "hello world\nthe cat sat\tby the door\n", "", ""),
        mk(3, "Ünïcödé ☃ 日本語 text\n\n   \n", "", ""),
        mk(4, "a\tb\tc\n", "", ""),
    ]
}

/// What running one input gave.
#[derive(Debug)]
pub enum Finding {
    Panic(String),
    Abnormal(String),
    Hang(Duration),
}

/// Everything a target needs besides the input.
pub struct Harness {
    pub target: Target,
    /// A scratch folder (the Hugging Face targets write the folder they import there).
    pub scratch: PathBuf,
    /// For `Safetensors` and `Config`: a model folder whose other files are used as they are.
    pub folder: Option<PathBuf>,
    /// For `ExeInput`: the executable (compiled with a tokenizer).
    pub exe: Option<PathBuf>,
    /// Longer than this is a hang.
    pub limit: Duration,
}

impl Harness {
    /// Runs the target on one input.
    /// Why this harness would run its target vacuously, if it would: the Hugging Face targets
    /// without a companion folder (the import stops at the missing file before it reads the
    /// mutated one), the executable target without an executable.
    pub fn check(&self) -> Result<(), String> {
        match self.target {
            Target::Safetensors | Target::Config if self.folder.is_none() => Err(format!(
                "the {} target needs a model folder for the other files (--folder DIR)",
                self.target.name()
            )),
            Target::ExeInput if self.exe.is_none() => {
                Err("the exe-input target needs an executable (--exe PATH)".into())
            }
            _ => Ok(()),
        }
    }

    pub fn run(&self, data: &[u8]) -> Option<Finding> {
        let t = Instant::now();
        let r = match self.target {
            Target::ExeInput => self.run_exe(data),
            _ => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let _ = self.run_in_process(data);
            }))
            .err()
            .map(|e| {
                Finding::Panic(
                    e.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default(),
                )
            }),
        };
        r.or_else(|| (t.elapsed() > self.limit).then(|| Finding::Hang(t.elapsed())))
    }

    /// Runs an in-process target on `data`: the importer's (or parser's) own error, if any.
    /// A campaign looks only for panics, hangs and crashes; tests use the result to check that
    /// a valid input gets through, i.e. that the harness reaches the parser it fuzzes.
    pub fn run_in_process(&self, data: &[u8]) -> Result<(), String> {
        let err = |e: &dyn std::fmt::Display| e.to_string();
        match self.target {
            Target::Onnx => bertc_import::onnx::import_bytes(
                bytes::Bytes::copy_from_slice(data),
                &self.scratch.join("fuzz.onnx"),
            )
            .map(drop)
            .map_err(|e| err(&e)),
            Target::Tokenizer => {
                bertc_text::TextSpec::from_json(&String::from_utf8_lossy(data), "fuzz")
                    .map(drop)
                    .map_err(|e| err(&e))
            }
            Target::Safetensors | Target::Config => {
                let dir = self.scratch.join("folder");
                let _ = std::fs::create_dir_all(&dir);
                if let Some(src) = &self.folder {
                    for f in ["config.json", "model.safetensors"] {
                        let _ = std::fs::copy(src.join(f), dir.join(f));
                    }
                }
                let name = if self.target == Target::Config {
                    "config.json"
                } else {
                    "model.safetensors"
                };
                let _ = std::fs::write(dir.join(name), data);
                bertc_import::hf::import_folder(&dir)
                    .map(drop)
                    .map_err(|e| err(&e))
            }
            Target::ExeInput => Ok(()),
        }
    }

    fn run_exe(&self, data: &[u8]) -> Option<Finding> {
        let exe = self.exe.as_ref()?;
        let flags = data.first().copied().unwrap_or(0);
        let mut parts = data.get(1..).unwrap_or(&[]).splitn(3, |&b| b == 0);
        let (stdin, mask, types) = (
            parts.next().unwrap_or(&[]),
            parts.next().unwrap_or(&[]),
            parts.next().unwrap_or(&[]),
        );
        let mut cmd = Command::new(exe);
        let ids = flags & 1 == 0 && flags & 2 == 0;
        if ids {
            let m = self.scratch.join("mask.txt");
            let t = self.scratch.join("types.txt");
            let _ = std::fs::write(&m, mask);
            let _ = std::fs::write(&t, types);
            cmd.args(["--input", "ids"]);
            if !mask.is_empty() {
                cmd.arg("--mask").arg(&m);
            }
            if !types.is_empty() {
                cmd.arg("--type-ids").arg(&t);
            }
        }
        if flags & 4 != 0 {
            cmd.args(["--format", "json"]);
        }
        if flags & 8 != 0 {
            cmd.arg("--no-truncate");
        }
        if flags & 16 != 0 && !ids {
            cmd.arg("--tokenize");
        }
        if flags & 32 != 0 {
            cmd.args(["--batch", &((flags >> 6) as usize + 1).to_string()]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .ok()?;
        let mut pipe = child.stdin.take()?;
        let input = stdin.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
        let t = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if t.elapsed() > self.limit => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Some(Finding::Hang(t.elapsed()));
                }
                Ok(None) => std::thread::sleep(Duration::from_micros(200)),
                Err(e) => return Some(Finding::Abnormal(e.to_string())),
            }
        };
        let _ = writer.join();
        let mut raw = Vec::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_end(&mut e, &mut raw);
        }
        let err = String::from_utf8_lossy(&raw);
        match status.code() {
            Some(0) => None,
            Some(1) if err.trim().lines().count() == 1 && err.starts_with("error: ") => None,
            Some(c) => Some(Finding::Abnormal(format!("exit {c}: {err}"))),
            None => Some(Finding::Abnormal(format!(
                "killed by a signal: {status}; {err}"
            ))),
        }
    }
}

/// What a campaign did.
#[derive(Debug, Default)]
pub struct Report {
    pub execs: u64,
    /// Distinct findings: what, the minimized input, how many inputs gave it.
    pub findings: Vec<(String, PathBuf, usize)>,
    pub slowest: Duration,
    /// CPU time spent (this process and the executables it ran).
    pub cpu: Duration,
}

/// CPU time used by this process and its waited-for children (Linux: `/proc/self/stat`),
/// or `None` where it cannot be read.
pub fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // the fields after the command name, which is in parentheses
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime, stime, cutime, cstime are fields 14..17 of the line; after the name the
    // first field is the state (field 3)
    let ticks = f
        .get(11..15)?
        .iter()
        .map(|x| x.parse::<u64>().ok())
        .sum::<Option<u64>>()?;
    Some(Duration::from_millis(ticks * 10))
}

/// Shrinks a finding's input while the same kind of finding (the same panic message, or the
/// same kind of abnormal end) persists: whole ONNX nodes and initializers, then byte blocks.
pub fn minimize(harness: &Harness, input: &[u8], finding: &Finding) -> Vec<u8> {
    let same = |f: &Option<Finding>| match (f, finding) {
        (Some(Finding::Panic(a)), Finding::Panic(b)) => a == b,
        (Some(Finding::Abnormal(_)), Finding::Abnormal(_)) => true,
        (Some(Finding::Hang(_)), Finding::Hang(_)) => true,
        _ => false,
    };
    let mut best = input.to_vec();
    // a bounded number of trials: minimizing must not take over the campaign
    let mut budget = 1000usize;
    let mut try_it = |bytes: &[u8]| {
        budget = budget.saturating_sub(1);
        budget > 0 && same(&harness.run(bytes))
    };
    if harness.target == Target::Onnx {
        use prost::Message;
        if let Ok(mut m) = bertc_import::onnx::proto::ModelProto::decode(input) {
            let mut i = 0;
            while let Some(g) = m.graph.as_ref() {
                let (nodes, inits) = (g.node.len(), g.initializer.len());
                if i >= nodes + inits {
                    break;
                }
                let mut trial = m.clone();
                if let Some(g) = trial.graph.as_mut() {
                    if i < nodes {
                        g.node.remove(i);
                    } else {
                        g.initializer.remove(i - nodes);
                    }
                }
                let bytes = trial.encode_to_vec();
                if try_it(&bytes) {
                    m = trial;
                    best = bytes;
                } else {
                    i += 1;
                }
            }
        }
    }
    let mut chunk = best.len() / 2;
    while chunk >= 1 {
        let mut at = 0;
        while at < best.len() {
            let mut trial = best.clone();
            trial.drain(at..(at + chunk).min(best.len()));
            if try_it(&trial) {
                best = trial;
            } else {
                at += chunk;
            }
        }
        chunk /= 2;
    }
    best
}

/// Runs `harness` on mutations of `seeds` for `time` of CPU time (wall time where CPU time
/// cannot be read), saving each finding's input, minimized, in `crashes` (and the input
/// being run in `crashes/current`, so that an abort or an out-of-memory kill leaves it
/// behind).
pub fn campaign(
    harness: &Harness,
    seeds: &[Vec<u8>],
    time: Duration,
    seed: u64,
    crashes: &Path,
) -> Report {
    let mut rng = Rng::new(seed);
    let mut report = Report::default();
    let _ = std::fs::create_dir_all(crashes);
    // a run that never returns is found by a watchdog, which saves the input and exits
    let running = std::sync::Arc::new(std::sync::Mutex::new(None::<Instant>));
    {
        let running = running.clone();
        let (limit, dir, name) = (harness.limit, crashes.to_path_buf(), harness.target.name());
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(500));
            let since = *running.lock().unwrap_or_else(|e| e.into_inner());
            if since.is_some_and(|t| t.elapsed() > limit * 3) {
                let _ = std::fs::copy(dir.join("current"), dir.join(format!("{name}-hang")));
                eprintln!(
                    "{name}: an input ran for over {:?}: {}",
                    limit * 3,
                    dir.join(format!("{name}-hang")).display()
                );
                std::process::exit(3);
            }
        });
    }
    let start = Instant::now();
    let cpu0 = cpu_time();
    let spent = || match (cpu0, cpu_time()) {
        (Some(a), Some(b)) => b.saturating_sub(a),
        _ => start.elapsed(),
    };
    // the seeds themselves first
    let mut queue: Vec<Vec<u8>> = seeds.to_vec();
    while spent() < time && !seeds.is_empty() {
        let mut input = if !queue.is_empty() {
            queue.remove(0)
        } else {
            let mut d = seeds[rng.below(seeds.len())].clone();
            let other = &seeds[rng.below(seeds.len())];
            // stacked mutations reach further from the seed
            for _ in 0..1 + rng.below(4) {
                harness.target.mutate(&mut rng, &mut d, other);
            }
            d
        };
        if input.len() > 64 << 20 {
            input.truncate(64 << 20);
        }
        let _ = std::fs::write(crashes.join("current"), &input);
        let t = Instant::now();
        *running.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
        let finding = harness.run(&input);
        *running.lock().unwrap_or_else(|e| e.into_inner()) = None;
        report.slowest = report.slowest.max(t.elapsed());
        report.execs += 1;
        if let Some(f) = finding {
            // each distinct finding is minimized and saved once; repeats are counted
            let kind = format!("{f:?}");
            let key = match &f {
                Finding::Hang(_) => "hang".to_string(),
                _ => kind.clone(),
            };
            if let Some(seen) = report.findings.iter_mut().find(|(k, _, _)| *k == key) {
                seen.2 += 1;
            } else {
                let path = crashes.join(format!("{}-{}", harness.target.name(), report.execs));
                let small = minimize(harness, &input, &f);
                let _ = std::fs::write(&path, &small);
                report.findings.push((key, path, 1));
            }
        }
    }
    report.cpu = spent();
    let _ = std::fs::remove_file(crashes.join("current"));
    report
}
