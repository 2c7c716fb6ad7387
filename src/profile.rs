//! `bertc profile`: measures, with the real generated kernels, one encoder layer's attention
//! block at every number of kept heads and its FFN block at kept neurons in steps, and writes
//! the latency profile the pruning search reads. Every level is a small model (embedding,
//! LayerNorm, the block) compiled with zero weights (timing does not depend on the values, and
//! zero data costs no file space); the block's time is the model's minus the base model's. All
//! levels go into one profiler executable: run here, or emitted for a board (`--emit exe`).
//! Each level chains as many copies of the block as the model has layers, each with its own
//! weights, and the profiler writes every weight before timing: the weights then stream from
//! memory as in the real model (untouched zero pages would all be one cached page). A block's
//! time is the level's minus the base's, over the layers.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use bertc_codegen::{self as codegen, shim};
use bertc_ir::{
    BinaryOp, DType, Dim, GeluApprox, Graph, NodeId, Op, Positions, Tensor, TensorType, TokenTypes,
};
use bertc_passes::prune::{find_blocks, Block, BlockPlan, PruneStructures};
use bertc_passes::{run_pass, select_output, OutputKind};
use bertc_targets::{BlockKind, LatencyProfile, Target};

use crate::scratch::Scratch;
use crate::CliError;

/// The layer shape a profile is measured for.
#[derive(Clone, Debug)]
pub struct LayerShape {
    /// Encoder layers: each level is measured as this many copies of the block (with their own
    /// weights), so that weights stream from memory as in the whole model.
    pub layers: usize,
    pub hidden: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub intermediate: usize,
    pub act: Op,
    pub eps: f32,
}

impl LayerShape {
    /// The shape of a model's first attention and FFN blocks.
    pub fn of_model(path: &Path) -> Result<LayerShape, CliError> {
        let (g, _) = crate::load_raised(path)?;
        let blocks = find_blocks(&g);
        let attn = blocks.iter().find_map(|b| match b {
            Block::Attn(a) => Some(a.clone()),
            _ => None,
        });
        let ffn = blocks.iter().find_map(|b| match b {
            Block::Ffn(f) => Some(f.clone()),
            _ => None,
        });
        let (Some(a), Some(f)) = (attn, ffn) else {
            return Err(CliError::Input(format!(
                "{}: no prunable attention and FFN blocks found",
                path.display()
            )));
        };
        let eps = a
            .add
            .and_then(|add| g.users(add).first().copied())
            .and_then(|ln| match g.op(ln) {
                Op::LayerNorm { eps } => Some(*eps),
                _ => None,
            })
            .unwrap_or(1e-12);
        let layers = blocks
            .iter()
            .filter(|b| matches!(b, Block::Attn(_)))
            .count();
        Ok(LayerShape {
            layers,
            hidden: a.hidden,
            heads: a.heads,
            head_dim: a.head_dim,
            intermediate: f.neurons,
            act: g.op(f.act).clone(),
            eps,
        })
    }
}

pub struct ProfileOptions {
    pub shape: LayerShape,
    pub target: Target,
    pub batch: usize,
    pub seq: usize,
    pub threads: usize,
    pub ffn_step: usize,
    pub runs: usize,
    pub out: PathBuf,
    /// Write the profiler executable to `out` instead of running it.
    pub emit_exe: bool,
    /// Measure the layers quantized as `bertc compile --quantize` would.
    pub quantize: Option<crate::quantize::Quantize>,
}

fn zeros(g: &mut Graph, name: &str, shape: &[usize]) -> NodeId {
    let n: usize = shape.iter().product();
    g.add_const(name, Tensor::from_f32(shape.to_vec(), &vec![0.0; n]))
}

fn ir(e: impl std::fmt::Display) -> CliError {
    CliError::Input(format!("profile: {e}"))
}

