//! `bertc-fuzz TARGET CPU_SECONDS SEEDS_DIR [--folder DIR] [--exe PATH] [--seed N] [--crashes DIR]`:
//! one fuzzing campaign (see the `bertc_fuzz` crate); prints executions, findings and the
//! slowest input, and exits 1 when anything was found. The safetensors and config targets
//! take the other files of a model folder from `--folder`, by default the first small model
//! under SEEDS_DIR; the exe-input target needs `--exe`.

use std::path::PathBuf;
use std::time::Duration;

use bertc_fuzz::{campaign, Harness, Target};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: bertc-fuzz TARGET CPU_SECONDS SEEDS_DIR [--folder DIR] [--exe PATH] [--seed N] [--crashes DIR]\n  targets: onnx, safetensors, config, tokenizer, exe-input";
    if args.len() < 3 {
        eprintln!("{usage}");
        std::process::exit(2);
    }
    let Some(target) = Target::from_name(&args[0]) else {
        eprintln!("error: unknown target '{}'\n{usage}", args[0]);
        std::process::exit(2);
    };
    let Ok(seconds) = args[1].parse::<u64>() else {
        eprintln!("error: SECONDS: '{}' is not a number", args[1]);
        std::process::exit(2);
    };
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    // a panic is a finding the campaign records; the default hook's printing would dominate
    std::panic::set_hook(Box::new(|_| {}));
    let scratch = std::env::temp_dir().join(format!("bertc-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&scratch);
    let harness = Harness {
        target,
        scratch: scratch.clone(),
        folder: opt("--folder")
            .map(PathBuf::from)
            .or_else(|| target.companion_folder(&PathBuf::from(&args[2]))),
        exe: opt("--exe").map(PathBuf::from),
        limit: Duration::from_secs(10),
    };
    if let Err(e) = harness.check() {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
    if let Some(f) = &harness.folder {
        eprintln!(
            "{}: beside the input, the files of {}",
            target.name(),
            f.display()
        );
    }
    let seeds = target.seeds(&PathBuf::from(&args[2]));
    if seeds.is_empty() {
        eprintln!("error: {}: no seeds for target {}", args[2], target.name());
        std::process::exit(2);
    }
    let crashes = opt("--crashes")
        .map(PathBuf::from)
        .unwrap_or_else(|| scratch.join("crashes"));
    let seed = opt("--seed").and_then(|s| s.parse().ok()).unwrap_or(1);
    let r = campaign(
        &harness,
        &seeds,
        Duration::from_secs(seconds),
        seed,
        &crashes,
    );
    println!(
        "{}: {} executions in {:.0} CPU-seconds from {} seeds, {} findings, slowest input {:.3} s",
        target.name(),
        r.execs,
        r.cpu.as_secs_f64(),
        seeds.len(),
        r.findings.len(),
        r.slowest.as_secs_f64()
    );
    for (f, p, n) in &r.findings {
        println!("  {} ({n} inputs): {f}", p.display());
    }
    let _ = std::fs::remove_dir_all(scratch.join("folder"));
    if r.findings.is_empty() || !crashes.starts_with(&scratch) {
        // the findings' folder is the one thing here meant to outlive a campaign
        let _ = std::fs::remove_dir_all(&scratch);
    }
    std::process::exit(if r.findings.is_empty() { 0 } else { 1 });
}
