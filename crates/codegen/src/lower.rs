//! Lowering of a raised graph with one selected output into a `Program`: a sequence of kernel
//! steps over activation buffers whose rows are tokens (`batch * seq`) or sequences (`batch`),
//! with weights in the layouts the kernels read, and a memory plan for the workspace.

use std::collections::HashMap;

use bertc_ir::{DType, Graph, NodeId, Op, QuantPart, TokenTypes, UnaryOp};

use crate::program::MapOp;

mod map;

pub use crate::program::{
    pack_linear, pack_qlinear, qpanel_bytes, quant_row_floats, quantized_row, Act, BufId, Buffer,
    Elem, LayoutKind, LinearWeights, Program, QFormat, QuantRows, Rows, Step, Weight, WeightId,
    WeightLayout, PANEL, QPANEL_HEADER,
};

/// Why a graph cannot be compiled.
#[derive(Debug, thiserror::Error)]
pub enum CodegenError {
    #[error("node '{node}': {msg}")]
    Unsupported { node: String, msg: String },
    #[error("{0}")]
    Model(String),
    #[error("cranelift: {0}")]
    Cranelift(String),
    #[error("x86 assembler: {0}")]
    Asm(String),
}

struct Lowering<'g> {
    g: &'g Graph,
    p: Program,
    buf_of: HashMap<NodeId, BufId>,
    weight_of: HashMap<NodeId, WeightId>,
    /// The quantized copy of a value for int8 linears, by value and how it is quantized.
    quantized: HashMap<(NodeId, QuantRows), BufId>,
    /// How int8 linears with 8-bit activations group k (what the target's int8 kernels read;
    /// wider activations are in pairs).
    qformat: QFormat,
    last_use: HashMap<NodeId, usize>,
    /// The scale and zero point buffers of each dynamically quantized value.
    ranges: HashMap<BufId, (BufId, BufId)>,
}

fn unsupported(g: &Graph, n: NodeId, msg: impl Into<String>) -> CodegenError {
    CodegenError::Unsupported {
        node: g.node(n).name.clone(),
        msg: msg.into(),
    }
}

fn const_width(g: &Graph, n: NodeId) -> Result<usize, CodegenError> {
    g.ty(n)
        .shape
        .last()
        .and_then(|d| d.as_const())
        .map(|v| v as usize)
        .ok_or_else(|| unsupported(g, n, "the last dimension must be constant"))
}

