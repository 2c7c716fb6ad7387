//! `bertc compile --report FILE.html`: a self-contained page (inline SVG, no scripts) of what
//! pruning did: heads and neurons kept per layer, predicted against measured latency per block
//! and in total, and STS accuracy of the dense and pruned models when `--sts` is given.
//! Measured per-block times come from prefixes of the pruned model (the model cut after each
//! block), compiled and timed here: block i's time is prefix i's minus prefix i-1's.

use std::fmt::Write as _;
use std::path::Path;

use bertc_ir::{Graph, Op};
use bertc_passes::{optimize, select_output, OutputKind};
use bertc_targets::{BlockKind, Target};

use crate::compile::{Options, Outcome};
use crate::prune::PruneOutcome;
use crate::quantize::LayerReport;
use crate::CliError;

/// Measured figures for the page.
pub struct Measured {
    /// Prefix i: the model up to block i (0: embedding only).
    pub prefix_ms: Vec<f64>,
    pub dense_ms: f64,
    pub sts: Option<(f64, f64)>,
}

/// The graph cut after each block's closing LayerNorm (prefix 0: after the embedding's).
fn prefixes(g: &Graph, blocks: usize) -> Result<Vec<Graph>, CliError> {
    let lns: Vec<_> = g
        .canonical_order()
        .into_iter()
        .filter(|&n| matches!(g.op(n), Op::LayerNorm { .. }))
        .collect();
    if lns.len() < blocks + 1 {
        return Err(CliError::Input(
            "report: the model's blocks do not each end in a LayerNorm (post-LN encoder expected)"
                .into(),
        ));
    }
    lns[..=blocks]
        .iter()
        .map(|&ln| {
            let mut p = g.clone();
            p.outputs = vec![("last_hidden_state".into(), ln)];
            p.remove_dead();
            select_output(&mut p, OutputKind::LastHiddenState)?;
            optimize(&mut p)?;
            Ok(p)
        })
        .collect()
}

