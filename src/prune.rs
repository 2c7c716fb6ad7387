//! Pruning in `bertc compile --speedup X | --latency MS`: reads the latency profile and the
//! calibration text, runs calibration, builds the level database (structured OBS or the
//! magnitude baseline), searches the levels that meet the target, and applies them. Returns
//! what it did for the pass report and the HTML report.

use std::path::{Path, PathBuf};
use std::time::Instant;

use bertc_ir::Graph;
use bertc_passes::prune::{self, Block, Choice, Method, PruneStructures};
use bertc_passes::{run_pass, PassReport};
use bertc_targets::{BlockKind, LatencyProfile};

use crate::CliError;

pub struct PruneOptions {
    pub speedup: Option<f64>,
    pub latency_ms: Option<f64>,
    pub profile: PathBuf,
    pub calibration: Option<PathBuf>,
    pub samples: usize,
    pub method: Method,
    pub tokenizer: Option<PathBuf>,
    /// Refit each block on the pruned model's own inputs, in order (OBS only).
    pub sequential: bool,
    /// Rounds of SPDY's correction of block errors by the measured loss (0: none).
    pub spdy_rounds: usize,
    /// The quantization the pruned model gets (its profile must be measured with it).
    pub quantize: Option<&'static str>,
}

/// One block's outcome.
#[derive(Clone, Debug)]
pub struct BlockOutcome {
    pub kind: BlockKind,
    pub name: String,
    pub size: usize,
    pub kept: usize,
    pub dense_ms: f64,
    pub ms: f64,
    pub error: f64,
}

#[derive(Clone, Debug)]
pub struct PruneOutcome {
    pub method: Method,
    pub profile: LatencyProfile,
    pub blocks: Vec<BlockOutcome>,
    pub dense_ms: f64,
    pub target_ms: f64,
    pub predicted_ms: f64,
    pub calibration_sequences: usize,
    /// The calibration text was bertc's built-in set (no `--calibration`).
    pub calibration_builtin: bool,
    pub calibration_tokens: usize,
    pub calibration_secs: f64,
    pub database_secs: f64,
    pub refit_secs: f64,
    pub search_secs: f64,
    /// The coefficient each block's error was scaled by in the final search.
    pub coefficients: Vec<f64>,
    pub total_secs: f64,
}

/// bertc's own calibration text: 198 English sentences written for bertc (Apache-2.0, as the
/// rest of it): descriptions of scenes, questions, instructions, news, science, technical and
/// product text, reviews, a few long passages and very short replies. Used when pruning
/// without `--calibration`.
pub const BUILTIN_CALIBRATION: &str = include_str!("data/calibration.txt");

/// The first `samples` texts of a calibration file (`None`: the built-in set) as token ids
/// (the tokenizer beside the model unless `tokenizer` names one), truncated to the model's
/// longest sequence; an error if there are none.
pub fn calibration_seqs(
    g: &Graph,
    model: &Path,
    path: Option<&Path>,
    samples: usize,
    tokenizer: Option<&Path>,
) -> Result<Vec<Vec<i64>>, CliError> {
    let texts = match path {
        Some(p) => read_texts(p)?,
        None => read_builtin_texts(),
    };
    let tok_path = tokenizer
        .map(Path::to_path_buf)
        .unwrap_or_else(|| crate::inputs::tokenizer_beside(model));
    let tok = crate::inputs::open_tokenizer(&tok_path)?;
    let max = g.max_seq.unwrap_or(512);
    let seqs: Vec<Vec<i64>> = texts
        .iter()
        .take(samples)
        .map(|t| {
            let mut ids = tok.encode(t, None)?.ids;
            ids.truncate(max);
            Ok(ids)
        })
        .collect::<Result<_, CliError>>()?;
    if seqs.is_empty() {
        return Err(CliError::Input(format!(
            "{}: no calibration text",
            path.map_or("the built-in calibration set".into(), |p| p
                .display()
                .to_string())
        )));
    }
    Ok(seqs)
}

/// The built-in calibration set's texts.
pub fn read_builtin_texts() -> Vec<String> {
    parse_texts(BUILTIN_CALIBRATION)
}

/// Texts of a calibration file: one a line, or both sentences of each row of an STS Benchmark
/// file (tab-separated, gold score in field 5).
pub fn read_texts(path: &Path) -> Result<Vec<String>, CliError> {
    let text = std::fs::read_to_string(path).map_err(|e| CliError::Io {
        what: path.display().to_string(),
        source: e,
    })?;
    Ok(parse_texts(&text))
}

