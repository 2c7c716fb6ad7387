//! Element types, symbolic dimensions, tensor types and constant tensors.

use bytes::Bytes;
use std::fmt;

/// Element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
    F64,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl DType {
    /// The ONNX `TensorProto.DataType` code of this type.
    pub fn from_onnx(code: i32) -> Option<DType> {
        Some(match code {
            1 => DType::F32,
            2 => DType::U8,
            3 => DType::I8,
            5 => DType::I16,
            6 => DType::I32,
            7 => DType::I64,
            9 => DType::Bool,
            10 => DType::F16,
            11 => DType::F64,
            16 => DType::BF16,
            _ => return None,
        })
    }

    /// Size of one element in bytes.
    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16 | DType::F64)
    }

    pub fn is_int(self) -> bool {
        matches!(
            self,
            DType::I64 | DType::I32 | DType::I16 | DType::I8 | DType::U8
        )
    }

    /// Every type, in the order of the enum.
    pub const ALL: [DType; 10] = [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::F64,
        DType::I64,
        DType::I32,
        DType::I16,
        DType::I8,
        DType::U8,
        DType::Bool,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F64 => "f64",
            DType::I64 => "i64",
            DType::I32 => "i32",
            DType::I16 => "i16",
            DType::I8 => "i8",
            DType::U8 => "u8",
            DType::Bool => "bool",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A dimension, or a small integer value computed from dimensions: the monomial
/// `coeff * batch^b * seq^s`. Plain integers have `b = s = 0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Dim {
    pub coeff: i64,
    pub batch: u8,
    pub seq: u8,
}

impl Dim {
    pub const BATCH: Dim = Dim {
        coeff: 1,
        batch: 1,
        seq: 0,
    };
    pub const SEQ: Dim = Dim {
        coeff: 1,
        batch: 0,
        seq: 1,
    };

    pub const fn c(v: i64) -> Dim {
        Dim {
            coeff: v,
            batch: 0,
            seq: 0,
        }
    }

    pub fn is_const(self) -> bool {
        (self.batch == 0 && self.seq == 0) || self.coeff == 0
    }

    pub fn as_const(self) -> Option<i64> {
        if self.coeff == 0 {
            Some(0)
        } else if self.is_const() {
            Some(self.coeff)
        } else {
            None
        }
    }

    /// True when the value is at least 1 for every binding (symbols are >= 1).
    pub fn is_positive(self) -> bool {
        self.coeff > 0
    }

    pub fn checked_mul(self, o: Dim) -> Option<Dim> {
        if self.coeff == 0 || o.coeff == 0 {
            return Some(Dim::c(0));
        }
        Some(Dim {
            coeff: self.coeff.checked_mul(o.coeff)?,
            batch: self.batch.checked_add(o.batch)?,
            seq: self.seq.checked_add(o.seq)?,
        })
    }

    /// Exact division; `None` when the quotient is not a monomial.
    pub fn checked_div(self, o: Dim) -> Option<Dim> {
        if o.coeff == 0 || self.batch < o.batch || self.seq < o.seq {
            return None;
        }
        if self.coeff % o.coeff != 0 {
            return None;
        }
        Some(Dim {
            coeff: self.coeff / o.coeff,
            batch: self.batch - o.batch,
            seq: self.seq - o.seq,
        })
    }

    pub fn checked_add(self, o: Dim) -> Option<Dim> {
        match (self.as_const(), o.as_const()) {
            (Some(a), Some(b)) => Some(Dim::c(a.checked_add(b)?)),
            (Some(0), None) => Some(o),
            (None, Some(0)) => Some(self),
            _ if self.batch == o.batch && self.seq == o.seq => {
                let c = self.coeff.checked_add(o.coeff)?;
                Some(if c == 0 {
                    Dim::c(0)
                } else {
                    Dim { coeff: c, ..self }
                })
            }
            _ => None,
        }
    }

    pub fn negated(self) -> Dim {
        Dim {
            coeff: -self.coeff,
            ..self
        }
    }

    /// `Some(true/false)` when equality is decided for every binding.
    pub fn equals(self, o: Dim) -> Option<bool> {
        if self == o {
            return Some(true);
        }
        match (self.as_const(), o.as_const()) {
            (Some(a), Some(b)) => Some(a == b),
            // a positive symbolic value is never equal to a constant below 1
            (None, Some(b)) if self.is_positive() && b < 1 => Some(false),
            (Some(a), None) if o.is_positive() && a < 1 => Some(false),
            _ => None,
        }
    }

