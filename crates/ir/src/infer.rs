//! Type inference: the dtype and (symbolic) shape of each op's result, and, for small integer
//! tensors, their values as symbolic `Dim`s ("known values"). Known values are what lets shape
//! arithmetic of ONNX exports (`Shape`/`Gather`/`Concat`/`Reshape` chains) resolve to static
//! shapes over `batch` and `seq`.

use super::op::{BinaryOp, Op, TokenTypes, UnaryOp};
use super::types::{DType, Dim, Tensor, TensorType};

/// Largest tensor whose values are tracked symbolically.
pub const MAX_KNOWN: usize = 64;

/// What inference sees of one operand.
#[derive(Clone, Copy)]
pub struct Operand<'a> {
    pub ty: &'a TensorType,
    pub known: Option<&'a [Dim]>,
}

/// The result of inference for one node.
pub type Inferred = (TensorType, Option<Vec<Dim>>);

/// Known values of a constant, when it is a small integer or boolean tensor.
pub fn known_of_tensor(t: &Tensor) -> Option<Vec<Dim>> {
    if (t.dtype.is_int() || t.dtype == DType::Bool) && t.numel() <= MAX_KNOWN {
        Some(t.to_i64_vec().into_iter().map(Dim::c).collect())
    } else {
        None
    }
}

fn is_small_int(ty: &TensorType) -> bool {
    (ty.dtype.is_int() || ty.dtype == DType::Bool)
        && ty.static_numel().is_some_and(|n| n <= MAX_KNOWN)
}

fn static_shape(dims: &[Dim]) -> Option<Vec<usize>> {
    dims.iter()
        .map(|d| d.as_const().and_then(|v| usize::try_from(v).ok()))
        .collect()
}

fn norm_axis(axis: i64, rank: usize) -> Result<usize, String> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r.max(1) && !(r == 0 && a == 0) {
        return Err(format!("axis {axis} out of range for rank {rank}"));
    }
    Ok(a as usize)
}

/// Numpy broadcasting of two symbolic shapes.
pub fn broadcast(a: &[Dim], b: &[Dim]) -> Result<Vec<Dim>, String> {
    let n = a.len().max(b.len());
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let da = if i + a.len() >= n {
            a[i + a.len() - n]
        } else {
            Dim::c(1)
        };
        let db = if i + b.len() >= n {
            b[i + b.len() - n]
        } else {
            Dim::c(1)
        };
        let d = if da == db || db == Dim::c(1) {
            da
        } else if da == Dim::c(1) {
            db
        } else {
            return Err(format!("cannot broadcast [{}] with [{}]", join(a), join(b)));
        };
        out.push(d);
    }
    Ok(out)
}

