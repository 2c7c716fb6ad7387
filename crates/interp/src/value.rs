//! Runtime values: a dtype, a concrete shape and f32, i64 or boolean elements; the
//! interpreter's error; broadcasting and axis helpers shared by the op families.

use bertc_ir::{DType, Tensor};

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

    pub(crate) fn of(dtype: DType, shape: Vec<usize>, data: Data) -> Value {
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

    pub(crate) fn as_bool(&self) -> R<&[bool]> {
        match &self.data {
            Data::B(v) => Ok(v),
            _ => Err(format!("expected a bool tensor, found {}", self.dtype)),
        }
    }

    pub(crate) fn with_shape(&self, shape: Vec<usize>) -> R<Value> {
        if shape.iter().product::<usize>() != self.numel() {
            return Err(format!("cannot reshape {:?} into {:?}", self.shape, shape));
        }
        Ok(Value::of(self.dtype, shape, self.data.clone()))
    }

    /// Elements picked by `idx` (flat indices into self), as a new value of `shape`.
    pub(crate) fn pick(&self, shape: Vec<usize>, idx: impl Iterator<Item = usize>) -> Value {
        let data = match &self.data {
            Data::F(v) => Data::F(idx.map(|i| v[i]).collect()),
            Data::I(v) => Data::I(idx.map(|i| v[i]).collect()),
            Data::B(v) => Data::B(idx.map(|i| v[i]).collect()),
        };
        Value::of(self.dtype, shape, data)
    }

    pub(crate) fn scalar_i64(&self) -> R<i64> {
        if self.numel() != 1 {
            return Err(format!("expected a scalar, found shape {:?}", self.shape));
        }
        Ok(match &self.data {
            Data::I(v) => v[0],
            Data::F(v) => v[0] as i64,
            Data::B(v) => v[0] as i64,
        })
    }

    pub(crate) fn ints(&self) -> R<Vec<i64>> {
        match &self.data {
            Data::I(v) => Ok(v.clone()),
            _ => Err(format!("expected an integer tensor, found {}", self.dtype)),
        }
    }
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

pub(crate) type R<T> = Result<T, String>;

pub(crate) fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

pub(crate) fn bcast_shape(a: &[usize], b: &[usize]) -> R<Vec<usize>> {
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
pub(crate) fn bcast_indices(out: &[usize], shape: &[usize]) -> Vec<usize> {
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

pub(crate) fn expand(v: &Value, shape: &[usize]) -> R<Value> {
    let out = bcast_shape(&v.shape, shape)?;
    let idx = bcast_indices(&out, &v.shape);
    Ok(v.pick(out, idx.into_iter()))
}

pub(crate) fn norm_axis(axis: i64, rank: usize) -> R<usize> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    if a < 0 || a as usize >= rank.max(1) {
        return Err(format!("axis {axis} out of range for rank {rank}"));
    }
    Ok(a as usize)
}

/// The first operand of an op, or an error when it has none.
pub(crate) fn first<'a>(v: &[&'a Value]) -> R<&'a Value> {
    v.first()
        .copied()
        .ok_or_else(|| "missing operand".to_string())
}
