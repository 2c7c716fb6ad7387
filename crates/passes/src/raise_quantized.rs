//! `raise-quantized`: ONNX Runtime's dynamically quantized graphs (`quantize_dynamic`:
//! `DynamicQuantizeLinear` + `MatMulInteger`, or its fused `DynamicQuantizeMatMul` and
//! `MatMulIntegerToFloat`), as the importer composes them, in forms the other raising passes
//! and the code generator know:
//!
//! - a quantized embedding table, `dequantize(gather(table_q, ids))` (elementwise ops with a
//!   one-element constant over a gather of a constant), becomes the gather of the dequantized
//!   table (the same f32 operations, done once on the table);
//! - a linear on quantized weights, `f32((quantize(x) - zp) @ (w_q - w_zp)) · (s · w_s)`,
//!   becomes `(c @ w_int) · (s · w_s)` with `c` and `s` the two parts of
//!   `dynamic_quantize(x)` (the integers less the zero point, and the scale) and `w_int` the
//!   integer weights as f32: `raise-linear` makes the matmul a `linear` without bias, whose
//!   products of integers of at most 9 bits are exact in f32, and so are its sums while they
//!   stay below 2²⁴ (the summary counts the linears where the weights prove that for every
//!   input: 255 · the largest column sum of `|w_int|` below 2²⁴); the scaling is the
//!   file's two multiplications in its order. So the file's integer arithmetic, exactly.
//!
//! One difference is on purpose: `dynamic_quantize` takes the range of each sequence (over
//! its real tokens, in a model with an attention mask), where the file takes the whole
//! batch's, padding included, so that there a sequence's result depends on what else is in
//! its batch. For a sequence alone (a batch of one, without padding) the two are the same.

use std::collections::HashMap;

use bertc_interp::{eval_op, Value};
use bertc_ir::{
    BinaryOp, Binding, DType, Graph, NodeId, Op, QuantPart, ReduceKind, Tensor, UnaryOp,
};

use crate::pattern::{binary, cast_to, single_user, split_by, unary, with_const};
use crate::{Pass, PassError};

pub struct RaiseQuantized;

fn ir(source: bertc_ir::IrError) -> PassError {
    PassError::Ir {
        pass: "raise-quantized",
        source,
    }
}

/// `x` when `n` is `max` over all of `x` (no axes, no kept dimensions).
fn reduce_max_all(g: &Graph, n: NodeId) -> Option<NodeId> {
    match g.op(n) {
        Op::Reduce {
            kind: ReduceKind::Max,
            axes,
            keepdims: false,
        } if axes.is_empty() && g.operands(n).len() == 1 => Some(g.operands(n)[0]),
        _ => None,
    }
}

/// The tensor `x` whose `DynamicQuantizeLinear` scale is `s` and zero point (as f32) is `zp`,
/// in the importer's composition (`onnx/quant.rs`): `hi = max(max x, 0)`,
/// `lo = min(-max(-x), 0)`, `s = where(hi == lo, 1, (hi - lo) / 255)`,
/// `zp = round(min(max(-(lo / s), 0), 255))`.
fn dynamic_params(g: &Graph, s: NodeId, zp: NodeId) -> Option<NodeId> {
    let Op::Where = g.op(s) else { return None };
    let [cond, one, raw] = g.operands(s)[..] else {
        return None;
    };
    if g.const_scalar(one) != Some(1.0) {
        return None;
    }
    let (hi, lo) = binary(g, cond, BinaryOp::Equal)?;
    let span = with_const(g, raw, BinaryOp::Div, 255.0)?;
    if binary(g, span, BinaryOp::Sub)? != (hi, lo) {
        return None;
    }
    let x = reduce_max_all(g, with_const(g, hi, BinaryOp::Max, 0.0)?)?;
    let negmax = unary(g, with_const(g, lo, BinaryOp::Min, 0.0)?, UnaryOp::Neg)?;
    if unary(g, reduce_max_all(g, negmax)?, UnaryOp::Neg)? != x {
        return None;
    }
    let z = with_const(g, unary(g, zp, UnaryOp::Round)?, BinaryOp::Min, 255.0)?;
    let z = unary(g, with_const(g, z, BinaryOp::Max, 0.0)?, UnaryOp::Neg)?;
    (binary(g, z, BinaryOp::Div)? == (lo, s)).then_some(x)
}