pub(crate) fn join(d: &[Dim]) -> String {
    d.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn product(d: &[Dim]) -> Option<Dim> {
    d.iter().try_fold(Dim::c(1), |a, &b| a.checked_mul(b))
}

/// Index of the element of a broadcast operand for a flat index of the output.
fn bcast_index(out: &[usize], shape: &[usize], mut flat: usize) -> usize {
    let mut idx = 0;
    let mut stride = 1;
    let off = out.len() - shape.len();
    for i in (0..out.len()).rev() {
        let c = flat % out[i];
        flat /= out[i];
        if i >= off {
            let d = shape[i - off];
            if d != 1 {
                idx += c * stride;
            }
            stride *= d;
        }
    }
    idx
}

fn map_known(ins: &[Operand], out: &[Dim], f: impl Fn(&[Dim]) -> Option<Dim>) -> Option<Vec<Dim>> {
    let out_s = static_shape(out)?;
    let n: usize = out_s.iter().product();
    if n > MAX_KNOWN {
        return None;
    }
    let shapes: Vec<Vec<usize>> = ins
        .iter()
        .map(|o| static_shape(&o.ty.shape))
        .collect::<Option<_>>()?;
    let vals: Vec<&[Dim]> = ins.iter().map(|o| o.known).collect::<Option<_>>()?;
    let mut res = Vec::with_capacity(n);
    let mut args = vec![Dim::c(0); ins.len()];
    for i in 0..n {
        for (j, s) in shapes.iter().enumerate() {
            args[j] = *vals[j].get(bcast_index(&out_s, s, i))?;
        }
        res.push(f(&args)?);
    }
    Some(res)
}

fn binary_known(op: BinaryOp, a: Dim, b: Dim) -> Option<Dim> {
    let bool_dim = |v: bool| Dim::c(v as i64);
    match op {
        BinaryOp::Add => a.checked_add(b),
        BinaryOp::Sub => a.checked_add(b.negated()),
        BinaryOp::Mul => a.checked_mul(b),
        BinaryOp::Div => match (a.as_const(), b.as_const()) {
            (Some(x), Some(y)) if y != 0 => Some(Dim::c(x.div_euclid(y))),
            _ => a.checked_div(b),
        },
        BinaryOp::Equal => a.equals(b).map(bool_dim),
        BinaryOp::Min | BinaryOp::Max => {
            let (x, y) = (a.as_const()?, b.as_const()?);
            Some(Dim::c(if op == BinaryOp::Min {
                x.min(y)
            } else {
                x.max(y)
            }))
        }
        BinaryOp::Less | BinaryOp::LessOrEqual | BinaryOp::Greater | BinaryOp::GreaterOrEqual => {
            let (x, y) = (a.as_const()?, b.as_const()?);
            Some(bool_dim(match op {
                BinaryOp::Less => x < y,
                BinaryOp::LessOrEqual => x <= y,
                BinaryOp::Greater => x > y,
                _ => x >= y,
            }))
        }
        BinaryOp::And => Some(bool_dim(a.as_const()? != 0 && b.as_const()? != 0)),
        BinaryOp::Or => Some(bool_dim(a.as_const()? != 0 || b.as_const()? != 0)),
        BinaryOp::Pow => {
            let (x, y) = (a.as_const()?, b.as_const()?);
            Some(Dim::c(x.checked_pow(u32::try_from(y).ok()?)?))
        }
    }
}

fn need<'a>(o: &Operand<'a>, what: &str) -> Result<&'a [Dim], String> {
    o.known.ok_or_else(|| {
        format!("the {what} operand is not a known value (it must be computable at compile time)")
    })
}

fn need_consts(o: &Operand, what: &str) -> Result<Vec<i64>, String> {
    need(o, what)?
        .iter()
        .map(|d| {
            d.as_const()
                .ok_or_else(|| format!("the {what} operand must be constant, found {d}"))
        })
        .collect()
}

fn expect_rank(ty: &TensorType, r: usize, what: &str) -> Result<(), String> {
    if ty.rank() != r {
        return Err(format!("{what} must have rank {r}, found {ty}"));
    }
    Ok(())
}

fn same_dim(a: Dim, b: Dim, what: &str) -> Result<(), String> {
    match a.equals(b) {
        Some(true) => Ok(()),
        _ => Err(format!("{what}: {a} does not match {b}")),
    }
}

