//! `raise-pooling`: pooling and normalization that an export put in the graph (sentence-
//! transformers ONNX files: the mask unsqueezed, cast and multiplied in, `ReduceSum` over the
//! tokens divided by a `Clip`ped count; `ReduceMax` over a masked state; the first token by
//! `Gather` or `Slice`; `ReduceL2`, `LpNormalization` or `Div` by a clamped norm) become
//! `mean_pool`, `max_pool`, the CLS `gather` and `l2_normalize`. Which one a subgraph computes is
//! proved by probing: it is evaluated on made-up hidden states and masks with holes and
//! compared with each op's definition.

use bertc_interp::{Data, Value};
use bertc_ir::{Binding, Dim, Graph, NodeId, Op, Tensor};
use std::collections::HashSet;

use crate::probe;
use crate::{Pass, PassError};

pub struct RaisePooling;

/// Deterministic made-up values in [-2, 2).
fn made_up(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect()
}

/// A `[batch, width]` f32 value (`width` constant).
fn rows_width(g: &Graph, n: NodeId) -> Option<usize> {
    let t = g.ty(n);
    (t.dtype.is_float() && t.rank() == 2 && t.shape[0] == Dim::BATCH)
        .then(|| t.shape[1].as_const())
        .flatten()
        .map(|w| w as usize)
}

/// The nodes `n` depends on, cut where `stop` holds (those are returned, not entered), and
/// whether any other leaf than the cut nodes, constants and `allowed` was reached.
fn cut(
    g: &Graph,
    n: NodeId,
    stop: impl Fn(NodeId) -> bool,
    allowed: &[NodeId],
) -> Option<Vec<NodeId>> {
    let mut seen = HashSet::new();
    let mut frontier = Vec::new();
    let mut stack = g.operands(n);
    while let Some(m) = stack.pop() {
        if !seen.insert(m) {
            continue;
        }
        if stop(m) {
            frontier.push(m);
            continue;
        }
        match g.op(m) {
            Op::Const { .. } => {}
            Op::Input { .. } if allowed.contains(&m) => {}
            Op::Input { .. } => return None,
            _ => stack.extend(g.operands(m)),
        }
    }
    frontier.sort_unstable();
    Some(frontier)
}

/// The f32 values of shape `want` that `n` depends on, nearest first (at most 8).
fn ancestors_shaped(g: &Graph, n: NodeId, want: &[Dim]) -> Vec<NodeId> {
    let mut seen = HashSet::new();
    let mut queue = std::collections::VecDeque::from(g.operands(n));
    let mut out = Vec::new();
    while let Some(m) = queue.pop_front() {
        if out.len() == 8 || !seen.insert(m) {
            continue;
        }
        let t = g.ty(m);
        if t.dtype.is_float() && t.shape == want {
            out.push(m);
        }
        queue.extend(g.operands(m));
    }
    out
}

fn close(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= 1e-5 * (1.0 + y.abs()))
}

/// The masks the pools are probed with: holes, padding, a single token.
const PROBES: [(usize, usize, &[i64]); 2] = [
    (3, 5, &[1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 0, 1, 1, 0]),
    (2, 4, &[1, 0, 0, 0, 1, 1, 0, 1]),
];

/// Which pooling of `h` (`[batch, seq, width]`) by `mask` the node `n` computes, if any.
fn pooling(g: &Graph, n: NodeId, h: NodeId, mask: NodeId, width: usize) -> Option<Op> {
    let mut candidates = vec![Op::MeanPool, Op::MaxPool, Op::Gather { axis: 1 }];
    for (k, &(b, s, m)) in PROBES.iter().enumerate() {
        let hv = made_up(b * s * width, k as u64 + 1);
        let got = probe::eval(
            g,
            n,
            &[
                (h, Value::f32(vec![b, s, width], hv.clone())),
                (mask, Value::i64(vec![b, s], m.to_vec())),
            ],
            Binding { batch: b, seq: s },
        )?;
        let Data::F(got) = &got.data else { return None };
        candidates.retain(|op| {
            let want: Vec<f32> = (0..b)
                .flat_map(|bi| {
                    let hv = &hv;
                    (0..width).map(move |j| {
                        let rows = (0..s).filter(|&t| m[bi * s + t] != 0);
                        let at = |t: usize| hv[(bi * s + t) * width + j];
                        match op {
                            Op::MeanPool => {
                                let n = rows.clone().count().max(1) as f32;
                                rows.map(at).sum::<f32>() / n
                            }
                            Op::MaxPool => rows.map(at).fold(f32::NEG_INFINITY, f32::max),
                            _ => at(0),
                        }
                    })
                })
                .collect();
            close(got, &want)
        });
    }
    candidates.into_iter().next()
}

