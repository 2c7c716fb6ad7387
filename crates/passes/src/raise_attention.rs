//! `raise-attention`: multi-head self-attention as exported op by op,
//!
//! ```text
//! q4 = transpose(reshape(q, [b,s,H,d]), [0,2,1,3])      (k: perm [0,2,3,1], v: like q)
//! p  = softmax(matmul(q4, k4) * scale + mask)
//! y  = reshape(transpose(matmul(p, v4), [0,2,1,3]), [b,s,H*d])
//! ```
//!
//! becomes `attention(q, k, v, attention_mask) heads=H scale=...`. Scales may sit on the scores
//! or on q and k (multiplications or divisions by constants). The additive mask expression is
//! accepted only when it depends on one integer `[batch, seq]` input and, evaluated on probe
//! masks (with holes, not only right padding), is 0 where the key's mask is 1 and a large
//! negative value where it is 0, for every query: the padding mask, whatever arithmetic the
//! exporter used to build it.
//!
//! A static QDQ file's quantization points (`qdq`, from `raise-qdq`) on the scores (after the
//! matmul, after the scale, after the mask) and on the probabilities become the attention's
//! own (`AttnQuant`); one on its output stays a `qdq` after it (elementwise, it commutes with
//! the transpose and reshape). A point on the mask itself is looked through: it keeps the
//! mask's zeros, and padding-free execution drops the masked keys, where the file, whose
//! point saturates the mask's large negative value to a few steps of its scale, would give
//! them a little weight. A sequence's result is thus what the file computes for it alone.

use bertc_interp::{Data, Value};
use bertc_ir::{AttnQuant, BinaryOp, Binding, Dim, Graph, NodeId, Op, Qdq};

use crate::pattern::{binary, single_user, split_by};
use crate::probe;
use crate::{Pass, PassError};

pub struct RaiseAttention;

/// `(x, Some(point))` when `n` is `qdq(x)`, else `(n, None)`.
fn peel_qdq(g: &Graph, n: NodeId) -> (NodeId, Option<Qdq>) {
    match g.op(n) {
        Op::Qdq(p) => (g.operands(n)[0], Some(*p)),
        _ => (n, None),
    }
}

/// Strips multiplications and divisions by scalar constants: `(inner, product of scales)`.
fn peel_scale(g: &Graph, mut n: NodeId) -> (NodeId, f64) {
    let mut s = 1.0;
    loop {
        if let Some((a, b)) = binary(g, n, BinaryOp::Mul) {
            if let Some((x, c)) = split_by(a, b, |m| g.const_scalar(m).is_some()) {
                s *= g.const_scalar(c).unwrap_or(1.0);
                n = x;
                continue;
            }
        }
        if let Some((a, b)) = binary(g, n, BinaryOp::Div) {
            if let Some(c) = g.const_scalar(b) {
                s /= c;
                n = a;
                continue;
            }
        }
        return (n, s);
    }
}

/// `transpose(reshape(x3, [B,S,H,d]), perm)`: returns `(x3, H)`, peeling scales at both levels.
fn heads_of(g: &Graph, n: NodeId, perm: &[usize]) -> Option<(NodeId, usize, f64)> {
    let (t, s1) = peel_scale(g, n);
    match g.op(t) {
        Op::Transpose { perm: p } if p == perm => {}
        _ => return None,
    }
    let (r, s2) = peel_scale(g, g.operands(t)[0]);
    let shape = match g.op(r) {
        Op::ReshapeTo { shape } => shape.clone(),
        _ => return None,
    };
    let (x, s3) = peel_scale(g, g.operands(r)[0]);
    let xt = g.ty(x);
    if shape.len() != 4 || xt.rank() != 3 || shape[0] != xt.shape[0] || shape[1] != xt.shape[1] {
        return None;
    }
    let heads = shape[2].as_const()? as usize;
    Some((x, heads, s1 * s2 * s3))
}

/// Checks by probing that `m` is the additive padding mask of the input it depends on.
fn padding_mask_input(g: &Graph, m: NodeId, heads: usize) -> Option<NodeId> {
    let inputs = probe::input_leaves(g, m);
    if inputs.len() != 1 {
        return None;
    }
    let input = inputs[0];
    let ty = g.ty(input);
    if !ty.dtype.is_int() || ty.shape != [Dim::BATCH, Dim::SEQ] {
        return None;
    }
    let probes: [(usize, usize, Vec<i64>); 2] = [
        (3, 5, vec![1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 0, 0, 0, 0]),
        (2, 7, vec![1, 0, 1, 1, 0, 1, 0, 0, 1, 1, 1, 1, 1, 1]),
    ];
    for (b, s, mask) in probes {
        let v = probe::eval(
            g,
            m,
            &[(input, Value::i64(vec![b, s], mask.clone()))],
            Binding { batch: b, seq: s },
        )?;
        let Data::F(vals) = &v.data else { return None };
        // broadcast the probe result to [b, heads, s, s] and check every element
        let shape = v.shape.clone();
        if shape.len() > 4 {
            return None;
        }
        let full = [b, heads, s, s];
        let off = 4 - shape.len();
        for (k, &d) in shape.iter().enumerate() {
            if d != 1 && d != full[k + off] {
                return None;
            }
        }
        let strides: Vec<usize> = (0..shape.len())
            .map(|k| shape[k + 1..].iter().product())
            .collect();
        for bi in 0..b {
            for h in 0..heads {
                for i in 0..s {
                    for j in 0..s {
                        let idx4 = [bi, h, i, j];
                        let mut flat = 0;
                        for k in 0..shape.len() {
                            if shape[k] != 1 {
                                flat += idx4[k + off] * strides[k];
                            }
                        }
                        let x = vals[flat];
                        let keep = mask[bi * s + j] != 0;
                        if keep && x != 0.0 || !keep && x > -1e4 {
                            return None;
                        }
                    }
                }
            }
        }
    }
    Some(input)
}

