//! Types and known values of shape ops: shapes, reshapes (with `0` and `-1`), expands, ranges,
//! slices with resolved bounds, (un)squeezes, concatenation, gathers, transposes.

use crate::op::Op;
use crate::types::{DType, Dim, Tensor, TensorType};

use super::*;

/// The type (and known value) of one of this family's ops.
pub(super) fn infer(op: &Op, ins: &[Operand]) -> Result<Inferred, String> {
    let t = |dtype: DType, shape: Vec<Dim>| TensorType::new(dtype, shape);
    match op {
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
        Op::GatherNd { batch_dims } => {
            let (x, idx) = (ins[0].ty, ins[1].ty);
            let b = *batch_dims;
            let r = idx
                .shape
                .last()
                .and_then(|d| d.as_const())
                .filter(|&r| r >= 1)
                .map(|r| r as usize);
            match r {
                Some(r)
                    if idx.dtype.is_int()
                        && b < idx.rank()
                        && b + r <= x.rank()
                        && idx.shape[..b] == x.shape[..b] =>
                {
                    let mut shape = idx.shape[..idx.rank() - 1].to_vec();
                    shape.extend_from_slice(&x.shape[b + r..]);
                    Ok((t(x.dtype, shape), None))
                }
                _ => Err(format!(
                    "gather_nd indices {idx} do not fit data {x} with batch_dims {b}"
                )),
            }
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
        _ => Err(format!("{} is not a shape op", op.mnemonic())),
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