/// `embedding -> layer_norm`, then `layers` times the blocks `per_layer` (each `block ->
/// residual -> layer_norm`), zero weights.
fn layer_graph(s: &LayerShape, seq: usize, per_layer: &[BlockKind]) -> Result<Graph, CliError> {
    let mut g = Graph::new();
    let ty = TensorType::new(DType::I64, vec![Dim::BATCH, Dim::SEQ]);
    let ids = g.add_input("input_ids", ty.clone());
    let mask = g.add_input("attention_mask", ty);
    let h = s.hidden;
    let word = zeros(&mut g, "word", &[8, h]);
    let pos = zeros(&mut g, "pos", &[seq, h]);
    g.max_seq = Some(seq);
    let emb = g
        .add(
            Op::Embedding {
                positions: Positions::Arange { offset: 0 },
                types: TokenTypes::Absent,
                sum_qdq: None,
            },
            &[ids, word, pos],
            "embedding",
        )
        .map_err(ir)?;
    let ln = |g: &mut Graph, x: NodeId, name: &str| -> Result<NodeId, CliError> {
        let gam = zeros(g, &format!("{name}.g"), &[h]);
        let bet = zeros(g, &format!("{name}.b"), &[h]);
        g.add(Op::LayerNorm { eps: s.eps }, &[x, gam, bet], name)
            .map_err(ir)
    };
    let lin =
        |g: &mut Graph, x: NodeId, n: usize, k: usize, name: &str| -> Result<NodeId, CliError> {
            let w = zeros(g, &format!("{name}.w"), &[n, k]);
            let b = zeros(g, &format!("{name}.b"), &[n]);
            g.add(Op::Linear, &[x, w, b], name).map_err(ir)
        };
    let mut y = ln(&mut g, emb, "ln0")?;
    let layers = if per_layer.is_empty() {
        0
    } else {
        s.layers.max(1)
    };
    for (l, block) in (0..layers).flat_map(|l| per_layer.iter().map(move |b| (l, *b))) {
        let x = y;
        let n = |what: &str| format!("{what}{l}");
        y = match block {
            BlockKind::Attention => {
                let w = s.heads * s.head_dim;
                let q = lin(&mut g, x, w, h, &n("q"))?;
                let k = lin(&mut g, x, w, h, &n("k"))?;
                let v = lin(&mut g, x, w, h, &n("v"))?;
                let scale = (s.head_dim as f32).powf(-0.5);
                let a = g
                    .add(
                        Op::Attention {
                            heads: s.heads,
                            scale,
                            quant: Default::default(),
                        },
                        &[q, k, v, mask],
                        &n("attention"),
                    )
                    .map_err(ir)?;
                let o = lin(&mut g, a, h, w, &n("out"))?;
                let r = g
                    .add(Op::Binary(BinaryOp::Add), &[o, x], &n("residual"))
                    .map_err(ir)?;
                ln(&mut g, r, &n("ln_a"))?
            }
            BlockKind::Ffn => {
                let up = lin(&mut g, x, s.intermediate, h, &n("up"))?;
                let a = g.add(s.act.clone(), &[up], &n("act")).map_err(ir)?;
                let down = lin(&mut g, a, h, s.intermediate, &n("down"))?;
                let r = g
                    .add(Op::Binary(BinaryOp::Add), &[down, x], &n("residual"))
                    .map_err(ir)?;
                ln(&mut g, r, &n("ln_f"))?
            }
        };
    }
    g.outputs = vec![("last_hidden_state".into(), y)];
    g.verify().map_err(ir)?;
    Ok(g)
}

/// What one model of the profiler measures.
#[derive(Clone, Copy, Debug)]
enum Level {
    /// The embedding and its LayerNorm alone.
    Base,
    /// `layers` copies of one block at this many structures.
    Block(BlockKind, usize),
    /// The dense layers, attention and FFN in turn: what the blocks' sum is scaled to.
    Model,
}

/// The levels measured: every head count, and neurons in steps of `step` (0 and all included).
pub fn levels(s: &LayerShape, step: usize) -> (Vec<usize>, Vec<usize>) {
    let heads: Vec<usize> = (0..=s.heads).collect();
    let mut ffn: Vec<usize> = (0..=s.intermediate).step_by(step.max(1)).collect();
    if ffn.last() != Some(&s.intermediate) {
        ffn.push(s.intermediate);
    }
    (heads, ffn)
}