/// Infers the result type and known value of `op` over `ins`.
pub fn infer(op: &Op, ins: &[Operand]) -> Result<Inferred, String> {
    let (lo, hi) = op.arity();
    if ins.len() < lo || ins.len() > hi {
        return Err(format!(
            "{} takes {} operands, found {}",
            op.mnemonic(),
            if lo == hi {
                lo.to_string()
            } else {
                format!("{lo} to {hi}")
            },
            ins.len()
        ));
    }
    let t = |dtype: DType, shape: Vec<Dim>| TensorType::new(dtype, shape);
    match op {
        Op::Input { .. } | Op::Const { .. } => {
            Err("inputs and constants carry their own type".into())
        }
        Op::Unary(u) => {
            let x = ins[0].ty;
            if *u == UnaryOp::Not && x.dtype != DType::Bool {
                return Err(format!("not needs a bool operand, found {x}"));
            }
            if *u != UnaryOp::Not && *u != UnaryOp::Neg && *u != UnaryOp::Abs && !x.dtype.is_float()
            {
                return Err(format!(
                    "{} needs a float operand, found {x}",
                    op.mnemonic()
                ));
            }
            let known = match u {
                UnaryOp::Neg => map_known(ins, &x.shape, |a| Some(a[0].negated())),
                UnaryOp::Not => map_known(ins, &x.shape, |a| {
                    Some(Dim::c((a[0].as_const()? == 0) as i64))
                }),
                _ => None,
            };
            Ok((x.clone(), known))
        }
        Op::Binary(b) => {
            let (a, c) = (ins[0].ty, ins[1].ty);
            if *b != BinaryOp::Pow && a.dtype != c.dtype {
                return Err(format!("operand types differ: {a} and {c}"));
            }
            if b.is_logical() && a.dtype != DType::Bool {
                return Err(format!("{} needs bool operands, found {a}", op.mnemonic()));
            }
            let shape = broadcast(&a.shape, &c.shape)?;
            let dtype = if b.is_comparison() || b.is_logical() {
                DType::Bool
            } else {
                a.dtype
            };
            let known = if is_small_int(&t(dtype, shape.clone())) && a.dtype != DType::F32 {
                map_known(ins, &shape, |v| binary_known(*b, v[0], v[1]))
            } else {
                None
            };
            Ok((t(dtype, shape), known))
        }
        Op::Where => {
            let (c, a, b) = (ins[0].ty, ins[1].ty, ins[2].ty);
            if c.dtype != DType::Bool {
                return Err(format!("where needs a bool condition, found {c}"));
            }
            if a.dtype != b.dtype {
                return Err(format!("operand types differ: {a} and {b}"));
            }
            let shape = broadcast(&broadcast(&c.shape, &a.shape)?, &b.shape)?;
            let known = map_known(ins, &shape, |v| {
                Some(if v[0].as_const()? != 0 { v[1] } else { v[2] })
            });
            Ok((t(a.dtype, shape), known))
        }
        Op::Cast { to } => {
            let x = ins[0].ty;
            let known = if (to.is_int() || *to == DType::Bool) && !x.dtype.is_float() {
                ins[0].known.map(|k| {
                    k.iter()
                        .map(|d| {
                            if *to == DType::Bool {
                                match d.as_const() {
                                    Some(v) => Dim::c((v != 0) as i64),
                                    None => Dim::c(1),
                                }
                            } else {
                                *d
                            }
                        })
                        .collect()
                })
            } else {
                None
            };
            Ok((t(*to, x.shape.clone()), known))
        }
        Op::Shape { start, end } => {
            let r = ins[0].ty.rank() as i64;
            let clamp = |v: i64| if v < 0 { (v + r).max(0) } else { v.min(r) };
            let s = clamp(*start) as usize;
            let e = clamp(end.unwrap_or(r)) as usize;
            let dims: Vec<Dim> = if s < e {
                ins[0].ty.shape[s..e].to_vec()
            } else {
                vec![]
            };
            Ok((t(DType::I64, vec![Dim::c(dims.len() as i64)]), Some(dims)))
        }
        Op::Reshape { allowzero } => {
            let target = need(&ins[1], "shape")?;
            let shape = resolve_reshape(&ins[0].ty.shape, target, *allowzero)?;
            Ok((t(ins[0].ty.dtype, shape), ins[0].known.map(|k| k.to_vec())))
        }
        Op::ReshapeTo { shape } => {
            let shape = resolve_reshape(&ins[0].ty.shape, shape, true)?;
            Ok((t(ins[0].ty.dtype, shape), ins[0].known.map(|k| k.to_vec())))
        }
        Op::Expand => {
            let target = need(&ins[1], "shape")?;
            let shape = broadcast(&ins[0].ty.shape, target)?;
            let known = map_known(&ins[..1], &shape, |v| Some(v[0]));
            Ok((t(ins[0].ty.dtype, shape), known))
        }
        Op::ExpandTo { shape } => {
            let shape = broadcast(&ins[0].ty.shape, shape)?;
            let known = map_known(&ins[..1], &shape, |v| Some(v[0]));
            Ok((t(ins[0].ty.dtype, shape), known))
        }
        Op::ConstantOfShape { value } => {
            let shape = need(&ins[0], "shape")?.to_vec();
            fill_type(value, shape)
        }
        Op::Fill { shape, value } => fill_type(value, shape.clone()),
        Op::Range => {
            for (i, o) in ins.iter().enumerate() {
                if o.ty.rank() != 0 {
                    return Err(format!(
                        "range operand {i} must be a scalar, found {}",
                        o.ty
                    ));
                }
            }
            let (s, l, d) = (
                need(&ins[0], "start")?[0],
                need(&ins[1], "limit")?[0],
                need(&ins[2], "delta")?[0],
            );
            let (len, known) = range_len(s, l, d)?;
            Ok((t(ins[0].ty.dtype, vec![len]), known))
        }
        Op::Arange {
            dtype,
            start,
            step,
            len,
        } => {
            let known = len
                .as_const()
                .filter(|&n| (n as usize) <= MAX_KNOWN)
                .map(|n| (0..n).map(|i| Dim::c(start + i * step)).collect());
            Ok((t(*dtype, vec![*len]), known))
        }
        Op::Slice => {
            let x = ins[0].ty;
            let starts = need_consts(&ins[1], "starts")?;
            let ends = need(&ins[2], "ends")?;
            let axes = match ins.get(3) {
                Some(o) => need_consts(o, "axes")?,
                None => (0..starts.len() as i64).collect(),
            };
            let steps = match ins.get(4) {
                Some(o) => need_consts(o, "steps")?,
                None => vec![1; starts.len()],
            };
            if starts.len() != ends.len()
                || axes.len() != starts.len()
                || steps.len() != starts.len()
            {
                return Err("starts, ends, axes and steps differ in length".into());
            }
            let mut shape = x.shape.clone();
            let mut ranges = Vec::new();
            for i in 0..axes.len() {
                let ax = norm_axis(axes[i], x.rank())?;
                let (s, e) = resolve_bounds(x.shape[ax], starts[i], ends[i], steps[i])?;
                shape[ax] = if steps[i] == 1 {
                    e.checked_add(s.negated())
                        .ok_or("slice length is not a simple expression")?
                } else {
                    let (s, e) = (
                        s.as_const().ok_or("symbolic strided slice")?,
                        e.as_const().ok_or("symbolic strided slice")?,
                    );
                    let st = steps[i];
                    Dim::c(((e - s + st - st.signum()) / st).max(0))
                };
                ranges.push((ax, s, e, steps[i]));
            }
            let known = slice_known(&ins[0], &shape, &ranges);
            Ok((t(x.dtype, shape), known))
        }
        Op::SliceTo { axes, starts, ends } => {
            let x = ins[0].ty;
            let mut shape = x.shape.clone();
            let mut ranges = Vec::new();
            for i in 0..axes.len() {
                let ax = *axes.get(i).ok_or("bad slice")?;
                if ax >= x.rank() {
                    return Err(format!("axis {ax} out of range for rank {}", x.rank()));
                }
                shape[ax] = ends[i]
                    .checked_add(starts[i].negated())
                    .ok_or("slice length is not a simple expression")?;
                ranges.push((ax, starts[i], ends[i], 1));
            }
            let known = slice_known(&ins[0], &shape, &ranges);
            Ok((t(x.dtype, shape), known))
        }
        Op::Unsqueeze { axes } => {
            let x = ins[0].ty;
            let r = x.rank() + axes.len();
            let mut ax: Vec<usize> = axes
                .iter()
                .map(|&a| norm_axis(a, r))
                .collect::<Result<_, _>>()?;
            ax.sort_unstable();
            ax.dedup();
            if ax.len() != axes.len() {
                return Err("repeated axis".into());
            }
            let mut shape = Vec::with_capacity(r);
            let mut it = x.shape.iter();
            for i in 0..r {
                if ax.contains(&i) {
                    shape.push(Dim::c(1));
                } else {
                    shape.push(*it.next().ok_or("bad unsqueeze")?);
                }
            }
            Ok((t(x.dtype, shape), ins[0].known.map(|k| k.to_vec())))
        }
        Op::Squeeze { axes } => {
            let x = ins[0].ty;
            let ax: Vec<usize> = if axes.is_empty() {
                (0..x.rank()).filter(|&i| x.shape[i] == Dim::c(1)).collect()
            } else {
                axes.iter()
                    .map(|&a| norm_axis(a, x.rank()))
                    .collect::<Result<_, _>>()?
            };
            for &a in &ax {
                if x.shape[a] != Dim::c(1) {
                    return Err(format!("cannot squeeze axis {a} of size {}", x.shape[a]));
                }
            }
            let shape = (0..x.rank())
                .filter(|i| !ax.contains(i))
                .map(|i| x.shape[i])
                .collect();
            Ok((t(x.dtype, shape), ins[0].known.map(|k| k.to_vec())))
        }
        Op::Concat { axis } => {
            let x = ins[0].ty;
            let ax = norm_axis(*axis, x.rank())?;
            let mut shape = x.shape.clone();
            for o in &ins[1..] {
                if o.ty.dtype != x.dtype || o.ty.rank() != x.rank() {
                    return Err(format!("concat operands differ: {x} and {}", o.ty));
                }
                for (i, (d, &od)) in shape.iter_mut().zip(&o.ty.shape).enumerate() {
                    if i == ax {
                        *d = d
                            .checked_add(od)
                            .ok_or("concatenated length is not a simple expression")?;
                    } else {
                        same_dim(*d, od, "concat")?;
                    }
                }
            }
            let known = if x.rank() == 1 {
                ins.iter()
                    .map(|o| o.known)
                    .collect::<Option<Vec<_>>>()
                    .map(|v| v.concat())
                    .filter(|v| v.len() <= MAX_KNOWN)
            } else {
                None
            };
            Ok((t(x.dtype, shape), known))
        }
        Op::Gather { axis } => {
            let (x, idx) = (ins[0].ty, ins[1].ty);
            if !idx.dtype.is_int() {
                return Err(format!("gather indices must be integers, found {idx}"));
            }
            let ax = norm_axis(*axis, x.rank())?;
            let mut shape = x.shape[..ax].to_vec();
            shape.extend_from_slice(&idx.shape);
            shape.extend_from_slice(&x.shape[ax + 1..]);
            let known = match (ins[0].known, ins[1].known) {
                (Some(data), Some(ix)) if x.rank() == 1 => {
                    let n = data.len() as i64;
                    ix.iter()
                        .map(|i| {
                            let i = i.as_const()?;
                            let i = if i < 0 { i + n } else { i };
                            data.get(usize::try_from(i).ok()?).copied()
                        })
                        .collect()
                }
                _ => None,
            };
            Ok((t(x.dtype, shape), known))
        }
        Op::GatherElements { axis } => {
            let (x, idx) = (ins[0].ty, ins[1].ty);
            norm_axis(*axis, x.rank())?;
            if idx.rank() != x.rank() || !idx.dtype.is_int() {
                return Err(format!("gather_elements indices {idx} do not fit data {x}"));
            }
            Ok((t(x.dtype, idx.shape.clone()), None))
        }
        Op::Transpose { perm } => {
            let x = ins[0].ty;
            let mut p = perm.clone();
            if p.is_empty() {
                p = (0..x.rank()).rev().collect();
            }
            let mut seen = p.clone();
            seen.sort_unstable();
            if seen != (0..x.rank()).collect::<Vec<_>>() {
                return Err(format!(
                    "perm {p:?} is not a permutation of rank {}",
                    x.rank()
                ));
            }
            Ok((t(x.dtype, p.iter().map(|&i| x.shape[i]).collect()), None))
        }
        Op::Flatten { axis } => {
            let x = ins[0].ty;
            let a = if *axis < 0 {
                *axis + x.rank() as i64
            } else {
                *axis
            };
            if a < 0 || a > x.rank() as i64 {
                return Err(format!("axis {axis} out of range for rank {}", x.rank()));
            }
            let a = a as usize;
            let p0 = product(&x.shape[..a]).ok_or("flattened size too complex")?;
            let p1 = product(&x.shape[a..]).ok_or("flattened size too complex")?;
            Ok((t(x.dtype, vec![p0, p1]), ins[0].known.map(|k| k.to_vec())))
        }
        Op::CumSum { axis, .. } => {
            let x = ins[0].ty;
            norm_axis(*axis, x.rank())?;
            Ok((x.clone(), None))
        }
        Op::MatMul => {
            let (a, b) = (ins[0].ty, ins[1].ty);
            if a.dtype != b.dtype {
                return Err(format!("operand types differ: {a} and {b}"));
            }
            if a.rank() < 2 || b.rank() < 2 {
                return Err(format!(
                    "matmul needs operands of rank >= 2, found {a} and {b}"
                ));
            }
            let (m, k1) = (a.shape[a.rank() - 2], a.shape[a.rank() - 1]);
            let (k2, n) = (b.shape[b.rank() - 2], b.shape[b.rank() - 1]);
            same_dim(k1, k2, "matmul inner dimensions")?;
            let mut shape = broadcast(&a.shape[..a.rank() - 2], &b.shape[..b.rank() - 2])?;
            shape.push(m);
            shape.push(n);
            Ok((t(a.dtype, shape), None))
        }
        Op::Gemm {
            trans_a, trans_b, ..
        } => {
            let (a, b) = (ins[0].ty, ins[1].ty);
            expect_rank(a, 2, "gemm A")?;
            expect_rank(b, 2, "gemm B")?;
            let (m, k1) = if *trans_a {
                (a.shape[1], a.shape[0])
            } else {
                (a.shape[0], a.shape[1])
            };
            let (k2, n) = if *trans_b {
                (b.shape[1], b.shape[0])
            } else {
                (b.shape[0], b.shape[1])
            };
            same_dim(k1, k2, "gemm inner dimensions")?;
            let shape = vec![m, n];
            if let Some(c) = ins.get(2) {
                let bc = broadcast(&shape, &c.ty.shape)?;
                if bc != shape {
                    return Err(format!(
                        "gemm C {} does not broadcast to [{}]",
                        c.ty,
                        join(&shape)
                    ));
                }
            }
            Ok((t(a.dtype, shape), None))
        }
        Op::Softmax { axis } => {
            norm_axis(*axis, ins[0].ty.rank())?;
            Ok((ins[0].ty.clone(), None))
        }
        Op::Reduce { axes, keepdims, .. } => {
            let x = ins[0].ty;
            let ax: Vec<usize> = if axes.is_empty() {
                (0..x.rank()).collect()
            } else {
                axes.iter()
                    .map(|&a| norm_axis(a, x.rank()))
                    .collect::<Result<_, _>>()?
            };
            let mut shape = Vec::new();
            for (i, d) in x.shape.iter().enumerate() {
                if ax.contains(&i) {
                    if *keepdims {
                        shape.push(Dim::c(1));
                    }
                } else {
                    shape.push(*d);
                }
            }
            Ok((t(x.dtype, shape), None))
        }
        Op::LayerNormalization { axis, .. } => {
            let x = ins[0].ty;
            let a = norm_axis(*axis, x.rank())?;
            for o in &ins[1..] {
                if broadcast(&x.shape[a..], &o.ty.shape)? != x.shape[a..] {
                    return Err(format!("layer norm parameter {} does not fit {x}", o.ty));
                }
            }
            Ok((x.clone(), None))
        }
        Op::Embedding { types, .. } => {
            let ids = ins[0].ty;
            let with_type_input = *types == TokenTypes::Input;
            let expected = 3 + with_type_input as usize + (*types != TokenTypes::Absent) as usize;
            if ins.len() != expected {
                return Err(format!(
                    "embedding with types {types:?} takes {expected} operands, found {}",
                    ins.len()
                ));
            }
            if !ids.dtype.is_int() || ids.rank() != 2 {
                return Err(format!(
                    "embedding ids must be integer [batch, seq], found {ids}"
                ));
            }
            let tables = &ins[1 + with_type_input as usize..];
            let h = tables[0]
                .ty
                .shape
                .get(1)
                .copied()
                .ok_or("embedding tables must have rank 2")?;
            for tb in tables {
                expect_rank(tb.ty, 2, "embedding table")?;
                same_dim(tb.ty.shape[1], h, "embedding table widths")?;
                if tb.ty.dtype != DType::F32 {
                    return Err(format!("embedding tables must be f32, found {}", tb.ty));
                }
            }
            if with_type_input {
                let tt = ins[1].ty;
                if !tt.dtype.is_int() || tt.shape != ids.shape {
                    return Err(format!("token type ids {tt} do not match ids {ids}"));
                }
            }
            Ok((t(DType::F32, vec![ids.shape[0], ids.shape[1], h]), None))
        }
        Op::LayerNorm { .. } => {
            let x = ins[0].ty;
            let h = *x.shape.last().ok_or("layer norm of a scalar")?;
            for o in &ins[1..] {
                expect_rank(o.ty, 1, "layer norm parameter")?;
                same_dim(o.ty.shape[0], h, "layer norm parameter")?;
            }
            Ok((x.clone(), None))
        }
        Op::Linear => {
            let (x, w) = (ins[0].ty, ins[1].ty);
            expect_rank(w, 2, "linear weight")?;
            if x.dtype != DType::F32 || w.dtype != DType::F32 {
                return Err(format!("linear needs f32 operands, found {x} and {w}"));
            }
            let k = *x.shape.last().ok_or("linear of a scalar")?;
            same_dim(w.shape[1], k, "linear input width")?;
            if let Some(b) = ins.get(2) {
                expect_rank(b.ty, 1, "linear bias")?;
                same_dim(b.ty.shape[0], w.shape[0], "linear bias")?;
            }
            let mut shape = x.shape.clone();
            *shape.last_mut().unwrap_or(&mut Dim::c(0)) = w.shape[0];
            Ok((t(DType::F32, shape), None))
        }
        Op::FusedLinear { residual, .. } => {
            if *residual != (ins.len() == 4) {
                return Err(format!(
                    "fused_linear with residual={residual} takes {} operands",
                    3 + *residual as usize
                ));
            }
            let (ty, _) = infer(&Op::Linear, &ins[..3])?;
            if let Some(r) = ins.get(3) {
                if r.ty != &ty {
                    return Err(format!("residual {} does not match the output {ty}", r.ty));
                }
            }
            Ok((ty, None))
        }
        Op::Gelu { .. } => {
            if !ins[0].ty.dtype.is_float() {
                return Err(format!("gelu needs a float operand, found {}", ins[0].ty));
            }
            Ok((ins[0].ty.clone(), None))
        }
        Op::Attention { heads, .. } => {
            let (q, k, v) = (ins[0].ty, ins[1].ty, ins[2].ty);
            for (name, o) in [("q", q), ("k", k), ("v", v)] {
                expect_rank(o, 3, name)?;
            }
            same_dim(q.shape[0], k.shape[0], "attention batch")?;
            same_dim(q.shape[1], k.shape[1], "attention sequence")?;
            same_dim(k.shape[1], v.shape[1], "attention sequence")?;
            same_dim(q.shape[2], k.shape[2], "attention q and k widths")?;
            for o in [q, v] {
                let w = o.shape[2]
                    .as_const()
                    .ok_or("attention width must be constant")?;
                if *heads == 0 || w % *heads as i64 != 0 {
                    return Err(format!("width {w} is not a multiple of {heads} heads"));
                }
            }
            if let Some(m) = ins.get(3) {
                if !m.ty.dtype.is_int() || m.ty.rank() != 2 {
                    return Err(format!(
                        "attention mask must be integer [batch, seq], found {}",
                        m.ty
                    ));
                }
                same_dim(m.ty.shape[1], k.shape[1], "attention mask length")?;
            }
            Ok((
                t(DType::F32, vec![q.shape[0], q.shape[1], v.shape[2]]),
                None,
            ))
        }
        Op::QkvAttention { heads, qk, .. } => {
            let x = ins[0].ty;
            expect_rank(x, 3, "qkv")?;
            let w = x.shape[2]
                .as_const()
                .ok_or("qkv_attention width must be constant")? as usize;
            if 2 * qk >= w {
                return Err(format!("qkv width {w} leaves no room for v after 2 x {qk}"));
            }
            let v = w - 2 * qk;
            for (name, w) in [("q/k", *qk), ("v", v)] {
                if *heads == 0 || w % *heads != 0 {
                    return Err(format!(
                        "{name} width {w} is not a multiple of {heads} heads"
                    ));
                }
            }
            if let Some(m) = ins.get(1) {
                if !m.ty.dtype.is_int() || m.ty.rank() != 2 {
                    return Err(format!(
                        "attention mask must be integer [batch, seq], found {}",
                        m.ty
                    ));
                }
                same_dim(m.ty.shape[1], x.shape[1], "attention mask length")?;
            }
            Ok((
                t(DType::F32, vec![x.shape[0], x.shape[1], Dim::c(v as i64)]),
                None,
            ))
        }
        Op::MeanPool => {
            let (x, m) = (ins[0].ty, ins[1].ty);
            expect_rank(x, 3, "mean pool input")?;
            if !m.dtype.is_int() || m.rank() != 2 {
                return Err(format!(
                    "mean pool mask must be integer [batch, seq], found {m}"
                ));
            }
            Ok((t(x.dtype, vec![x.shape[0], x.shape[2]]), None))
        }
    }
}

