//! `raise-qdq`: the static quantization points of a QDQ file (ONNX Runtime's
//! `quantize_static`: a `QuantizeLinear`/`DequantizeLinear` pair with one constant scale and
//! zero point around nearly every activation), as the importer composes them,
//!
//! ```text
//! q = cast(min(max(round(x / s) + zp, lo), hi)) to=T      y = (f32(q) - zp) · s
//! ```
//!
//! become `qdq(x)` (`Op::Qdq`, elementwise), which raising and code generation know. Then:
//!
//! - a point on a row gather of a constant table moves into the table (`qdq(gather(t, i))` is
//!   `gather(qdq(t), i)`, computed once);
//! - a point that repeats the one before it across a layout op (reshape, transpose) is
//!   dropped: applying a point twice gives what applying it once does (a dequantized value
//!   divided by its scale is within far less than half a step of its integer).
//!
//! Per-axis pairs (the weights') are left to constant folding, and anything else as it is.

use bertc_ir::{BinaryOp, DType, Graph, NodeId, Op, Qdq, UnaryOp};

use crate::pattern::{binary, cast_to, unary};
use crate::raise_quantized::folded;
use crate::{Pass, PassError};

pub struct RaiseQdq;

fn ir(source: bertc_ir::IrError) -> PassError {
    PassError::Ir {
        pass: "raise-qdq",
        source,
    }
}

/// `(x, point)` when `n` is the dequantization of a quantization of `x`, both with the same
/// one-element constant scale and zero point.
fn qdq_pair(g: &Graph, n: NodeId) -> Option<(NodeId, Qdq)> {
    let (centered, s) = binary(g, n, BinaryOp::Mul)?;
    let scale = g.const_scalar(s)?;
    let (xf, zp_dq) = match binary(g, centered, BinaryOp::Sub) {
        Some((a, z)) => (a, g.const_scalar(z)?),
        None => (centered, 0.0),
    };
    let q = cast_to(g, xf, DType::F32)?;
    let Op::Cast { to } = *g.op(q) else {
        return None;
    };
    let (c, hi) = binary(g, g.operands(q)[0], BinaryOp::Min)?;
    let (z, lo) = binary(g, c, BinaryOp::Max)?;
    let (r, zp_q) = match binary(g, z, BinaryOp::Add) {
        Some((r, zc)) if unary(g, r, UnaryOp::Round).is_some() => (r, g.const_scalar(zc)?),
        _ => (z, 0.0),
    };
    let (x, s1) = binary(g, unary(g, r, UnaryOp::Round)?, BinaryOp::Div)?;
    if g.const_scalar(s1)? != scale || zp_q != zp_dq || zp_q.fract() != 0.0 {
        return None;
    }
    let p = Qdq::new(scale as f32, zp_q as i32, to).ok()?;
    let (l, h) = p.range()?;
    (g.const_scalar(lo)? == l as f64 && g.const_scalar(hi)? == h as f64).then_some((x, p))
}

/// The point `n` applies, if it is a `qdq`.
fn point(g: &Graph, n: NodeId) -> Option<Qdq> {
    match g.op(n) {
        Op::Qdq(p) => Some(*p),
        _ => None,
    }
}

/// Ops that move or select elements without changing them (a gather's table is its first
/// operand).
fn is_layout(op: &Op) -> bool {
    matches!(
        op,
        Op::ReshapeTo { .. }
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Unsqueeze { .. }
            | Op::Squeeze { .. }
            | Op::Flatten { .. }
            | Op::Gather { .. }
    )
}

impl Pass for RaiseQdq {
    fn name(&self) -> &'static str {
        "raise-qdq"
    }

    fn run(&self, g: &mut Graph) -> Result<String, PassError> {
        let (mut raised, mut tables, mut repeated) = (0, 0, 0);
        for n in g.canonical_order() {
            if !g.contains(n) {
                continue;
            }
            let Some((x, p)) = qdq_pair(g, n) else {
                continue;
            };
            raised += 1;
            let name = g.node(n).name.clone();
            // a point that repeats the one before it (through layout ops) adds nothing
            let mut before = x;
            while is_layout(g.op(before)) {
                before = g.operands(before)[0];
            }
            if point(g, before) == Some(p) {
                g.replace_uses(n, x);
                repeated += 1;
                continue;
            }
            // on a gather of a constant table: into the table
            if let Op::Gather { axis: 0 } = g.op(x) {
                let [t, i] = g.operands(x)[..] else {
                    unreachable!("gather has two operands")
                };
                if let Some(table) = g.const_value(t).cloned() {
                    let tname = format!("{}.qdq", g.node(t).name);
                    if let Some(tq) = folded(g, &Op::Qdq(p), &[&table], &tname) {
                        let y = g.add(Op::Gather { axis: 0 }, &[tq, i], &name).map_err(ir)?;
                        g.replace_uses(n, y);
                        tables += 1;
                        continue;
                    }
                }
            }
            let y = g.add(Op::Qdq(p), &[x], &name).map_err(ir)?;
            g.replace_uses(n, y);
        }
        Ok(if raised == 0 {
            "no static quantization points".into()
        } else {
            format!("{raised} quantization points ({tables} moved into tables, {repeated} repeats dropped)")
        })
    }
}
