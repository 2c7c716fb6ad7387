//! Small matchers over the graph shared by the raising passes.

use bertc_ir::{BinaryOp, DType, Graph, NodeId, Op, UnaryOp};

/// The only user of `n`, when `n` has exactly one use and is not a graph output.
pub fn single_user(g: &Graph, n: NodeId) -> Option<NodeId> {
    if g.use_count(n) != 1 {
        return None;
    }
    g.users(n).into_iter().next()
}

/// The operands of `n` when it is the binary op `op`.
pub fn binary(g: &Graph, n: NodeId, op: BinaryOp) -> Option<(NodeId, NodeId)> {
    match g.op(n) {
        Op::Binary(b) if *b == op => {
            let o = g.operands(n);
            Some((o[0], o[1]))
        }
        _ => None,
    }
}

/// For a commutative op: `(x, c)` where `c` is the operand satisfying `pred`.
pub fn split_by(a: NodeId, b: NodeId, pred: impl Fn(NodeId) -> bool) -> Option<(NodeId, NodeId)> {
    if pred(b) {
        Some((a, b))
    } else if pred(a) {
        Some((b, a))
    } else {
        None
    }
}

/// True when `n` is a one-element constant close to `v` (relative tolerance 1e-4).
pub fn is_scalar(g: &Graph, n: NodeId, v: f64) -> bool {
    g.const_scalar(n)
        .is_some_and(|c| (c - v).abs() <= 1e-4 * v.abs().max(1e-12))
}

/// The leaves of the tree of `op` nodes rooted at `root` (inner nodes must have one use).
pub fn tree_leaves(g: &Graph, root: NodeId, op: BinaryOp) -> Vec<NodeId> {
    let mut leaves = Vec::new();
    let mut stack = vec![root];
    while let Some(n) = stack.pop() {
        match binary(g, n, op) {
            Some((a, b)) if n == root || g.use_count(n) == 1 => {
                stack.push(b);
                stack.push(a);
            }
            _ => leaves.push(n),
        }
    }
    leaves
}

/// Climbs from `n` through single-use `op` users: the root of the largest `op` tree that
/// contains `n` as a leaf.
pub fn tree_root(g: &Graph, n: NodeId, op: BinaryOp) -> Option<NodeId> {
    let mut cur = single_user(g, n)?;
    binary(g, cur, op)?;
    while let Some(u) = single_user(g, cur) {
        if binary(g, u, op).is_none() {
            break;
        }
        cur = u;
    }
    Some(cur)
}

/// The operand of `n` when it is the unary op `op`.
pub fn unary(g: &Graph, n: NodeId, op: UnaryOp) -> Option<NodeId> {
    matches!(g.op(n), Op::Unary(u) if *u == op).then(|| g.operands(n)[0])
}

/// The operand of `n` when it is a cast to `to`.
pub fn cast_to(g: &Graph, n: NodeId, to: DType) -> Option<NodeId> {
    matches!(g.op(n), Op::Cast { to: t } if *t == to).then(|| g.operands(n)[0])
}

/// `x` when `n` is `op(x, c)` with `c` the one-element constant `v` (exactly).
pub fn with_const(g: &Graph, n: NodeId, op: BinaryOp, v: f64) -> Option<NodeId> {
    let (x, c) = binary(g, n, op)?;
    (g.const_scalar(c) == Some(v)).then_some(x)
}