fn fill_type(value: &Tensor, shape: Vec<Dim>) -> Result<Inferred, String> {
    if value.numel() != 1 {
        return Err("the fill value must have one element".into());
    }
    let ty = TensorType::new(value.dtype, shape);
    let known = if is_small_int(&ty) {
        let v = Dim::c(value.to_i64_vec()[0]);
        ty.static_numel().map(|n| vec![v; n])
    } else {
        None
    };
    Ok((ty, known))
}

fn range_len(s: Dim, l: Dim, d: Dim) -> Result<(Dim, Option<Vec<Dim>>), String> {
    if let (Some(s), Some(l), Some(d)) = (s.as_const(), l.as_const(), d.as_const()) {
        if d == 0 {
            return Err("range delta is zero".into());
        }
        let n = ((l - s) as f64 / d as f64).ceil().max(0.0) as i64;
        let known = (n as usize <= MAX_KNOWN).then(|| (0..n).map(|i| Dim::c(s + i * d)).collect());
        return Ok((Dim::c(n), known));
    }
    if s == Dim::c(0) && d == Dim::c(1) {
        return Ok((l, None));
    }
    Err(format!("range({s}, {l}, {d}) has no simple length"))
}

/// Resolves ONNX slice bounds on a dimension of size `dim` into `(start, end)`.
pub fn resolve_bounds(dim: Dim, start: i64, end: Dim, step: i64) -> Result<(Dim, Dim), String> {
    if step == 0 {
        return Err("slice step is zero".into());
    }
    let big = i64::MAX / 4;
    if let Some(d) = dim.as_const() {
        let clampv = |v: i64, lo: i64, hi: i64| v.clamp(lo, hi);
        let norm = |v: i64| if v < 0 { v + d } else { v };
        let (lo, hi) = if step > 0 { (0, d) } else { (-1, d - 1) };
        let s = clampv(norm(start), lo, hi);
        let e = match end.as_const() {
            Some(e) => clampv(if e < -big { -1 } else { norm(e) }, lo, hi),
            // a symbolic end inside a constant dimension: the bound holds for every
            // binding that fits the model (seq within the table it slices)
            None if step == 1 => return Ok((Dim::c(s), end)),
            None => return Err("symbolic strided slice".into()),
        };
        return Ok((Dim::c(s), Dim::c(e)));
    }
    if step != 1 {
        return Err("strided slice of a symbolic dimension".into());
    }
    if start < 0 {
        return Err("negative start on a symbolic dimension".into());
    }
    let e = match end.as_const() {
        Some(e) if e >= big => dim,
        Some(e) if e < 0 => dim
            .checked_add(Dim::c(e))
            .ok_or("slice end is not a simple expression")?,
        Some(e) => Dim::c(e),
        None => end,
    };
    Ok((Dim::c(start), e))
}

