//! The lowered program's text form: its weights (dtype, layout, size), activation buffers
//! (rows, width, workspace offset) and steps, each with the kernel the ISA chose for it (the
//! GEMM microkernel family and tile, epilogues in registers or not, GEMM or portable
//! attention). Snapshot-tested for the shared models, so that a change of kernel choice,
//! tiling or weight layout shows in a review diff; `bertc ir --lowered` prints it.

use std::fmt::Write;

use crate::attention::ATTN_TILE;
use crate::isa::Isa;
use crate::lower::{
    Act, BufId, Elem, LinearWeights, Program, QFormat, Rows, Step, WeightId, WeightLayout,
};
use crate::program::MapOp;

fn act(a: Act) -> &'static str {
    match a {
        Act::Gelu(bertc_ir::GeluApprox::Erf) => "gelu_erf",
        Act::Gelu(bertc_ir::GeluApprox::Tanh) => "gelu_tanh",
        Act::Tanh => "tanh",
        Act::Relu => "relu",
    }
}

impl Program {
    /// The text form for code generation on `isa` (see the module documentation).
    pub fn to_text(&self, isa: &Isa) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "program for {}: {} steps, vocab {}, max_seq {}, token types {}, mask {}",
            isa.name,
            self.steps.len(),
            self.vocab,
            self.max_seq,
            self.token_types,
            if self.has_mask { "input" } else { "none" },
        );
        let _ = writeln!(
            s,
            "workspace: {} floats a real token, attention scratch at {}; batches run in chunks of up to {} real tokens, or with the threads side by side from {} units of up to {} real tokens a thread",
            self.ws_per_token,
            self.scratch_offset,
            self.chunk_tokens(&isa.caches),
            crate::program::UNITS_PER_THREAD,
            crate::program::THREAD_UNIT_TOKENS,
        );
        s.push_str("weights:\n");
        for (i, w) in self.weights.iter().enumerate() {
            let layout = match w.layout {
                WeightLayout::Dense => format!("dense {}", w.len()),
                WeightLayout::Panels { n, k } => {
                    format!("panels of {} columns n={n} k={k}", crate::lower::PANEL)
                }
                WeightLayout::QPanels { n, k, format } => format!(
                    "int8 panels of {} columns (bias, scales, k in {}) n={n} k={k}",
                    crate::lower::PANEL,
                    match format {
                        QFormat::Pairs => "pairs",
                        QFormat::Quads => "fours as w + 128",
                        QFormat::Octs => "eights",
                    }
                ),
            };
            let _ = writeln!(
                s,
                "  w{i} {} {} {layout} ({} bytes)",
                w.name,
                w.dtype,
                w.bytes.len()
            );
        }
        s.push_str("buffers:\n");
        for (i, b) in self.buffers.iter().enumerate() {
            let rows = match b.rows {
                Rows::Tokens => "tokens",
                Rows::Seqs => "sequences",
            };
            let elem = match b.elem {
                Elem::F32 => String::new(),
                Elem::Quantized {
                    k,
                    abits,
                    format: QFormat::Pairs,
                } => format!(" (int{abits} rows of {k} as i16, scale)"),
                Elem::Quantized {
                    k,
                    abits,
                    format: QFormat::Quads | QFormat::Octs,
                } => format!(" (int{abits} rows of {k} as i8, sum, scale)"),
            };
            let _ = writeln!(s, "  b{i} {rows} x {}{elem} at {}", b.width, b.offset);
        }
        s.push_str("steps:\n");
        for step in &self.steps {
            let _ = writeln!(s, "  {}", self.step_text(step, isa));
        }
        let _ = writeln!(
            s,
            "output: b{} per {}",
            self.output,
            if self.output_per_token() {
                "token"
            } else {
                "sequence"
            }
        );
        s
    }

    fn step_text(&self, step: &Step, isa: &Isa) -> String {
        match *step {
            Step::Embedding {
                out,
                word,
                word_scale,
                pos,
                typ,
                positions,
                types: t,
                width,
                sum_qdq,
            } => {
                let typ = typ.map(|t| format!(" type=w{t}")).unwrap_or_default();
                let typ = match sum_qdq {
                    Some(q) => format!("{typ} qdq_word_type={q}"),
                    None => typ,
                };
                let scale = word_scale
                    .map(|s| format!(" word_scale=w{s}"))
                    .unwrap_or_default();
                format!(
                    "b{out} = embedding word=w{word}{scale} pos=w{pos}{typ} positions={positions} types={t} width={width}"
                )
            }
            Step::LayerNorm {
                x,
                out,
                gamma,
                beta,
                eps,
                quantized,
            } => {
                let q = quantized.map_or(String::new(), |(q, qr)| {
                    let kernel = isa.quantize.map_or("portable", |k| k.name);
                    let bits = qr.abits;
                    let sm = qr.smooth.map_or(String::new(), |m| format!(" smooth=w{m}"));
                    format!(", and quantized into b{q} bits={bits}{sm}  [{kernel}, per row]")
                });
                let ln = isa.layer_norm.map_or("portable", |k| k.name);
                format!(
                    "b{out} = layer_norm b{x} gamma=w{gamma} beta=w{beta} eps={eps:e}  [{ln}]{q}"
                )
            }
            Step::Linear {
                x,
                out,
                packed,
                k,
                n,
                act: a,
                residual,
                weights,
            } => {
                let mut epi = String::new();
                if let Some(a) = a {
                    let _ = write!(epi, " act={}", act(a));
                }
                if let Some(r) = residual {
                    let _ = write!(epi, " residual=b{r}");
                }
                let op = match weights {
                    LinearWeights::F32 => "linear",
                    LinearWeights::Int8(_) => "qlinear",
                };
                let (dtype, layout) = (weights.dtype(), weights.layout());
                let kernel = match isa.gemm(dtype, layout) {
                    Some(g) => format!(
                        "{} tiles of 1..{} x {}{}{}",
                        g.family,
                        g.mr,
                        g.nr,
                        if g.wide && n >= 2 * g.nr {
                            format!(
                                " (x {} on pairs of panels above {} rows)",
                                2 * g.nr,
                                crate::linear::SMALL_ROWS
                            )
                        } else {
                            String::new()
                        },
                        match (epi.is_empty(), g.epilogues) {
                            (true, _) => "",
                            (false, true) => ", epilogue in registers",
                            (false, false) => ", epilogue after the tile",
                        }
                    ),
                    None => format!(
                        "portable tiles of 1..{} x {}, epilogue after the tile",
                        isa.mr(dtype, layout),
                        crate::lower::PANEL
                    ),
                };
                let bl = isa.linear_blocking(weights, k);
                let mr = isa.mr(dtype, layout);
                let split = if bl.kblocks > 1 {
                    format!(", k in {} blocks of {}", bl.kblocks, bl.kc)
                } else {
                    String::new()
                };
                format!(
                    "b{out} = {op} b{x} w{packed} k={k} n={n}{epi}  [{kernel}; row groups of {}{split}]",
                    bl.group * mr
                )
            }
            Step::Quantize { x, out, k, rows } => {
                let kernel = isa.quantize.map_or("portable", |q| q.name);
                let bits = rows.abits;
                let sm = rows
                    .smooth
                    .map_or(String::new(), |m| format!(" smooth=w{m}"));
                format!("b{out} = quantize b{x} k={k} bits={bits}{sm}  [{kernel}, per row]")
            }
            Step::Act { x, out, act: a } => format!("b{out} = {} b{x}", act(a)),
            Step::Attention {
                out,
                heads,
                scale,
                quant,
                ..
            } => {
                let g = self.attn_geom(step).expect("an attention step");
                let (q, k, v) = match *step {
                    Step::Attention { q, k, v, .. } => (q, k, v),
                    _ => unreachable!(),
                };
                let kernel = match (
                    crate::attention::on_gemm(step, isa),
                    isa.gemm_f32(),
                    &isa.softmax,
                ) {
                    (true, Some(gk), Some(sm)) => {
                        let blocks = crate::attention::program_key_blocks(self, isa)
                            .map_or(String::new(), |kb| format!(", keys in blocks of {kb}"));
                        format!(
                            "tiles of {ATTN_TILE} queries on {} tiles of {} rows, {}{blocks}",
                            gk.family, gk.mr, sm.name
                        )
                    }
                    _ => "portable, one query row at a time".to_string(),
                };
                let quant: String = quant
                    .points()
                    .iter()
                    .filter_map(|(name, p)| p.map(|p| format!(" {name}={p}")))
                    .collect();
                format!(
                    "b{out} = attention q=b{q}[{}..{}] k=b{k}[{}..{}] v=b{v}[{}..{}] heads={heads} scale={scale}{quant}  [{kernel}]",
                    g.q_off,
                    g.q_off + g.qk_width,
                    g.k_off,
                    g.k_off + g.qk_width,
                    g.v_off,
                    g.v_off + g.v_width
                )
            }
            Step::Cls { x, out } => format!("b{out} = cls b{x}"),
            Step::MeanPool { x, out } => format!("b{out} = mean_pool b{x}"),
            Step::MaxPool { x, out } => format!("b{out} = max_pool b{x}"),
            Step::Normalize { x, out } => format!("b{out} = l2_normalize b{x}"),
            Step::Concat { a, b, out } => format!("b{out} = concat b{a} b{b}"),
            Step::QuantRange { x, scale, zero } => {
                format!("b{scale}, b{zero} = quant_range b{x}  [scale and zero point a sequence]")
            }
            Step::Pool { x, out, mode } => format!("b{out} = pool b{x} mode={}", mode.name()),
            Step::Scatter { x } => format!("output = scatter b{x}"),
            Step::Map {
                ref inputs,
                ref seq_inputs,
                ref rows,
                out,
                ref expr,
            } => format!(
                "b{out} = map {}",
                map_text(expr, [inputs, seq_inputs], rows)
            ),
        }
    }
}

