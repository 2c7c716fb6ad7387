//! Shape ops: shapes as values, reshapes, expands, constants of a shape, ranges, slices, (un)squeezes, concatenation, gathers, transposes, flattening.

use bertc_ir::{Binding, Op};

use crate::elementwise::cast;
use crate::value::*;

/// Executes one of this family's ops.
pub(crate) fn eval(op: &Op, v: &[&Value], bind: &Binding) -> R<Value> {
    let x0 = || first(v);
    Ok(match op {
        Op::Shape { start, end } => {
            let r = x0()?.shape.len() as i64;
            let clamp = |v: i64| if v < 0 { (v + r).max(0) } else { v.min(r) };
            let (s, e) = (clamp(*start) as usize, clamp(end.unwrap_or(r)) as usize);
            let dims: Vec<i64> = if s < e {
                x0()?.shape[s..e].iter().map(|&d| d as i64).collect()
            } else {
                vec![]
            };
            Value::i64(vec![dims.len()], dims)
        }
        Op::Reshape { allowzero } => reshape_dyn(v[0], &v[1].ints()?, *allowzero)?,
        Op::ReshapeTo { shape } => x0()?.with_shape(bind.shape(shape))?,
        Op::Expand => {
            let target: Vec<usize> = v[1].ints()?.iter().map(|&d| d.max(0) as usize).collect();
            expand(v[0], &target)?
        }
        Op::ExpandTo { shape } => expand(x0()?, &bind.shape(shape))?,
        Op::ConstantOfShape { value } => {
            let shape: Vec<usize> = x0()?.ints()?.iter().map(|&d| d.max(0) as usize).collect();
            let n = shape.iter().product();
            let one = Value::from_tensor(value);
            one.pick(shape, std::iter::repeat_n(0, n))
        }
        Op::Fill { shape, value } => {
            let shape = bind.shape(shape);
            let n = shape.iter().product();
            Value::from_tensor(value).pick(shape, std::iter::repeat_n(0, n))
        }
        Op::Range => {
            let dt = v[0].dtype;
            match (&v[0].data, &v[1].data, &v[2].data) {
                (Data::F(s), Data::F(l), Data::F(d)) => {
                    let (s, l, d) = (s[0], l[0], d[0]);
                    if d == 0.0 {
                        return Err("range delta is zero".into());
                    }
                    let n = ((l - s) / d).ceil().max(0.0) as usize;
                    Value::of(
                        dt,
                        vec![n],
                        Data::F((0..n).map(|i| s + i as f32 * d).collect()),
                    )
                }
                _ => {
                    let (s, l, d) = (v[0].scalar_i64()?, v[1].scalar_i64()?, v[2].scalar_i64()?);
                    if d == 0 {
                        return Err("range delta is zero".into());
                    }
                    let n = ((l - s) as f64 / d as f64).ceil().max(0.0) as usize;
                    Value::of(
                        dt,
                        vec![n],
                        Data::I((0..n as i64).map(|i| s + i * d).collect()),
                    )
                }
            }
        }
        Op::Arange {
            dtype,
            start,
            step,
            len,
        } => {
            let n = len.eval(bind).max(0) as usize;
            let vals: Vec<i64> = (0..n as i64).map(|i| start + i * step).collect();
            cast(&Value::i64(vec![n], vals), *dtype)
        }
        Op::Slice => {
            let starts = v[1].ints()?;
            let ends = v[2].ints()?;
            let r = v[0].shape.len();
            let axes: Vec<usize> = match v.get(3) {
                Some(a) => a
                    .ints()?
                    .iter()
                    .map(|&a| norm_axis(a, r))
                    .collect::<R<_>>()?,
                None => (0..starts.len()).collect(),
            };
            let steps = match v.get(4) {
                Some(s) => s.ints()?,
                None => vec![1; starts.len()],
            };
            if starts.len() != ends.len()
                || axes.len() != starts.len()
                || steps.len() != starts.len()
            {
                return Err("starts, ends, axes and steps differ in length".into());
            }
            slice(v[0], &axes, &starts, &ends, &steps)?
        }
        Op::SliceTo { axes, starts, ends } => {
            let st: Vec<i64> = starts.iter().map(|d| d.eval(bind)).collect();
            let en: Vec<i64> = ends.iter().map(|d| d.eval(bind)).collect();
            for (i, &ax) in axes.iter().enumerate() {
                if en[i] > x0()?.shape[ax] as i64 {
                    return Err(format!(
                        "slice end {} beyond dimension {} of size {}",
                        en[i],
                        ax,
                        x0()?.shape[ax]
                    ));
                }
            }
            slice(x0()?, axes, &st, &en, &vec![1; axes.len()])?
        }
        Op::Unsqueeze { axes } => {
            let x = x0()?;
            let r = x.shape.len() + axes.len();
            let ax: Vec<usize> = axes.iter().map(|&a| norm_axis(a, r)).collect::<R<_>>()?;
            let mut it = x.shape.iter();
            let shape = (0..r)
                .map(|i| {
                    if ax.contains(&i) {
                        1
                    } else {
                        *it.next().unwrap_or(&1)
                    }
                })
                .collect();
            x.with_shape(shape)?
        }
        Op::Squeeze { axes } => {
            let x = x0()?;
            let r = x.shape.len();
            let ax: Vec<usize> = if axes.is_empty() {
                (0..r).filter(|&i| x.shape[i] == 1).collect()
            } else {
                axes.iter().map(|&a| norm_axis(a, r)).collect::<R<_>>()?
            };
            let shape = (0..r)
                .filter(|i| !ax.contains(i))
                .map(|i| x.shape[i])
                .collect();
            x.with_shape(shape)?
        }
        Op::Concat { axis } => concat(v, *axis)?,
        Op::Gather { axis } => gather(v[0], v[1], *axis)?,
        Op::GatherElements { axis } => gather_elements(v[0], v[1], *axis)?,
        Op::GatherNd { batch_dims } => gather_nd(v[0], v[1], *batch_dims)?,
        Op::Transpose { perm } => transpose(x0()?, perm)?,
        Op::Flatten { axis } => {
            let x = x0()?;
            let a = if *axis < 0 {
                (*axis + x.shape.len() as i64) as usize
            } else {
                *axis as usize
            };
            let p0 = x.shape[..a].iter().product();
            let p1 = x.shape[a..].iter().product();
            x.with_shape(vec![p0, p1])?
        }
        _ => return Err(format!("{} is not a shape op", op.mnemonic())),
    })
}