fn slice_known(x: &Operand, out: &[Dim], ranges: &[(usize, Dim, Dim, i64)]) -> Option<Vec<Dim>> {
    let k = x.known?;
    if x.ty.rank() != 1 || ranges.len() != 1 {
        return None;
    }
    let (_, s, _, st) = ranges[0];
    let s = s.as_const()?;
    let n = out[0].as_const()?;
    (0..n)
        .map(|i| k.get(usize::try_from(s + i * st).ok()?).copied())
        .collect()
}

/// Resolves an ONNX reshape target (with 0 and -1) against the input shape.
fn resolve_reshape(input: &[Dim], target: &[Dim], allowzero: bool) -> Result<Vec<Dim>, String> {
    let mut out = Vec::with_capacity(target.len());
    let mut infer_at = None;
    for (i, d) in target.iter().enumerate() {
        match d.as_const() {
            Some(-1) => {
                if infer_at.replace(i).is_some() {
                    return Err("more than one -1 in reshape target".into());
                }
                out.push(Dim::c(1));
            }
            Some(0) if !allowzero => out.push(*input.get(i).ok_or("reshape 0 beyond input rank")?),
            Some(v) if v < 0 => return Err(format!("negative dimension {v} in reshape target")),
            _ => out.push(*d),
        }
    }
    let total = product(input).ok_or("input size too complex")?;
    if let Some(i) = infer_at {
        let known = product(&out).ok_or("target size too complex")?;
        out[i] = total
            .checked_div(known)
            .ok_or_else(|| format!("cannot infer -1: [{}] into [{}]", join(input), join(target)))?;
    }
    let got = product(&out).ok_or("target size too complex")?;
    if got.equals(total) != Some(true) {
        return Err(format!(
            "cannot reshape [{}] into [{}]",
            join(input),
            join(&out)
        ));
    }
    Ok(out)
}