/// `(x, s)` when `a` is `i32(y) - i32(u8(zp))` with `y = u8(min(max(round(x / s) + zp, 0),
/// 255))` and `s`, `zp` the dynamic quantization parameters of `x`.
fn dynamic_activation(g: &Graph, a: NodeId) -> Option<(NodeId, NodeId)> {
    let (yi, zi) = binary(g, a, BinaryOp::Sub)?;
    let y = cast_to(g, cast_to(g, yi, DType::I32)?, DType::U8)?;
    let zp = cast_to(g, cast_to(g, zi, DType::I32)?, DType::U8)?;
    let c = with_const(
        g,
        with_const(g, y, BinaryOp::Min, 255.0)?,
        BinaryOp::Max,
        0.0,
    )?;
    let (r, z) = binary(g, c, BinaryOp::Add)?;
    if z != zp {
        return None;
    }
    let (x, s) = binary(g, unary(g, r, UnaryOp::Round)?, BinaryOp::Div)?;
    (dynamic_params(g, s, zp)? == x).then_some((x, s))
}

/// The value of `op` on constants, as a new constant named `name`.
pub(crate) fn folded(g: &mut Graph, op: &Op, ins: &[&Tensor], name: &str) -> Option<NodeId> {
    let vals: Vec<Value> = ins.iter().map(|t| Value::from_tensor(t)).collect();
    let refs: Vec<&Value> = vals.iter().collect();
    let v = eval_op(op, &refs, &Binding { batch: 1, seq: 1 }).ok()?;
    Some(g.add_const(name, v.to_tensor()))
}

/// `op(gather(table, idx), c)` (or a cast of the gather), the table and `c` constant, `c` one
/// element: `gather(op(table, c), idx)`. Only for the dequantization of an integer table: a
/// cast of a gather of an 8- or 16-bit table, then ops on the gathers this made (`dequant`).
fn hoist_into_table(
    g: &mut Graph,
    n: NodeId,
    dequant: &mut std::collections::HashSet<NodeId>,
) -> Result<bool, PassError> {
    let ops = g.operands(n);
    let (gather, other) = match g.op(n) {
        Op::Cast { .. } => (ops[0], None),
        Op::Binary(_) => {
            let is_gather = |m: NodeId| matches!(g.op(m), Op::Gather { axis: 0 });
            match (is_gather(ops[0]), is_gather(ops[1])) {
                (true, false) => (ops[0], Some((1, ops[1]))),
                (false, true) => (ops[1], Some((0, ops[0]))),
                _ => return Ok(false),
            }
        }
        _ => return Ok(false),
    };
    if !matches!(g.op(gather), Op::Gather { axis: 0 }) || single_user(g, gather) != Some(n) {
        return Ok(false);
    }
    let [table, idx] = g.operands(gather)[..] else {
        return Ok(false);
    };
    let Some(t) = g.const_value(table).cloned() else {
        return Ok(false);
    };
    let start = other.is_none() && matches!(t.dtype, DType::U8 | DType::I8 | DType::I16);
    if !start && !dequant.contains(&gather) {
        return Ok(false);
    }
    let c = match other {
        None => None,
        Some((slot, c)) => match g.const_value(c) {
            Some(v) if v.numel() == 1 && v.shape.len() <= t.shape.len() => Some((slot, v.clone())),
            _ => return Ok(false),
        },
    };
    let ins: Vec<&Tensor> = match &c {
        None => vec![&t],
        Some((0, v)) => vec![v, &t],
        Some((_, v)) => vec![&t, v],
    };
    let name = g.node(table).name.clone();
    let op = g.op(n).clone();
    let Some(table) = folded(g, &op, &ins, &name) else {
        return Ok(false);
    };
    let want = g.ty(n).clone();
    g.rewrite(n, Op::Gather { axis: 0 }, &[table, idx])
        .map_err(ir)?;
    debug_assert_eq!(g.ty(n), &want);
    dequant.insert(n);
    Ok(true)
}

/// The attention mask when `x` is `[batch, seq, k]` over it.
fn mask_for(g: &Graph, x: NodeId) -> Option<NodeId> {
    let m = g.input_named("attention_mask")?;
    let (xs, ms) = (&g.ty(x).shape, &g.ty(m).shape);
    (xs.len() == 3 && ms.len() == 2 && xs[..2] == ms[..]).then_some(m)
}

