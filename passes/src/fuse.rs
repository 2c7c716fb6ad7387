//! Fusion passes over raised IR (`optimize`): a linear's activation (`fuse-linear-act`) and
//! the residual add that follows it (`fuse-residual`) become its epilogue, `fused_linear`, so
//! that generated code applies them to each output tile while it is in cache instead of
//! sweeping the whole tensor again.

use bertc_compiler::ir::{BinaryOp, FusedAct, Graph, NodeId, Op, Tensor, UnaryOp};

use crate::pattern::{binary, single_user};
use crate::{Pass, PassError};

pub struct FuseLinearAct;
pub struct FuseResidual;

fn err(pass: &'static str) -> impl Fn(bertc_compiler::ir::IrError) -> PassError {
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
