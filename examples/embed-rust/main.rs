//! Embeds texts with a model compiled by bertc into a shared library, through `bertc-runtime`:
//! the model's tokenizer turns each text into ids, the artifact computes the embedding.
//!
//! ```text
//! bertc compile ../bert-micro-random -o build/encoder --emit sharedlib --output mean
//! cargo run --release --example embed-rust -- build/libencoder.so encoder \
//!     examples/bert-micro-random/tokenizer.json "A sentence."
//! ```

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use bertc_runtime::{l2_normalize, Artifact, RuntimeError, Tokenizer};

fn run(args: &[String]) -> Result<(), RuntimeError> {
    let art = Arc::new(Artifact::open(Path::new(&args[0]), &args[1])?);
    let tok = Tokenizer::from_file(Path::new(&args[2]))?;
    let mut model = art.model(1)?;
    for text in &args[3..] {
        let e = tok.encode(text, None)?;
        let ids: Vec<i32> = e.ids.iter().map(|&v| v as i32).collect();
        let mask: Vec<i32> = e.attention_mask.iter().map(|&v| v as i32).collect();
        let out = model.run(&ids, Some(&mask), None, 1, ids.len())?;
        let unit = l2_normalize(&out);
        println!(
            "{}",
            unit.iter()
                .map(|v| format!("{v:e}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        eprintln!("usage: embed-rust LIBRARY NAME TOKENIZER_JSON TEXT...");
        return ExitCode::from(2);
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