impl Lowering<'_> {
    fn weight(&mut self, n: NodeId) -> Result<WeightId, CodegenError> {
        if let Some(&w) = self.weight_of.get(&n) {
            return Ok(w);
        }
        let t = self
            .g
            .const_value(n)
            .filter(|t| t.dtype.is_float())
            .ok_or_else(|| unsupported(self.g, n, "expected a float constant"))?;
        let id = self.p.weights.len();
        self.p.weights.push(Weight::f32(
            self.g.node(n).name.clone(),
            WeightLayout::Dense,
            &t.to_f32_vec(),
        ));
        self.weight_of.insert(n, id);
        Ok(id)
    }

    /// An int8 table of `dequantize_rows(q, scale)` and its scales.
    fn int8_rows(&mut self, n: NodeId) -> Result<(WeightId, WeightId), CodegenError> {
        let ops = self.g.operands(n);
        let q = self
            .g
            .const_value(ops[0])
            .filter(|t| t.dtype == DType::I8)
            .ok_or_else(|| unsupported(self.g, n, "expected constant int8 rows"))?;
        let id = self.p.weights.len();
        self.p.weights.push(Weight {
            name: self.g.node(ops[0]).name.clone(),
            dtype: DType::I8,
            layout: WeightLayout::Dense,
            bytes: q.data.to_vec(),
        });
        Ok((id, self.weight(ops[1])?))
    }

    fn new_buf(&mut self, n: NodeId) -> Result<BufId, CodegenError> {
        let ty = self.g.ty(n);
        let rows = match ty.rank() {
            3 => Rows::Tokens,
            2 => Rows::Seqs,
            _ => {
                return Err(unsupported(
                    self.g,
                    n,
                    format!("values of type {ty} are not supported"),
                ))
            }
        };
        let id = self.p.buffers.len();
        self.p.buffers.push(Buffer {
            rows,
            width: const_width(self.g, n)?,
            elem: Elem::F32,
            offset: 0,
        });
        self.buf_of.insert(n, id);
        Ok(id)
    }

    /// The quantized copy of `x` (as `rows` says) for an int8 linear, with the step that makes
    /// it the first time it is asked for (linears reading the same value share it).
    fn quantized(&mut self, x: NodeId, rows: QuantRows) -> Result<BufId, CodegenError> {
        if let Some(&b) = self.quantized.get(&(x, rows)) {
            return Ok(b);
        }
        let src = self.buf(x)?;
        let k = self.p.buffers[src].width;
        let id = self.p.buffers.len();
        let QuantRows { abits, format, .. } = rows;
        self.p.buffers.push(Buffer {
            rows: self.p.buffers[src].rows,
            width: quant_row_floats(k, format),
            elem: Elem::Quantized { k, abits, format },
            offset: 0,
        });
        // a LayerNorm's output is quantized by the LayerNorm's tasks, while the rows are in
        // cache; any other value by a quantize step of its own
        let producer = self.p.steps.iter_mut().rev().find_map(|s| match s {
            Step::LayerNorm { out, quantized, .. } if *out == src => Some(quantized),
            _ => None,
        });
        match producer {
            Some(q @ None) => *q = Some((id, rows)),
            _ => self.p.steps.push(Step::Quantize {
                x: src,
                out: id,
                k,
                rows,
            }),
        }
        self.quantized.insert((x, rows), id);
        Ok(id)
    }

    /// A buffer of one f32 a sequence.
    fn seq_scalar_buf(&mut self) -> BufId {
        let id = self.p.buffers.len();
        self.p.buffers.push(Buffer {
            rows: Rows::Seqs,
            width: 1,
            elem: Elem::F32,
            offset: 0,
        });
        id
    }

    fn buf(&self, n: NodeId) -> Result<BufId, CodegenError> {
        self.buf_of
            .get(&n)
            .copied()
            .ok_or_else(|| unsupported(self.g, n, "value is not computed by a supported op"))
    }
}

