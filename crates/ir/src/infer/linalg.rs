//! Types of matrix products: `matmul`, `gemm`, `linear`, `fused_linear`.

use crate::op::Op;
use crate::types::{DType, Dim, TensorType};

use super::*;

/// The type (and known value) of one of this family's ops.
pub(super) fn infer(op: &Op, ins: &[Operand]) -> Result<Inferred, String> {
    let t = |dtype: DType, shape: Vec<Dim>| TensorType::new(dtype, shape);
    match op {
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
        Op::DequantizeRows => {
            let (q, s) = (ins[0].ty, ins[1].ty);
            expect_rank(q, 2, "dequantize_rows values")?;
            expect_rank(s, 1, "dequantize_rows scales")?;
            if q.dtype != DType::I8 || s.dtype != DType::F32 {
                return Err(format!(
                    "dequantize_rows needs i8 values and f32 scales, found {q} and {s}"
                ));
            }
            same_dim(s.shape[0], q.shape[0], "dequantize_rows scales")?;
            Ok((t(DType::F32, q.shape.clone()), None))
        }
        Op::QLinear {
            residual,
            abits,
            smooth,
            ..
        } => {
            if !(2..=16).contains(abits) {
                return Err(format!("qlinear abits={abits}: must be 2 to 16"));
            }
            let want = 4 + *residual as usize + *smooth as usize;
            if ins.len() != want {
                return Err(format!(
                    "qlinear with residual={residual} smooth={smooth} takes {want} operands"
                ));
            }
            let (x, w, sc, b) = (ins[0].ty, ins[1].ty, ins[2].ty, ins[3].ty);
            expect_rank(w, 2, "qlinear weight")?;
            if x.dtype != DType::F32 || w.dtype != DType::I8 {
                return Err(format!(
                    "qlinear needs f32 input and i8 weights, found {x} and {w}"
                ));
            }
            let k = *x.shape.last().ok_or("qlinear of a scalar")?;
            same_dim(w.shape[1], k, "qlinear input width")?;
            if let Some(kk) = w.shape[1].as_const() {
                let most = crate::op::qlinear_max_abits(kk as usize);
                if *abits > most {
                    return Err(format!(
                        "qlinear abits={abits} over k={kk}: the i32 sums could overflow (at most {most} bits)"
                    ));
                }
            }
            for (v, what) in [(sc, "qlinear scales"), (b, "qlinear bias")] {
                expect_rank(v, 1, what)?;
                if v.dtype != DType::F32 {
                    return Err(format!("{what} must be f32, found {v}"));
                }
                same_dim(v.shape[0], w.shape[0], what)?;
            }
            let mut shape = x.shape.clone();
            *shape.last_mut().unwrap_or(&mut Dim::c(0)) = w.shape[0];
            let ty = t(DType::F32, shape);
            if *residual {
                let r = ins[4].ty;
                if r != &ty {
                    return Err(format!("residual {r} does not match the output {ty}"));
                }
            }
            if *smooth {
                let m = ins[want - 1].ty;
                expect_rank(m, 1, "qlinear smooth")?;
                if m.dtype != DType::F32 {
                    return Err(format!("qlinear smooth must be f32, found {m}"));
                }
                same_dim(m.shape[0], k, "qlinear smooth")?;
            }
            Ok((ty, None))
        }
        _ => Err(format!("{} is not a linalg op", op.mnemonic())),
    }
}
