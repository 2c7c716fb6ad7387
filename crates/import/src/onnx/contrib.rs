//! ONNX Runtime's contrib ops (domain `com.microsoft`), as its transformer optimizer writes
//! them into BERT-family graphs (`onnxruntime.transformers.optimizer`, and the Hub's
//! `model_O1.onnx` .. `model_O4.onnx` made through it). Each is imported as the default-domain
//! ops it fuses, in the forms the raising passes recognise in unfused exports: the packed
//! query/key/value weights of `Attention` are cut into three projections, `SkipLayerNormalization`
//! is the bias add, the residual add and a `LayerNormalization`, and so on; so a fused export
//! and its unfused original raise to the same IR (`tests/same_ir.rs`).
//!
//! The attention mask: a 2-D mask is the padding mask. A 1-D `mask_index` holds each
//! sequence's end (ORT's right-padding format). When it is the count of a `[batch, seq]` mask
//! (what the optimizer builds: `ReduceSum` of the mask, or `EmbedLayerNormalization`'s second
//! output), the attention takes that mask itself: on a right-padded mask the two agree, and on
//! a mask with holes bertc computes what the unfused model computes (ORT's fused file attends
//! to the first `count` keys instead). Any other 1-D index is imported as end positions.
//! Forms bertc does not take (past state, causal or rotary attention, attention biases, the
//! end-and-start index) are one-line errors naming the node and the input or attribute.

use bertc_ir::{BinaryOp, DType, Dim, NodeId, Op, ReduceKind, UnaryOp};

use super::compose::Composer;
use super::proto::NodeProto;
use super::{Attrs, Builder};
use crate::ImportError;

/// The contrib op types the importer claims (domain `com.microsoft`).
pub const CONTRIB_OPS: &[&str] = &[
    "Attention",
    "BiasAdd",
    "BiasGelu",
    "EmbedLayerNormalization",
    "FastGelu",
    "Gelu",
    "MultiHeadAttention",
    "QuickGelu",
    "SkipLayerNormalization",
    "SkipSimplifiedLayerNormalization",
];

/// The domain of ONNX Runtime's contrib ops.
pub const CONTRIB_DOMAIN: &str = "com.microsoft";

/// The attributes both attentions share.
struct Heads {
    heads: i64,
    /// The scores' scale; absent or 0 means `1 / sqrt(head size)`.
    scale: Option<f32>,
    /// The additive bias of a masked key.
    filter: f32,
}