fn parse_texts(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() >= 7 && f[4].trim().parse::<f64>().is_ok() {
            out.push(f[5].to_string());
            out.push(f[6].to_string());
        } else if !line.trim().is_empty() {
            out.push(line.to_string());
        }
    }
    out
}

fn kind_of(b: &Block) -> BlockKind {
    match b {
        Block::Attn(_) => BlockKind::Attention,
        Block::Ffn(_) => BlockKind::Ffn,
    }
}

pub fn prune(
    g: &mut Graph,
    model: &Path,
    o: &PruneOptions,
    quiet: bool,
) -> Result<(PassReport, PruneOutcome), CliError> {
    let start = Instant::now();
    let input = |m: String| CliError::Input(m);
    let profile = LatencyProfile::load(&o.profile).map_err(|e| input(e.to_string()))?;
    if profile.quantize.as_deref() != o.quantize {
        let what = |q: Option<&str>| q.map_or("fp32".to_string(), str::to_string);
        return Err(input(format!(
            "--profile {}: measured for {} layers, but the model is compiled {}: measure it with `bertc profile{}`",
            o.profile.display(),
            what(profile.quantize.as_deref()),
            what(o.quantize),
            o.quantize.map_or(String::new(), |q| format!(" --quantize {q}")),
        )));
    }
    let blocks = prune::find_blocks(g);
    if blocks.is_empty() {
        return Err(input(format!(
            "{}: no attention or FFN blocks to prune",
            model.display()
        )));
    }
    for b in &blocks {
        let (hidden, heads, head_dim, inter) = match b {
            Block::Attn(a) => (a.hidden, a.heads, a.head_dim, profile.intermediate),
            Block::Ffn(f) => (f.hidden, profile.heads, profile.head_dim, f.neurons),
        };
        profile
            .check_shape(&o.profile, hidden, heads, head_dim, inter)
            .map_err(|e| input(e.to_string()))?;
    }
    let kinds: Vec<(BlockKind, usize)> = blocks.iter().map(|b| (kind_of(b), b.size())).collect();
    let dense_ms = profile
        .predict_ms(&kinds)
        .ok_or_else(|| input(format!("{}: no dense levels", o.profile.display())))?;
    let target_ms = match (o.speedup, o.latency_ms) {
        (Some(x), None) if x >= 1.0 && x.is_finite() => dense_ms / x,
        (Some(x), None) => return Err(input(format!("--speedup {x}: must be at least 1"))),
        (None, Some(ms)) if ms > 0.0 && ms.is_finite() => ms,
        (None, Some(ms)) => return Err(input(format!("--latency {ms}: must be positive"))),
        _ => return Err(input("give one of --speedup and --latency".into())),
    };
    let budget = target_ms - profile.base_ms;

    // calibration text: the user's, else bertc's own
    let seqs = calibration_seqs(
        g,
        model,
        o.calibration.as_deref(),
        o.samples,
        o.tokenizer.as_deref(),
    )?;
    let t0 = Instant::now();
    let calib = prune::calibrate(g, &blocks, &seqs, 0.01, &mut |d, t| {
        if !quiet {
            crate::progress::bar("Calibrating", d, t)
        }
    })
    .map_err(|e| input(e.to_string()))?;
    let calibration_secs = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let levels =
        prune::all_levels(g, &blocks, &calib, o.method).map_err(|e| input(e.to_string()))?;
    let database_secs = t1.elapsed().as_secs_f64();

    // the search over the profile's levels
    let options: Vec<Vec<Choice>> = blocks
        .iter()
        .zip(&levels)
        .map(|(b, l)| {
            profile
                .points(kind_of(b))
                .iter()
                .filter(|p| p.kept > 0 || b.add().is_some())
                .map(|p| Choice {
                    kept: p.kept,
                    ms: p.ms,
                    error: l.error_at(p.kept),
                })
                .collect()
        })
        .collect();
    let infeasible = || {
        input(format!(
            "a latency of {target_ms:.2} ms cannot be met: removing every block leaves {:.2} ms (dense: {dense_ms:.2} ms)",
            profile.base_ms
        ))
    };
    let t2 = Instant::now();
    let dense_kept: Vec<usize> = blocks.iter().map(|b| b.size()).collect();
    let (picks, coefficients) = if o.spdy_rounds > 0 {
        // the real loss: 1 - cosine of the mean-pooled embeddings to the dense model's, on the
        // calibration sequences, with the candidate compiled here
        let reference = crate::encoder::Encoder::from_graph(g, 0)?.embed(&seqs)?;
        let evaluations = (blocks.len() + 1) * o.spdy_rounds + 1;
        let mut done = 0;
        let mut loss = |kept: &[usize]| -> Result<f64, prune::PruneError> {
            let serr = |e: CliError| prune::PruneError::Search(e.to_string());
            let plan = prune::plan(g, &blocks, &calib, &levels, kept, o.method)?;
            let mut gc = g.clone();
            run_pass(&PruneStructures { plan }, &mut gc)
                .map_err(|e| prune::PruneError::Search(e.to_string()))?;
            let emb = crate::encoder::Encoder::from_graph(&gc, 0)
                .and_then(|mut e| e.embed(&seqs))
                .map_err(serr)?;
            done += 1;
            if !quiet {
                crate::progress::bar("Searching", done.min(evaluations), evaluations);
            }
            let l: f64 = emb
                .iter()
                .zip(&reference)
                .map(|(a, b)| {
                    1.0 - a
                        .iter()
                        .zip(b)
                        .map(|(x, y)| *x as f64 * *y as f64)
                        .sum::<f64>()
                })
                .sum();
            Ok(l / emb.len().max(1) as f64)
        };
        let r = prune::search::refine(&options, budget, &dense_kept, o.spdy_rounds, &mut loss)
            .map_err(|e| input(e.to_string()))?
            .ok_or_else(infeasible)?;
        if !quiet && done < evaluations {
            crate::progress::bar("Searching", evaluations, evaluations);
        }
        (r.picks, r.coefficients)
    } else {
        let p = prune::search(&options, budget).ok_or_else(infeasible)?;
        (p, vec![1.0; blocks.len()])
    };
    let search_secs = t2.elapsed().as_secs_f64();
    let kept: Vec<usize> = picks
        .iter()
        .zip(&options)
        .map(|(&i, o)| o[i].kept)
        .collect();
    let plan = prune::plan(g, &blocks, &calib, &levels, &kept, o.method)
        .map_err(|e| input(e.to_string()))?;
    let mut refit_secs = 0.0;
    let outcome_blocks: Vec<BlockOutcome> = blocks
        .iter()
        .zip(&picks)
        .zip(&options)
        .map(|((b, &i), opts)| {
            let k = kind_of(b);
            BlockOutcome {
                kind: k,
                name: g.node(b.pruned_linear()).name.clone(),
                size: b.size(),
                kept: opts[i].kept,
                dense_ms: profile.block_ms(k, b.size()).unwrap_or(0.0),
                ms: opts[i].ms,
                error: opts[i].error,
            }
        })
        .collect();
    let count = |k: BlockKind, kept: bool| -> usize {
        outcome_blocks
            .iter()
            .filter(|b| b.kind == k)
            .map(|b| if kept { b.kept } else { b.size })
            .sum()
    };
    let report = if o.method == Method::Obs && o.sequential {
        let t2 = Instant::now();
        let changed = prune::apply_sequential(g, &blocks, &plan, &calib, 0.01, &mut |d, t| {
            if !quiet {
                crate::progress::bar("Refitting", d, t)
            }
        })
        .map_err(|e| input(e.to_string()))?;
        g.verify().map_err(|e| input(e.to_string()))?;
        refit_secs = t2.elapsed().as_secs_f64();
        PassReport {
            pass: "prune-structures",
            summary: format!(
                "{} blocks pruned (sequential refit); heads {}/{}, FFN neurons {}/{}",
                changed.len(),
                count(BlockKind::Attention, true),
                count(BlockKind::Attention, false),
                count(BlockKind::Ffn, true),
                count(BlockKind::Ffn, false)
            ),
        }
    } else {
        run_pass(&PruneStructures { plan }, g)?
    };
    let _ = &count;
    let predicted_ms = profile.base_ms + outcome_blocks.iter().map(|b| b.ms).sum::<f64>();
    Ok((
        report,
        PruneOutcome {
            method: o.method,
            profile,
            blocks: outcome_blocks,
            dense_ms,
            target_ms,
            predicted_ms,
            calibration_sequences: calib.sequences,
            calibration_builtin: o.calibration.is_none(),
            calibration_tokens: calib.tokens,
            calibration_secs,
            database_secs,
            refit_secs,
            search_secs,
            coefficients,
            total_secs: start.elapsed().as_secs_f64(),
        },
    ))
}
