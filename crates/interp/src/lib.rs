//! The reference interpreter: executes any IR, op soup or raised, in plain Rust. Clear over
//! fast: it is the oracle that passes and generated code are checked against. Floats are
//! computed in f32 (reductions of LayerNorm and softmax in f64); integers in i64.

/// Defines `fn $name(args) -> R` that runs `$body_fn(args)` compiled for AVX2 when the CPU has
/// it (the same arithmetic in wider vectors), or as is. `$body_fn` should be
/// `#[inline(always)]` so that it is compiled into each copy. For the reference numerics of the
/// interpreter and the pruning passes; generated code selects its kernels by target instead.
#[macro_export]
macro_rules! avx2_dispatch {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($p:ident: $t:ty),* $(,)?) $(-> $r:ty)? = $body_fn:path) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($p: $t),*) $(-> $r)? {
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2") {
                #[target_feature(enable = "avx2")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn wide($($p: $t),*) $(-> $r)? {
                    $body_fn($($p),*)
                }
                // SAFETY: the CPU has AVX2.
                return unsafe { wide($($p),*) };
            }
            $body_fn($($p),*)
        }
    };
}

use std::collections::{HashMap, HashSet};

use bertc_ir::{
    BinaryOp, Binding, DType, Dim, GeluApprox, Graph, NodeId, Op, Positions, ReduceKind, Tensor,
    TokenTypes, UnaryOp,
};

/// Element storage of a runtime value: floats as f32, integers as i64, booleans.
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    F(Vec<f32>),
    I(Vec<i64>),
    B(Vec<bool>),
}

/// A runtime tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Value {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: Data,
}

/// A failure while executing a graph.
#[derive(Debug, thiserror::Error)]
pub enum InterpError {
    #[error("input '{name}': {msg}")]
    Input { name: String, msg: String },
    #[error("node '{node}' ({op}): {msg}")]
    Op {
        node: String,
        op: &'static str,
        msg: String,
    },
}

type R<T> = Result<T, String>;

impl Value {
    pub fn f32(shape: Vec<usize>, v: Vec<f32>) -> Value {
        Value {
            dtype: DType::F32,
            shape,
            data: Data::F(v),
        }
    }

    pub fn i64(shape: Vec<usize>, v: Vec<i64>) -> Value {
        Value {
            dtype: DType::I64,
            shape,
            data: Data::I(v),
        }
    }

    fn of(dtype: DType, shape: Vec<usize>, data: Data) -> Value {
        Value { dtype, shape, data }
    }