/// The variant's graph, pruned to `kept` by the same pass real pruning uses, then fused as
/// `bertc compile` fuses.
fn variant_graph(
    s: &LayerShape,
    seq: usize,
    level: Level,
    quantize: Option<crate::quantize::Quantize>,
    target: &Target,
) -> Result<Graph, CliError> {
    let per_layer: &[BlockKind] = match level {
        Level::Base => &[],
        Level::Block(k, _) => match k {
            BlockKind::Attention => &[BlockKind::Attention],
            BlockKind::Ffn => &[BlockKind::Ffn],
        },
        Level::Model => &[BlockKind::Attention, BlockKind::Ffn],
    };
    let mut g = layer_graph(s, seq, per_layer)?;
    if let Level::Block(_, kept) = level {
        let blocks = find_blocks(&g);
        if blocks.len() != s.layers.max(1) {
            return Err(CliError::Input(
                "profile: the blocks were not recognised".into(),
            ));
        }
        let plan = blocks
            .iter()
            .map(|b| BlockPlan {
                block: b.clone(),
                kept: (0..kept).collect(),
                weight: None,
            })
            .collect();
        run_pass(&PruneStructures { plan }, &mut g)?;
    }
    select_output(&mut g, OutputKind::LastHiddenState)?;
    bertc_passes::optimize(&mut g)?;
    if let Some(q) = quantize {
        crate::quantize::quantize_graph(&mut g, q, target)?;
    }
    Ok(g)
}

/// Builds the profiler and runs it (the profile), or writes it to `out` (`None`).
pub fn profile(o: &ProfileOptions) -> Result<Option<LatencyProfile>, CliError> {
    let start = Instant::now();
    let s = &o.shape;
    if o.batch == 0 || o.seq == 0 {
        return Err(CliError::Input(
            "--batch and --seq must be at least 1".into(),
        ));
    }
    let (heads, ffn) = levels(s, o.ffn_step);
    let mut kinds: Vec<Level> = vec![Level::Base, Level::Model];
    kinds.extend(heads.iter().map(|&k| Level::Block(BlockKind::Attention, k)));
    kinds.extend(ffn.iter().map(|&k| Level::Block(BlockKind::Ffn, k)));

    let tmp = Scratch::new("profile")?;
    let cpu = o.target.cpu_checks();
    let mut variants = Vec::new();
    let mut files = Vec::new();
    for (i, kind) in kinds.iter().enumerate() {
        let name = format!("p{i}");
        let g = variant_graph(s, o.seq, *kind, o.quantize, &o.target)?;
        let c = tmp.write_model(
            &g,
            &o.target,
            (&name, "profile"),
            None,
            &codegen::Options {
                writable_weights: true,
            },
        )?;
        // floats the profiler writes into each weight (int8 weights: their bytes as floats)
        let weights: Vec<usize> = c
            .program
            .weights
            .iter()
            .map(|w| w.bytes.len() / 4)
            .collect();
        files.push(format!("{name}_glue.c"));
        files.push(format!("{name}.o"));
        let (kind, kept) = match kind {
            Level::Base => ("base", 0),
            Level::Model => ("model", 0),
            Level::Block(BlockKind::Attention, k) => ("attention", *k),
            Level::Block(BlockKind::Ffn, k) => ("ffn", *k),
        };
        variants.push(shim::ProfileVariant {
            name,
            kind,
            kept,
            weights,
        });
        crate::progress::bar("Compiling", i + 1, kinds.len());
    }
    let features: Vec<String> = cpu.iter().map(|(name, _)| name.to_string()).collect();
    let info = shim::ProfileInfo {
        layers: s.layers.max(1),
        target: &o.target.triple,
        cpu_features: &features,
        batch: o.batch,
        seq: o.seq,
        threads: o.threads,
        hidden: s.hidden,
        heads: s.heads,
        head_dim: s.head_dim,
        intermediate: s.intermediate,
        runs: o.runs,
        quantize: o.quantize.map(|q| q.name()),
        caches: o.target.caches,
    };
    tmp.write("profiler.c", shim::profiler_c(&variants, &info).as_bytes())?;
    let inputs: Vec<&str> = std::iter::once("profiler.c")
        .chain(files.iter().map(String::as_str))
        .collect();
    let mut c = o
        .target
        .toolchain()
        .executable("profiler", &inputs, &["-lpthread", "-lm"], false);
    c.current_dir(tmp.dir());
    crate::scratch::run_tool(&mut c, "link the profiler", &o.target)?;
    eprintln!(
        "    Built the profiler ({} levels) in {:.1}s",
        kinds.len(),
        start.elapsed().as_secs_f64()
    );
    let result = if o.emit_exe {
        std::fs::copy(tmp.path("profiler"), &o.out).map_err(|e| CliError::Io {
            what: o.out.display().to_string(),
            source: e,
        })?;
        eprintln!(
            "    Wrote {} (run it on the board: {} PROFILE.json)",
            o.out.display(),
            o.out.display()
        );
        None
    } else {
        if !o.target.is_host_arch() {
            return Err(CliError::Input(format!(
                "--target {}: this machine cannot run it; use --emit exe and run the profiler on the board",
                o.target.triple
            )));
        }
        let st = Command::new(tmp.path("profiler"))
            .arg(&o.out)
            .status()
            .map_err(|e| CliError::Io {
                what: "the profiler".into(),
                source: e,
            })?;
        if !st.success() {
            return Err(CliError::Input("the profiler failed".into()));
        }
        let p = LatencyProfile::load(&o.out).map_err(|e| CliError::Input(e.to_string()))?;
        Some(p)
    };
    Ok(result)
}