pub fn measure(o: &Options, out: &Outcome, sts: Option<&Path>) -> Result<Measured, CliError> {
    let p = out.prune.as_ref().expect("pruned");
    let g = out.pruned_graph.as_ref().expect("pruned graph");
    let prof = &p.profile;
    let target = Target::host();
    let mut graphs = prefixes(g, p.blocks.len())?;
    let (mut dense, _) = crate::load_raised(&o.model)?;
    let dense_raw = dense.clone();
    select_output(&mut dense, OutputKind::LastHiddenState)?;
    optimize(&mut dense)?;
    graphs.push(dense);
    eprintln!(
        "    Measuring {} models (pruned prefixes and dense) at batch {} x seq {}, {} threads",
        graphs.len(),
        prof.batch,
        prof.seq,
        prof.threads
    );
    let t = crate::profile::time_models(
        &graphs,
        &target,
        prof.batch,
        prof.seq,
        prof.threads as i32,
        prof.runs.max(10),
        3,
    )?;
    let dense_ms = t[t.len() - 1];
    let sts = match sts {
        Some(f) => {
            let pairs = crate::eval::read_sts(f)?;
            let tok = crate::inputs::open_tokenizer(&crate::inputs::tokenizer_beside(&o.model))?;
            let mut d = crate::encoder::Encoder::from_graph(&dense_raw, 0)?;
            let mut q = crate::encoder::Encoder::from_graph(g, 0)?;
            let (ds, _) = crate::eval::sts_score(&mut d, &tok, &pairs)?;
            let (ps, _) = crate::eval::sts_score(&mut q, &tok, &pairs)?;
            Some((ds, ps))
        }
        None => None,
    };
    Ok(Measured {
        prefix_ms: t[..t.len() - 1].to_vec(),
        dense_ms,
        sts,
    })
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Kept fraction per layer: two bars (heads, neurons) per layer.
fn kept_chart(p: &PruneOutcome) -> String {
    let layers: Vec<(
        Option<&crate::prune::BlockOutcome>,
        Option<&crate::prune::BlockOutcome>,
    )> = {
        let mut v = Vec::new();
        let mut cur: (Option<_>, Option<_>) = (None, None);
        for b in &p.blocks {
            match b.kind {
                BlockKind::Attention => {
                    if cur.0.is_some() || cur.1.is_some() {
                        v.push(cur);
                    }
                    cur = (Some(b), None);
                }
                BlockKind::Ffn => {
                    cur.1 = Some(b);
                    v.push(cur);
                    cur = (None, None);
                }
            }
        }
        if cur.0.is_some() {
            v.push(cur);
        }
        v
    };
    let (w, h, left, top, bottom) = (720.0, 260.0, 50.0, 20.0, 40.0);
    let group = (w - left - 20.0) / layers.len().max(1) as f64;
    let bar = group * 0.34;
    let ph = h - top - bottom;
    let mut s = format!(
        r#"<svg viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="kept structures per layer">"#
    );
    for pct in [0, 25, 50, 75, 100] {
        let y = top + ph * (1.0 - pct as f64 / 100.0);
        let _ = write!(
            s,
            r##"<line x1="{left}" x2="{}" y1="{y}" y2="{y}" stroke="#e3e6ea"/><text x="{}" y="{}" class="ax" text-anchor="end">{pct}%</text>"##,
            w - 20.0,
            left - 6.0,
            y + 4.0
        );
    }
    for (i, (a, f)) in layers.iter().enumerate() {
        let x0 = left + group * i as f64 + group * 0.14;
        for (j, (b, color)) in [(a, "#3b7dd8"), (f, "#e07b39")].iter().enumerate() {
            if let Some(b) = b {
                let frac = b.kept as f64 / b.size.max(1) as f64;
                let x = x0 + j as f64 * (bar + 2.0);
                let bh = ph * frac;
                let _ = write!(
                    s,
                    r##"<rect x="{x:.1}" y="{:.1}" width="{bar:.1}" height="{:.1}" fill="{color}" rx="2"><title>{}: {} of {} kept</title></rect><rect x="{x:.1}" y="{top}" width="{bar:.1}" height="{ph:.1}" fill="none" stroke="{color}" stroke-opacity="0.35"/><text x="{:.1}" y="{:.1}" class="v" text-anchor="middle">{}</text>"##,
                    top + ph - bh,
                    bh,
                    esc(&b.name),
                    b.kept,
                    b.size,
                    x + bar / 2.0,
                    top + ph - bh - 4.0,
                    b.kept
                );
            }
        }
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" class="ax" text-anchor="middle">layer {i}</text>"#,
            x0 + bar,
            h - bottom + 18.0
        );
    }
    s += r##"<rect x="60" y="240" width="10" height="10" fill="#3b7dd8"/><text x="76" y="249" class="ax">heads kept</text><rect x="170" y="240" width="10" height="10" fill="#e07b39"/><text x="186" y="249" class="ax">FFN neurons kept</text></svg>"##;
    s
}