    pub fn from_tensor(t: &Tensor) -> Value {
        let data = if t.dtype.is_float() {
            Data::F(t.to_f32_vec())
        } else if t.dtype == DType::Bool {
            Data::B(t.to_i64_vec().into_iter().map(|v| v != 0).collect())
        } else {
            Data::I(t.to_i64_vec())
        };
        Value::of(t.dtype, t.shape.clone(), data)
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn as_f32(&self) -> R<&[f32]> {
        match &self.data {
            Data::F(v) => Ok(v),
            _ => Err(format!("expected a float tensor, found {}", self.dtype)),
        }
    }

    pub fn as_i64(&self) -> R<&[i64]> {
        match &self.data {
            Data::I(v) => Ok(v),
            _ => Err(format!("expected an integer tensor, found {}", self.dtype)),
        }
    }

    fn as_bool(&self) -> R<&[bool]> {
        match &self.data {
            Data::B(v) => Ok(v),
            _ => Err(format!("expected a bool tensor, found {}", self.dtype)),
        }
    }

    fn with_shape(&self, shape: Vec<usize>) -> R<Value> {
        if shape.iter().product::<usize>() != self.numel() {
            return Err(format!("cannot reshape {:?} into {:?}", self.shape, shape));
        }
        Ok(Value::of(self.dtype, shape, self.data.clone()))
    }

    /// Elements picked by `idx` (flat indices into self), as a new value of `shape`.
    fn pick(&self, shape: Vec<usize>, idx: impl Iterator<Item = usize>) -> Value {
        let data = match &self.data {
            Data::F(v) => Data::F(idx.map(|i| v[i]).collect()),
            Data::I(v) => Data::I(idx.map(|i| v[i]).collect()),
            Data::B(v) => Data::B(idx.map(|i| v[i]).collect()),
        };
        Value::of(self.dtype, shape, data)
    }

    fn scalar_i64(&self) -> R<i64> {
        if self.numel() != 1 {
            return Err(format!("expected a scalar, found shape {:?}", self.shape));
        }
        Ok(match &self.data {
            Data::I(v) => v[0],
            Data::F(v) => v[0] as i64,
            Data::B(v) => v[0] as i64,
        })
    }

    fn ints(&self) -> R<Vec<i64>> {
        match &self.data {
            Data::I(v) => Ok(v.clone()),
            _ => Err(format!("expected an integer tensor, found {}", self.dtype)),
        }
    }
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

fn bcast_shape(a: &[usize], b: &[usize]) -> R<Vec<usize>> {
    let n = a.len().max(b.len());
    (0..n)
        .map(|i| {
            let da = if i + a.len() >= n {
                a[i + a.len() - n]
            } else {
                1
            };
            let db = if i + b.len() >= n {
                b[i + b.len() - n]
            } else {
                1
            };
            if da == db || db == 1 {
                Ok(da)
            } else if da == 1 {
                Ok(db)
            } else {
                Err(format!("cannot broadcast {a:?} with {b:?}"))
            }
        })
        .collect()
}

/// For each flat index of `out`, the flat index into a tensor of `shape` broadcast to it.
fn bcast_indices(out: &[usize], shape: &[usize]) -> Vec<usize> {
    let n: usize = out.iter().product();
    let off = out.len() - shape.len();
    let st = strides(shape);
    let mut bst = vec![0; out.len()];
    for i in 0..shape.len() {
        bst[i + off] = if shape[i] == 1 { 0 } else { st[i] };
    }
    let mut res = Vec::with_capacity(n);
    let mut ctr = vec![0usize; out.len()];
    let mut cur = 0usize;
    for _ in 0..n {
        res.push(cur);
        for d in (0..out.len()).rev() {
            ctr[d] += 1;
            cur += bst[d];
            if ctr[d] < out[d] {
                break;
            }
            cur -= bst[d] * ctr[d];
            ctr[d] = 0;
        }
    }
    res
}

fn expand(v: &Value, shape: &[usize]) -> R<Value> {
    let out = bcast_shape(&v.shape, shape)?;
    let idx = bcast_indices(&out, &v.shape);
    Ok(v.pick(out, idx.into_iter()))
}

fn norm_axis(axis: i64, rank: usize) -> R<usize> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    if a < 0 || a as usize >= rank.max(1) {
        return Err(format!("axis {axis} out of range for rank {rank}"));
    }
    Ok(a as usize)
}

fn unary(u: UnaryOp, x: &Value) -> R<Value> {
    if u == UnaryOp::Not {
        let b = x.as_bool()?;
        return Ok(Value::of(
            DType::Bool,
            x.shape.clone(),
            Data::B(b.iter().map(|v| !v).collect()),
        ));
    }
    if let Data::I(v) = &x.data {
        let r = match u {
            UnaryOp::Neg => v.iter().map(|a| a.wrapping_neg()).collect(),
            UnaryOp::Abs => v.iter().map(|a| a.wrapping_abs()).collect(),
            _ => return Err(format!("{u:?} of an integer tensor")),
        };
        return Ok(Value::of(x.dtype, x.shape.clone(), Data::I(r)));
    }
    let v = x.as_f32()?;
    let f: fn(f32) -> f32 = match u {
        UnaryOp::Neg => |a| -a,
        UnaryOp::Abs => f32::abs,
        UnaryOp::Sqrt => f32::sqrt,
        UnaryOp::Reciprocal => |a| 1.0 / a,
        UnaryOp::Exp => f32::exp,
        UnaryOp::Log => f32::ln,
        UnaryOp::Erf => |a| libm::erf(a as f64) as f32,
        UnaryOp::Tanh => f32::tanh,
        UnaryOp::Sigmoid => |a| 1.0 / (1.0 + (-a).exp()),
        UnaryOp::Relu => |a| a.max(0.0),
        UnaryOp::Not => return Err("not of a float tensor".into()),
    };
    Ok(Value::of(
        x.dtype,
        x.shape.clone(),
        Data::F(v.iter().map(|&a| f(a)).collect()),
    ))
}

fn binary(op: BinaryOp, a: &Value, b: &Value) -> R<Value> {
    let out = bcast_shape(&a.shape, &b.shape)?;
    let ia = bcast_indices(&out, &a.shape);
    let ib = bcast_indices(&out, &b.shape);
    let pairs = ia.iter().zip(ib.iter());
    use BinaryOp::*;
    let data = match (&a.data, &b.data) {
        (Data::F(x), Data::F(y)) => {
            let xs = pairs.map(|(&i, &j)| (x[i], y[j]));
            match op {
                Add => Data::F(xs.map(|(p, q)| p + q).collect()),
                Sub => Data::F(xs.map(|(p, q)| p - q).collect()),
                Mul => Data::F(xs.map(|(p, q)| p * q).collect()),
                Div => Data::F(xs.map(|(p, q)| p / q).collect()),
                Pow => Data::F(xs.map(|(p, q)| pow_f32(p, q)).collect()),
                Min => Data::F(xs.map(|(p, q)| p.min(q)).collect()),
                Max => Data::F(xs.map(|(p, q)| p.max(q)).collect()),
                Equal => Data::B(xs.map(|(p, q)| p == q).collect()),
                Less => Data::B(xs.map(|(p, q)| p < q).collect()),
                LessOrEqual => Data::B(xs.map(|(p, q)| p <= q).collect()),
                Greater => Data::B(xs.map(|(p, q)| p > q).collect()),
                GreaterOrEqual => Data::B(xs.map(|(p, q)| p >= q).collect()),
                And | Or => return Err("logical op on floats".into()),
            }
        }
        (Data::F(x), Data::I(y)) if op == Pow => {
            Data::F(pairs.map(|(&i, &j)| pow_f32(x[i], y[j] as f32)).collect())
        }
        (Data::I(x), Data::I(y)) => {
            let xs = pairs.map(|(&i, &j)| (x[i], y[j]));
            match op {
                Add => Data::I(xs.map(|(p, q)| p.wrapping_add(q)).collect()),
                Sub => Data::I(xs.map(|(p, q)| p.wrapping_sub(q)).collect()),
                Mul => Data::I(xs.map(|(p, q)| p.wrapping_mul(q)).collect()),
                Div => Data::I(
                    xs.map(|(p, q)| {
                        if q == 0 {
                            Err("integer division by zero".to_string())
                        } else {
                            Ok(p.wrapping_div(q))
                        }
                    })
                    .collect::<R<_>>()?,
                ),
                Pow => Data::I(
                    xs.map(|(p, q)| p.wrapping_pow(q.clamp(0, 63) as u32))
                        .collect(),
                ),
                Min => Data::I(xs.map(|(p, q)| p.min(q)).collect()),
                Max => Data::I(xs.map(|(p, q)| p.max(q)).collect()),
                Equal => Data::B(xs.map(|(p, q)| p == q).collect()),
                Less => Data::B(xs.map(|(p, q)| p < q).collect()),
                LessOrEqual => Data::B(xs.map(|(p, q)| p <= q).collect()),
                Greater => Data::B(xs.map(|(p, q)| p > q).collect()),
                GreaterOrEqual => Data::B(xs.map(|(p, q)| p >= q).collect()),
                And | Or => return Err("logical op on integers".into()),
            }
        }
        (Data::B(x), Data::B(y)) => {
            let xs = pairs.map(|(&i, &j)| (x[i], y[j]));
            match op {
                And => Data::B(xs.map(|(p, q)| p && q).collect()),
                Or => Data::B(xs.map(|(p, q)| p || q).collect()),
                Equal => Data::B(xs.map(|(p, q)| p == q).collect()),
                _ => return Err(format!("{op:?} on bools")),
            }
        }
        _ => return Err(format!("operand types differ: {} and {}", a.dtype, b.dtype)),
    };
    let dtype = match data {
        Data::B(_) => DType::Bool,
        _ => a.dtype,
    };
    Ok(Value::of(dtype, out, data))
}

fn pow_f32(p: f32, q: f32) -> f32 {
    if q == 2.0 {
        p * p
    } else if q == 3.0 {
        p * p * p
    } else {
        p.powf(q)
    }
}

fn cast(x: &Value, to: DType) -> Value {
    let data = if to.is_float() {
        let v: Vec<f32> = match &x.data {
            Data::F(v) => v.clone(),
            Data::I(v) => v.iter().map(|&a| a as f32).collect(),
            Data::B(v) => v.iter().map(|&a| a as u8 as f32).collect(),
        };
        Data::F(match to {
            DType::F16 => v
                .into_iter()
                .map(|a| half::f16::from_f32(a).to_f32())
                .collect(),
            DType::BF16 => v
                .into_iter()
                .map(|a| half::bf16::from_f32(a).to_f32())
                .collect(),
            _ => v,
        })
    } else if to == DType::Bool {
        Data::B(match &x.data {
            Data::F(v) => v.iter().map(|&a| a != 0.0).collect(),
            Data::I(v) => v.iter().map(|&a| a != 0).collect(),
            Data::B(v) => v.clone(),
        })
    } else {
        let v: Vec<i64> = match &x.data {
            Data::F(v) => v.iter().map(|&a| a as i64).collect(),
            Data::I(v) => v.clone(),
            Data::B(v) => v.iter().map(|&a| a as i64).collect(),
        };
        Data::I(match to {
            DType::I32 => v.into_iter().map(|a| a as i32 as i64).collect(),
            DType::I16 => v.into_iter().map(|a| a as i16 as i64).collect(),
            DType::I8 => v.into_iter().map(|a| a as i8 as i64).collect(),
            DType::U8 => v.into_iter().map(|a| a as u8 as i64).collect(),
            _ => v,
        })
    };
    Value::of(to, x.shape.clone(), data)
}

fn reshape_dyn(x: &Value, target: &[i64], allowzero: bool) -> R<Value> {
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

fn slice(x: &Value, axes: &[usize], starts: &[i64], ends: &[i64], steps: &[i64]) -> R<Value> {
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

fn concat(vals: &[&Value], axis: i64) -> R<Value> {
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

fn gather(x: &Value, idx: &Value, axis: i64) -> R<Value> {
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

fn gather_elements(x: &Value, idx: &Value, axis: i64) -> R<Value> {
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

fn transpose(x: &Value, perm: &[usize]) -> R<Value> {
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

/// `a[.., m, k] @ b[.., k, n]` with broadcasting over the leading dimensions.
fn matmul(a: &Value, b: &Value) -> R<Value> {
    let (ra, rb) = (a.shape.len(), b.shape.len());
    if ra < 2 || rb < 2 {
        return Err("matmul needs operands of rank >= 2".into());
    }
    let (m, k) = (a.shape[ra - 2], a.shape[ra - 1]);
    let (k2, n) = (b.shape[rb - 2], b.shape[rb - 1]);
    if k != k2 {
        return Err(format!(
            "matmul inner dimensions differ: {:?} and {:?}",
            a.shape, b.shape
        ));
    }
    let lead = bcast_shape(&a.shape[..ra - 2], &b.shape[..rb - 2])?;
    let ia = bcast_indices(&lead, &a.shape[..ra - 2]);
    let ib = bcast_indices(&lead, &b.shape[..rb - 2]);
    let (av, bv) = (a.as_f32()?, b.as_f32()?);
    let mut out = vec![0f32; ia.len() * m * n];
    for (bi, (&pa, &pb)) in ia.iter().zip(ib.iter()).enumerate() {
        let am = &av[pa * m * k..(pa + 1) * m * k];
        let bm = &bv[pb * k * n..(pb + 1) * k * n];
        let om = &mut out[bi * m * n..(bi + 1) * m * n];
        gemm_acc(am, bm, om, m, k, n);
    }
    let mut shape = lead;
    shape.push(m);
    shape.push(n);
    Ok(Value::f32(shape, out))
}

/// `c[m,n] += a[m,k] @ b[k,n]`, row-major, f32 accumulation.
fn gemm_acc(a: &[f32], b: &[f32], c: &mut [f32], m: usize, k: usize, n: usize) {
    for i in 0..m {
        let crow = &mut c[i * n..(i + 1) * n];
        for p in 0..k {
            let av = a[i * k + p];
            let brow = &b[p * n..(p + 1) * n];
            for (cv, bv) in crow.iter_mut().zip(brow) {
                *cv += av * bv;
            }
        }
    }
}

/// `x[rows, k] @ w[n, k]ᵀ + bias`: tiles of 4 rows by 4 weight rows with 8 lanes of partial
/// sums each (so that the compiler vectorises the dot products), row blocks on all cores.
fn linear_rows(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    rows: usize,
    k: usize,
    n: usize,
) -> Vec<f32> {
    use rayon::prelude::*;
    let mut out = vec![0f32; rows * n];
    if k == 0 {
        for row in out.chunks_mut(n.max(1)) {
            for (j, o) in row.iter_mut().enumerate() {
                *o = bias.map_or(0.0, |b| b[j]);
            }
        }
        return out;
    }
    out.par_chunks_mut(LIN_R * n.max(1))
        .enumerate()
        .for_each(|(blk, ob)| linear_block(x, w, bias, rows, k, n, blk * LIN_R, ob));
    out
}

const LIN_R: usize = 4;

crate::avx2_dispatch!(fn linear_block(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    rows: usize,
    k: usize,
    n: usize,
    r0: usize,
    ob: &mut [f32],
) = linear_block_impl);

/// Rows `r0..r0+4` of the linear into `ob`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn linear_block_impl(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    rows: usize,
    k: usize,
    n: usize,
    r0: usize,
    ob: &mut [f32],
) {
    const R: usize = LIN_R;
    const C: usize = 4;
    const L: usize = 8;
    let kl = k / L * L;
    let nr = (rows - r0).min(R);
    let xs: [&[f32]; R] = std::array::from_fn(|a| {
        let r = r0 + a.min(nr - 1);
        &x[r * k..(r + 1) * k]
    });
    for j0 in (0..n).step_by(C) {
        let nc = (n - j0).min(C);
        let ws: [&[f32]; C] = std::array::from_fn(|b| {
            let j = j0 + b.min(nc - 1);
            &w[j * k..(j + 1) * k]
        });
        let mut acc = [[[0f32; L]; C]; R];
        for p in (0..kl).step_by(L) {
            for a in 0..R {
                let xa = &xs[a][p..p + L];
                for b in 0..C {
                    let wb = &ws[b][p..p + L];
                    for l in 0..L {
                        acc[a][b][l] += xa[l] * wb[l];
                    }
                }
            }
        }
        for a in 0..nr {
            for b in 0..nc {
                let mut s: f32 = acc[a][b].iter().sum();
                for p in kl..k {
                    s += xs[a][p] * ws[b][p];
                }
                ob[a * n + j0 + b] = s + bias.map_or(0.0, |bv| bv[j0 + b]);
            }
        }
    }
}

fn softmax_rows(v: &mut [f32], len: usize) {
    for row in v.chunks_mut(len) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0f64;
        for x in row.iter_mut() {
            *x = (*x - max).exp();
            sum += *x as f64;
        }
        for x in row.iter_mut() {
            *x = (*x as f64 / sum) as f32;
        }
    }
}

fn layer_norm_rows(x: &[f32], h: usize, gamma: &[f32], beta: Option<&[f32]>, eps: f32) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(h) {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / h as f64;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / h as f64;
        let inv = 1.0 / (var + eps as f64).sqrt();
        for (i, &v) in row.iter().enumerate() {
            let y = ((v as f64 - mean) * inv) as f32 * gamma[i % gamma.len()]
                + beta.map_or(0.0, |b| b[i % b.len()]);
            out.push(y);
        }
    }
    out
}

fn gelu(x: f32, approx: GeluApprox) -> f32 {
    match approx {
        GeluApprox::Erf => 0.5 * x * (1.0 + libm::erf(x as f64 / std::f64::consts::SQRT_2) as f32),
        GeluApprox::Tanh => {
            let c = (2.0 / std::f64::consts::PI).sqrt() as f32;
            0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
        }
    }
}

fn embedding(op_pos: Positions, types: TokenTypes, v: &[&Value]) -> R<Value> {
    let ids = v[0];
    let (b, s) = (ids.shape[0], ids.shape[1]);
    let idv = ids.as_i64()?;
    let ti = (types == TokenTypes::Input) as usize;
    let word = v[1 + ti];
    let pos = v[2 + ti];
    let typ = v.get(3 + ti);
    let h = word.shape[1];
    let row = |t: &Value, i: i64, what: &str| -> R<usize> {
        let rows = t.shape[0];
        if i < 0 || i as usize >= rows {
            return Err(format!(
                "{what} {i} out of range (the table has {rows} rows)"
            ));
        }
        Ok(i as usize)
    };
    let (wv, pv) = (word.as_f32()?, pos.as_f32()?);
    let mut out = vec![0f32; b * s * h];
    for bi in 0..b {
        let mut count = 0i64;
        for t in 0..s {
            let id = idv[bi * s + t];
            let w = row(word, id, "token id")?;
            let p = match op_pos {
                Positions::Arange { offset } => offset + t as i64,
                Positions::PaddingAware { pad } => {
                    if id != pad {
                        count += 1;
                        pad + count
                    } else {
                        pad
                    }
                }
            };
            let p = row(pos, p, "position")?;
            let o = &mut out[(bi * s + t) * h..(bi * s + t + 1) * h];
            o.copy_from_slice(&wv[w * h..(w + 1) * h]);
            if let Some(tt) = typ {
                let tid = if ti == 1 {
                    v[1].as_i64()?[bi * s + t]
                } else {
                    0
                };
                let r = row(tt, tid, "token type id")?;
                let tv = tt.as_f32()?;
                for (x, y) in o.iter_mut().zip(&tv[r * h..(r + 1) * h]) {
                    *x += y;
                }
            }
            for (x, y) in o.iter_mut().zip(&pv[p * h..(p + 1) * h]) {
                *x += y;
            }
        }
    }
    Ok(Value::f32(vec![b, s, h], out))
}

fn attention(heads: usize, scale: f32, v: &[&Value]) -> R<Value> {
    let (q, k, vv) = (v[0], v[1], v[2]);
    let (b, s, w) = (q.shape[0], q.shape[1], q.shape[2]);
    let wv = vv.shape[2];
    let (d, dv) = (w / heads, wv / heads);
    let mask = match v.get(3) {
        Some(m) => Some(m.as_i64()?),
        None => None,
    };
    let (qv, kv, vd) = (q.as_f32()?, k.as_f32()?, vv.as_f32()?);
    let mut out = vec![0f32; b * s * wv];
    let mut scores = vec![0f32; s];
    for bi in 0..b {
        for hh in 0..heads {
            for i in 0..s {
                let qi = &qv[(bi * s + i) * w + hh * d..(bi * s + i) * w + hh * d + d];
                for j in 0..s {
                    let kj = &kv[(bi * s + j) * w + hh * d..(bi * s + j) * w + hh * d + d];
                    let dot: f32 = qi.iter().zip(kj).map(|(a, c)| a * c).sum();
                    scores[j] = match mask {
                        Some(m) if m[bi * s + j] == 0 => f32::MIN,
                        _ => dot * scale,
                    };
                }
                softmax_rows(&mut scores, s);
                let o = &mut out[(bi * s + i) * wv + hh * dv..(bi * s + i) * wv + hh * dv + dv];
                for j in 0..s {
                    let vj = &vd[(bi * s + j) * wv + hh * dv..(bi * s + j) * wv + hh * dv + dv];
                    for (x, y) in o.iter_mut().zip(vj) {
                        *x += scores[j] * y;
                    }
                }
            }
        }
    }
    Ok(Value::f32(vec![b, s, wv], out))
}

/// Executes one op on concrete operands.
pub fn eval_op(op: &Op, v: &[&Value], bind: &Binding) -> R<Value> {
    let x = v.first().copied();
    let x0 = || x.ok_or_else(|| "missing operand".to_string());
    Ok(match op {
        Op::Input { name } => return Err(format!("input '{name}' was not provided")),
        Op::Const { value, .. } => Value::from_tensor(value),
        Op::Unary(u) => unary(*u, x0()?)?,
        Op::Binary(b) => binary(*b, v[0], v[1])?,
        Op::Where => {
            let out = bcast_shape(&bcast_shape(&v[0].shape, &v[1].shape)?, &v[2].shape)?;
            let c = expand(v[0], &out)?;
            let a = expand(v[1], &out)?;
            let b = expand(v[2], &out)?;
            let cb = c.as_bool()?;
            let data = match (&a.data, &b.data) {
                (Data::F(p), Data::F(q)) => Data::F(
                    (0..cb.len())
                        .map(|i| if cb[i] { p[i] } else { q[i] })
                        .collect(),
                ),
                (Data::I(p), Data::I(q)) => Data::I(
                    (0..cb.len())
                        .map(|i| if cb[i] { p[i] } else { q[i] })
                        .collect(),
                ),
                (Data::B(p), Data::B(q)) => Data::B(
                    (0..cb.len())
                        .map(|i| if cb[i] { p[i] } else { q[i] })
                        .collect(),
                ),
                _ => return Err("where operands differ in type".into()),
            };
            Value::of(a.dtype, out, data)
        }
        Op::Cast { to } => cast(x0()?, *to),
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
        Op::CumSum {
            axis,
            exclusive,
            reverse,
        } => {
            let x = v[0];
            let ax = norm_axis(*axis, x.shape.len())?;
            let d = x.shape[ax];
            let inner: usize = x.shape[ax + 1..].iter().product();
            let outer: usize = x.shape[..ax].iter().product();
            let mut out = x.clone();
            macro_rules! scan {
                ($src:expr, $dst:expr, $zero:expr) => {
                    for o in 0..outer {
                        for i in 0..inner {
                            let mut acc = $zero;
                            for t in 0..d {
                                let tt = if *reverse { d - 1 - t } else { t };
                                let at = (o * d + tt) * inner + i;
                                let val = $src[at];
                                if *exclusive {
                                    $dst[at] = acc;
                                    acc += val;
                                } else {
                                    acc += val;
                                    $dst[at] = acc;
                                }
                            }
                        }
                    }
                };
            }
            match (&x.data, &mut out.data) {
                (Data::F(s), Data::F(dst)) => scan!(s, dst, 0f32),
                (Data::I(s), Data::I(dst)) => scan!(s, dst, 0i64),
                _ => return Err("cumsum of bools".into()),
            }
            out
        }
        Op::MatMul => matmul(v[0], v[1])?,
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        } => {
            let a = if *trans_a {
                transpose(v[0], &[1, 0])?
            } else {
                v[0].clone()
            };
            let b = if *trans_b {
                transpose(v[1], &[1, 0])?
            } else {
                v[1].clone()
            };
            let mut y = matmul(&a, &b)?;
            let shape = y.shape.clone();
            if let Data::F(yv) = &mut y.data {
                for e in yv.iter_mut() {
                    *e *= alpha;
                }
                if let Some(c) = v.get(2) {
                    let c = expand(c, &shape)?;
                    for (e, cv) in yv.iter_mut().zip(c.as_f32()?) {
                        *e += beta * cv;
                    }
                }
            }
            y
        }
        Op::Softmax { axis } => {
            let x = x0()?;
            let ax = norm_axis(*axis, x.shape.len())?;
            let last = x.shape.len() - 1;
            let mut perm: Vec<usize> = (0..x.shape.len()).collect();
            perm.swap(ax, last);
            let t = transpose(x, &perm)?;
            let mut data = t.as_f32()?.to_vec();
            softmax_rows(&mut data, t.shape[last].max(1));
            transpose(&Value::f32(t.shape.clone(), data), &perm)?
        }
        Op::Reduce {
            kind,
            axes,
            keepdims,
        } => {
            let x = x0()?;
            let r = x.shape.len();
            let ax: Vec<usize> = if axes.is_empty() {
                (0..r).collect()
            } else {
                axes.iter().map(|&a| norm_axis(a, r)).collect::<R<_>>()?
            };
            let kept: Vec<usize> = (0..r).filter(|i| !ax.contains(i)).collect();
            let mut perm = kept.clone();
            perm.extend(ax.iter().copied());
            let t = transpose(x, &perm)?;
            let inner: usize = ax.iter().map(|&i| x.shape[i]).product();
            let xv = t.as_f32()?;
            let res: Vec<f32> = xv
                .chunks(inner.max(1))
                .map(|c| match kind {
                    ReduceKind::Sum => c.iter().map(|&v| v as f64).sum::<f64>() as f32,
                    ReduceKind::Mean => {
                        (c.iter().map(|&v| v as f64).sum::<f64>() / inner as f64) as f32
                    }
                    ReduceKind::Max => c.iter().copied().fold(f32::NEG_INFINITY, f32::max),
                })
                .collect();
            let shape: Vec<usize> = (0..r)
                .filter_map(|i| {
                    if ax.contains(&i) {
                        keepdims.then_some(1)
                    } else {
                        Some(x.shape[i])
                    }
                })
                .collect();
            Value::f32(shape, res)
        }
        Op::LayerNormalization { axis, epsilon } => {
            let x = v[0];
            let ax = norm_axis(*axis, x.shape.len())?;
            let h: usize = x.shape[ax..].iter().product();
            let gamma = expand(v[1], &x.shape[ax..])?;
            let beta = match v.get(2) {
                Some(b) => Some(expand(b, &x.shape[ax..])?),
                None => None,
            };
            let beta_v = match &beta {
                Some(b) => Some(b.as_f32()?),
                None => None,
            };
            Value::f32(
                x.shape.clone(),
                layer_norm_rows(x.as_f32()?, h.max(1), gamma.as_f32()?, beta_v, *epsilon),
            )
        }
        Op::Embedding { positions, types } => embedding(*positions, *types, v)?,
        Op::LayerNorm { eps } => {
            let x = v[0];
            let h = *x.shape.last().unwrap_or(&1);
            Value::f32(
                x.shape.clone(),
                layer_norm_rows(
                    x.as_f32()?,
                    h.max(1),
                    v[1].as_f32()?,
                    Some(v[2].as_f32()?),
                    *eps,
                ),
            )
        }
        Op::Linear => {
            let (x, w) = (v[0], v[1]);
            let (n, k) = (w.shape[0], w.shape[1]);
            let rows = x.numel() / k.max(1);
            let bias = match v.get(2) {
                Some(b) => Some(b.as_f32()?),
                None => None,
            };
            let mut shape = x.shape.clone();
            if let Some(l) = shape.last_mut() {
                *l = n;
            }
            Value::f32(
                shape,
                linear_rows(x.as_f32()?, w.as_f32()?, bias, rows, k, n),
            )
        }
        Op::FusedLinear { act, .. } => {
            let mut y = eval_op(&Op::Linear, &v[..3], bind)?;
            if let Data::F(yv) = &mut y.data {
                for e in yv.iter_mut() {
                    *e = match act {
                        None => *e,
                        Some(bertc_ir::FusedAct::Gelu(a)) => gelu(*e, *a),
                        Some(bertc_ir::FusedAct::Tanh) => e.tanh(),
                        Some(bertc_ir::FusedAct::Relu) => e.max(0.0),
                    };
                }
                if let Some(r) = v.get(3) {
                    for (e, rv) in yv.iter_mut().zip(r.as_f32()?) {
                        *e += rv;
                    }
                }
            }
            y
        }
        Op::Gelu { approx } => {
            let x = x0()?;
            Value::f32(
                x.shape.clone(),
                x.as_f32()?.iter().map(|&a| gelu(a, *approx)).collect(),
            )
        }
        Op::Attention { heads, scale } => attention(*heads, *scale, v)?,
        Op::QkvAttention { heads, scale, qk } => {
            let x = v[0];
            let (b, s, w) = (x.shape[0], x.shape[1], x.shape[2]);
            let xv = x.as_f32()?;
            let cols = |lo: usize, hi: usize| {
                let data: Vec<f32> = xv.chunks(w).flat_map(|r| r[lo..hi].to_vec()).collect();
                Value::f32(vec![b, s, hi - lo], data)
            };
            let (q, k, vv) = (cols(0, *qk), cols(*qk, 2 * qk), cols(2 * qk, w));
            let mut ops = vec![&q, &k, &vv];
            ops.extend(v.get(1).copied());
            attention(*heads, *scale, &ops)?
        }
        Op::MeanPool => {
            let (x, m) = (v[0], v[1].as_i64()?);
            let (b, s, h) = (x.shape[0], x.shape[1], x.shape[2]);
            let xv = x.as_f32()?;
            let mut out = vec![0f32; b * h];
            for bi in 0..b {
                let mut acc = vec![0f64; h];
                let mut cnt = 0f64;
                for t in 0..s {
                    let w = m[bi * s + t] as f64;
                    if w != 0.0 {
                        cnt += w;
                        for (a, &y) in acc
                            .iter_mut()
                            .zip(&xv[(bi * s + t) * h..(bi * s + t + 1) * h])
                        {
                            *a += w * y as f64;
                        }
                    }
                }
                let cnt = cnt.max(1e-9);
                for (o, a) in out[bi * h..(bi + 1) * h].iter_mut().zip(acc) {
                    *o = (a / cnt) as f32;
                }
            }
            Value::f32(vec![b, h], out)
        }
    })
}

/// Binds `batch` and `seq` from the shapes of the provided inputs, checking every dimension.
pub fn bind_inputs(g: &Graph, feeds: &HashMap<NodeId, Value>) -> Result<Binding, InterpError> {
    let mut batch = None;
    let mut seq = None;
    for &i in &g.inputs {
        let node = g.node(i);
        let Some(v) = feeds.get(&i) else { continue };
        let bad = |msg: String| InterpError::Input {
            name: node.name.clone(),
            msg,
        };
        if v.shape.len() != node.ty.rank() {
            return Err(bad(format!(
                "expected {} but got shape {:?}",
                node.ty, v.shape
            )));
        }
        for (d, &actual) in node.ty.shape.iter().zip(&v.shape) {
            let slot = if *d == Dim::BATCH {
                &mut batch
            } else if *d == Dim::SEQ {
                &mut seq
            } else if d.as_const() == Some(actual as i64) {
                continue;
            } else {
                return Err(bad(format!(
                    "expected {} but got shape {:?}",
                    node.ty, v.shape
                )));
            };
            match slot {
                Some(prev) if *prev != actual => {
                    return Err(bad(format!(
                        "shape {:?} disagrees with the other inputs",
                        v.shape
                    )))
                }
                _ => *slot = Some(actual),
            }
        }
    }
    let b = Binding {
        batch: batch.unwrap_or(1),
        seq: seq.unwrap_or(1),
    };
    if let Some(max) = g.max_seq {
        if b.seq > max {
            return Err(InterpError::Input {
                name: "seq".into(),
                msg: format!(
                    "sequence length {} exceeds the model's maximum of {max} tokens",
                    b.seq
                ),
            });
        }
    }
    Ok(b)
}

/// Evaluates `targets` given values for some nodes (graph inputs, or any node to cut the
/// graph at).
pub fn eval_nodes(
    g: &Graph,
    targets: &[NodeId],
    feeds: HashMap<NodeId, Value>,
    bind: &Binding,
) -> Result<Vec<Value>, InterpError> {
    eval_nodes_with(g, targets, feeds, bind, &HashMap::new())
}

/// The values of every constant of `g`, converted once for repeated evaluation
/// (`eval_nodes_with`).
pub fn const_values(g: &Graph) -> HashMap<NodeId, Value> {
    g.node_ids()
        .into_iter()
        .filter_map(|n| g.const_value(n).map(|t| (n, Value::from_tensor(t))))
        .collect()
}

/// `eval_nodes` reading constants from `consts` (see `const_values`) instead of converting
/// them on every call.
pub fn eval_nodes_with(
    g: &Graph,
    targets: &[NodeId],
    mut feeds: HashMap<NodeId, Value>,
    bind: &Binding,
    consts: &HashMap<NodeId, Value>,
) -> Result<Vec<Value>, InterpError> {
    // the ancestors of the targets, in topological order
    let mut need: HashSet<NodeId> = HashSet::new();
    let mut stack: Vec<NodeId> = targets.to_vec();
    while let Some(n) = stack.pop() {
        if need.insert(n) && !feeds.contains_key(&n) {
            stack.extend(g.operands(n));
        }
    }
    let order = topo(g, &need);
    let mut last_use: HashMap<NodeId, usize> = HashMap::new();
    for (i, &n) in order.iter().enumerate() {
        if !feeds.contains_key(&n) {
            for o in g.operands(n) {
                last_use.insert(o, i);
            }
        }
    }
    for (i, &n) in order.iter().enumerate() {
        if feeds.contains_key(&n) || (consts.contains_key(&n) && !targets.contains(&n)) {
            continue;
        }
        let ops = g.operands(n);
        let node = g.node(n);
        let vals: Vec<&Value> = ops
            .iter()
            .map(|o| feeds.get(o).or_else(|| consts.get(o)))
            .collect::<Option<_>>()
            .ok_or_else(|| InterpError::Op {
                node: node.name.clone(),
                op: node.op.mnemonic(),
                msg: "an operand has no value (missing input?)".into(),
            })?;
        let v = eval_op(&node.op, &vals, bind).map_err(|msg| InterpError::Op {
            node: node.name.clone(),
            op: node.op.mnemonic(),
            msg,
        })?;
        feeds.insert(n, v);
        for o in ops {
            if last_use.get(&o) == Some(&i) && !targets.contains(&o) {
                feeds.remove(&o);
            }
        }
    }
    targets
        .iter()
        .map(|t| {
            feeds.get(t).cloned().ok_or_else(|| InterpError::Op {
                node: g.node(*t).name.clone(),
                op: g.node(*t).op.mnemonic(),
                msg: "no value computed".into(),
            })
        })
        .collect()
}

fn topo(g: &Graph, need: &HashSet<NodeId>) -> Vec<NodeId> {
    let mut indeg: HashMap<NodeId, usize> = HashMap::new();
    for &n in need {
        indeg.insert(n, g.operands(n).iter().filter(|o| need.contains(o)).count());
    }
    let mut ready: Vec<NodeId> = indeg.iter().filter(|e| *e.1 == 0).map(|e| *e.0).collect();
    ready.sort_unstable();
    let mut order = Vec::with_capacity(need.len());
    while let Some(n) = ready.pop() {
        order.push(n);
        for u in g.users(n) {
            if let Some(d) = indeg.get_mut(&u) {
                let k = g.operands(u).iter().filter(|&&o| o == n).count();
                *d -= k;
                if *d == 0 {
                    ready.push(u);
                }
            }
        }
    }
    order
}

/// Runs the graph on named inputs and returns its outputs by name.
pub fn run(g: &Graph, inputs: &[(&str, Value)]) -> Result<Vec<(String, Value)>, InterpError> {
    let mut feeds = HashMap::new();
    for (name, v) in inputs {
        let n = g.input_named(name).ok_or_else(|| InterpError::Input {
            name: name.to_string(),
            msg: "the model has no such input".into(),
        })?;
        let want = g.ty(n).dtype;
        let v = if v.dtype == want {
            v.clone()
        } else {
            cast(v, want)
        };
        feeds.insert(n, v);
    }
    for &i in &g.inputs {
        if !feeds.contains_key(&i) {
            return Err(InterpError::Input {
                name: g.node(i).name.clone(),
                msg: "not provided".into(),
            });
        }
    }
    let bind = bind_inputs(g, &feeds)?;
    let targets: Vec<NodeId> = g.outputs.iter().map(|o| o.1).collect();
    let vals = eval_nodes(g, &targets, feeds, &bind)?;
    Ok(g.outputs.iter().map(|o| o.0.clone()).zip(vals).collect())
}

impl Value {
    /// The value as a constant tensor of its dtype.
    pub fn to_tensor(&self) -> Tensor {
        let mut b: Vec<u8> = Vec::with_capacity(self.numel() * self.dtype.size());
        match &self.data {
            Data::F(v) => match self.dtype {
                DType::F16 => v
                    .iter()
                    .for_each(|x| b.extend_from_slice(&half::f16::from_f32(*x).to_le_bytes())),
                DType::BF16 => v
                    .iter()
                    .for_each(|x| b.extend_from_slice(&half::bf16::from_f32(*x).to_le_bytes())),
                DType::F64 => v
                    .iter()
                    .for_each(|x| b.extend_from_slice(&(*x as f64).to_le_bytes())),
                _ => v.iter().for_each(|x| b.extend_from_slice(&x.to_le_bytes())),
            },
            Data::I(v) => match self.dtype {
                DType::I32 => v
                    .iter()
                    .for_each(|x| b.extend_from_slice(&(*x as i32).to_le_bytes())),
                DType::I16 => v
                    .iter()
                    .for_each(|x| b.extend_from_slice(&(*x as i16).to_le_bytes())),
                DType::I8 | DType::U8 => v.iter().for_each(|x| b.push(*x as u8)),
                _ => v.iter().for_each(|x| b.extend_from_slice(&x.to_le_bytes())),
            },
            Data::B(v) => v.iter().for_each(|x| b.push(*x as u8)),
        }
        Tensor {
            dtype: self.dtype,
            shape: self.shape.clone(),
            data: bytes::Bytes::from(b),
        }
    }
}