impl Composer<'_> {
    fn heads(&self, attrs: &Attrs) -> Result<Heads, ImportError> {
        if attrs.int("unidirectional").unwrap_or(0) != 0 {
            return Err(self.err("unidirectional (causal) attention is not supported"));
        }
        Ok(Heads {
            heads: attrs
                .int("num_heads")
                .ok_or_else(|| self.err("missing attribute 'num_heads'"))?,
            scale: attrs.float("scale"),
            filter: attrs.float("mask_filter_value").unwrap_or(-10000.0),
        })
    }

    /// `x * 0.5 * (1 + erf(x / sqrt 2))`, as PyTorch exports `gelu`.
    fn gelu_erf(&mut self, x: NodeId) -> Result<NodeId, ImportError> {
        let c = self.scalar(std::f32::consts::SQRT_2, "sqrt2");
        let d = self.bin(BinaryOp::Div, x, c, "scaled")?;
        let e = self.un(UnaryOp::Erf, d, "erf")?;
        let one = self.scalar(1.0, "one");
        let p = self.bin(BinaryOp::Add, e, one, "one_plus")?;
        let m = self.bin(BinaryOp::Mul, x, p, "prod")?;
        let half = self.scalar(0.5, "half");
        self.bin(BinaryOp::Mul, m, half, "")
    }

    /// `x * 0.5 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))`, the tanh form.
    fn gelu_tanh(&mut self, x: NodeId) -> Result<NodeId, ImportError> {
        let three = self.scalar(3.0, "three");
        let cube = self.bin(BinaryOp::Pow, x, three, "cube")?;
        let k = self.scalar(0.044715, "k");
        let t = self.bin(BinaryOp::Mul, cube, k, "cube_k")?;
        let s = self.bin(BinaryOp::Add, x, t, "inner")?;
        let c = self.scalar((2.0 / std::f64::consts::PI).sqrt() as f32, "sqrt_2_pi");
        let u = self.bin(BinaryOp::Mul, s, c, "arg")?;
        let th = self.un(UnaryOp::Tanh, u, "tanh")?;
        let one = self.scalar(1.0, "one");
        let p = self.bin(BinaryOp::Add, th, one, "one_plus")?;
        let m = self.bin(BinaryOp::Mul, x, p, "prod")?;
        let half = self.scalar(0.5, "half");
        self.bin(BinaryOp::Mul, m, half, "")
    }

    /// `LayerNormalization(input + bias + skip, gamma, beta)`, the sum first as the bias add of
    /// a linear and then the residual add: `(sum, normalized)`.
    fn skip_sum(&mut self) -> Result<NodeId, ImportError> {
        let input = self.req(0, "input")?;
        let skip = self.req(1, "skip")?;
        let bias = if self.op == "SkipLayerNormalization" {
            self.opt(4)
        } else {
            self.opt(3)
        };
        let biased = self.plus(input, bias, "biased")?;
        self.bin(BinaryOp::Add, biased, skip, "sum")
    }

    /// Columns `start..end` of the last axis of `w` (a packed projection weight or bias).
    fn columns(&mut self, w: NodeId, start: i64, end: i64, s: &str) -> Result<NodeId, ImportError> {
        let axis = self.b.g.ty(w).rank() - 1;
        self.add(
            Op::SliceTo {
                axes: vec![axis],
                starts: vec![Dim::c(start)],
                ends: vec![Dim::c(end)],
            },
            &[w],
            s,
        )
    }

    /// `transpose(reshape(x, [b, s, heads, d]), perm)`.
    fn split_heads(
        &mut self,
        x: NodeId,
        heads: i64,
        perm: &[usize],
        s: &str,
    ) -> Result<NodeId, ImportError> {
        let d = self.dims(x);
        if d.len() != 3 {
            return Err(self.err(format!("{s}: expected rank 3, got {:?}", d)));
        }
        let width = d[2]
            .as_const()
            .ok_or_else(|| self.err(format!("{s}: the hidden width must be static")))?;
        if heads <= 0 || width % heads != 0 {
            return Err(self.err(format!(
                "{s}: a width of {width} does not split into {heads} heads"
            )));
        }
        let shape = vec![d[0], d[1], Dim::c(heads), Dim::c(width / heads)];
        let r = self.add(Op::ReshapeTo { shape }, &[x], &format!("{s}_heads"))?;
        self.add(
            Op::Transpose {
                perm: perm.to_vec(),
            },
            &[r],
            &format!("{s}_t"),
        )
    }

    /// The additive bias `[batch, 1, 1|seq, keys]` of an attention mask input.
    fn mask_bias(
        &mut self,
        mask: NodeId,
        batch: Dim,
        keys: Dim,
        filter: f32,
    ) -> Result<NodeId, ImportError> {
        let ty = self.b.g.ty(mask).clone();
        let keep = match ty.rank() {
            2 | 3 => mask,
            1 => {
                if let Some(m) = self.counted_mask(mask) {
                    m
                } else if ty.shape[0] == batch {
                    // end positions: key j is kept while j < end[b]
                    let ar = self.add(
                        Op::Arange {
                            dtype: DType::I64,
                            start: 0,
                            step: 1,
                            len: keys,
                        },
                        &[],
                        "key_pos",
                    )?;
                    let end = self.add(Op::Cast { to: DType::I64 }, &[mask], "end")?;
                    let end = self.add(Op::Unsqueeze { axes: vec![1] }, &[end], "end_col")?;
                    self.bin(BinaryOp::Less, ar, end, "kept")?
                } else {
                    return Err(self.err("a 1-D mask_index of ends and starts is not supported"));
                }
            }
            r => {
                return Err(self.err(format!(
                    "a mask_index of rank {r} is not supported (rank 1, 2 or 3)"
                )))
            }
        };
        if !self.b.g.ty(keep).dtype.is_int() && self.b.g.ty(keep).dtype != DType::Bool {
            return Err(self.err("the mask must be an integer tensor"));
        }
        let f = self.add(Op::Cast { to: DType::F32 }, &[keep], "mask_f")?;
        let one = self.scalar(1.0, "mask_one");
        let inv = self.bin(BinaryOp::Sub, one, f, "mask_inv")?;
        let fv = self.scalar(filter, "mask_filter");
        let bias = self.bin(BinaryOp::Mul, inv, fv, "mask_bias")?;
        let axes = if self.b.g.ty(keep).rank() == 3 {
            vec![1]
        } else {
            vec![1, 2]
        };
        self.add(Op::Unsqueeze { axes }, &[bias], "mask_bias4")
    }

    /// When `n` is the per-sequence count of a `[batch, seq]` mask (`ReduceSum` over axis 1,
    /// possibly of a cast), that mask.
    fn counted_mask(&self, n: NodeId) -> Option<NodeId> {
        let g = &self.b.g;
        let n = self.uncast(n);
        match g.op(n) {
            Op::Reduce {
                kind: ReduceKind::Sum,
                axes,
                keepdims: false,
            } if axes == &[1] || axes == &[-1] => {
                let m = self.uncast(g.operands(n)[0]);
                let t = g.ty(m);
                (t.dtype.is_int() && t.shape == [Dim::BATCH, Dim::SEQ]).then_some(m)
            }
            _ => None,
        }
    }

    /// Multi-head attention over projected `q [b,s,H]`, `k [b,l,H]`, `v [b,l,Hv]`, with the
    /// scores scaled and the additive mask bias, back to `[b, s, Hv]`.
    fn heads_attention(
        &mut self,
        q: NodeId,
        k: NodeId,
        v: NodeId,
        mask: Option<NodeId>,
        h: &Heads,
    ) -> Result<NodeId, ImportError> {
        let heads = h.heads;
        let qd = self.dims(q);
        let q4 = self.split_heads(q, heads, &[0, 2, 1, 3], "q")?;
        let k4 = self.split_heads(k, heads, &[0, 2, 3, 1], "k")?;
        let v4 = self.split_heads(v, heads, &[0, 2, 1, 3], "v")?;
        let head = qd[2].as_const().unwrap_or(1) / heads;
        let scale = h
            .scale
            .filter(|&s| s != 0.0)
            .unwrap_or(1.0 / (head as f32).sqrt());
        let scores = self.add(Op::MatMul, &[q4, k4], "scores")?;
        let sc = self.scalar(scale, "scale");
        let mut scores = self.bin(BinaryOp::Mul, scores, sc, "scaled_scores")?;
        if let Some(m) = mask {
            let keys = self.dims(k)[1];
            let bias = self.mask_bias(m, qd[0], keys, h.filter)?;
            scores = self.bin(BinaryOp::Add, scores, bias, "masked_scores")?;
        }
        let p = self.add(Op::Softmax { axis: -1 }, &[scores], "probs")?;
        let o = self.add(Op::MatMul, &[p, v4], "context")?;
        let t = self.add(
            Op::Transpose {
                perm: vec![0, 2, 1, 3],
            },
            &[o],
            "context_t",
        )?;
        let vd = self.dims(v);
        self.add(
            Op::ReshapeTo {
                shape: vec![qd[0], qd[1], vd[2]],
            },
            &[t],
            "",
        )
    }
}

