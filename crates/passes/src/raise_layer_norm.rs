//! `raise-layer-norm`: ONNX `LayerNormalization` over the last axis, and its decomposed form
//! `(x - mean(x)) / sqrt(mean((x - mean(x))^2) + eps) * gamma + beta`, become `layer_norm`.

use bertc_ir::{BinaryOp, Graph, NodeId, Op, ReduceKind, Tensor, UnaryOp};

use crate::pattern::{binary, is_scalar, split_by};
use crate::{Pass, PassError};

pub struct RaiseLayerNorm;

fn is_param(g: &Graph, n: NodeId, h: bertc_ir::Dim) -> bool {
    g.const_value(n).is_some()
        && g.ty(n).rank() == 1
        && g.ty(n).shape[0] == h
        && g.ty(n).dtype.is_float()
}

fn mean_last(g: &Graph, n: NodeId) -> Option<NodeId> {
    match g.op(n) {
        Op::Reduce {
            kind: ReduceKind::Mean,
            axes,
            keepdims: true,
        } => {
            let x = g.operands(n)[0];
            let r = g.ty(x).rank() as i64;
            (axes.len() == 1 && (axes[0] == -1 || axes[0] == r - 1)).then_some(x)
        }
        _ => None,
    }
}

/// Matches the decomposed form rooted at `root`: returns `(x, gamma, beta, eps)`.
fn decomposed(g: &Graph, root: NodeId) -> Option<(NodeId, NodeId, NodeId, f32)> {
    let h = *g.ty(root).shape.last()?;
    let (a, b) = binary(g, root, BinaryOp::Add)?;
    let (scaled, beta) = split_by(a, b, |n| is_param(g, n, h))?;
    let (c, d) = binary(g, scaled, BinaryOp::Mul)?;
    let (normed, gamma) = split_by(c, d, |n| is_param(g, n, h))?;
    let (centered, denom) = binary(g, normed, BinaryOp::Div)?;
    let (x, m) = binary(g, centered, BinaryOp::Sub)?;
    if mean_last(g, m)? != x {
        return None;
    }
    let sq = match g.op(denom) {
        Op::Unary(UnaryOp::Sqrt) => g.operands(denom)[0],
        _ => return None,
    };
    let (v, e) = binary(g, sq, BinaryOp::Add)?;
    let (var, eps_n) = split_by(v, e, |n| g.const_scalar(n).is_some())?;
    let eps = g.const_scalar(eps_n)? as f32;
    let p = mean_last(g, var)?;
    let (base, two) = binary(g, p, BinaryOp::Pow).or_else(|| {
        binary(g, p, BinaryOp::Mul)
            .filter(|(a, b)| a == b)
            .map(|(a, _)| (a, a))
    })?;
    if two != base && !is_scalar(g, two, 2.0) {
        return None;
    }
    // the squared term is (x - mean(x)), the same node or an equal one
    let same_center = base == centered
        || binary(g, base, BinaryOp::Sub)
            .is_some_and(|(bx, bm)| bx == x && mean_last(g, bm) == Some(x));
    same_center.then_some((x, gamma, beta, eps))
}

impl Pass for RaiseLayerNorm {
    fn name(&self) -> &'static str {
        "raise-layer-norm"
    }

    fn run(&self, g: &mut Graph) -> Result<String, PassError> {
        let mut raised = 0;
        let err = |source| PassError::Ir {
            pass: "raise-layer-norm",
            source,
        };
        for n in g.canonical_order() {
            let (x, gamma, beta, eps) = match g.op(n).clone() {
                Op::LayerNormalization { axis, epsilon } => {
                    let ops = g.operands(n);
                    let r = g.ty(n).rank() as i64;
                    let h = match g.ty(n).shape.last() {
                        Some(h) => *h,
                        None => continue,
                    };
                    if !(axis == -1 || axis == r - 1) || !is_param(g, ops[1], h) {
                        continue;
                    }
                    let beta = match ops.get(2) {
                        Some(&b) if is_param(g, b, h) => b,
                        Some(_) => continue,
                        None => {
                            let width = g.ty(ops[1]).shape[0].as_const().unwrap_or(0) as usize;
                            g.add_const(
                                "layer_norm.zero_bias",
                                Tensor::from_f32(vec![width], &vec![0.0; width]),
                            )
                        }
                    };
                    (ops[0], ops[1], beta, epsilon)
                }
                Op::Binary(BinaryOp::Add) => match decomposed(g, n) {
                    Some(m) => m,
                    None => continue,
                },
                _ => continue,
            };
            let name = g.node(n).name.clone();
            let ln = g
                .add(Op::LayerNorm { eps }, &[x, gamma, beta], &name)
                .map_err(err)?;
            g.replace_uses(n, ln);
            g.remove_dead();
            raised += 1;
        }
        Ok(format!("{raised} layer norms"))
    }
}