    /// The value of this dimension for a binding of the symbols.
    pub fn eval(self, b: &Binding) -> i64 {
        let mut v = self.coeff;
        for _ in 0..self.batch {
            v = v.saturating_mul(b.batch as i64);
        }
        for _ in 0..self.seq {
            v = v.saturating_mul(b.seq as i64);
        }
        v
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(c) = self.as_const() {
            return write!(f, "{c}");
        }
        let mut parts: Vec<String> = Vec::new();
        if self.coeff != 1 {
            parts.push(self.coeff.to_string());
        }
        match self.batch {
            0 => {}
            1 => parts.push("batch".into()),
            n => parts.push(format!("batch^{n}")),
        }
        match self.seq {
            0 => {}
            1 => parts.push("seq".into()),
            n => parts.push(format!("seq^{n}")),
        }
        f.write_str(&parts.join("*"))
    }
}

/// Values of the symbolic dimensions for one execution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binding {
    pub batch: usize,
    pub seq: usize,
}

impl Binding {
    pub fn shape(&self, dims: &[Dim]) -> Vec<usize> {
        dims.iter().map(|d| d.eval(self).max(0) as usize).collect()
    }
}

/// Type of a value: element type and (possibly symbolic) shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorType {
    pub dtype: DType,
    pub shape: Vec<Dim>,
}

impl TensorType {
    pub fn new(dtype: DType, shape: Vec<Dim>) -> Self {
        TensorType { dtype, shape }
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// The number of elements when every dimension is constant.
    pub fn static_numel(&self) -> Option<usize> {
        let mut n: usize = 1;
        for d in &self.shape {
            n = n.checked_mul(usize::try_from(d.as_const()?).ok()?)?;
        }
        Some(n)
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[", self.dtype)?;
        for (i, d) in self.shape.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

/// A constant tensor: dtype, static shape and little-endian bytes (owned, or a view of a
/// memory-mapped file).
#[derive(Clone, PartialEq)]
pub struct Tensor {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: Bytes,
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor({}{:?})", self.dtype, self.shape)
    }
}

impl Tensor {
    /// A tensor over `data`; `None` when its length does not match dtype and shape.
    pub fn new(dtype: DType, shape: Vec<usize>, data: Bytes) -> Option<Tensor> {
        let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
        if numel.checked_mul(dtype.size())? != data.len() {
            return None;
        }
        Some(Tensor { dtype, shape, data })
    }

    pub fn from_f32(shape: Vec<usize>, v: &[f32]) -> Tensor {
        let mut b = Vec::with_capacity(v.len() * 4);
        for x in v {
            b.extend_from_slice(&x.to_le_bytes());
        }
        Tensor {
            dtype: DType::F32,
            shape,
            data: Bytes::from(b),
        }
    }

    pub fn from_i64(shape: Vec<usize>, v: &[i64]) -> Tensor {
        let mut b = Vec::with_capacity(v.len() * 8);
        for x in v {
            b.extend_from_slice(&x.to_le_bytes());
        }
        Tensor {
            dtype: DType::I64,
            shape,
            data: Bytes::from(b),
        }
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn ty(&self) -> TensorType {
        TensorType::new(
            self.dtype,
            self.shape.iter().map(|&d| Dim::c(d as i64)).collect(),
        )
    }

    /// The elements converted to `f64` (exact for every supported dtype but i64 beyond 2^53).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        let d = &self.data[..];
        match self.dtype {
            DType::F32 => d
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
                .collect(),
            DType::F64 => d
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect(),
            DType::F16 => d
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f64())
                .collect(),
            DType::BF16 => d
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f64())
                .collect(),
            _ => self.to_i64_vec().into_iter().map(|v| v as f64).collect(),
        }
    }

    pub fn to_f32_vec(&self) -> Vec<f32> {
        if self.dtype == DType::F32 {
            return self.data[..]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
        }
        self.to_f64_vec().into_iter().map(|v| v as f32).collect()
    }

    /// The elements converted to `i64` (floats truncate toward zero).
    pub fn to_i64_vec(&self) -> Vec<i64> {
        let d = &self.data[..];
        match self.dtype {
            DType::I64 => d
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect(),
            DType::I32 => d
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
                .collect(),
            DType::I16 => d
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as i64)
                .collect(),
            DType::I8 => d.iter().map(|&v| v as i8 as i64).collect(),
            DType::U8 => d.iter().map(|&v| v as i64).collect(),
            DType::Bool => d.iter().map(|&v| (v != 0) as i64).collect(),
            _ => self.to_f64_vec().into_iter().map(|v| v as i64).collect(),
        }
    }

    /// The value of a one-element tensor, as f64.
    pub fn scalar_f64(&self) -> Option<f64> {
        (self.numel() == 1).then(|| self.to_f64_vec()[0])
    }
}