/// Lowers a raised graph whose only output is the one to compile, its int8 linears (if any)
/// with activations of 8 bits or fewer in `qformat` (the ISA's `int8_format`), wider ones in
/// pairs.
pub fn lower(g: &Graph, qformat: QFormat) -> Result<Program, CodegenError> {
    if g.outputs.len() != 1 {
        return Err(CodegenError::Model(format!(
            "expected one selected output, found {}",
            g.outputs.len()
        )));
    }
    let order = g.canonical_order();
    let mut l = Lowering {
        g,
        p: Program {
            steps: vec![],
            buffers: vec![],
            weights: vec![],
            output: 0,
            ws_per_token: 0,
            scratch_offset: 0,
            max_heads: 0,
            vocab: 0,
            type_vocab: 0,
            max_seq: g.max_seq.unwrap_or(0),
            token_types: TokenTypes::Absent,
            has_mask: g.input_named("attention_mask").is_some(),
        },
        buf_of: HashMap::new(),
        weight_of: HashMap::new(),
        quantized: HashMap::new(),
        qformat,
        last_use: HashMap::new(),
        ranges: HashMap::new(),
    };
    for &n in &order {
        let ops = g.operands(n);
        let step = match g.op(n).clone() {
            Op::Input { name } => {
                if !["input_ids", "attention_mask", "token_type_ids"].contains(&name.as_str()) {
                    return Err(unsupported(g, n, format!("unknown input '{name}'")));
                }
                continue;
            }
            Op::Const { .. } => continue,
            // read by the embeddings whose word table it is (the check is there)
            Op::DequantizeRows
                if g.users(n)
                    .iter()
                    .all(|&u| matches!(g.op(u), Op::Embedding { .. })) =>
            {
                continue
            }
            Op::Embedding {
                positions,
                types,
                sum_qdq,
            } => {
                let first = 1 + (types == TokenTypes::Input) as usize;
                if g.op(ops[0])
                    != &(Op::Input {
                        name: "input_ids".into(),
                    })
                {
                    return Err(unsupported(
                        g,
                        n,
                        "embedding ids must be the input_ids input",
                    ));
                }
                if types == TokenTypes::Input
                    && g.op(ops[1])
                        != &(Op::Input {
                            name: "token_type_ids".into(),
                        })
                {
                    return Err(unsupported(
                        g,
                        n,
                        "token types must be the token_type_ids input",
                    ));
                }
                let (word, word_scale) = match g.op(ops[first]) {
                    Op::DequantizeRows => {
                        let (w, s) = l.int8_rows(ops[first])?;
                        (w, Some(s))
                    }
                    _ => (l.weight(ops[first])?, None),
                };
                let pos = l.weight(ops[first + 1])?;
                let typ = match ops.get(first + 2) {
                    Some(&t) => Some(l.weight(t)?),
                    None => None,
                };
                l.p.vocab = g.ty(ops[first]).shape[0].as_const().unwrap_or(0) as usize;
                l.p.type_vocab = ops
                    .get(first + 2)
                    .and_then(|&t| g.ty(t).shape[0].as_const())
                    .unwrap_or(0) as usize;
                l.p.token_types = types;
                let rows = g.ty(ops[first + 1]).shape[0].as_const().unwrap_or(0) as usize;
                let max = positions.max_seq(rows);
                if max < 1 {
                    return Err(unsupported(g, n, "the position table is too small"));
                }
                l.p.max_seq = if l.p.max_seq == 0 {
                    max
                } else {
                    l.p.max_seq.min(max)
                };
                let out = l.new_buf(n)?;
                Step::Embedding {
                    out,
                    word,
                    word_scale,
                    pos,
                    typ,
                    positions,
                    types,
                    width: const_width(g, n)?,
                    sum_qdq,
                }
            }
            Op::LayerNorm { eps } => {
                let x = l.buf(ops[0])?;
                let (gamma, beta) = (l.weight(ops[1])?, l.weight(ops[2])?);
                Step::LayerNorm {
                    x,
                    out: l.new_buf(n)?,
                    gamma,
                    beta,
                    eps,
                    quantized: None,
                }
            }
            Op::Linear | Op::FusedLinear { .. } => {
                let (act, has_res) = match g.op(n) {
                    Op::FusedLinear { act, residual } => (act.map(fused_act), *residual),
                    _ => (None, false),
                };
                let residual = if has_res { Some(l.buf(ops[3])?) } else { None };
                let x = l.buf(ops[0])?;
                let wt = g
                    .const_value(ops[1])
                    .ok_or_else(|| unsupported(g, n, "linear weights must be constant"))?;
                let (nn, k) = (wt.shape[0], wt.shape[1]);
                let w = wt.to_f32_vec();
                let b = match ops.get(2) {
                    Some(&b) => Some(
                        g.const_value(b)
                            .ok_or_else(|| unsupported(g, n, "linear bias must be constant"))?
                            .to_f32_vec(),
                    ),
                    None => None,
                };
                let id = l.p.weights.len();
                l.p.weights.push(Weight::f32(
                    format!("{}.packed", g.node(ops[1]).name),
                    WeightLayout::Panels { n: nn, k },
                    &pack_linear(&w, b.as_deref(), nn, k),
                ));
                Step::Linear {
                    x,
                    out: l.new_buf(n)?,
                    packed: id,
                    k,
                    n: nn,
                    act,
                    residual,
                    weights: LinearWeights::F32,
                }
            }
            Op::Gelu { approx } => Step::Act {
                x: l.buf(ops[0])?,
                out: l.new_buf(n)?,
                act: Act::Gelu(approx),
            },
            // computed inside the map of its one user
            _ if map::inlined(g, n) => continue,
            // an op with an operand computed inside it is a map (tanh of a quantization point)
            _ if ops.iter().any(|&o| map::inlined(g, o)) => map::lower(&mut l, n)?,
            Op::Unary(UnaryOp::Tanh) => Step::Act {
                x: l.buf(ops[0])?,
                out: l.new_buf(n)?,
                act: Act::Tanh,
            },
            Op::Unary(UnaryOp::Relu) => Step::Act {
                x: l.buf(ops[0])?,
                out: l.new_buf(n)?,
                act: Act::Relu,
            },
            _ if map::mappable(g, n) => map::lower(&mut l, n)?,
            Op::Attention {
                heads,
                scale,
                quant,
            } => {
                check_attention_mask(g, n, ops.get(3).copied(), l.p.has_mask)?;
                Step::Attention {
                    q: l.buf(ops[0])?,
                    k: l.buf(ops[1])?,
                    v: l.buf(ops[2])?,
                    out: l.new_buf(n)?,
                    heads,
                    scale,
                    qk: None,
                    quant,
                }
            }
            Op::QkvAttention { heads, scale, qk } => {
                check_attention_mask(g, n, ops.get(1).copied(), l.p.has_mask)?;
                let x = l.buf(ops[0])?;
                Step::Attention {
                    q: x,
                    k: x,
                    v: x,
                    out: l.new_buf(n)?,
                    heads,
                    scale,
                    qk: Some(qk),
                    quant: Default::default(),
                }
            }
            Op::Gather { axis: 1 }
                if g.ty(ops[0]).rank() == 3 && g.const_scalar(ops[1]) == Some(0.0) =>
            {
                Step::Cls {
                    x: l.buf(ops[0])?,
                    out: l.new_buf(n)?,
                }
            }
            Op::MeanPool | Op::MaxPool | Op::Pool { .. } => {
                if g.op(ops[1])
                    != &(Op::Input {
                        name: "attention_mask".into(),
                    })
                {
                    return Err(unsupported(
                        g,
                        n,
                        "pooling must use the attention_mask input",
                    ));
                }
                let (x, out) = (l.buf(ops[0])?, l.new_buf(n)?);
                match g.op(n) {
                    Op::MeanPool => Step::MeanPool { x, out },
                    Op::Pool { mode } => Step::Pool {
                        x,
                        out,
                        mode: *mode,
                    },
                    _ => Step::MaxPool { x, out },
                }
            }
            Op::DynamicQuantize { part } => {
                // the buffer holds the real tokens only: the range must be theirs
                let per_token = g.ty(ops[0]).rank() == 3;
                let masked = ops.get(1).is_some_and(|&m| {
                    g.op(m)
                        == &(Op::Input {
                            name: "attention_mask".into(),
                        })
                });
                if ops.len() > 1 && !masked {
                    return Err(unsupported(
                        g,
                        n,
                        "dynamic_quantize's mask must be the attention_mask input",
                    ));
                }
                if per_token && l.p.has_mask && !masked {
                    return Err(unsupported(
                        g,
                        n,
                        "dynamic_quantize over padded tokens (its range would include the padding, which compiled code never computes)",
                    ));
                }
                // one range step a quantized value (its scale and zero point a sequence); the
                // integers a map over the rows, which all threads share
                let x = l.buf(ops[0])?;
                let (scale, zero) = match l.ranges.get(&x) {
                    Some(&r) => r,
                    None => {
                        let r = (l.seq_scalar_buf(), l.seq_scalar_buf());
                        l.ranges.insert(x, r);
                        l.p.steps.push(Step::QuantRange {
                            x,
                            scale: r.0,
                            zero: r.1,
                        });
                        r
                    }
                };
                match part {
                    QuantPart::Scale => {
                        l.buf_of.insert(n, scale);
                        continue;
                    }
                    QuantPart::Centered => Step::Map {
                        inputs: vec![x],
                        seq_inputs: vec![scale, zero],
                        rows: vec![],
                        out: l.new_buf(n)?,
                        expr: vec![MapOp::Input(0), MapOp::Centered(0, 1)],
                    },
                }
            }
            Op::Concat { axis }
                if ops.len() == 2
                    && ops.iter().all(|&o| g.ty(o).rank() == 2)
                    && (axis == 1 || axis == -1) =>
            {
                Step::Concat {
                    a: l.buf(ops[0])?,
                    b: l.buf(ops[1])?,
                    out: l.new_buf(n)?,
                }
            }
            Op::L2Normalize if g.ty(ops[0]).rank() == 2 => Step::Normalize {
                x: l.buf(ops[0])?,
                out: l.new_buf(n)?,
            },
            Op::QLinear {
                act,
                residual,
                abits,
                smooth,
            } => {
                let smooth = match smooth {
                    true => Some(l.weight(ops[4 + residual as usize])?),
                    false => None,
                };
                let residual = if residual { Some(l.buf(ops[4])?) } else { None };
                let consts: Vec<_> = ops[1..4].iter().map(|&c| g.const_value(c)).collect();
                let (Some(wq), Some(sc), Some(b)) = (consts[0], consts[1], consts[2]) else {
                    return Err(unsupported(
                        g,
                        n,
                        "qlinear weights, scales and bias must be constant",
                    ));
                };
                let (nn, k) = (wq.shape[0], wq.shape[1]);
                let wq: Vec<i8> = wq.to_i64_vec().iter().map(|&v| v as i8).collect();
                let format = QFormat::for_bits(l.qformat, abits, k);
                let packed = pack_qlinear(&wq, &sc.to_f32_vec(), &b.to_f32_vec(), nn, k, format);
                let id = l.p.weights.len();
                l.p.weights.push(Weight {
                    name: format!("{}.packed", g.node(ops[1]).name),
                    dtype: DType::I8,
                    layout: WeightLayout::QPanels { n: nn, k, format },
                    bytes: packed,
                });
                let rows = QuantRows {
                    abits,
                    format,
                    smooth,
                };
                let x = l.quantized(ops[0], rows)?;
                Step::Linear {
                    x,
                    out: l.new_buf(n)?,
                    packed: id,
                    k,
                    n: nn,
                    act: act.map(fused_act),
                    residual,
                    weights: LinearWeights::Int8(format),
                }
            }
            other => {
                return Err(unsupported(
                    g,
                    n,
                    format!(
                    "op '{}' has no code generator (raising left it in the graph; see `bertc ir`)",
                    other.mnemonic()
                ),
                ))
            }
        };
        let idx = l.p.steps.len();
        for o in ops {
            l.last_use.insert(o, idx);
        }
        l.p.steps.push(step);
    }
    if l.p.vocab == 0 {
        return Err(CodegenError::Model("the model has no embedding op".into()));
    }
    l.p.output = l.buf(g.outputs[0].1)?;
    plan_memory(&mut l);
    Ok(l.p)
}

