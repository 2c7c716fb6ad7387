//! The graph: a petgraph `StableGraph` whose nodes are ops (each producing one value) and whose
//! edges carry the operand slot they feed.

use petgraph::stable_graph::{NodeIndex, StableGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use std::collections::{HashMap, HashSet};

use super::infer::{infer, known_of_tensor, Operand};
use super::op::{Op, TokenTypes};
use super::types::{Dim, Tensor, TensorType};
use crate::IrError;

pub type NodeId = NodeIndex<u32>;

/// One op and the value it produces.
#[derive(Clone, Debug)]
pub struct Node {
    pub op: Op,
    pub ty: TensorType,
    /// Values of a small integer tensor, when inference could compute them.
    pub known: Option<Vec<Dim>>,
    /// Name in the source model (ONNX output name or weight name), for messages.
    pub name: String,
}

/// A model: ops over tensors, with named inputs and outputs.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    g: StableGraph<Node, u32>,
    /// Graph inputs in order (nodes with `Op::Input`).
    pub inputs: Vec<NodeId>,
    /// Named outputs in order.
    pub outputs: Vec<(String, NodeId)>,
    /// Longest sequence the model accepts (its position table), when known.
    pub max_seq: Option<usize>,
}

impl Graph {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn node(&self, n: NodeId) -> &Node {
        &self.g[n]
    }

    pub fn node_mut(&mut self, n: NodeId) -> &mut Node {
        &mut self.g[n]
    }

    pub fn op(&self, n: NodeId) -> &Op {
        &self.g[n].op
    }

    pub fn ty(&self, n: NodeId) -> &TensorType {
        &self.g[n].ty
    }

    pub fn contains(&self, n: NodeId) -> bool {
        self.g.contains_node(n)
    }

    pub fn node_count(&self) -> usize {
        self.g.node_count()
    }

    pub fn node_ids(&self) -> Vec<NodeId> {
        self.g.node_indices().collect()
    }

    /// The operands of `n` in slot order.
    pub fn operands(&self, n: NodeId) -> Vec<NodeId> {
        let mut e: Vec<(u32, NodeId)> = self
            .g
            .edges_directed(n, Direction::Incoming)
            .map(|e| (*e.weight(), e.source()))
            .collect();
        e.sort_unstable_by_key(|x| x.0);
        e.into_iter().map(|x| x.1).collect()
    }

    /// The operand in slot `i` of `n`.
    pub fn operand(&self, n: NodeId, i: usize) -> Option<NodeId> {
        self.g
            .edges_directed(n, Direction::Incoming)
            .find(|e| *e.weight() as usize == i)
            .map(|e| e.source())
    }

    /// The nodes that use `n`, each once.
    pub fn users(&self, n: NodeId) -> Vec<NodeId> {
        let mut u: Vec<NodeId> = self
            .g
            .edges_directed(n, Direction::Outgoing)
            .map(|e| e.target())
            .collect();
        u.sort_unstable();
        u.dedup();
        u
    }

    /// Number of uses of `n`, counting graph outputs.
    pub fn use_count(&self, n: NodeId) -> usize {
        self.g.edges_directed(n, Direction::Outgoing).count()
            + self.outputs.iter().filter(|o| o.1 == n).count()
    }

    pub fn is_output(&self, n: NodeId) -> bool {
        self.outputs.iter().any(|o| o.1 == n)
    }

    /// The constant `n` holds, if it is a `Const`.
    pub fn const_value(&self, n: NodeId) -> Option<&Tensor> {
        match &self.g[n].op {
            Op::Const { value, .. } => Some(value),
            _ => None,
        }
    }

    /// The single value of a one-element constant, as f64.
    pub fn const_scalar(&self, n: NodeId) -> Option<f64> {
        self.const_value(n).and_then(|t| t.scalar_f64())
    }

    pub fn input_named(&self, name: &str) -> Option<NodeId> {
        self.inputs
            .iter()
            .copied()
            .find(|&n| matches!(&self.g[n].op, Op::Input { name: m } if m == name))
    }

    pub fn add_input(&mut self, name: &str, ty: TensorType) -> NodeId {
        let n = self.g.add_node(Node {
            op: Op::Input { name: name.into() },
            ty,
            known: None,
            name: name.into(),
        });
        self.inputs.push(n);
        n
    }

    pub fn add_const(&mut self, name: &str, value: Tensor) -> NodeId {
        let ty = value.ty();
        let known = known_of_tensor(&value);
        self.g.add_node(Node {
            op: Op::Const {
                name: name.into(),
                value,
            },
            ty,
            known,
            name: name.into(),
        })
    }