pub(crate) fn reshape_dyn(x: &Value, target: &[i64], allowzero: bool) -> R<Value> {
    let mut out = Vec::with_capacity(target.len());
    let mut infer = None;
    for (i, &d) in target.iter().enumerate() {
        match d {
            -1 => {
                if infer.replace(i).is_some() {
                    return Err("more than one -1 in reshape target".into());
                }
                out.push(1);
            }
            0 if !allowzero => out.push(*x.shape.get(i).ok_or("reshape 0 beyond input rank")?),
            d if d < 0 => return Err(format!("negative dimension {d}")),
            d => out.push(d as usize),
        }
    }
    if let Some(i) = infer {
        let known: usize = out.iter().product();
        if known == 0 || x.numel() % known != 0 {
            return Err(format!("cannot reshape {:?} into {target:?}", x.shape));
        }
        out[i] = x.numel() / known;
    }
    x.with_shape(out)
}

pub(crate) fn slice(
    x: &Value,
    axes: &[usize],
    starts: &[i64],
    ends: &[i64],
    steps: &[i64],
) -> R<Value> {
    let mut ranges: Vec<(i64, i64, i64)> = x.shape.iter().map(|&d| (0, d as i64, 1)).collect();
    for i in 0..axes.len() {
        let ax = axes[i];
        let d = *x.shape.get(ax).ok_or("slice axis out of range")? as i64;
        let st = steps[i];
        if st == 0 {
            return Err("slice step is zero".into());
        }
        let norm = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
        let (lo, hi) = if st > 0 { (0, d) } else { (-1, d - 1) };
        let s = norm(starts[i]).clamp(lo, hi);
        let e = norm(ends[i]).clamp(lo, hi);
        ranges[ax] = (s, e, st);
    }
    let shape: Vec<usize> = ranges
        .iter()
        .map(|&(s, e, st)| (((e - s) + st - st.signum()) / st).max(0) as usize)
        .collect();
    let xs = strides(&x.shape);
    let n: usize = shape.iter().product();
    let mut idx = Vec::with_capacity(n);
    let os = strides(&shape);
    for flat in 0..n {
        let mut src = 0i64;
        for d in 0..shape.len() {
            let c = (flat / os[d]) % shape[d].max(1);
            src += (ranges[d].0 + c as i64 * ranges[d].2) * xs[d] as i64;
        }
        idx.push(src as usize);
    }
    Ok(x.pick(shape, idx.into_iter()))
}

pub(crate) fn concat(vals: &[&Value], axis: i64) -> R<Value> {
    let first = vals[0];
    let ax = norm_axis(axis, first.shape.len())?;
    let outer: usize = first.shape[..ax].iter().product();
    let mut shape = first.shape.clone();
    shape[ax] = vals.iter().map(|v| v.shape[ax]).sum();
    let mut idx_src: Vec<(usize, usize)> = Vec::new();
    for o in 0..outer {
        for (k, v) in vals.iter().enumerate() {
            let inner: usize = v.shape[ax..].iter().product();
            for i in 0..inner {
                idx_src.push((k, o * inner + i));
            }
        }
    }
    let data = match &first.data {
        Data::F(_) => Data::F(
            idx_src
                .iter()
                .map(|&(k, i)| vals[k].as_f32().map(|v| v[i]))
                .collect::<R<_>>()?,
        ),
        Data::I(_) => Data::I(
            idx_src
                .iter()
                .map(|&(k, i)| vals[k].as_i64().map(|v| v[i]))
                .collect::<R<_>>()?,
        ),
        Data::B(_) => Data::B(
            idx_src
                .iter()
                .map(|&(k, i)| vals[k].as_bool().map(|v| v[i]))
                .collect::<R<_>>()?,
        ),
    };
    Ok(Value::of(first.dtype, shape, data))
}

