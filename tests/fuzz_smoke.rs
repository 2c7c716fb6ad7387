//! The fuzzing harnesses (`crates/fuzz`) briefly on every target, and every input a campaign
//! ever found (`crates/fuzz/regressions/TARGET/`) once more: no panic, no abnormal exit, no
//! hang. The campaigns themselves run with `bertc-fuzz` (figures in the closing notes).

mod common;

use bertc_fuzz::{campaign, Harness, Target};
use common::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn harness(target: Target, scratch: &Path, exe: &Path) -> Harness {
    Harness {
        target,
        scratch: scratch.to_path_buf(),
        folder: Some(model_dir("bert-micro-random")),
        exe: Some(exe.to_path_buf()),
        limit: Duration::from_secs(10),
    }
}

/// The micro model compiled with its tokenizer: what the executable-input target runs.
fn micro_exe(dir: &Path) -> PathBuf {
    let exe = dir.join("micro");
    compile(&model_dir("bert-micro-random"), &exe, &[]);
    exe
}

#[test]
fn every_fuzz_target_runs_clean_for_a_few_seconds() {
    let dir = scratch("fuzz-smoke");
    let exe = micro_exe(&dir);
    for target in Target::ALL {
        let seeds = target.seeds(&shared().join("models"));
        assert!(!seeds.is_empty(), "{}: no seeds", target.name());
        let h = harness(target, &dir, &exe);
        let r = campaign(&h, &seeds, Duration::from_secs(4), 7, &dir.join("crashes"));
        eprintln!(
            "{}: {} executions, slowest {:.3} s",
            target.name(),
            r.execs,
            r.slowest.as_secs_f64()
        );
        assert!(
            r.execs > seeds.len() as u64,
            "{}: nothing ran",
            target.name()
        );
        assert!(r.findings.is_empty(), "{}: {:?}", target.name(), r.findings);
    }
}

/// The folder targets without a companion folder would never parse their input (the importer
/// reads `config.json` first): the harness says so, and with the default folder the seed
/// itself imports, so mutated inputs reach the parser they fuzz.
#[test]
fn folder_targets_reach_the_parser_they_fuzz() {
    let dir = scratch("fuzz-folders");
    let models = shared().join("models");
    for (target, file) in [
        (Target::Safetensors, "model.safetensors"),
        (Target::Config, "config.json"),
    ] {
        let mut h = harness(target, &dir, Path::new("unused"));
        h.folder = None;
        assert!(h.check().is_err(), "{}: no folder accepted", target.name());
        let folder = target
            .companion_folder(&models)
            .expect("a small model folder");
        h.folder = Some(folder.clone());
        assert!(h.check().is_ok());
        let seed = std::fs::read(folder.join(file)).unwrap();
        assert_eq!(h.run_in_process(&seed), Ok(()), "{}", target.name());
        let e = h.run_in_process(b"{not json").unwrap_err();
        assert!(e.contains(file), "{}: {e}", target.name());
    }
}

#[test]
fn inputs_the_fuzzers_found_stay_fixed() {
    let dir = scratch("fuzz-regressions");
    let exe = micro_exe(&dir);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/fuzz/regressions");
    let mut n = 0;
    for target in Target::ALL {
        let Ok(files) = std::fs::read_dir(root.join(target.name())) else {
            continue;
        };
        let h = harness(target, &dir, &exe);
        for f in files {
            let f = f.unwrap().path();
            let finding = h.run(&std::fs::read(&f).unwrap());
            assert!(finding.is_none(), "{}: {finding:?}", f.display());
            n += 1;
        }
    }
    assert!(n > 0, "no regression inputs in {}", root.display());
}