/// Predicted against measured time per block.
fn time_chart(p: &PruneOutcome, m: &Measured) -> String {
    let n = p.blocks.len();
    let measured: Vec<f64> = (0..n)
        .map(|i| (m.prefix_ms[i + 1] - m.prefix_ms[i]).max(0.0))
        .collect();
    let maxv = p
        .blocks
        .iter()
        .map(|b| b.dense_ms)
        .chain(measured.iter().copied())
        .fold(1e-9, f64::max);
    let (w, h, left, top, bottom) = (720.0, 260.0, 50.0, 20.0, 40.0);
    let ph = h - top - bottom;
    let group = (w - left - 20.0) / n.max(1) as f64;
    let bar = group * 0.28;
    let mut s = format!(
        r#"<svg viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="time per block">"#
    );
    for k in 0..=4 {
        let v = maxv * k as f64 / 4.0;
        let y = top + ph * (1.0 - k as f64 / 4.0);
        let _ = write!(
            s,
            r##"<line x1="{left}" x2="{}" y1="{y}" y2="{y}" stroke="#e3e6ea"/><text x="{}" y="{}" class="ax" text-anchor="end">{v:.2}</text>"##,
            w - 20.0,
            left - 6.0,
            y + 4.0
        );
    }
    for (i, b) in p.blocks.iter().enumerate() {
        let x0 = left + group * i as f64 + group * 0.08;
        for (j, (v, color, what)) in [
            (b.dense_ms, "#c9ced6", "dense (profile)"),
            (b.ms, "#3b7dd8", "predicted"),
            (measured[i], "#2a9d6f", "measured"),
        ]
        .iter()
        .enumerate()
        {
            let bh = ph * v / maxv;
            let x = x0 + j as f64 * (bar + 1.0);
            let _ = write!(
                s,
                r#"<rect x="{x:.1}" y="{:.1}" width="{bar:.1}" height="{bh:.1}" fill="{color}" rx="1.5"><title>{}: {what} {v:.3} ms</title></rect>"#,
                top + ph - bh,
                esc(&b.name)
            );
        }
        let label = match b.kind {
            BlockKind::Attention => format!("A{}", i / 2),
            BlockKind::Ffn => format!("F{}", i / 2),
        };
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" class="ax" text-anchor="middle">{label}</text>"#,
            x0 + 1.5 * bar,
            h - bottom + 18.0
        );
    }
    s += r##"<rect x="60" y="240" width="10" height="10" fill="#c9ced6"/><text x="76" y="249" class="ax">dense (profile)</text><rect x="190" y="240" width="10" height="10" fill="#3b7dd8"/><text x="206" y="249" class="ax">predicted</text><rect x="290" y="240" width="10" height="10" fill="#2a9d6f"/><text x="306" y="249" class="ax">measured</text><text x="20" y="14" class="ax">ms</text></svg>"##;
    s
}