/// Raises the quantized linear whose integer matmul is `mm`; `fq` caches one quantization
/// (centered integers and scale) per quantized tensor (the q, k and v projections read the
/// same one). `Some(proved)` when raised, `proved` when its sums are exact for every input.
fn raise_linear(
    g: &mut Graph,
    mm: NodeId,
    fq: &mut HashMap<NodeId, (NodeId, NodeId)>,
) -> Result<Option<bool>, PassError> {
    let [a, b] = g.operands(mm)[..] else {
        return Ok(None);
    };
    let Some((x, s)) = dynamic_activation(g, a) else {
        return Ok(None);
    };
    let Some(w) = g.const_value(b).filter(|w| w.shape.len() == 2).cloned() else {
        return Ok(None);
    };
    let Some(acc) = single_user(g, mm).filter(|&c| cast_to(g, c, DType::F32) == Some(mm)) else {
        return Ok(None);
    };
    let Some(scaled) = single_user(g, acc) else {
        return Ok(None);
    };
    let Some((_, m)) =
        binary(g, scaled, BinaryOp::Mul).and_then(|(p, q)| split_by(p, q, |o| o != acc))
    else {
        return Ok(None);
    };
    // m = s · w_s, w_s one value or one per column
    let Some((ws, _)) = binary(g, m, BinaryOp::Mul).and_then(|(p, q)| split_by(p, q, |o| o == s))
    else {
        return Ok(None);
    };
    let n = w.shape[1];
    match g.const_value(ws) {
        Some(t) if t.numel() == 1 || (t.numel() == n && t.shape.last() == Some(&n)) => {}
        _ => return Ok(None),
    }
    // the integer weights as f32 (exact: they are at most 9 bits)
    let wv = w.to_f32_vec();
    let mut column = vec![0f64; n];
    for (i, v) in wv.iter().enumerate() {
        column[i % n] += v.abs() as f64;
    }
    let proved = 255.0 * column.iter().fold(0f64, |m, &c| m.max(c)) < (1u32 << 24) as f64;
    let name = g.node(b).name.clone();
    let wf = g.add_const(&name, Tensor::from_f32(w.shape.clone(), &wv));
    let (c, sa) = match fq.get(&x) {
        Some(&q) => q,
        None => {
            let ins: Vec<NodeId> = std::iter::once(x).chain(mask_for(g, x)).collect();
            let name = g.node(x).name.clone();
            let mut part = |part: QuantPart| {
                let op = Op::DynamicQuantize { part };
                g.add(op, &ins, &format!("{name}.{}", part.name()))
                    .map_err(ir)
            };
            let q = (part(QuantPart::Centered)?, part(QuantPart::Scale)?);
            fq.insert(x, q);
            q
        }
    };
    let mname = g.node(m).name.clone();
    let acc = g
        .add(Op::MatMul, &[c, wf], &format!("{mname}.acc"))
        .map_err(ir)?;
    let m2 = g
        .add(Op::Binary(BinaryOp::Mul), &[sa, ws], &mname)
        .map_err(ir)?;
    g.rewrite(scaled, Op::Binary(BinaryOp::Mul), &[acc, m2])
        .map_err(ir)?;
    Ok(Some(proved))
}

impl Pass for RaiseQuantized {
    fn name(&self) -> &'static str {
        "raise-quantized"
    }

    fn run(&self, g: &mut Graph) -> Result<String, PassError> {
        let (mut tables, mut linears, mut proved) = (0, 0, 0);
        let mut fq = HashMap::new();
        let mut dequant = std::collections::HashSet::new();
        for n in g.canonical_order() {
            if !g.contains(n) {
                continue;
            }
            match g.op(n) {
                Op::Cast { .. } | Op::Binary(_) => {
                    tables += usize::from(hoist_into_table(g, n, &mut dequant)?);
                }
                Op::MatMul if g.ty(n).dtype == DType::I32 => {
                    if let Some(p) = raise_linear(g, n, &mut fq)? {
                        linears += 1;
                        proved += usize::from(p);
                    }
                }
                _ => {}
            }
        }
        if linears == 0 && tables == 0 {
            return Ok("no quantized ops".into());
        }
        Ok(format!(
            "{linears} quantized linears ({} quantized inputs; {proved} with sums exact in f32 for every input), {tables} dequantizing ops moved into embedding tables",
            fq.len()
        ))
    }
}
