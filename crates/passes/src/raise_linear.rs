//! `raise-linear`: `matmul(x, W)` with a constant 2-D `W`, with or without a following bias
//! `add`, and `gemm(x, W, b)` with unit alpha and beta, become `linear(x, Wᵀ, b)` with the
//! weight stored `[out, in]`.

use bertc_interp::Value;
use bertc_ir::{BinaryOp, DType, Graph, NodeId, Op, Tensor};

use crate::pattern::{binary, single_user, split_by};
use crate::{Pass, PassError};

pub struct RaiseLinear;

fn transposed(t: &Tensor) -> Tensor {
    let (r, c) = (t.shape[0], t.shape[1]);
    let v = Value::from_tensor(t);
    let src = v.as_f32().unwrap_or(&[]);
    let mut out = vec![0f32; r * c];
    for i in 0..r {
        for j in 0..c {
            out[j * r + i] = src[i * c + j];
        }
    }
    Tensor::from_f32(vec![c, r], &out)
}

fn weight(g: &Graph, n: NodeId) -> Option<&Tensor> {
    g.const_value(n)
        .filter(|t| t.dtype == DType::F32 && t.shape.len() == 2)
}

impl Pass for RaiseLinear {
    fn name(&self) -> &'static str {
        "raise-linear"
    }

    fn run(&self, g: &mut Graph) -> Result<String, PassError> {
        let mut raised = 0;
        let mut with_bias = 0;
        let err = |source| PassError::Ir {
            pass: "raise-linear",
            source,
        };
        for n in g.canonical_order() {
            if !g.contains(n) {
                continue;
            }
            let ops = g.operands(n);
            let (x, w, bias, root) = match g.op(n).clone() {
                Op::MatMul => {
                    let Some(wt) = weight(g, ops[1]) else {
                        continue;
                    };
                    if g.ty(ops[0]).dtype != DType::F32 {
                        continue;
                    }
                    let n_out = wt.shape[1];
                    let w = transposed(wt);
                    // a following bias add
                    let bias = single_user(g, n).and_then(|u| {
                        let (a, b) = binary(g, u, BinaryOp::Add)?;
                        let (mm, b) = split_by(a, b, |m| {
                            g.const_value(m)
                                .is_some_and(|t| t.dtype == DType::F32 && t.shape == [n_out])
                        })?;
                        (mm == n).then_some((b, u))
                    });
                    match bias {
                        Some((b, u)) => (ops[0], w, Some(b), u),
                        None => (ops[0], w, None, n),
                    }
                }
                Op::Gemm {
                    alpha,
                    beta,
                    trans_a: false,
                    trans_b,
                } if alpha == 1.0 && beta == 1.0 => {
                    let Some(wt) = weight(g, ops[1]) else {
                        continue;
                    };
                    let w = if trans_b { wt.clone() } else { transposed(wt) };
                    let n_out = w.shape[0];
                    let bias = match ops.get(2) {
                        None => None,
                        Some(&b) => match g.const_value(b) {
                            Some(t)
                                if t.dtype == DType::F32
                                    && t.numel() == n_out
                                    && (t.shape == [n_out] || t.shape == [1, n_out]) =>
                            {
                                if t.shape.len() == 1 {
                                    Some(b)
                                } else {
                                    let flat = Tensor::new(t.dtype, vec![n_out], t.data.clone());
                                    let name = g.node(b).name.clone();
                                    flat.map(|f| g.add_const(&name, f))
                                }
                            }
                            _ => continue,
                        },
                    };
                    (ops[0], w, bias, n)
                }
                _ => continue,
            };
            let wname = g.node(ops[1]).name.clone();
            let wn = g.add_const(&wname, w);
            let mut operands = vec![x, wn];
            if let Some(b) = bias {
                operands.push(b);
                with_bias += 1;
            }
            let name = g.node(root).name.clone();
            let lin = g.add(Op::Linear, &operands, &name).map_err(err)?;
            if g.ty(lin) != g.ty(root) {
                continue;
            }
            g.replace_uses(root, lin);
            g.remove_dead();
            raised += 1;
        }
        Ok(format!("{raised} linears ({with_bias} with bias)"))
    }
}