impl Builder {
    /// Imports a contrib node: the value of each of its outputs, `None` for an output bertc
    /// does not compute (an error if anything uses it).
    pub(super) fn add_contrib(
        &mut self,
        node: &NodeProto,
        name: &str,
        ins: Vec<Option<NodeId>>,
    ) -> Result<Vec<Option<NodeId>>, ImportError> {
        let attrs = Attrs(&node.attribute);
        let mut f = Composer::new(self, node, name, ins);
        let x0 = |f: &Composer| f.req(0, "input");
        Ok(match node.op_type.as_str() {
            "Gelu" => {
                // ONNX's (opset 20) has `approximate`; ORT's is the erf form
                let x = x0(&f)?;
                match attrs.string("approximate").as_deref() {
                    None | Some("none") => vec![Some(f.gelu_erf(x)?)],
                    Some("tanh") => vec![Some(f.gelu_tanh(x)?)],
                    Some(a) => return Err(f.err(format!("unknown approximate '{a}'"))),
                }
            }
            "BiasGelu" => {
                let x = x0(&f)?;
                let b = f.req(1, "bias")?;
                let x = f.bin(BinaryOp::Add, x, b, "biased")?;
                vec![Some(f.gelu_erf(x)?)]
            }
            "FastGelu" => {
                let x = x0(&f)?;
                let x = f.plus(x, f.opt(1), "biased")?;
                vec![Some(f.gelu_tanh(x)?)]
            }
            "QuickGelu" => {
                let x = x0(&f)?;
                let alpha = attrs.float("alpha").unwrap_or(1.702);
                let a = f.scalar(alpha, "alpha");
                let ax = f.bin(BinaryOp::Mul, x, a, "ax")?;
                let s = f.un(UnaryOp::Sigmoid, ax, "sigmoid")?;
                vec![Some(f.bin(BinaryOp::Mul, x, s, "")?)]
            }
            "BiasAdd" => {
                let x = x0(&f)?;
                let b = f.req(1, "bias")?;
                let skip = f.req(2, "skip")?;
                let xb = f.bin(BinaryOp::Add, x, b, "biased")?;
                vec![Some(f.bin(BinaryOp::Add, xb, skip, "")?)]
            }
            "SkipLayerNormalization" => {
                let sum = f.skip_sum()?;
                let gamma = f.req(2, "gamma")?;
                let mut ln_ins = vec![sum, gamma];
                ln_ins.extend(f.opt(3));
                let eps = attrs.float("epsilon").unwrap_or(1e-12);
                let y = f.add(
                    Op::LayerNormalization {
                        axis: -1,
                        epsilon: eps,
                    },
                    &ln_ins,
                    "",
                )?;
                vec![Some(y), None, None, Some(sum)]
            }
            "SkipSimplifiedLayerNormalization" => {
                let sum = f.skip_sum()?;
                let gamma = f.req(2, "gamma")?;
                let eps = attrs.float("epsilon").unwrap_or(1e-12);
                let sq = f.bin(BinaryOp::Mul, sum, sum, "sq")?;
                let ms = f.add(
                    Op::Reduce {
                        kind: ReduceKind::Mean,
                        axes: vec![-1],
                        keepdims: true,
                    },
                    &[sq],
                    "mean_sq",
                )?;
                let e = f.scalar(eps, "eps");
                let ms = f.bin(BinaryOp::Add, ms, e, "mean_sq_eps")?;
                let rms = f.un(UnaryOp::Sqrt, ms, "rms")?;
                let n = f.bin(BinaryOp::Div, sum, rms, "normed")?;
                let y = f.bin(BinaryOp::Mul, n, gamma, "")?;
                vec![Some(y), None, None, Some(sum)]
            }
            "EmbedLayerNormalization" => f.embed_layer_norm(&attrs)?,
            "Attention" => {
                if attrs.int("do_rotary").unwrap_or(0) != 0 {
                    return Err(f.err("rotary attention is not supported"));
                }
                f.absent(4, "past")?;
                f.absent(5, "attention_bias")?;
                f.absent(6, "past_sequence_length")?;
                let x = x0(&f)?;
                let w = f.req(1, "weights")?;
                let bias = f.opt(2);
                let h = f.heads(&attrs)?;
                let total = f.dims(w).get(1).and_then(|d| d.as_const()).ok_or_else(|| {
                    f.err("the weights must be a [hidden, q + k + v] matrix of static size")
                })?;
                let sizes = match attrs.ints("qkv_hidden_sizes") {
                    Some(s) if !s.is_empty() => s,
                    _ => vec![total / 3; 3],
                };
                if sizes.len() != 3 || sizes.iter().sum::<i64>() != total || sizes[0] != sizes[1] {
                    return Err(f.err(format!(
                        "qkv_hidden_sizes {sizes:?} do not split the weights' {total} columns"
                    )));
                }
                let mut proj = Vec::new();
                let mut start = 0;
                for (size, s) in sizes.iter().zip(["q", "k", "v"]) {
                    let ws = f.columns(w, start, start + size, &format!("{s}_weight"))?;
                    let y = f.add(Op::MatMul, &[x, ws], &format!("{s}_matmul"))?;
                    let y = match bias {
                        Some(b) => {
                            let bs = f.columns(b, start, start + size, &format!("{s}_bias"))?;
                            f.bin(BinaryOp::Add, y, bs, &format!("{s}_proj"))?
                        }
                        None => y,
                    };
                    proj.push(y);
                    start += size;
                }
                let y = f.heads_attention(proj[0], proj[1], proj[2], f.opt(3), &h)?;
                vec![Some(y), None]
            }
            "MultiHeadAttention" => {
                for (i, what) in [(5, "attention_bias"), (6, "past_key"), (7, "past_value")] {
                    f.absent(i, what)?;
                }
                let q = x0(&f)?;
                let k = f.req(1, "key (packed query/key/value is not supported)")?;
                let v = f.req(2, "value")?;
                for (n, what) in [(q, "query"), (k, "key"), (v, "value")] {
                    if f.b.g.ty(n).rank() != 3 {
                        return Err(f.err(format!(
                            "{what}: only [batch, seq, hidden] projections are supported"
                        )));
                    }
                }
                let h = f.heads(&attrs)?;
                let (mut q, mut k, mut v) = (q, k, v);
                if let Some(b) = f.opt(3) {
                    let width = |f: &Composer, n: NodeId| f.dims(n)[2].as_const().unwrap_or(0);
                    let (dq, dv) = (width(&f, q), width(&f, v));
                    let bq = f.columns(b, 0, dq, "q_bias")?;
                    let bk = f.columns(b, dq, 2 * dq, "k_bias")?;
                    let bv = f.columns(b, 2 * dq, 2 * dq + dv, "v_bias")?;
                    q = f.bin(BinaryOp::Add, q, bq, "q_proj")?;
                    k = f.bin(BinaryOp::Add, k, bk, "k_proj")?;
                    v = f.bin(BinaryOp::Add, v, bv, "v_proj")?;
                }
                let y = f.heads_attention(q, k, v, f.opt(4), &h)?;
                vec![Some(y), None, None]
            }
            _ => {
                return Err(ImportError::UnsupportedOp {
                    file: f.b.file.clone(),
                    node: name.into(),
                    op: format!("{CONTRIB_DOMAIN}::{}", node.op_type),
                })
            }
        })
    }
}