fn fused_act(a: bertc_ir::FusedAct) -> Act {
    match a {
        bertc_ir::FusedAct::Gelu(g) => Act::Gelu(g),
        bertc_ir::FusedAct::Tanh => Act::Tanh,
        bertc_ir::FusedAct::Relu => Act::Relu,
    }
}

/// The buffers a step reads and the ones it writes.
fn step_io(s: &Step) -> (Vec<BufId>, Vec<BufId>) {
    match *s {
        Step::QuantRange { x, scale, zero } => (vec![x], vec![scale, zero]),
        Step::LayerNorm {
            x,
            out,
            quantized: Some((q, ..)),
            ..
        } => (vec![x], vec![out, q]),
        _ => {
            let (reads, out) = step_io1(s);
            (reads, vec![out])
        }
    }
}

fn step_io1(s: &Step) -> (Vec<BufId>, BufId) {
    match *s {
        Step::Embedding { out, .. } => (vec![], out),
        Step::Linear {
            x,
            out,
            residual: Some(r),
            ..
        } => (vec![x, r], out),
        Step::LayerNorm { x, out, .. }
        | Step::Linear { x, out, .. }
        | Step::Quantize { x, out, .. }
        | Step::Act { x, out, .. } => (vec![x], out),
        Step::Cls { x, out }
        | Step::MeanPool { x, out }
        | Step::MaxPool { x, out }
        | Step::Normalize { x, out }
        | Step::Pool { x, out, .. } => (vec![x], out),
        Step::QuantRange { x, scale, .. } => (vec![x], scale),
        Step::Concat { a, b, out } => (vec![a, b], out),
        Step::Attention { q, k, v, out, .. } => (vec![q, k, v], out),
        Step::Scatter { x } => (vec![x], x),
        Step::Map {
            ref inputs,
            ref seq_inputs,
            out,
            ..
        } => ([&inputs[..], &seq_inputs[..]].concat(), out),
    }
}

