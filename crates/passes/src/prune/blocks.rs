//! Finding the prunable structures of an encoder: attention blocks (Q, K, V projections, the
//! attention, the output projection) and FFN blocks (up projection, activation, down
//! projection), with constant weights and no other users of their internals.

use bertc_ir::{Graph, NodeId, Op, UnaryOp};

/// An attention block: `out(attention(q(x), k(x), v(x), mask))`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttnBlock {
    pub q: NodeId,
    pub k: NodeId,
    pub v: NodeId,
    pub attn: NodeId,
    pub out: NodeId,
    /// The residual add that consumes the block's output, when there is one.
    pub add: Option<NodeId>,
    pub heads: usize,
    pub head_dim: usize,
    /// Width of the block's output (the model's hidden size).
    pub hidden: usize,
}

/// An FFN block: `down(act(up(x)))`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FfnBlock {
    pub up: NodeId,
    pub act: NodeId,
    pub down: NodeId,
    pub add: Option<NodeId>,
    pub neurons: usize,
    pub hidden: usize,
}

/// A unit of the search: one block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Block {
    Attn(AttnBlock),
    Ffn(FfnBlock),
}

impl Block {
    /// The structures it has (heads or neurons).
    pub fn size(&self) -> usize {
        match self {
            Block::Attn(a) => a.heads,
            Block::Ffn(f) => f.neurons,
        }
    }

    /// The linear whose input columns the structures are (output or down projection).
    pub fn pruned_linear(&self) -> NodeId {
        match self {
            Block::Attn(a) => a.out,
            Block::Ffn(f) => f.down,
        }
    }

    /// The node whose value is the pruned linear's input (what calibration records).
    pub fn input_node(&self) -> NodeId {
        match self {
            Block::Attn(a) => a.attn,
            Block::Ffn(f) => f.act,
        }
    }

    pub fn add(&self) -> Option<NodeId> {
        match self {
            Block::Attn(a) => a.add,
            Block::Ffn(f) => f.add,
        }
    }

    /// Input columns of the pruned linear that structure `i` owns.
    pub fn columns(&self, i: usize) -> Vec<usize> {
        match self {
            Block::Attn(a) => (i * a.head_dim..(i + 1) * a.head_dim).collect(),
            Block::Ffn(_) => vec![i],
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Block::Attn(_) => "attention",
            Block::Ffn(_) => "ffn",
        }
    }
}

/// A linear `x @ wᵀ + b` with a constant 2-D weight (and constant bias, if any): `(n, k)`.
pub(crate) fn const_linear(g: &Graph, n: NodeId) -> Option<(usize, usize)> {
    if !matches!(g.op(n), Op::Linear) {
        return None;
    }
    let w = g.const_value(g.operand(n, 1)?)?;
    if w.shape.len() != 2 {
        return None;
    }
    if let Some(b) = g.operand(n, 2) {
        g.const_value(b)?;
    }
    Some((w.shape[0], w.shape[1]))
}

fn sole_user(g: &Graph, n: NodeId) -> Option<NodeId> {
    let users = g.users(n);
    (users.len() == 1 && !g.is_output(n)).then(|| users[0])
}

fn residual_add(g: &Graph, n: NodeId) -> Option<NodeId> {
    let u = sole_user(g, n)?;
    matches!(g.op(u), Op::Binary(bertc_ir::BinaryOp::Add)).then_some(u)
}

/// The attention and FFN blocks of `g`, in the graph's canonical order.
pub fn find_blocks(g: &Graph) -> Vec<Block> {
    let mut out = Vec::new();
    for n in g.canonical_order() {
        match g.op(n) {
            Op::Attention { heads, .. } => {
                if let Some(b) = attn_block(g, n, *heads) {
                    out.push(Block::Attn(b));
                }
            }
            Op::Gelu { .. } | Op::Unary(UnaryOp::Relu) => {
                if let Some(b) = ffn_block(g, n) {
                    out.push(Block::Ffn(b));
                }
            }
            _ => {}
        }
    }
    out
}

fn attn_block(g: &Graph, attn: NodeId, heads: usize) -> Option<AttnBlock> {
    let ops = g.operands(attn);
    let (q, k, v) = (ops[0], ops[1], ops[2]);
    let mut width = None;
    for p in [q, k, v] {
        let (n, _) = const_linear(g, p)?;
        if sole_user(g, p)? != attn || g.users(p).len() != 1 {
            return None;
        }
        if *width.get_or_insert(n) != n {
            return None;
        }
    }
    let width = width?;
    if heads == 0 || width % heads != 0 {
        return None;
    }
    let out = sole_user(g, attn)?;
    let (hidden, k_out) = const_linear(g, out)?;
    if k_out != width || g.operand(out, 0)? != attn {
        return None;
    }
    Some(AttnBlock {
        q,
        k,
        v,
        attn,
        out,
        add: residual_add(g, out),
        heads,
        head_dim: width / heads,
        hidden,
    })
}

fn ffn_block(g: &Graph, act: NodeId) -> Option<FfnBlock> {
    let up = g.operand(act, 0)?;
    let (neurons, _) = const_linear(g, up)?;
    if sole_user(g, up)? != act {
        return None;
    }
    let down = sole_user(g, act)?;
    let (hidden, k) = const_linear(g, down)?;
    if k != neurons || g.operand(down, 0)? != act {
        return None;
    }
    Some(FfnBlock {
        up,
        act,
        down,
        add: residual_add(g, down),
        neurons,
        hidden,
    })
}