struct Found {
    q: NodeId,
    k: NodeId,
    v: NodeId,
    mask: Option<NodeId>,
    heads: usize,
    scale: f64,
    quant: AttnQuant,
    /// The point on the output, applied after the attention.
    out: Option<Qdq>,
    root: NodeId,
}

fn match_at(g: &Graph, sm: NodeId) -> Option<Found> {
    let Op::Softmax { axis } = g.op(sm) else {
        return None;
    };
    if g.ty(sm).rank() != 4 || !(*axis == -1 || *axis == 3) {
        return None;
    }
    let input = g.operands(sm)[0];
    // scores (+ mask), each with its quantization point if any
    let is_scores = |n: NodeId| {
        let n = peel_scale(g, peel_qdq(g, n).0).0;
        matches!(g.op(peel_qdq(g, n).0), Op::MatMul)
    };
    let (inner, after_mask) = peel_qdq(g, input);
    let (masked, scores, mask_expr) = match binary(g, inner, BinaryOp::Add) {
        Some((a, b)) => {
            let (m, s) = split_by(a, b, is_scores)?;
            (after_mask, s, Some(m))
        }
        None => (None, input, None),
    };
    let (scores, scaled) = peel_qdq(g, scores);
    let (mm, s0) = peel_scale(g, scores);
    let (mm, on_scores) = peel_qdq(g, mm);
    if !matches!(g.op(mm), Op::MatMul) {
        return None;
    }
    let ops = g.operands(mm);
    let (q, hq, sq) = heads_of(g, ops[0], &[0, 2, 1, 3])?;
    let (k, hk, sk) = heads_of(g, ops[1], &[0, 2, 3, 1])?;
    // p @ v, back to [b, s, H*dv]
    let mut p = sm;
    let mut pv = single_user(g, sm)?;
    let probs = match g.op(pv) {
        Op::Qdq(q) => {
            let q = *q;
            p = pv;
            pv = single_user(g, pv)?;
            Some(q)
        }
        _ => None,
    };
    if !matches!(g.op(pv), Op::MatMul) || g.operands(pv)[0] != p {
        return None;
    }
    let (v, hv, sv) = heads_of(g, g.operands(pv)[1], &[0, 2, 1, 3])?;
    if sv != 1.0 || hq != hk || hq != hv {
        return None;
    }
    let mut t = single_user(g, pv)?;
    let out = match g.op(t) {
        Op::Qdq(q) => {
            let q = *q;
            t = single_user(g, t)?;
            Some(q)
        }
        _ => None,
    };
    match g.op(t) {
        Op::Transpose { perm } if perm == &[0, 2, 1, 3] => {}
        _ => return None,
    }
    let root = single_user(g, t)?;
    let Op::ReshapeTo { shape } = g.op(root) else {
        return None;
    };
    let vt = g.ty(v);
    if shape.len() != 3 || shape[..2] != g.ty(q).shape[..2] || shape[2] != vt.shape[2] {
        return None;
    }
    let mask = match mask_expr {
        Some(m) => Some(padding_mask_input(g, peel_qdq(g, m).0, hq)?),
        None => None,
    };
    Some(Found {
        q,
        k,
        v,
        mask,
        heads: hq,
        scale: s0 * sq * sk,
        quant: AttnQuant {
            scores: on_scores,
            scaled,
            // the mask adds zero to every key kept: a point that repeats the one before adds
            // nothing
            masked: masked.filter(|&m| Some(m) != scaled),
            probs,
        },
        out,
        root,
    })
}

impl Pass for RaiseAttention {
    fn name(&self) -> &'static str {
        "raise-attention"
    }

    fn run(&self, g: &mut Graph) -> Result<String, PassError> {
        let mut raised = 0;
        let mut softmaxes = 0;
        for n in g.canonical_order() {
            if !g.contains(n) || !matches!(g.op(n), Op::Softmax { .. }) || g.ty(n).rank() != 4 {
                continue;
            }
            softmaxes += 1;
            let Some(f) = match_at(g, n) else { continue };
            let mut operands = vec![f.q, f.k, f.v];
            operands.extend(f.mask);
            let name = g.node(f.root).name.clone();
            let a = g
                .add(
                    Op::Attention {
                        heads: f.heads,
                        scale: f.scale as f32,
                        quant: f.quant,
                    },
                    &operands,
                    &name,
                )
                .map_err(|source| PassError::Ir {
                    pass: "raise-attention",
                    source,
                })?;
            if g.ty(a) != g.ty(f.root) {
                continue;
            }
            let a = match f.out {
                Some(p) => g
                    .add(Op::Qdq(p), &[a], &format!("{name}.qdq"))
                    .map_err(|source| PassError::Ir {
                        pass: "raise-attention",
                        source,
                    })?,
                None => a,
            };
            g.replace_uses(f.root, a);
            g.remove_dead();
            raised += 1;
        }
        let missed = softmaxes - raised;
        Ok(if missed == 0 {
            format!("{raised} attention blocks")
        } else {
            format!("{raised} attention blocks; {missed} softmax over scores not recognised (left as ops)")
        })
    }
}
