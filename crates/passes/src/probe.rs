//! Probing: evaluating a subgraph on made-up inputs with the reference interpreter, to check a
//! semantic fact that structure alone does not show (that a mask expression is the padding
//! mask, that an index expression is `arange(seq)`).

use bertc_interp::{eval_nodes, Value};
use bertc_ir::{Binding, Graph, NodeId, Op};
use std::collections::{HashMap, HashSet};

/// The graph inputs that `n` depends on, or `None` when it depends on something else that
/// cannot be probed (it never does: every leaf is an input or a constant).
pub fn input_leaves(g: &Graph, n: NodeId) -> Vec<NodeId> {
    let mut seen = HashSet::new();
    let mut inputs = Vec::new();
    let mut stack = vec![n];
    while let Some(m) = stack.pop() {
        if !seen.insert(m) {
            continue;
        }
        if let Op::Input { .. } = g.op(m) {
            inputs.push(m);
        }
        stack.extend(g.operands(m));
    }
    inputs.sort_unstable();
    inputs
}

/// Evaluates `n` with the given input values.
pub fn eval(g: &Graph, n: NodeId, feeds: &[(NodeId, Value)], bind: Binding) -> Option<Value> {
    let feeds: HashMap<NodeId, Value> = feeds.iter().cloned().collect();
    eval_nodes(g, &[n], feeds, &bind).ok()?.pop()
}
