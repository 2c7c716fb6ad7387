//! `simplify`: local clean-ups that make patterns regular: composes consecutive transposes,
//! removes identity transposes, reshapes to the same shape and casts to the same type, and
//! turns a transpose done on a flattened view (`reshape` merging the leading axes,
//! `transpose` of the rest, `reshape` splitting them again, as PyTorch's dynamo exporter
//! writes `k.transpose(-1, -2)` of a 4-D tensor) into the one transpose it is.

use bertc_ir::{Dim, Graph, NodeId, Op};

use crate::{Pass, PassError};

pub struct Simplify;

impl Pass for Simplify {
    fn name(&self) -> &'static str {
        "simplify"
    }

    fn run(&self, g: &mut Graph) -> Result<String, PassError> {
        let mut changed = 0;
        for n in g.canonical_order() {
            let ops = g.operands(n);
            match g.op(n).clone() {
                Op::Transpose { perm } => {
                    let x = ops[0];
                    if perm.iter().enumerate().all(|(i, &p)| i == p) {
                        g.replace_uses(n, x);
                        changed += 1;
                    } else if let Op::Transpose { perm: inner } = g.op(x).clone() {
                        if inner.len() == perm.len() {
                            // out[i] = mid[perm[i]] = in[inner[perm[i]]]
                            let composed: Vec<usize> = perm.iter().map(|&p| inner[p]).collect();
                            let src = g.operands(x)[0];
                            g.rewrite(n, Op::Transpose { perm: composed }, &[src])
                                .map_err(|source| crate::PassError::Ir {
                                    pass: "simplify",
                                    source,
                                })?;
                            changed += 1;
                        }
                    }
                }
                Op::ReshapeTo { .. } | Op::ExpandTo { .. } | Op::Cast { .. } => {
                    let x = ops[0];
                    if g.ty(x) == g.ty(n) {
                        g.replace_uses(n, x);
                        changed += 1;
                    } else if let Some((mut src, mut perm)) = flattened_transpose(g, n) {
                        // composed at once with a transpose before it
                        if let Op::Transpose { perm: inner } = g.op(src) {
                            perm = perm.iter().map(|&p| inner[p]).collect();
                            src = g.operands(src)[0];
                        }
                        g.rewrite(n, Op::Transpose { perm }, &[src])
                            .map_err(|source| crate::PassError::Ir {
                                pass: "simplify",
                                source,
                            })?;
                        changed += 1;
                    }
                }
                _ => {}
            }
        }
        Ok(format!("{changed} ops simplified"))
    }
}

/// `reshape(transpose(reshape(x, [x0·…·x(m-1), x(m)..]), p), [x0, …, x(m-1), ..])` with
/// `p[0] = 0`: the transpose of `x` that keeps its first `m` axes and permutes the rest by `p`.
fn flattened_transpose(g: &Graph, n: NodeId) -> Option<(NodeId, Vec<usize>)> {
    let Op::ReshapeTo { shape: outer } = g.op(n) else {
        return None;
    };
    let t = g.operands(n)[0];
    let Op::Transpose { perm } = g.op(t) else {
        return None;
    };
    let r = g.operands(t)[0];
    if !matches!(g.op(r), Op::ReshapeTo { .. }) || perm.first() != Some(&0) {
        return None;
    }
    let x = g.operands(r)[0];
    let xs = &g.ty(x).shape;
    let flat = &g.ty(r).shape;
    // the flattened view merges the first m axes of x into one
    let m = (xs.len() + 1).checked_sub(flat.len())?;
    if m < 2 || flat[1..] != xs[m..] || outer.len() != xs.len() || outer[..m] != xs[..m] {
        return None;
    }
    let merged = xs[..m]
        .iter()
        .try_fold(Dim::c(1), |acc, &d| acc.checked_mul(d))?;
    if merged != flat[0] {
        return None;
    }
    let full: Vec<usize> = (0..m).chain(perm[1..].iter().map(|&p| p + m - 1)).collect();
    // the result must be what the reshape gives
    let want: Vec<Dim> = full.iter().map(|&i| xs[i]).collect();
    (want == *outer).then_some((x, full))
}
