//! Embeds texts with a model compiled by bertc into a shared library, through `bertc-runtime`:
//! the artifact's own tokenizer (compiled in from the model's `tokenizer.json`) turns each text
//! into ids and the artifact computes the embedding; one line of values per text.
//!
//! ```text
//! bertc compile ../bert-micro-random -o build/encoder --emit sharedlib --output mean
//! cargo run --release --example embed-rust -- build/libencoder.so encoder "A sentence." "Another."
//! ```

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use bertc_runtime::{Artifact, RuntimeError};

fn run(args: &[String]) -> Result<(), RuntimeError> {
    let art = Arc::new(Artifact::open(Path::new(&args[0]), &args[1])?);
    let mut model = art.model(1)?;
    let texts: Vec<&str> = args[2..].iter().map(String::as_str).collect();
    let (out, _tokens) = model.run_text(&texts, None)?;
    for row in out.chunks(out.len() / texts.len()) {
        let line: Vec<String> = row.iter().map(|v| format!("{v:e}")).collect();
        println!("{}", line.join(" "));
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: embed-rust LIBRARY NAME TEXT...");
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