/// An attention's mask operand must be the `attention_mask` input, and a model with that input
/// must mask every attention: execution is padding-free (masked tokens are dropped
/// everywhere), so an attention that attends to them cannot be compiled faithfully.
fn check_attention_mask(
    g: &Graph,
    n: NodeId,
    mask: Option<NodeId>,
    has_mask: bool,
) -> Result<(), CodegenError> {
    match mask {
        Some(m)
            if g.op(m)
                != &(Op::Input {
                    name: "attention_mask".into(),
                }) =>
        {
            Err(unsupported(
                g,
                n,
                "the attention mask must be the attention_mask input",
            ))
        }
        None if has_mask => Err(unsupported(
            g,
            n,
            "an attention without the mask in a model with an attention_mask input",
        )),
        _ => Ok(()),
    }
}

/// Assigns workspace offsets: a buffer's region is reused once its last reader has run. A
/// per-sequence output buffer is the caller's memory and gets no region; a per-token output
/// is packed in the workspace and scattered to the caller's memory at the end. Attention
/// scratch (one score row per head and sequence position) goes at the end.
fn plan_memory(l: &mut Lowering) {
    let p = &mut l.p;
    let mut last_read: HashMap<BufId, usize> = HashMap::new();
    for (i, s) in p.steps.iter().enumerate() {
        for b in step_io(s).0 {
            last_read.insert(b, i);
        }
    }
    let mut free: Vec<(usize, usize)> = Vec::new(); // (offset, width)
    let mut top = 0usize;
    let per_token = p.buffers[p.output].rows == Rows::Tokens;
    for i in 0..p.steps.len() {
        for out in step_io(&p.steps[i]).1 {
            if out == p.output && !per_token {
                continue;
            }
            let w = p.buffers[out].width;
            let slot = free.iter().position(|&(_, fw)| fw >= w);
            p.buffers[out].offset = match slot {
                Some(k) => {
                    let (off, fw) = free.remove(k);
                    if fw > w {
                        free.push((off + w, fw - w));
                    }
                    off
                }
                None => {
                    top += w;
                    top - w
                }
            };
        }
        // a buffer read through several operands (q, k and v of one) is freed once
        let mut reads = step_io(&p.steps[i]).0;
        reads.sort_unstable();
        reads.dedup();
        for b in reads {
            if last_read.get(&b) == Some(&i) && b != p.output {
                free.push((p.buffers[b].offset, p.buffers[b].width));
            }
        }
    }
    let heads = p
        .steps
        .iter()
        .map(|s| match s {
            Step::Attention { heads, .. } => *heads,
            _ => 0,
        })
        .max()
        .unwrap_or(0);
    p.scratch_offset = top;
    p.ws_per_token = top;
    p.max_heads = heads;
}
