//! `raise-gelu`: the erf form `x * 0.5 * (1 + erf(x / sqrt(2)))` and the tanh form
//! `0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))`, with their factors in any order,
//! become `gelu`.

use bertc_ir::{BinaryOp, GeluApprox, Graph, NodeId, Op, UnaryOp};

use crate::pattern::{binary, is_scalar, single_user, split_by, tree_leaves, tree_root};
use crate::{Pass, PassError};

pub struct RaiseGelu;

/// `x * c` or `x / (1/c)`: returns x.
fn scaled_by(g: &Graph, n: NodeId, c: f64) -> Option<NodeId> {
    if let Some((a, b)) = binary(g, n, BinaryOp::Mul) {
        return split_by(a, b, |m| is_scalar(g, m, c)).map(|p| p.0);
    }
    let (a, b) = binary(g, n, BinaryOp::Div)?;
    is_scalar(g, b, 1.0 / c).then_some(a)
}

/// `x^3` as `pow(x, 3)` or a product of three `x`.
fn cube_of(g: &Graph, n: NodeId) -> Option<NodeId> {
    if let Some((x, e)) = binary(g, n, BinaryOp::Pow) {
        return is_scalar(g, e, 3.0).then_some(x);
    }
    let l = tree_leaves(g, n, BinaryOp::Mul);
    (l.len() == 3 && l[0] == l[1] && l[1] == l[2]).then_some(l[0])
}

/// The argument of the activation when `inner` (the erf or tanh argument) fits the form.
fn gelu_arg(g: &Graph, inner: NodeId, approx: GeluApprox) -> Option<NodeId> {
    match approx {
        GeluApprox::Erf => scaled_by(g, inner, std::f64::consts::FRAC_1_SQRT_2),
        GeluApprox::Tanh => {
            let sum = scaled_by(g, inner, (2.0 / std::f64::consts::PI).sqrt())?;
            let (a, b) = binary(g, sum, BinaryOp::Add)?;
            let (x, cube_term) = split_by(a, b, |m| {
                scaled_by(g, m, 0.044715)
                    .and_then(|c| cube_of(g, c))
                    .is_some()
            })?;
            let cx = cube_of(g, scaled_by(g, cube_term, 0.044715)?)?;
            (cx == x).then_some(x)
        }
    }
}

impl Pass for RaiseGelu {
    fn name(&self) -> &'static str {
        "raise-gelu"
    }

    fn run(&self, g: &mut Graph) -> Result<String, PassError> {
        let mut raised = 0;
        for n in g.canonical_order() {
            if !g.contains(n) {
                continue;
            }
            let approx = match g.op(n) {
                Op::Unary(UnaryOp::Erf) => GeluApprox::Erf,
                Op::Unary(UnaryOp::Tanh) => GeluApprox::Tanh,
                _ => continue,
            };
            let Some(x) = gelu_arg(g, g.operands(n)[0], approx) else {
                continue;
            };
            // 1 + erf(...)
            let Some(one_plus) = single_user(g, n) else {
                continue;
            };
            let Some((a, b)) = binary(g, one_plus, BinaryOp::Add) else {
                continue;
            };
            if split_by(a, b, |m| is_scalar(g, m, 1.0)).is_none_or(|p| p.0 != n) {
                continue;
            }
            // the product of x, 0.5 and (1 + erf(...)), in any grouping
            let Some(root) = tree_root(g, one_plus, BinaryOp::Mul) else {
                continue;
            };
            let mut leaves = tree_leaves(g, root, BinaryOp::Mul);
            if leaves.len() != 3 {
                continue;
            }
            leaves.retain(|&l| l != one_plus);
            let ok = leaves.len() == 2
                && split_by(leaves[0], leaves[1], |m| is_scalar(g, m, 0.5))
                    .is_some_and(|p| p.0 == x);
            if !ok {
                continue;
            }
            let name = g.node(root).name.clone();
            let act = g
                .add(Op::Gelu { approx }, &[x], &name)
                .map_err(|source| PassError::Ir {
                    pass: "raise-gelu",
                    source,
                })?;
            g.replace_uses(root, act);
            g.remove_dead();
            raised += 1;
        }
        Ok(format!("{raised} gelu activations"))
    }
}