impl Composer<'_> {
    /// `EmbedLayerNormalization(ids, segment_ids?, word, position, segment?, gamma, beta,
    /// mask?, position_ids?)`: the three gathers summed, then `LayerNormalization`; outputs the
    /// normalized sum, the mask's per-sequence count and the sum.
    fn embed_layer_norm(&mut self, attrs: &Attrs) -> Result<Vec<Option<NodeId>>, ImportError> {
        let ids = self.uncast(self.req(0, "input_ids")?);
        let word = self.req(2, "word_embedding")?;
        let pos = self.req(3, "position_embedding")?;
        let gamma = self.req(5, "gamma")?;
        let beta = self.req(6, "beta")?;
        let w = self.add(Op::Gather { axis: 0 }, &[word, ids], "word")?;
        let pidx = match self.opt(8) {
            Some(p) => p,
            None => {
                let seq = *self
                    .dims(ids)
                    .get(1)
                    .ok_or_else(|| self.err("input_ids must be [batch, seq]"))?;
                self.add(
                    Op::Arange {
                        dtype: DType::I64,
                        start: 0,
                        step: 1,
                        len: seq,
                    },
                    &[],
                    "positions",
                )?
            }
        };
        let p = self.add(Op::Gather { axis: 0 }, &[pos, pidx], "position")?;
        let mut sum = self.bin(BinaryOp::Add, w, p, "word_position")?;
        match (self.opt(1), self.opt(4)) {
            (Some(seg), Some(table)) => {
                let seg = self.uncast(seg);
                let t = self.add(Op::Gather { axis: 0 }, &[table, seg], "segment")?;
                sum = self.bin(BinaryOp::Add, sum, t, "embedding_sum")?;
            }
            (None, None) => {}
            _ => {
                return Err(self
                    .err("segment_ids and segment_embedding must be given together or not at all"))
            }
        }
        let eps = attrs.float("epsilon").unwrap_or(1e-12);
        let y = self.add(
            Op::LayerNormalization {
                axis: -1,
                epsilon: eps,
            },
            &[sum, gamma, beta],
            "",
        )?;
        let count = match self.opt(7) {
            Some(mask) => {
                let m = self.add(Op::Cast { to: DType::I32 }, &[mask], "mask_i32")?;
                Some(self.add(
                    Op::Reduce {
                        kind: ReduceKind::Sum,
                        axes: vec![1],
                        keepdims: false,
                    },
                    &[m],
                    "mask_index",
                )?)
            }
            None => None,
        };
        Ok(vec![Some(y), count, Some(sum)])
    }
}
