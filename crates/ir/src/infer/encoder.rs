//! Types of encoder-level ops: the embedding, GELU, attention and its fused q/k/v form.

use crate::op::{Op, TokenTypes};
use crate::types::{DType, Dim, TensorType};

use super::*;

/// The type (and known value) of one of this family's ops.
pub(super) fn infer(op: &Op, ins: &[Operand]) -> Result<Inferred, String> {
    let t = |dtype: DType, shape: Vec<Dim>| TensorType::new(dtype, shape);
    match op {
        Op::Embedding { types, sum_qdq, .. } => {
            if sum_qdq.is_some() && *types == TokenTypes::Absent {
                return Err("embedding's qdq_word_type needs a token type table".into());
            }
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
        _ => Err(format!("{} is not a encoder op", op.mnemonic())),
    }
}