/// The lowered program of a graph ready for code generation, as text for `target`.
pub fn lowered_text(
    g: &bertc_ir::Graph,
    target: &bertc_targets::Target,
) -> Result<String, crate::lower::CodegenError> {
    let isa = Isa::for_target(target);
    Ok(crate::lower::lower(g, isa.int8_format())?.to_text(&isa))
}

/// A map's expression in infix form: `b3` an input buffer, `b4[seq]` a per-sequence one, `w7` a
/// constant row.
fn map_text(expr: &[MapOp], [inputs, seq_inputs]: [&[BufId]; 2], rows: &[WeightId]) -> String {
    let mut st: Vec<String> = Vec::new();
    for op in expr {
        let t = match *op {
            MapOp::Input(i) => format!("b{}", inputs[i]),
            MapOp::Row(i) => format!("w{}", rows[i]),
            MapOp::SeqInput(i) => format!("b{}[seq]", seq_inputs[i]),
            MapOp::Const(c) => format!("{c}"),
            MapOp::Unary(u) => {
                let x = st.pop().unwrap_or_default();
                format!("{}({x})", bertc_ir::Op::Unary(u).mnemonic())
            }
            MapOp::Binary(b) => {
                let y = st.pop().unwrap_or_default();
                let x = st.pop().unwrap_or_default();
                let sym = match b {
                    bertc_ir::BinaryOp::Add => "+",
                    bertc_ir::BinaryOp::Sub => "-",
                    bertc_ir::BinaryOp::Mul => "*",
                    _ => "/",
                };
                format!("({x} {sym} {y})")
            }
            MapOp::Qdq(q) => format!("qdq({}, {q})", st.pop().unwrap_or_default()),
            MapOp::Powi(n) => format!("pow({}, {n})", st.pop().unwrap_or_default()),
            MapOp::Centered(s, z) => format!(
                "centered({}, b{}[seq], b{}[seq])",
                st.pop().unwrap_or_default(),
                seq_inputs[s],
                seq_inputs[z]
            ),
        };
        st.push(t);
    }
    st.pop().unwrap_or_default()
}
