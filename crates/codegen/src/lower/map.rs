//! The lowering of elementwise ops into `Step::Map`s: each maximal chain of single-use
//! elementwise ops (a static QDQ file's bias adds, decomposed GELU, residual adds, `qdq`
//! points; a dynamic file's scaling) one step, a postfix program of f32 operations.

use bertc_ir::{BinaryOp, DType, Graph, NodeId, Op};

use super::{const_width, unsupported, BufId, CodegenError, Lowering, Rows, Step, WeightId};
use crate::program::MapOp;

/// The map step that computes `n` (a `mappable` op that is not `inlined`).
pub(super) fn lower(l: &mut Lowering, n: NodeId) -> Result<Step, CodegenError> {
    let g = l.g;
    let per_row = match g.ty(n).rank() {
        3 => g.ty(n).shape[1] == bertc_ir::Dim::SEQ,
        r => r == 2,
    };
    if !per_row {
        return Err(unsupported(
            g,
            n,
            format!(
                "an elementwise value of type {} (code generation computes them per token or per sequence)",
                g.ty(n)
            ),
        ));
    }
    let mut m = MapOperands::default();
    map_expr(l, n, n, &mut m)?;
    Ok(Step::Map {
        inputs: m.inputs,
        seq_inputs: m.seq_inputs,
        rows: m.rows,
        out: l.new_buf(n)?,
        expr: m.expr,
    })
}

/// Whether `n` is an elementwise op that a `Step::Map` computes (f32, `MapOp`'s ops).
pub(super) fn mappable(g: &Graph, n: NodeId) -> bool {
    g.ty(n).dtype == DType::F32
        && match g.op(n) {
            Op::Qdq(_) => true,
            Op::Unary(u) => MapOp::UNARY.contains(u),
            Op::Binary(b) => MapOp::BINARY.contains(b) || *b == BinaryOp::Pow,
            _ => false,
        }
}

/// Whether `n` is computed inside the map of its one user (and has no step of its own): an
/// elementwise op whose value broadcasts to its user's shape (a per-sequence one included:
/// the map evaluates it at each of the user's elements, with the same result).
pub(super) fn inlined(g: &Graph, n: NodeId) -> bool {
    if !mappable(g, n) || g.is_output(n) {
        return false;
    }
    match g.users(n)[..] {
        [u] => {
            mappable(g, u)
                && bertc_ir::broadcast(&g.ty(u).shape, &g.ty(n).shape)
                    .ok()
                    .as_ref()
                    == Some(&g.ty(u).shape)
        }
        _ => false,
    }
}

/// What a `Step::Map`'s expression reads, gathered by `map_expr`.
#[derive(Default)]
struct MapOperands {
    inputs: Vec<BufId>,
    seq_inputs: Vec<BufId>,
    rows: Vec<WeightId>,
    expr: Vec<MapOp>,
}

/// Appends to `m.expr` (postfix) the computation of `n`, a mappable op of the map that
/// computes `root`: its operands that are inlined recursively, constants as scalars or rows
/// of the output's width, a value of `root`'s shape as an input buffer, a value of one float
/// a sequence (`[batch, 1, 1]`, `[batch, 1]`) as a per-sequence input.
fn map_expr(
    l: &mut Lowering,
    root: NodeId,
    n: NodeId,
    m: &mut MapOperands,
) -> Result<(), CodegenError> {
    let g = l.g;
    let width = const_width(g, root)?;
    fn index<T: PartialEq>(v: &mut Vec<T>, x: T) -> usize {
        v.iter().position(|y| *y == x).unwrap_or_else(|| {
            v.push(x);
            v.len() - 1
        })
    }
    let mut operands = g.operands(n);
    let powi = match g.op(n) {
        Op::Binary(BinaryOp::Pow) => {
            let e = g
                .const_scalar(operands[1])
                .filter(|&e| e == 2.0 || e == 3.0);
            let Some(e) = e else {
                return Err(unsupported(
                    g,
                    n,
                    "pow by anything but a constant 2 or 3 has no code generator",
                ));
            };
            operands.truncate(1);
            Some(e as u8)
        }
        _ => None,
    };
    for o in operands {
        if let Some(t) = g.const_value(o) {
            let (numel, last) = (t.numel(), t.shape.last().copied().unwrap_or(1));
            if numel == 1 {
                m.expr.push(MapOp::Const(t.to_f32_vec()[0]));
            } else if numel == width && last == width {
                let w = l.weight(o)?;
                let i = index(&mut m.rows, w);
                m.expr.push(MapOp::Row(i));
            } else {
                return Err(unsupported(
                    g,
                    n,
                    format!(
                        "a constant operand of shape {:?} (elementwise ops broadcast scalars and rows of {width})",
                        t.shape
                    ),
                ));
            }
        } else if inlined(g, o) {
            map_expr(l, root, o, m)?;
        } else if is_seq_scalar(g, o)
            && l.p
                .buffers
                .get(l.buf(o)?)
                .is_some_and(|b| b.rows == Rows::Seqs && b.width == 1)
        {
            let i = index(&mut m.seq_inputs, l.buf(o)?);
            m.expr.push(MapOp::SeqInput(i));
        } else {
            if g.ty(o).shape != g.ty(root).shape {
                return Err(unsupported(
                    g,
                    n,
                    format!(
                        "an operand of type {} broadcast to {} (elementwise ops broadcast constants and per-sequence scalars only)",
                        g.ty(o),
                        g.ty(root)
                    ),
                ));
            }
            let i = index(&mut m.inputs, l.buf(o)?);
            m.expr.push(MapOp::Input(i));
        }
    }
    m.expr.push(match *g.op(n) {
        _ if powi.is_some() => MapOp::Powi(powi.unwrap_or(2)),
        Op::Qdq(q) => MapOp::Qdq(q),
        Op::Unary(u) => MapOp::Unary(u),
        Op::Binary(b) => MapOp::Binary(b),
        _ => unreachable!("map_expr on an op that is not mappable"),
    });
    Ok(())
}

/// Whether `n` holds one value a sequence: `[batch, 1, 1]` or `[batch, 1]`.
fn is_seq_scalar(g: &Graph, n: NodeId) -> bool {
    let s = &g.ty(n).shape;
    (2..=3).contains(&s.len())
        && s[0] == bertc_ir::Dim::BATCH
        && s[1..].iter().all(|d| d.as_const() == Some(1))
}
