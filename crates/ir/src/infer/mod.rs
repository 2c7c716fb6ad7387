//! Type inference: the dtype and (symbolic) shape of each op's result, and, for small integer
//! tensors, their values as symbolic `Dim`s ("known values"). Known values are what lets shape
//! arithmetic of ONNX exports (`Shape`/`Gather`/`Concat`/`Reshape` chains) resolve to static
//! shapes over `batch` and `seq`.

mod elementwise;
mod encoder;
mod linalg;
mod reduce;
mod shape;

pub use shape::resolve_bounds;

use crate::op::{BinaryOp, Op, OpFamily};
use crate::types::{DType, Dim, Tensor, TensorType};

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
    if a < 0 || a >= r {
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

/// The type of `op` on operands of types `ins`, and its value when it is a small integer
/// tensor computable from known operand values (shape arithmetic).
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
    match op.family() {
        OpFamily::Leaf => Err("inputs and constants carry their own type".into()),
        OpFamily::Elementwise => elementwise::infer(op, ins),
        OpFamily::Shape => shape::infer(op, ins),
        OpFamily::Linalg => linalg::infer(op, ins),
        OpFamily::Reduce => reduce::infer(op, ins),
        OpFamily::Encoder => encoder::infer(op, ins),
    }
}