/// A one-screen summary of a profile.
pub fn summary(p: &LatencyProfile) -> String {
    let mut s = format!(
        "{} ({}), batch {} x seq {}, {} threads, {} runs a level, {}\n  base {:.3} ms\n",
        p.machine, p.target, p.batch, p.seq, p.threads, p.runs, p.date, p.base_ms
    );
    let line = |name: &str, pts: &[bertc_targets::Point]| -> String {
        let sel: Vec<String> = pts
            .iter()
            .filter(|q| {
                pts.len() <= 13
                    || q.kept % (pts[1].kept.max(1) * 4) == 0
                    || q.kept == pts.last().map_or(0, |l| l.kept)
            })
            .map(|q| format!("{}: {:.3}", q.kept, q.ms))
            .collect();
        format!("  {name} ms by kept: {}\n", sel.join(", "))
    };
    s += &line("attention", &p.attention);
    s += &line("ffn", &p.ffn);
    s
}

/// The GELU default for `--act` when no model is given.
pub fn default_act() -> Op {
    Op::Gelu {
        approx: GeluApprox::Erf,
    }
}

/// Times whole models (graphs ready for code generation, last_hidden_state selected) compiled
/// here: each in `rounds` blocks of `runs` timed inferences after warm-up, its thread pool
/// stopped between blocks so that models never compete; the median of all its runs (ms).
pub fn time_models(
    graphs: &[Graph],
    target: &Target,
    batch: usize,
    seq: usize,
    threads: i32,
    runs: usize,
    rounds: usize,
) -> Result<Vec<f64>, CliError> {
    use bertc_runtime::Artifact;
    use std::sync::Arc;
    let tmp = Scratch::new("time")?;
    let mut arts = Vec::new();
    for (i, g) in graphs.iter().enumerate() {
        let name = format!("t{i}");
        let so = crate::scratch::build_so(g, target, &name, &tmp)?;
        arts.push(Arc::new(Artifact::open(&so, &name)?));
        // loaded (mapped) now: its disk space is freed before the next model is built
        let _ = std::fs::remove_file(&so);
    }
    let ids = vec![0i32; batch * seq];
    let mask = vec![1i32; batch * seq];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); graphs.len()];
    for _ in 0..rounds.max(1) {
        for (a, t) in arts.iter().zip(times.iter_mut()) {
            let mut m = a.model(threads)?;
            for r in 0..runs + 3 {
                let t0 = Instant::now();
                m.run(&ids, Some(&mask), None, batch, seq)?;
                if r >= 3 {
                    t.push(t0.elapsed().as_secs_f64() * 1e3);
                }
            }
        }
    }
    drop(arts);
    Ok(times
        .into_iter()
        .map(|mut t| {
            t.sort_by(|a, b| a.total_cmp(b));
            t[t.len() / 2]
        })
        .collect())
}
