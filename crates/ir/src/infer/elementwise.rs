//! Types and known values of elementwise ops (broadcasting, comparisons, casts).

use crate::op::{BinaryOp, Op, UnaryOp};
use crate::types::{DType, Dim, TensorType};

use super::*;

/// The type (and known value) of one of this family's ops.
pub(super) fn infer(op: &Op, ins: &[Operand]) -> Result<Inferred, String> {
    let t = |dtype: DType, shape: Vec<Dim>| TensorType::new(dtype, shape);
    match op {
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
        Op::Qdq(_) => {
            let x = ins[0].ty;
            if x.dtype != DType::F32 {
                return Err(format!("qdq needs an f32 operand, found {x}"));
            }
            Ok((x.clone(), None))
        }
        _ => Err(format!("{} is not a elementwise op", op.mnemonic())),
    }
}
