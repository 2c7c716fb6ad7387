//! `bertc bench`: measures generated code. `--gemm MxKxN` times the GEMM kernel compiled
//! models use (one thread) against the core's measured FMA peak; `bench MODEL` compiles the
//! model to a shared library (or loads an artifact) and times whole inferences. Reports
//! medians and minimums; never used by tests.

use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bertc_codegen::{self as codegen, pack_linear};
use bertc_passes::OutputKind;
use bertc_runtime::{Artifact, Library};
use bertc_targets::Target;

use crate::quantize::Quantize;
use crate::scratch::Scratch;
use crate::CliError;

fn stats(mut t: Vec<f64>) -> (f64, f64) {
    t.sort_by(|a, b| a.total_cmp(b));
    (t[t.len() / 2], t[0])
}

fn link_shared(tmp: &Scratch, obj: &[u8], so: &str) -> Result<PathBuf, CliError> {
    tmp.write("k.o", obj)?;
    let out = Target::host()
        .toolchain()
        .shared(so, &["k.o"])
        .current_dir(tmp.dir())
        .output()
        .map_err(|e| CliError::Io {
            what: "cc".into(),
            source: e,
        })?;
    if !out.status.success() {
        return Err(CliError::Input(format!(
            "linking the benchmark failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(tmp.path(so))
}

/// Bytes as f32 words (zero-padded to a whole word), for buffers the kernels read as bytes.
fn floats(b: &[u8]) -> Vec<f32> {
    b.chunks(4)
        .map(|c| {
            let mut w = [0u8; 4];
            w[..c.len()].copy_from_slice(c);
            f32::from_le_bytes(w)
        })
        .collect()
}

fn parse_gemm(s: &str) -> Result<(usize, usize, usize), CliError> {
    let v: Vec<usize> = s
        .split('x')
        .map(|p| p.parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|_| CliError::Input(format!("--gemm '{s}': expected MxKxN, e.g. 128x768x768")))?;
    match v.as_slice() {
        [m, k, n] if *m > 0 && *k > 0 && *n > 0 => Ok((*m, *k, *n)),
        _ => Err(CliError::Input(format!(
            "--gemm '{s}': expected MxKxN, e.g. 128x768x768"
        ))),
    }
}

/// Times the GEMM kernel (f32, or int8 over quantized rows); prints GFLOP/s (int8: integer
/// multiply-adds counted as two operations) and the fraction of the measured f32 FMA peak.
pub fn gemm(
    spec: &str,
    hc: &crate::compile::HostCpu,
    runs: usize,
    int8: bool,
) -> Result<String, CliError> {
    let (m, k, n) = parse_gemm(spec)?;
    let host = Target::host();
    let cpu = hc.cpu.as_deref();
    let target =
        Target::select(None, cpu, hc.caches).map_err(|e| CliError::Input(e.to_string()))?;
    if let Some(f) = target.features.iter().find(|f| !host.has(f)) {
        return Err(CliError::Input(format!(
            "--cpu {}: this machine lacks '{f}', and the GEMM bench runs here",
            cpu.unwrap_or("native")
        )));
    }
    // int8: 8-bit activations, the kernels a quantized model runs for most linears
    let abits = int8.then_some(8u8);
    let (obj, peak_loop) = codegen::compile_gemm_bench(&target, k, n, abits)
        .map_err(|e| CliError::Input(e.to_string()))?;
    let tmp = Scratch::new("bench-gemm")?;
    let so = link_shared(&tmp, &obj, "libgemm.so")?;
    let lib = Library::open(&so)?;
    type Linear = unsafe extern "C" fn(*const f32, *mut f32, i64, *const f32);
    type Peak = unsafe extern "C" fn(i64);
    // SAFETY: the symbol is the generated function with this signature.
    let linear: Linear =
        unsafe { std::mem::transmute::<*mut c_void, Linear>(lib.symbol("bertc_bench_linear")?) };
    let x: Vec<f32> = (0..m * k)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let w: Vec<f32> = (0..n * k)
        .map(|i| ((i * 104729) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    // int8: the rows as integers in [-127, 127] with scale 1 (in the rows the target's int8
    // kernels read), the weights as integers with scale 1
    let xi: Vec<i32> = x.iter().map(|v| (v * 254.0) as i32).collect();
    let wi: Vec<i8> = w.iter().map(|v| (v * 254.0) as i8).collect();
    let (input, packed): (Vec<f32>, Vec<f32>) = if int8 {
        let narrow = codegen::Isa::for_target(&target).int8_format();
        let format = codegen::QFormat::for_bits(narrow, 8, k);
        let rows: Vec<u8> = xi
            .chunks(k)
            .flat_map(|r| codegen::quantized_row(r, 1.0, format))
            .collect();
        let bytes = codegen::pack_qlinear(&wi, &vec![1.0; n], &vec![0.0; n], n, k, format);
        (floats(&rows), floats(&bytes))
    } else {
        (x.clone(), pack_linear(&w, None, n, k))
    };
    let mut out = vec![0f32; m * n];
    let flops = 2.0 * (m * k * n) as f64;
    let mut times = Vec::with_capacity(runs);
    for i in 0..runs + 3 {
        let t = Instant::now();
        // SAFETY: input holds m rows, out m*n floats, packed the layout the kernel reads.
        unsafe { linear(input.as_ptr(), out.as_mut_ptr(), m as i64, packed.as_ptr()) };
        if i >= 3 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    // check one element against a plain dot product
    let (r, c) = (m / 2, n / 3);
    let want: f64 = (0..k)
        .map(|kk| match int8 {
            true => xi[r * k + kk] as f64 * wi[c * k + kk] as f64,
            false => x[r * k + kk] as f64 * w[c * k + kk] as f64,
        })
        .sum();
    if (out[r * n + c] as f64 - want).abs() > 1e-3 * want.abs().max(1.0) {
        return Err(CliError::Input(format!(
            "the GEMM kernel computed {} instead of {want}",
            out[r * n + c]
        )));
    }
    let dtype = if int8 { "int8" } else { "f32" };
    let (med, min) = stats(times);
    let mut s = format!(
        "gemm {m}x{k}x{n} {dtype}, 1 thread, {}: median {:.1} us ({:.1} GFLOP/s), best {:.1} us ({:.1} GFLOP/s)\n",
        target,
        med * 1e6,
        flops / med / 1e9,
        min * 1e6,
        flops / min / 1e9
    );
    if let Some(pl) = peak_loop {
        // SAFETY: the symbol is the generated peak loop with this signature.
        let peak: Peak =
            unsafe { std::mem::transmute::<*mut c_void, Peak>(lib.symbol("bertc_bench_peak")?) };
        let iters = 20_000_000i64;
        let mut pt = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            // SAFETY: register-only loop.
            unsafe { peak(iters) };
            pt.push(t.elapsed().as_secs_f64());
        }
        let (_, pmin) = stats(pt);
        let peak_gflops = iters as f64 * f64::from(pl.flops) / pmin / 1e9;
        let (of_med, of_min) = (
            flops / med / 1e9 / peak_gflops,
            flops / min / 1e9 / peak_gflops,
        );
        // an int8 kernel's integer operations against the f32 peak: a ratio, not a share
        let reach = if int8 {
            format!("{of_med:.2}x (median) / {of_min:.2}x (best) the f32 peak")
        } else {
            format!(
                "{:.0}% (median) / {:.0}% (best)",
                100.0 * of_med,
                100.0 * of_min
            )
        };
        s += &format!(
            "f32 peak (measured, {} a round): {:.1} GFLOP/s; the kernel reaches {reach}\n",
            pl.what, peak_gflops,
        );
    } else {
        s += "peak: not measured for this CPU (no FMA peak loop)\n";
    }
    drop(lib);
    Ok(s)
}

pub struct ModelBench {
    pub model: PathBuf,
    pub name: Option<String>,
    /// A second model or artifact, timed in the same run (interleaved rounds).
    pub against: Option<PathBuf>,
    pub against_name: Option<String>,
    pub batch: usize,
    pub seq: usize,
    pub ragged: bool,
    /// Time the throughput curve's shapes instead of one.
    pub curve: bool,
    pub threads: i32,
    pub runs: usize,
    pub cpu: crate::compile::HostCpu,
    /// Quantization of `model` when it is compiled here (not of `against`).
    pub quantize: Option<Quantize>,
}

/// `NAME_flops(mask, batch, seq)` of an artifact.
type FlopsFn = unsafe extern "C" fn(*const i32, i32, i32) -> f64;

/// An artifact to time: the library, its vocabulary size and longest sequence (from the
/// header of a model compiled here; an artifact's own are not known: 1000 and 512), and its
/// `NAME_flops` (artifacts of older bertc versions lack it).
struct Timed {
    art: Arc<Artifact>,
    vocab: usize,
    max_seq: usize,
    flops: Option<FlopsFn>,
}

/// A `.so` artifact, or a model compiled here to one in `tmp`.
fn open_artifact(
    model: &Path,
    name: Option<&str>,
    (cpu, quantize): (&crate::compile::HostCpu, Option<Quantize>),
    tmp: &Scratch,
    tag: &str,
) -> Result<Timed, CliError> {
    let output = (OutputKind::LastHiddenState, quantize);
    let (so, name) = crate::compile::shared_library(model, name, output, cpu, tmp, tag)?;
    let flops = bertc_runtime::Library::open(&so)?
        .symbol(&format!("{name}_flops"))
        .ok()
        // SAFETY: `NAME_flops` has this signature in every artifact that exports it (see the
        // generated header).
        .map(|f| unsafe { std::mem::transmute::<*mut std::ffi::c_void, FlopsFn>(f) });
    let h = std::fs::read_to_string(tmp.path(&format!("{tag}.h"))).unwrap_or_default();
    let define = |what: &str| {
        let prefix = format!("#define {}_{what} ", tag.to_uppercase());
        h.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.trim().parse::<usize>().ok())
    };
    Ok(Timed {
        art: Arc::new(Artifact::open(&so, &name)?),
        vocab: define("VOCAB").unwrap_or(1000),
        max_seq: define("MAX_SEQ").unwrap_or(512),
        flops,
    })
}

/// Rounds the runs are spread over, so that drift of the machine hits every model alike.
const ROUNDS: usize = 5;

/// One shape to time: `batch x seq`, sequence `i` with `lens[i]` real tokens (all `seq`
/// without).
struct Shape {
    batch: usize,
    seq: usize,
    lens: Option<Vec<usize>>,
}

impl Shape {
    /// The `--ragged` lengths: sequence i has (i + 1) * seq / batch real tokens.
    fn ragged(batch: usize, seq: usize) -> Shape {
        let lens = (0..batch).map(|i| ((i + 1) * seq / batch).max(1)).collect();
        Shape {
            batch,
            seq,
            lens: Some(lens),
        }
    }

    fn dense(batch: usize, seq: usize) -> Shape {
        Shape {
            batch,
            seq,
            lens: None,
        }
    }

    fn tokens(&self) -> usize {
        self.lens
            .as_ref()
            .map_or(self.batch * self.seq, |l| l.iter().sum())
    }
}

/// Each artifact's times (seconds) and flops a run on one shape.
type ShapeTimes = (Vec<Vec<f64>>, Vec<Option<f64>>);

/// The times (seconds) of `runs` inferences of each artifact on `shape`, in rounds, and each
/// artifact's flops a run.
fn time_shape(
    arts: &[Timed],
    shape: &Shape,
    threads: i32,
    runs: usize,
) -> Result<ShapeTimes, CliError> {
    let mut all = time_shapes(arts, &[(shape, runs)], threads, |_| ())?;
    Ok(all.remove(0))
}

/// `time_shape` for several shapes at once: each round times every shape on every artifact
/// (each model in turn, its thread pool stopped before the next one runs), so that the
/// machine's drift over the minutes a curve takes hits every shape alike. `round(r)` is
/// called after round `r` (from 1).
fn time_shapes(
    arts: &[Timed],
    shapes: &[(&Shape, usize)],
    threads: i32,
    mut round: impl FnMut(usize),
) -> Result<Vec<ShapeTimes>, CliError> {
    let vocab = arts.iter().map(|a| a.vocab).min().unwrap_or(1000);
    let inputs: Vec<(Vec<i32>, Vec<i32>)> = shapes
        .iter()
        .map(|(shape, _)| {
            let (b, s) = (shape.batch, shape.seq);
            let ids: Vec<i32> = (0..b * s)
                .map(|i| (100 + (i * 7919) % (vocab.max(200) - 100)) as i32)
                .collect();
            let mut mask = vec![1i32; b * s];
            if let Some(lens) = &shape.lens {
                for (i, &len) in lens.iter().enumerate() {
                    for t in len..s {
                        mask[i * s + t] = 0;
                    }
                }
            }
            (ids, mask)
        })
        .collect();
    let mut times: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); arts.len()]; shapes.len()];
    for r in 0..ROUNDS {
        for (((shape, runs), (ids, mask)), ts) in shapes.iter().zip(&inputs).zip(&mut times) {
            let per = runs.div_ceil(ROUNDS).max(1);
            for (a, t) in arts.iter().zip(ts.iter_mut()) {
                let mut m = a.art.model(threads)?;
                for i in 0..per + 3 {
                    let t0 = Instant::now();
                    m.run(ids, Some(mask), None, shape.batch, shape.seq)?;
                    if i >= 3 {
                        t.push(t0.elapsed().as_secs_f64());
                    }
                }
            }
        }
        round(r + 1);
    }
    Ok(times
        .into_iter()
        .zip(shapes.iter().zip(&inputs))
        .map(|(t, ((shape, _), (_, mask)))| {
            // SAFETY: the mask holds batch * seq values.
            let flops = arts
                .iter()
                .map(|a| {
                    a.flops
                        .map(|f| unsafe { f(mask.as_ptr(), shape.batch as i32, shape.seq as i32) })
                })
                .collect();
            (t, flops)
        })
        .collect())
}

/// The shapes of `bertc bench --curve`: batch 1, 8, 32, 64 at seq 128; seq 16 to 512 at batch
/// 1; a ragged batch of 64 (lengths 2 to 128) and a dense batch of as many tokens.
fn curve_shapes() -> Vec<(String, Shape)> {
    let mut v: Vec<(String, Shape)> = [1, 8, 32, 64]
        .into_iter()
        .map(|b| (format!("{b} x 128"), Shape::dense(b, 128)))
        .collect();
    for s in [16, 32, 64, 256, 512] {
        v.push((format!("1 x {s}"), Shape::dense(1, s)));
    }
    let ragged = Shape::ragged(64, 128);
    let dense = ragged.tokens().div_ceil(64);
    v.push((
        format!("ragged 64 (2..128, {} tokens)", ragged.tokens()),
        ragged,
    ));
    v.push((
        format!("dense 64 x {dense} ({} tokens)", 64 * dense),
        Shape::dense(64, dense),
    ));
    v
}

/// Times whole inferences of a compiled model (a `.so` artifact, or a model compiled here), and
/// of a second one in the same run with `--against`: on one shape, or on the curve's.
pub fn model(o: &ModelBench) -> Result<String, CliError> {
    let tmp = Scratch::new("bench-model")?;
    let mut arts = vec![open_artifact(
        &o.model,
        o.name.as_deref(),
        (&o.cpu, o.quantize),
        &tmp,
        "bench",
    )?];
    if let Some(a) = &o.against {
        arts.push(open_artifact(
            a,
            o.against_name.as_deref(),
            (&o.cpu, None),
            &tmp,
            "against",
        )?);
    }
    let names: Vec<String> = std::iter::once(&o.model)
        .chain(o.against.as_ref())
        .map(|p| p.display().to_string())
        .collect();
    if o.curve {
        return curve(&arts, &names, o);
    }
    let shape = if o.ragged {
        Shape::ragged(o.batch, o.seq)
    } else {
        Shape::dense(o.batch, o.seq)
    };
    let (b, s, tokens) = (shape.batch, shape.seq, shape.tokens());
    let (times, flops) = time_shape(&arts, &shape, o.threads, o.runs)?;
    drop(arts);
    let mut out = String::new();
    let mut medians = Vec::new();
    for ((name, t), fl) in names.iter().zip(times).zip(flops) {
        let (med, min) = stats(t);
        medians.push(med);
        let gflops = fl.map_or(String::new(), |f| {
            format!(
                ", {:.1} GFLOP/s ({:.2} GFLOP a run)",
                f / med * 1e-9,
                f * 1e-9
            )
        });
        out += &format!(
            "{name} batch {b} x seq {s}{}, threads {}: median {:.2} ms, best {:.2} ms, {:.0} tokens/s{gflops} (median)\n",
            if o.ragged { format!(" (ragged, {tokens} real tokens)") } else { String::new() },
            o.threads,
            med * 1e3,
            min * 1e3,
            tokens as f64 / med
        );
    }
    if medians.len() == 2 {
        out += &format!(
            "ratio of medians: {:.3} ({} is {:.2}x as fast as {})\n",
            medians[0] / medians[1],
            names[0],
            medians[1] / medians[0],
            names[1]
        );
    }
    Ok(out)
}

/// The curve: a table of median milliseconds and tokens per second a shape, for each model.
fn curve(arts: &[Timed], names: &[String], o: &ModelBench) -> Result<String, CliError> {
    let mut out = String::new();
    for (i, n) in names.iter().enumerate() {
        out += &format!("[{}] {n}\n", i + 1);
    }
    out += &format!(
        "threads {}; medians of runs * 512 / tokens runs (at least {ROUNDS}, at most 10 * runs)\n{:34}",
        o.threads, "case"
    );
    for i in 0..names.len() {
        out += &format!(
            " {:>10} {:>12}",
            format!("[{}] ms", i + 1),
            format!("[{}] tok/s", i + 1)
        );
    }
    out += "\n";
    // the shapes every model takes
    let max_seq = arts.iter().map(|a| a.max_seq).min().unwrap_or(512);
    let (shapes, longer): (Vec<_>, Vec<_>) = curve_shapes()
        .into_iter()
        .partition(|(_, s)| s.seq <= max_seq);
    // every shape in each round (`time_shapes`)
    let jobs: Vec<(&Shape, usize)> = shapes
        .iter()
        .map(|(_, shape)| {
            let runs = (o.runs * 512 / shape.tokens()).clamp(ROUNDS, 10 * o.runs.max(1));
            (shape, runs)
        })
        .collect();
    let all = time_shapes(arts, &jobs, o.threads, |r| {
        crate::progress::bar("Timing", r, ROUNDS)
    })?;
    for ((name, shape), (times, _)) in shapes.iter().zip(all) {
        out += &format!("{name:34}");
        for t in times {
            let (med, _) = stats(t);
            out += &format!(" {:10.2} {:12.0}", med * 1e3, shape.tokens() as f64 / med);
        }
        out += "\n";
    }
    if !longer.is_empty() {
        let names: Vec<&str> = longer.iter().map(|(n, _)| n.as_str()).collect();
        out += &format!(
            "not timed (longer than the {max_seq} positions of the model): {}\n",
            names.join(", ")
        );
    }
    Ok(out)
}