    /// Adds an op over `operands`, inferring its type; fails when the operands do not fit.
    pub fn add(&mut self, op: Op, operands: &[NodeId], name: &str) -> Result<NodeId, IrError> {
        let (ty, known) = self
            .infer_with(&op, operands)
            .map_err(|msg| IrError::Type {
                node: name.to_string(),
                op: op.mnemonic(),
                msg,
            })?;
        let n = self.g.add_node(Node {
            op,
            ty,
            known,
            name: name.into(),
        });
        for (i, &o) in operands.iter().enumerate() {
            self.g.add_edge(o, n, i as u32);
        }
        Ok(n)
    }

    fn infer_with(&self, op: &Op, operands: &[NodeId]) -> Result<super::infer::Inferred, String> {
        if let Some(bad) = operands.iter().find(|&&o| !self.g.contains_node(o)) {
            return Err(format!("operand {} does not exist", bad.index()));
        }
        let ins: Vec<Operand> = operands
            .iter()
            .map(|&o| Operand {
                ty: &self.g[o].ty,
                known: self.g[o].known.as_deref(),
            })
            .collect();
        infer(op, &ins)
    }

    /// Points every use of `old` (and every output naming it) at `new`.
    pub fn replace_uses(&mut self, old: NodeId, new: NodeId) {
        if old == new {
            return;
        }
        let uses: Vec<(NodeId, u32)> = self
            .g
            .edges_directed(old, Direction::Outgoing)
            .map(|e| (e.target(), *e.weight()))
            .collect();
        let ids: Vec<_> = self
            .g
            .edges_directed(old, Direction::Outgoing)
            .map(|e| e.id())
            .collect();
        for e in ids {
            self.g.remove_edge(e);
        }
        for (t, slot) in uses {
            self.g.add_edge(new, t, slot);
        }
        for o in &mut self.outputs {
            if o.1 == old {
                o.1 = new;
            }
        }
    }

    /// Replaces the op of `n` and its operands in place, re-inferring its type. The new type
    /// must equal the old one, so users stay valid.
    pub fn rewrite(&mut self, n: NodeId, op: Op, operands: &[NodeId]) -> Result<(), IrError> {
        let name = self.g[n].name.clone();
        let (ty, known) = self
            .infer_with(&op, operands)
            .map_err(|msg| IrError::Type {
                node: name.clone(),
                op: op.mnemonic(),
                msg,
            })?;
        if ty != self.g[n].ty {
            return Err(IrError::Type {
                node: name,
                op: op.mnemonic(),
                msg: format!("rewrite changes the type from {} to {ty}", self.g[n].ty),
            });
        }
        let ids: Vec<_> = self
            .g
            .edges_directed(n, Direction::Incoming)
            .map(|e| e.id())
            .collect();
        for e in ids {
            self.g.remove_edge(e);
        }
        for (i, &o) in operands.iter().enumerate() {
            self.g.add_edge(o, n, i as u32);
        }
        let node = &mut self.g[n];
        node.op = op;
        node.known = known.or(node.known.take());
        Ok(())
    }

    /// Removes every node that no output depends on (graph inputs are kept). Returns how many.
    pub fn remove_dead(&mut self) -> usize {
        let live: HashSet<NodeId> = self.reachable();
        let dead: Vec<NodeId> = self
            .g
            .node_indices()
            .filter(|n| !live.contains(n) && !self.inputs.contains(n))
            .collect();
        for &n in &dead {
            self.g.remove_node(n);
        }
        dead.len()
    }

    fn reachable(&self) -> HashSet<NodeId> {
        let mut live = HashSet::new();
        let mut stack: Vec<NodeId> = self.outputs.iter().map(|o| o.1).collect();
        while let Some(n) = stack.pop() {
            if live.insert(n) {
                stack.extend(self.g.neighbors_directed(n, Direction::Incoming));
            }
        }
        live
    }

    /// Keeps only the named outputs (in the given order) and removes what they do not use.
    pub fn retain_outputs(&mut self, names: &[&str]) -> Result<(), IrError> {
        let mut outs = Vec::new();
        for name in names {
            let o = self
                .outputs
                .iter()
                .find(|o| o.0 == *name)
                .cloned()
                .ok_or_else(|| IrError::NoOutput(name.to_string()))?;
            outs.push(o);
        }
        self.outputs = outs;
        self.remove_dead();
        Ok(())
    }

