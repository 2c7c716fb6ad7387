//! `bertc bench MODEL --tokenize`: the artifact's compiled-in tokenizer against the Hugging Face
//! `tokenizers` crate on the same `tokenizer.json` and texts, one thread each, in alternating
//! blocks with a pause between them; and what tokenizing a text costs against running it.
//! Never used by tests.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bertc_passes::OutputKind;
use bertc_runtime::Artifact;

use crate::scratch::Scratch;
use crate::CliError;

/// Rounds (each a block of passes over the texts for each tokenizer).
const ROUNDS: usize = 7;

fn median(mut t: Vec<f64>) -> f64 {
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

/// Times both tokenizers over `texts` (a file of one text a line or an STS Benchmark file;
/// `None`: the built-in calibration set) and one inference of a 128-token text.
pub fn tokenize(model: &Path, texts: Option<&Path>, runs: usize) -> Result<String, CliError> {
    let texts = match texts {
        Some(p) => crate::prune::read_texts(p)?,
        None => crate::prune::read_builtin_texts(),
    };
    if texts.is_empty() {
        return Err(CliError::Input("--texts: no text to tokenize".into()));
    }
    let tokenizer_file = crate::inputs::tokenizer_beside(model);
    if crate::inputs::tokenizer_json(&tokenizer_file)?.is_none() {
        return Err(CliError::Input(format!(
            "{}: no tokenizer.json (or vocabulary files) beside the model to benchmark",
            model.display()
        )));
    }
    let tmp = Scratch::new("bench-text")?;
    let (so, name) = crate::compile::shared_library(
        model,
        None,
        (OutputKind::LastHiddenState, None),
        &Default::default(),
        &tmp,
        "text",
    )?;
    let art = Arc::new(Artifact::open(&so, &name)?);
    let hf = crate::inputs::open_tokenizer(&tokenizer_file)?;
    let bytes: usize = texts.iter().map(String::len).sum();
    // the same tokens from both (the artifact truncates to its length; the texts are shorter)
    let mut tokens = 0;
    for t in &texts {
        let a = art.tokenize(t, None, true)?;
        let h = hf.encode(t, None)?;
        if a.ids != h.ids && h.ids.len() <= art.max_seq() {
            return Err(CliError::Input(format!(
                "the tokenizers disagree on {t:?}: {:?} and {:?}",
                a.ids, h.ids
            )));
        }
        tokens += a.ids.len();
    }
    let passes = runs.max(1);
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        for (times, artifact) in [(&mut ours, true), (&mut theirs, false)] {
            let t0 = Instant::now();
            for _ in 0..passes {
                for t in &texts {
                    let n = if artifact {
                        art.tokenize(t, None, true)?.ids.len()
                    } else {
                        hf.encode(t, None)?.ids.len()
                    };
                    std::hint::black_box(n);
                }
            }
            times.push(t0.elapsed().as_secs_f64() / passes as f64);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let (a, h) = (median(ours), median(theirs));
    // one inference at 1 x 128 on one thread, for the share tokenizing takes
    let mut m = art.model(1)?;
    let seq = 128.min(art.max_seq());
    let ids: Vec<i32> = (0..seq).map(|i| 1000 + i as i32 % 1000).collect();
    let mut inf = Vec::new();
    for i in 0..13 {
        let t0 = Instant::now();
        m.run(&ids, None, None, 1, seq)?;
        if i >= 3 {
            inf.push(t0.elapsed().as_secs_f64());
        }
    }
    let inf = median(inf);
    let per_token = a / tokens as f64;
    let line = |who: &str, t: f64| {
        format!(
            "  {who:<22} {:>8.2} ms a pass, {:>6.2} M tokens/s, {:>6.1} MB/s\n",
            t * 1e3,
            tokens as f64 / t * 1e-6,
            bytes as f64 / t * 1e-6
        )
    };
    Ok(format!(
        "tokenize {} texts ({} tokens, {} bytes) with {}, one thread, median of {ROUNDS} rounds of {passes} passes:\n{}{}  ratio of medians: the artifact's tokenizer is {:.2}x as fast as tokenizers\n  a {seq}-token text: {:.1} us to tokenize, {:.2} ms to run at 1 x {seq} on one thread ({:.2}% of it)\n",
        texts.len(),
        tokens,
        bytes,
        tokenizer_file.display(),
        line("artifact (C)", a),
        line("tokenizers (Rust)", h),
        h / a,
        per_token * seq as f64 * 1e6,
        inf * 1e3,
        100.0 * per_token * seq as f64 / inf
    ))
}