/// Whether `n` computes the L2 normalization of `p` (`[batch, width]`).
fn normalizes(g: &Graph, n: NodeId, p: NodeId, width: usize) -> bool {
    (0..2).all(|k| {
        let b = 3;
        let mut pv = made_up(b * width, 10 + k);
        pv[..width].iter_mut().for_each(|v| *v *= 1e-3); // a short vector too
        let Some(got) = probe::eval(
            g,
            n,
            &[(p, Value::f32(vec![b, width], pv.clone()))],
            Binding { batch: b, seq: 1 },
        ) else {
            return false;
        };
        let Data::F(got) = &got.data else {
            return false;
        };
        let want: Vec<f32> = pv
            .chunks(width)
            .flat_map(|r| {
                let norm = r.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                r.iter().map(move |v| v / norm)
            })
            .collect();
        close(got, &want)
    })
}

impl Pass for RaisePooling {
    fn name(&self) -> &'static str {
        "raise-pooling"
    }

    fn run(&self, g: &mut Graph) -> Result<String, PassError> {
        let ir = |source| PassError::Ir {
            pass: "raise-pooling",
            source,
        };
        let mut pools = 0;
        let mut norms = 0;
        let mask = g.input_named("attention_mask");
        for n in g.canonical_order() {
            if !g.contains(n) {
                continue;
            }
            let is_cls = g.op(n) == &(Op::Gather { axis: 1 })
                && g.operand(n, 1).and_then(|i| g.const_scalar(i)) == Some(0.0);
            if is_cls
                || matches!(
                    g.op(n),
                    Op::MeanPool
                        | Op::MaxPool
                        | Op::L2Normalize
                        | Op::Input { .. }
                        | Op::Const { .. }
                )
            {
                continue;
            }
            let Some(width) = rows_width(g, n) else {
                continue;
            };
            // a pooling: cut at one hidden state [batch, seq, width] (the nearest first), the
            // rest reading only the mask
            if let Some(mask) = mask {
                let mut raised = false;
                let hidden = [Dim::BATCH, Dim::SEQ, Dim::c(width as i64)];
                for h in ancestors_shaped(g, n, &hidden) {
                    if cut(g, n, |m| m == h, &[mask]).as_deref() != Some(&[h]) {
                        continue;
                    }
                    let Some(op) = pooling(g, n, h, mask, width) else {
                        continue;
                    };
                    let ops = if op == (Op::Gather { axis: 1 }) {
                        let zero = g.add_const(
                            &format!("{}.first", g.node(n).name),
                            Tensor::from_i64(vec![], &[0]),
                        );
                        vec![h, zero]
                    } else {
                        vec![h, mask]
                    };
                    g.rewrite(n, op, &ops).map_err(ir)?;
                    pools += 1;
                    raised = true;
                    break;
                }
                if raised {
                    continue;
                }
            }
            // a normalization: cut at one [batch, width] value (the nearest first), reading
            // nothing else
            let rows = [Dim::BATCH, Dim::c(width as i64)];
            for p in ancestors_shaped(g, n, &rows) {
                if cut(g, n, |m| m == p, &[]).as_deref() == Some(&[p]) && normalizes(g, n, p, width)
                {
                    g.rewrite(n, Op::L2Normalize, &[p]).map_err(ir)?;
                    norms += 1;
                    break;
                }
            }
        }
        Ok(format!(
            "{pools} poolings and {norms} normalizations in the graph raised"
        ))
    }
}