    /// The live nodes in a canonical topological order: depth-first from the outputs (in
    /// order), operands in slot order. Two graphs of the same structure list their nodes in
    /// the same order whatever their node indices.
    pub fn canonical_order(&self) -> Vec<NodeId> {
        let mut order = Vec::new();
        let mut state: HashMap<NodeId, bool> = HashMap::new();
        let mut roots: Vec<NodeId> = self.inputs.clone();
        roots.extend(self.outputs.iter().map(|o| o.1));
        for root in roots {
            // iterative post-order DFS
            let mut stack = vec![(root, false)];
            while let Some((n, expanded)) = stack.pop() {
                if expanded {
                    if state.get(&n) != Some(&true) {
                        state.insert(n, true);
                        order.push(n);
                    }
                    continue;
                }
                if state.contains_key(&n) {
                    continue;
                }
                state.insert(n, false);
                stack.push((n, true));
                for o in self.operands(n).into_iter().rev() {
                    if !state.contains_key(&o) {
                        stack.push((o, false));
                    }
                }
            }
        }
        order
    }

    /// Checks the graph: every node has the operands its op takes, edges are well formed, the
    /// graph is acyclic, outputs exist, and every stored type is what inference gives.
    pub fn verify(&self) -> Result<(), IrError> {
        let err = |n: NodeId, msg: String| IrError::Verify {
            node: self.g[n].name.clone(),
            op: self.g[n].op.mnemonic(),
            msg,
        };
        if petgraph::algo::is_cyclic_directed(&self.g) {
            return Err(IrError::Cycle);
        }
        for (name, o) in &self.outputs {
            if !self.g.contains_node(*o) {
                return Err(IrError::NoOutput(name.clone()));
            }
        }
        for n in self.g.node_indices() {
            let mut slots: Vec<u32> = self
                .g
                .edges_directed(n, Direction::Incoming)
                .map(|e| *e.weight())
                .collect();
            slots.sort_unstable();
            if slots.iter().enumerate().any(|(i, &s)| s as usize != i) {
                return Err(err(
                    n,
                    format!("operand slots {slots:?} are not 0..{}", slots.len()),
                ));
            }
            let node = &self.g[n];
            match &node.op {
                Op::Input { .. } => {
                    if !self.inputs.contains(&n) {
                        return Err(err(n, "input node is not a graph input".into()));
                    }
                }
                Op::Const { value, .. } => {
                    if value.ty() != node.ty {
                        return Err(err(
                            n,
                            format!("constant of type {} is typed {}", value.ty(), node.ty),
                        ));
                    }
                }
                op => {
                    let ops = self.operands(n);
                    let (ty, _) = self.infer_with(op, &ops).map_err(|m| err(n, m))?;
                    if ty != node.ty {
                        return Err(err(
                            n,
                            format!("stored type {} but operands give {ty}", node.ty),
                        ));
                    }
                    if let Op::Embedding { types, .. } = op {
                        let first_table = 1 + (*types == TokenTypes::Input) as usize;
                        // a table is a constant, or int8 rows of constants (`dequantize_rows`)
                        let constant = |t: NodeId| {
                            self.const_value(t).is_some()
                                || (self.op(t) == &Op::DequantizeRows
                                    && self
                                        .operands(t)
                                        .iter()
                                        .all(|&o| self.const_value(o).is_some()))
                        };
                        if !ops[first_table..].iter().all(|&t| constant(t)) {
                            return Err(err(n, "embedding tables must be constants".into()));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Removes a node and its edges (used by tests that build malformed graphs).
    pub fn remove_node(&mut self, n: NodeId) {
        self.g.remove_node(n);
        self.inputs.retain(|&i| i != n);
    }

    /// Adds a raw edge without checks (used by tests that build malformed graphs).
    pub fn add_raw_edge(&mut self, from: NodeId, to: NodeId, slot: u32) {
        self.g.add_edge(from, to, slot);
    }

    /// Counts of live ops by mnemonic, sorted by name.
    pub fn op_counts(&self) -> Vec<(&'static str, usize)> {
        let mut m: std::collections::BTreeMap<&'static str, usize> = Default::default();
        for n in self.canonical_order() {
            let op = &self.g[n].op;
            if !matches!(op, Op::Input { .. } | Op::Const { .. }) {
                *m.entry(op.mnemonic()).or_default() += 1;
            }
        }
        m.into_iter().collect()
    }

    /// Number of parameters: elements of the float constants in use.
    pub fn parameter_count(&self) -> usize {
        self.canonical_order()
            .into_iter()
            .filter_map(|n| self.const_value(n))
            .filter(|t| t.dtype.is_float())
            .map(|t| t.numel())
            .sum()
    }
}
