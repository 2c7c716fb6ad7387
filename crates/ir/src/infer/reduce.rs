//! Types of reductions and normalisations: cumsum, softmax, reduce, LayerNorm, mean and max
//! pooling, L2 normalization.

use crate::op::{Op, QuantPart};
use crate::types::{DType, Dim, TensorType};

use super::*;

/// The type (and known value) of one of this family's ops.
pub(super) fn infer(op: &Op, ins: &[Operand]) -> Result<Inferred, String> {
    let t = |dtype: DType, shape: Vec<Dim>| TensorType::new(dtype, shape);
    match op {
        Op::CumSum { axis, .. } => {
            let x = ins[0].ty;
            norm_axis(*axis, x.rank())?;
            Ok((x.clone(), None))
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
        Op::L2Normalize => {
            let x = ins[0].ty;
            if x.dtype != DType::F32 || x.rank() == 0 {
                return Err(format!(
                    "l2_normalize needs f32 of rank 1 or more, found {x}"
                ));
            }
            Ok((x.clone(), None))
        }
        Op::DynamicQuantize { part } => {
            let x = ins[0].ty;
            if x.dtype != DType::F32 || !(2..=3).contains(&x.rank()) {
                return Err(format!(
                    "dynamic_quantize needs f32 [batch, seq, k] or [batch, k], found {x}"
                ));
            }
            if let Some(m) = ins.get(1).map(|m| m.ty) {
                if !m.dtype.is_int() || m.rank() != 2 || x.rank() != 3 {
                    return Err(format!(
                        "dynamic_quantize's mask must be integer [batch, seq] for x [batch, seq, k], found {m} for {x}"
                    ));
                }
                same_dim(m.shape[0], x.shape[0], "dynamic_quantize mask")?;
                same_dim(m.shape[1], x.shape[1], "dynamic_quantize mask")?;
            }
            match part {
                QuantPart::Centered => Ok((x.clone(), None)),
                QuantPart::Scale => {
                    let mut shape = vec![Dim::c(1); x.rank()];
                    shape[0] = x.shape[0];
                    Ok((TensorType::new(DType::F32, shape), None))
                }
            }
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
        Op::MeanPool | Op::MaxPool | Op::Pool { .. } => {
            let (x, m) = (ins[0].ty, ins[1].ty);
            expect_rank(x, 3, "pooling input")?;
            if !m.dtype.is_int() || m.rank() != 2 {
                return Err(format!(
                    "pooling mask must be integer [batch, seq], found {m}"
                ));
            }
            Ok((t(x.dtype, vec![x.shape[0], x.shape[2]]), None))
        }
        _ => Err(format!("{} is not a reduce op", op.mnemonic())),
    }
}
