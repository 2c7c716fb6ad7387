//! The `prune-structures` pass: rewrites each planned block to the heads or neurons it keeps,
//! with truly smaller weights (the generated code does less work). A block that keeps nothing
//! becomes its output bias added to the residual, folded into the preceding LayerNorm's bias
//! when that LayerNorm feeds nothing else (after all blocks are rewritten).

use bertc_ir::{BinaryOp, Graph, NodeId, Op, Tensor};

use super::blocks::Block;
use crate::{Pass, PassError};

/// What to do with one block.
#[derive(Clone, Debug)]
pub struct BlockPlan {
    pub block: Block,
    /// Structures kept, ascending.
    pub kept: Vec<usize>,
    /// The pruned linear's new weight over the kept columns (`out x kept columns`, row-major),
    /// or `None` to keep the original values of those columns (no update).
    pub weight: Option<Vec<f32>>,
}

pub struct PruneStructures {
    pub plan: Vec<BlockPlan>,
}

fn ir_err(e: bertc_ir::IrError) -> PassError {
    PassError::Ir {
        pass: "prune-structures",
        source: e,
    }
}

fn fail(msg: String) -> PassError {
    PassError::Output(format!("prune-structures: {msg}"))
}

/// The constant operand `i` of `n`.
fn const_of(g: &Graph, n: NodeId, i: usize) -> Option<(NodeId, Tensor)> {
    let c = g.operand(n, i)?;
    Some((c, g.const_value(c)?.clone()))
}

/// Rows `rows` (each `width` floats) of a 1-D or 2-D tensor.
fn take_rows(t: &Tensor, rows: &[usize]) -> Tensor {
    let width = if t.shape.len() == 2 { t.shape[1] } else { 1 };
    let v = t.to_f32_vec();
    let data: Vec<f32> = rows
        .iter()
        .flat_map(|&r| v[r * width..(r + 1) * width].iter().copied())
        .collect();
    let mut shape = t.shape.clone();
    shape[0] = rows.len();
    Tensor::from_f32(shape, &data)
}

/// Columns `cols` of a 2-D tensor.
fn take_cols(t: &Tensor, cols: &[usize]) -> Tensor {
    let (r, c) = (t.shape[0], t.shape[1]);
    let v = t.to_f32_vec();
    let data: Vec<f32> = (0..r)
        .flat_map(|i| cols.iter().map(move |&j| (i, j)))
        .map(|(i, j)| v[i * c + j])
        .collect();
    Tensor::from_f32(vec![r, cols.len()], &data)
}

/// `linear(x, w[rows], b[rows])` as a new node.
fn linear_rows(g: &mut Graph, lin: NodeId, x: NodeId, rows: &[usize]) -> Result<NodeId, PassError> {
    let (wn, w) =
        const_of(g, lin, 1).ok_or_else(|| fail("linear without constant weight".into()))?;
    let wname = g.node(wn).name.clone();
    let w2 = g.add_const(&wname, take_rows(&w, rows));
    let mut ops = vec![x, w2];
    if let Some((bn, b)) = const_of(g, lin, 2) {
        let bname = g.node(bn).name.clone();
        ops.push(g.add_const(&bname, take_rows(&b, rows)));
    }
    let name = g.node(lin).name.clone();
    g.add(Op::Linear, &ops, &name).map_err(ir_err)
}

/// The pruned linear over the kept columns `cols` of its input `x`.
fn linear_cols(
    g: &mut Graph,
    lin: NodeId,
    x: NodeId,
    cols: &[usize],
    weight: Option<&[f32]>,
) -> Result<NodeId, PassError> {
    let (wn, w) =
        const_of(g, lin, 1).ok_or_else(|| fail("linear without constant weight".into()))?;
    let wname = g.node(wn).name.clone();
    let nw = match weight {
        Some(v) => {
            if v.len() != w.shape[0] * cols.len() {
                return Err(fail(format!("new weight of '{wname}' has the wrong size")));
            }
            Tensor::from_f32(vec![w.shape[0], cols.len()], v)
        }
        None => take_cols(&w, cols),
    };
    let w2 = g.add_const(&wname, nw);
    let mut ops = vec![x, w2];
    if let Some(b) = g.operand(lin, 2) {
        ops.push(b);
    }
    let name = g.node(lin).name.clone();
    g.add(Op::Linear, &ops, &name).map_err(ir_err)
}

/// Removes a block entirely: its output is its bias (if any) added to the residual. Returns
/// the add of the bias, if there is one.
fn remove_block(g: &mut Graph, b: &Block) -> Result<Option<NodeId>, PassError> {
    let lin = b.pruned_linear();
    let add = b.add().ok_or_else(|| {
        fail(format!(
            "'{}' has no residual: it cannot lose every structure",
            g.node(lin).name
        ))
    })?;
    let resid = g
        .operands(add)
        .into_iter()
        .find(|&o| o != lin)
        .ok_or_else(|| fail("residual add of the block with itself".into()))?;
    match g.operand(lin, 2) {
        Some(bias) => {
            g.rewrite(add, Op::Binary(BinaryOp::Add), &[resid, bias])
                .map_err(ir_err)?;
            Ok(Some(add))
        }
        None => {
            g.replace_uses(add, resid);
            Ok(None)
        }
    }
}