/// The report's style sheet.
const STYLE: &str = r#"<style>
body{font:15px/1.5 system-ui,-apple-system,Segoe UI,sans-serif;color:#1d2330;max-width:780px;margin:32px auto;padding:0 16px}
h1{font-size:22px;margin:0} h2{font-size:16px;margin:28px 0 8px} .sub{color:#5d6675;margin:4px 0 18px}
.cards{display:flex;flex-wrap:wrap;gap:10px} .card{border:1px solid #e3e6ea;border-radius:8px;padding:10px 14px;min-width:130px}
.label{font-size:12px;color:#5d6675;text-transform:uppercase;letter-spacing:.04em} .value{font-size:24px;font-weight:600} .note{font-size:12px;color:#5d6675}
table{border-collapse:collapse;width:100%;font-size:13px} td,th{padding:4px 8px;border-bottom:1px solid #eef0f3;text-align:left} .n{text-align:right;font-variant-numeric:tabular-nums}
tr.tot td{font-weight:600;border-top:2px solid #d5d9df} .ax{font-size:11px;fill:#5d6675} .v{font-size:10px;fill:#1d2330}
.foot{font-size:12px;color:#5d6675;margin-top:24px}
</style>
<style>.bar{display:inline-block;height:9px;background:#4c78a8;border-radius:2px;vertical-align:middle}
.bar.over{background:#e45756} .prec{font-weight:600}</style>"#;

/// The quantization section: each linear's precision, activation bits and error (round to
/// nearest and GPTQ) against the budget, as a table with bars.
fn quant_section(layers: &[LayerReport]) -> String {
    if layers.is_empty() {
        return String::new();
    }
    let worst = layers
        .iter()
        .map(|l| l.rtn_error.max(l.gptq_error.unwrap_or(0.0)))
        .fold(1e-9, f64::max);
    let mut rows = String::new();
    for l in layers {
        let err = l.gptq_error.map_or(l.rtn_error, |g| g.min(l.rtn_error));
        let width = (120.0 * err / worst).round() as usize;
        let over = if l.precision == "fp32" { " over" } else { "" };
        let smoothed = if l.smoothed { ", smoothed" } else { "" };
        let _ = write!(
            rows,
            "<tr><td>{}</td><td class=n>{} x {}</td><td class=prec>{}</td><td class=n>{}{smoothed}</td><td class=n>{:.3}%</td><td class=n>{}</td><td><span class=\"bar{over}\" style=\"width:{width}px\"></span></td></tr>",
            esc(&l.weight),
            l.n,
            l.k,
            l.precision,
            l.abits,
            100.0 * l.rtn_error,
            l.gptq_error.map_or("-".to_string(), |g| format!("{:.3}%", 100.0 * g)),
        );
    }
    let fp32 = layers.iter().filter(|l| l.precision == "fp32").count();
    format!(
        "<h2>Quantization: {} of {} linears in int8</h2>\n<table><tr><th>weights</th><th class=n>n x k</th><th>precision</th><th class=n>activation bits</th><th class=n>error rtn</th><th class=n>error gptq</th><th>error</th></tr>\n{rows}</table>\n<p class=\"foot\">Error: the relative RMS difference of each linear's int8 output (its weights, and its input quantized per token at run time) from its fp32 output, on calibration rows held out of GPTQ's Hessian. The lower of the two is used; a linear over the budget stays fp32{}.</p>\n",
        layers.len() - fp32,
        layers.len(),
        if fp32 > 0 { format!(" ({fp32} here, in red)") } else { String::new() }
    )
}

/// A report of quantization alone (no pruning).
pub fn quant_html(o: &Options, layers: &[LayerReport]) -> String {
    let q = o.quantize.as_ref();
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>bertc quantization report: {model}</title>
{style}</head><body>
<h1>Quantization report: {model}</h1>
<div class="sub">{scheme}: weights per output channel rounded by {method}, activations quantized per token at run time; linears over a {budget:.2}% error stay fp32</div>
{quant}<p class="foot">Generated by bertc {version}.</p>
</body></html>
"#,
        model = esc(&o.model.display().to_string()),
        scheme = q.map_or("int8", |q| q.scheme.name()),
        method = q.map_or("rtn", |q| q.method().name()),
        budget = 100.0 * q.map_or(crate::quantize::DEFAULT_BUDGET, |q| q.budget),
        style = STYLE,
        quant = quant_section(layers),
        version = env!("CARGO_PKG_VERSION"),
    )
}

pub fn html(o: &Options, p: &PruneOutcome, m: &Measured, quantized: &[LayerReport]) -> String {
    let prof = &p.profile;
    let measured_total = *m.prefix_ms.last().unwrap_or(&0.0);
    let card = |label: &str, value: String, note: String| {
        format!(
            r#"<div class="card"><div class="label">{label}</div><div class="value">{value}</div><div class="note">{note}</div></div>"#
        )
    };
    let mut cards = String::new();
    cards += &card(
        "speedup",
        format!("{:.2}x", m.dense_ms / measured_total),
        format!(
            "measured; requested {:.2}x, predicted {:.2}x",
            p.dense_ms / p.target_ms,
            p.dense_ms / p.predicted_ms
        ),
    );
    cards += &card(
        "latency",
        format!("{measured_total:.2} ms"),
        format!(
            "measured; predicted {:.2} ms ({:+.1}%), dense {:.2} ms",
            p.predicted_ms,
            100.0 * (p.predicted_ms / measured_total - 1.0),
            m.dense_ms
        ),
    );
    let (heads, heads0, neu, neu0) = p.blocks.iter().fold((0, 0, 0, 0), |a, b| match b.kind {
        BlockKind::Attention => (a.0 + b.kept, a.1 + b.size, a.2, a.3),
        BlockKind::Ffn => (a.0, a.1, a.2 + b.kept, a.3 + b.size),
    });
    cards += &card("heads", format!("{heads} / {heads0}"), "kept".into());
    cards += &card("FFN neurons", format!("{neu} / {neu0}"), "kept".into());
    if let Some((d, q)) = m.sts {
        cards += &card(
            "STS-B Spearman",
            format!("{q:.2}"),
            format!("dense {d:.2} ({:+.2})", q - d),
        );
    }
    let mut rows = String::new();
    for (i, b) in p.blocks.iter().enumerate() {
        let meas = m.prefix_ms[i + 1] - m.prefix_ms[i];
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{}</td><td class=n>{} / {}</td><td class=n>{:.3}</td><td class=n>{:.3}</td><td class=n>{:.3}</td><td class=n>{:.2e}</td><td class=n>{:.3}</td></tr>",
            esc(&b.name),
            match b.kind { BlockKind::Attention => "attention", BlockKind::Ffn => "FFN" },
            b.kept, b.size, b.dense_ms, b.ms, meas, b.error, p.coefficients.get(i).copied().unwrap_or(1.0)
        );
    }
    let _ = write!(rows, "<tr class=tot><td>total</td><td>incl. embedding {:.3} / {:.3} ms</td><td></td><td class=n>{:.3}</td><td class=n>{:.3}</td><td class=n>{:.3}</td><td></td><td></td></tr>",
        prof.base_ms, m.prefix_ms[0], p.dense_ms, p.predicted_ms, measured_total);
    let request = format!(
        "{:.2} ms (dense predicted {:.2} ms / {:.2}x)",
        p.target_ms,
        p.dense_ms,
        p.dense_ms / p.target_ms
    );
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>bertc pruning report: {model}</title>
{style}</head><body>
<h1>Pruning report: {model}</h1>
<div class="sub">{method} structured pruning to {request}, for {target} at batch {batch} x seq {seq}, {threads} threads</div>
<div class="cards">{cards}</div>
<h2>Kept per layer</h2>
{kept}
<h2>Time per block: profile prediction against measurement</h2>
{times}
<table><tr><th>block</th><th>kind</th><th class=n>kept</th><th class=n>dense ms</th><th class=n>predicted ms</th><th class=n>measured ms</th><th class=n>error</th><th class=n>loss coef.</th></tr>
{rows}</table>
{quant}<p class="foot">Profile: {machine}, {features}, measured {date} ({runs} runs a level). Calibration: {cseq} sequences, {ctok} tokens;
pruning took {secs:.1} s (calibration {csecs:.1} s, level database {dsecs:.1} s). Error is each block's output error per token relative to the
residual stream energy its LayerNorm sees (structured OBS{mag}); the search scaled it by the loss coefficient, the model's measured
embedding loss with that block alone pruned over its error (SPDY's correction). Measured block times are differences of timed prefixes of the pruned model.
Generated by bertc {version}.</p>
</body></html>
"#,
        model = esc(&o.model.display().to_string()),
        method = if p.method == bertc_passes::prune::Method::Obs {
            "ZipLM (structured OBS)"
        } else {
            "Magnitude-baseline"
        },
        target = esc(&prof.target),
        batch = prof.batch,
        seq = prof.seq,
        threads = prof.threads,
        kept = kept_chart(p),
        times = time_chart(p, m),
        machine = esc(&prof.machine),
        features = esc(&prof.cpu_features.join(" ")),
        date = esc(&prof.date),
        runs = prof.runs,
        cseq = p.calibration_sequences,
        ctok = p.calibration_tokens,
        secs = p.total_secs,
        csecs = p.calibration_secs,
        dsecs = p.database_secs,
        mag = if p.method == bertc_passes::prune::Method::Magnitude {
            "-measured error of the magnitude choice, no update"
        } else {
            ""
        },
        version = env!("CARGO_PKG_VERSION"),
        style = STYLE,
        quant = quant_section(quantized),
    )
}

pub fn write(path: &Path, o: &Options, out: &Outcome, sts: Option<&Path>) -> Result<(), CliError> {
    let page =
        match &out.prune {
            Some(p) => html(o, p, &measure(o, out, sts)?, &out.quantized),
            None if !out.quantized.is_empty() => quant_html(o, &out.quantized),
            None => return Err(CliError::Input(
                "--report needs pruning (--speedup/--latency) or quantization with --calibration"
                    .into(),
            )),
        };
    std::fs::write(path, page).map_err(|e| CliError::Io {
        what: path.display().to_string(),
        source: e,
    })
}