pub(crate) fn gather(x: &Value, idx: &Value, axis: i64) -> R<Value> {
    let ax = norm_axis(axis, x.shape.len())?;
    let ids = idx.as_i64()?;
    let d = x.shape[ax] as i64;
    let outer: usize = x.shape[..ax].iter().product();
    let inner: usize = x.shape[ax + 1..].iter().product();
    let mut shape = x.shape[..ax].to_vec();
    shape.extend_from_slice(&idx.shape);
    shape.extend_from_slice(&x.shape[ax + 1..]);
    let mut src = Vec::with_capacity(outer * ids.len() * inner);
    for o in 0..outer {
        for &i in ids {
            let j = if i < 0 { i + d } else { i };
            if j < 0 || j >= d {
                return Err(format!(
                    "index {i} out of range for a dimension of size {d}"
                ));
            }
            for k in 0..inner {
                src.push((o * d as usize + j as usize) * inner + k);
            }
        }
    }
    Ok(x.pick(shape, src.into_iter()))
}

pub(crate) fn gather_elements(x: &Value, idx: &Value, axis: i64) -> R<Value> {
    let ax = norm_axis(axis, x.shape.len())?;
    let ids = idx.as_i64()?;
    let xs = strides(&x.shape);
    let is = strides(&idx.shape);
    let d = x.shape[ax] as i64;
    let mut src = Vec::with_capacity(ids.len());
    for (flat, &i) in ids.iter().enumerate() {
        let j = if i < 0 { i + d } else { i };
        if j < 0 || j >= d {
            return Err(format!(
                "index {i} out of range for a dimension of size {d}"
            ));
        }
        let mut off = 0;
        for k in 0..idx.shape.len() {
            let c = (flat / is[k]) % idx.shape[k];
            if k != ax && c >= x.shape[k] {
                return Err("gather_elements index shape exceeds data".into());
            }
            off += if k == ax { j as usize } else { c } * xs[k];
        }
        src.push(off);
    }
    Ok(x.pick(idx.shape.clone(), src.into_iter()))
}

/// ONNX `GatherND`: for each index tuple (the last axis of `idx`, after `b` batch axes) the
/// slice of `x` it addresses.
pub(crate) fn gather_nd(x: &Value, idx: &Value, b: usize) -> R<Value> {
    let ids = idx.as_i64()?;
    let r = *idx.shape.last().ok_or("gather_nd of scalar indices")?;
    let batch: usize = x.shape[..b].iter().product();
    let slice: usize = x.shape[b + r..].iter().product();
    let per_batch: usize = x.shape[b..].iter().product();
    let tuples = ids.len() / r.max(1);
    let per_batch_tuples = tuples / batch.max(1);
    let xs = strides(&x.shape[b..]);
    let mut src = Vec::with_capacity(tuples * slice);
    for (t, tuple) in ids.chunks(r).enumerate() {
        let mut off = (t / per_batch_tuples.max(1)) * per_batch;
        for (k, &i) in tuple.iter().enumerate() {
            let d = x.shape[b + k] as i64;
            let j = if i < 0 { i + d } else { i };
            if j < 0 || j >= d {
                return Err(format!(
                    "index {i} out of range for a dimension of size {d}"
                ));
            }
            off += j as usize * xs[k];
        }
        src.extend(off..off + slice);
    }
    let mut shape = idx.shape[..idx.shape.len() - 1].to_vec();
    shape.extend_from_slice(&x.shape[b + r..]);
    Ok(x.pick(shape, src.into_iter()))
}

pub(crate) fn transpose(x: &Value, perm: &[usize]) -> R<Value> {
    let perm: Vec<usize> = if perm.is_empty() {
        (0..x.shape.len()).rev().collect()
    } else {
        perm.to_vec()
    };
    let shape: Vec<usize> = perm.iter().map(|&p| x.shape[p]).collect();
    let xs = strides(&x.shape);
    let os = strides(&shape);
    let n = x.numel();
    let src = (0..n).map(|flat| {
        let mut off = 0;
        for d in 0..shape.len() {
            off += ((flat / os[d]) % shape[d]) * xs[perm[d]];
        }
        off
    });
    let src: Vec<usize> = src.collect();
    Ok(x.pick(shape, src.into_iter()))
}