/// Folds `add(layer_norm(x), bias)` into the LayerNorm's own bias when nothing else reads the
/// LayerNorm (a removed block right after it).
pub fn fold_bias_add(g: &mut Graph, add: NodeId) -> Result<bool, PassError> {
    if !g.contains(add) {
        return Ok(false);
    }
    let ops = g.operands(add);
    let (Some(&ln), Some(&bn)) = (ops.first(), ops.get(1)) else {
        return Ok(false);
    };
    if !matches!(g.op(ln), Op::LayerNorm { .. }) || g.users(ln).len() != 1 || g.is_output(ln) {
        return Ok(false);
    }
    let (Some(bias), Some((betan, beta))) = (g.const_value(bn).cloned(), const_of(g, ln, 2)) else {
        return Ok(false);
    };
    if beta.shape != bias.shape {
        return Ok(false);
    }
    let sum: Vec<f32> = beta
        .to_f32_vec()
        .iter()
        .zip(bias.to_f32_vec())
        .map(|(a, b)| a + b)
        .collect();
    let name = g.node(betan).name.clone();
    let nb = g.add_const(&name, Tensor::from_f32(beta.shape.clone(), &sum));
    let mut lops = g.operands(ln);
    lops[2] = nb;
    let op = g.op(ln).clone();
    g.rewrite(ln, op, &lops).map_err(ir_err)?;
    g.replace_uses(add, ln);
    Ok(true)
}

/// Rewrites one block to its plan; returns a description of the change (if any) and the bias
/// add left by a removed block (for `fold_bias_add`).
pub fn apply_block(
    g: &mut Graph,
    p: &BlockPlan,
) -> Result<(Option<String>, Option<NodeId>), PassError> {
    let b = &p.block;
    if p.kept.len() == b.size() && p.weight.is_none() {
        return Ok((None, None));
    }
    if p.kept.iter().any(|&k| k >= b.size()) || p.kept.windows(2).any(|w| w[0] >= w[1]) {
        return Err(fail("kept structures out of range or not ascending".into()));
    }
    let lin = b.pruned_linear();
    let name = g.node(lin).name.clone();
    let what = format!(
        "{} '{}': {} of {} kept",
        b.kind(),
        name,
        p.kept.len(),
        b.size()
    );
    if p.kept.is_empty() {
        let add = remove_block(g, b)?;
        return Ok((Some(what), add));
    }
    let cols: Vec<usize> = p.kept.iter().flat_map(|&s| b.columns(s)).collect();
    let new_in = match b {
        Block::Attn(a) => {
            let x = |g: &Graph, n: NodeId| g.operand(n, 0).expect("linear input");
            let (xq, xk, xv) = (x(g, a.q), x(g, a.k), x(g, a.v));
            let q = linear_rows(g, a.q, xq, &cols)?;
            let k = linear_rows(g, a.k, xk, &cols)?;
            let v = linear_rows(g, a.v, xv, &cols)?;
            let mut ops = vec![q, k, v];
            if let Some(m) = g.operand(a.attn, 3) {
                ops.push(m);
            }
            let Op::Attention { scale, quant, .. } = g.op(a.attn).clone() else {
                return Err(fail("not an attention".into()));
            };
            let an = g.node(a.attn).name.clone();
            let heads = p.kept.len();
            g.add(
                Op::Attention {
                    heads,
                    scale,
                    quant,
                },
                &ops,
                &an,
            )
            .map_err(ir_err)?
        }
        Block::Ffn(f) => {
            let x = g.operand(f.up, 0).expect("linear input");
            let up = linear_rows(g, f.up, x, &cols)?;
            let op = g.op(f.act).clone();
            let an = g.node(f.act).name.clone();
            g.add(op, &[up], &an).map_err(ir_err)?
        }
    };
    let out = linear_cols(g, lin, new_in, &cols, p.weight.as_deref())?;
    g.replace_uses(lin, out);
    Ok((Some(what), None))
}

impl Pass for PruneStructures {
    fn name(&self) -> &'static str {
        "prune-structures"
    }

    fn run(&self, g: &mut Graph) -> Result<String, PassError> {
        let mut changed = Vec::new();
        let mut adds = Vec::new();
        let (mut heads, mut heads0, mut neurons, mut neurons0) = (0, 0, 0, 0);
        for p in &self.plan {
            match &p.block {
                Block::Attn(a) => {
                    heads += p.kept.len();
                    heads0 += a.heads;
                }
                Block::Ffn(f) => {
                    neurons += p.kept.len();
                    neurons0 += f.neurons;
                }
            }
            let (what, add) = apply_block(g, p)?;
            if let Some(w) = what {
                changed.push(w);
                g.remove_dead();
            }
            adds.extend(add);
        }
        for a in adds {
            fold_bias_add(g, a)?;
        }
        if changed.is_empty() {
            return Ok("nothing pruned".into());
        }
        Ok(format!(
            "{} blocks pruned; heads {heads}/{heads0}, FFN neurons {neurons}/{neurons0}",
            changed.len()
        ))
    }
}
