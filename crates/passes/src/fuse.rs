//! Fusion passes over raised IR (`optimize`): the three projections of an attention become
//! one linear over concatenated weights read by `qkv_attention` (`fuse-qkv`); a linear's
//! activation (`fuse-linear-act`) and the residual add that follows it (`fuse-residual`)
//! become its epilogue, `fused_linear`, so that generated code applies them to each output
//! tile while it is in registers instead of sweeping the whole tensor again.

use bertc_ir::{BinaryOp, FusedAct, Graph, NodeId, Op, Tensor, UnaryOp};

use crate::pattern::{binary, single_user};
use crate::{Pass, PassError};

pub struct FuseQkv;
pub struct FuseLinearAct;
pub struct FuseResidual;

fn err(pass: &'static str) -> impl Fn(bertc_ir::IrError) -> PassError {
    move |source| PassError::Ir { pass, source }
}

/// `(x, w, b)` of a linear (a zero bias added when it has none) and its fused activation,
/// when `n` is a linear or a fused linear without residual.
fn linear_parts(g: &mut Graph, n: NodeId) -> Option<(NodeId, NodeId, NodeId, Option<FusedAct>)> {
    let act = match g.op(n) {
        Op::Linear => None,
        Op::FusedLinear {
            act,
            residual: false,
        } => *act,
        _ => return None,
    };
    let ops = g.operands(n);
    let b = match ops.get(2) {
        Some(&b) => b,
        None => {
            let width = g.ty(ops[1]).shape[0].as_const()? as usize;
            g.add_const(
                "zero_bias",
                Tensor::from_f32(vec![width], &vec![0.0; width]),
            )
        }
    };
    Some((ops[0], ops[1], b, act))
}

/// `(x, w, b)` of a plain linear with constant f32 weights whose only user is `user`.
fn projection(g: &Graph, n: NodeId, user: NodeId) -> Option<(NodeId, Tensor, Option<Tensor>)> {
    if !matches!(g.op(n), Op::Linear) || single_user(g, n) != Some(user) || g.is_output(n) {
        return None;
    }
    let ops = g.operands(n);
    let w = g.const_value(ops[1])?.clone();
    let b = match ops.get(2) {
        Some(&b) => Some(g.const_value(b)?.clone()),
        None => None,
    };
    Some((ops[0], w, b))
}

impl Pass for FuseQkv {
    fn name(&self) -> &'static str {
        "fuse-qkv"
    }

    fn run(&self, g: &mut Graph) -> Result<String, PassError> {
        let mut fused = 0;
        for n in g.canonical_order() {
            if !g.contains(n) {
                continue;
            }
            // quantization points keep q, k and v apart (the portable kernel has them)
            let Op::Attention {
                heads,
                scale,
                quant,
            } = *g.op(n)
            else {
                continue;
            };
            if !quant.is_none() {
                continue;
            }
            let ops = g.operands(n);
            // the same node may feed two slots (q = k): then it has two uses, not one user
            let parts: Vec<_> = ops[..3]
                .iter()
                .filter_map(|&p| projection(g, p, n))
                .collect();
            if parts.len() != 3 || ops[0] == ops[1] || ops[1] == ops[2] || ops[0] == ops[2] {
                continue;
            }
            let x = parts[0].0;
            if parts.iter().any(|p| p.0 != x) {
                continue;
            }
            // weights are [n, k]: the rows of q, then k, then v
            let k = parts[0].1.shape[1];
            let qk = parts[0].1.shape[0];
            let mut w = Vec::new();
            let mut b = Vec::new();
            for (_, wt, bt) in &parts {
                w.extend(wt.to_f32_vec());
                match bt {
                    Some(bt) => b.extend(bt.to_f32_vec()),
                    None => b.extend(std::iter::repeat_n(0.0, wt.shape[0])),
                }
            }
            let rows = b.len();
            let wn = g.add_const(
                &format!("qkv{fused}.w"),
                Tensor::from_f32(vec![rows, k], &w),
            );
            let bn = g.add_const(&format!("qkv{fused}.b"), Tensor::from_f32(vec![rows], &b));
            let qname = g.node(ops[0]).name.clone();
            let lin = g
                .add(Op::Linear, &[x, wn, bn], &format!("{qname}.qkv"))
                .map_err(err("fuse-qkv"))?;
            let mut aops = vec![lin];
            aops.extend(ops.get(3).copied());
            let name = g.node(n).name.clone();
            let a = g
                .add(Op::QkvAttention { heads, scale, qk }, &aops, &name)
                .map_err(err("fuse-qkv"))?;
            g.replace_uses(n, a);
            g.remove_dead();
            fused += 1;
        }
        Ok(format!("{fused} attentions read one fused q/k/v linear"))
    }
}

impl Pass for FuseLinearAct {
    fn name(&self) -> &'static str {
        "fuse-linear-act"
    }

    fn run(&self, g: &mut Graph) -> Result<String, PassError> {
        let mut fused = 0;
        for n in g.canonical_order() {
            if !g.contains(n) || !matches!(g.op(n), Op::Linear) {
                continue;
            }
            let Some(u) = single_user(g, n) else { continue };
            let act = match g.op(u) {
                Op::Gelu { approx } => FusedAct::Gelu(*approx),
                Op::Unary(UnaryOp::Tanh) => FusedAct::Tanh,
                Op::Unary(UnaryOp::Relu) => FusedAct::Relu,
                _ => continue,
            };
            let Some((x, w, b, _)) = linear_parts(g, n) else {
                continue;
            };
            let name = g.node(u).name.clone();
            let f = g
                .add(
                    Op::FusedLinear {
                        act: Some(act),
                        residual: false,
                    },
                    &[x, w, b],
                    &name,
                )
                .map_err(err("fuse-linear-act"))?;
            g.replace_uses(u, f);
            g.remove_dead();
            fused += 1;
        }
        Ok(format!("{fused} activations fused into linears"))
    }
}

impl Pass for FuseResidual {
    fn name(&self) -> &'static str {
        "fuse-residual"
    }

    fn run(&self, g: &mut Graph) -> Result<String, PassError> {
        let mut fused = 0;
        for n in g.canonical_order() {
            if !g.contains(n) {
                continue;
            }
            let Some((a, b)) = binary(g, n, BinaryOp::Add) else {
                continue;
            };
            if g.ty(a) != g.ty(b) {
                continue;
            }
            let is_lin = |g: &Graph, m: NodeId| {
                matches!(
                    g.op(m),
                    Op::Linear
                        | Op::FusedLinear {
                            residual: false,
                            ..
                        }
                ) && single_user(g, m) == Some(n)
            };
            let (lin, res) = if is_lin(g, a) {
                (a, b)
            } else if is_lin(g, b) {
                (b, a)
            } else {
                continue;
            };
            let Some((x, w, bias, act)) = linear_parts(g, lin) else {
                continue;
            };
            let name = g.node(n).name.clone();
            let f = g
                .add(
                    Op::FusedLinear {
                        act,
                        residual: true,
                    },
                    &[x, w, bias, res],
                    &name,
                )
                .map_err(err("fuse-residual"))?;
            g.replace_uses(n, f);
            g.remove_dead();
            fused += 1;
        }
        Ok(format!("{fused} residual adds fused into linears"))
    }
}
