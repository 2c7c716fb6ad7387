//! `simplify`: local clean-ups that make patterns regular: composes consecutive transposes,
//! and removes identity transposes, reshapes to the same shape and casts to the same type.

use bertc_ir::{Graph, Op};

use crate::{Pass, PassError};

pub struct Simplify;

impl Pass for Simplify {
    fn name(&self) -> &'static str {
        "simplify"
    }

    fn run(&self, g: &mut Graph) -> Result<String, PassError> {
        let mut changed = 0;
        for n in g.canonical_order() {
            let ops = g.operands(n);
            match g.op(n).clone() {
                Op::Transpose { perm } => {
                    let x = ops[0];
                    if perm.iter().enumerate().all(|(i, &p)| i == p) {
                        g.replace_uses(n, x);
                        changed += 1;
                    } else if let Op::Transpose { perm: inner } = g.op(x).clone() {
                        if inner.len() == perm.len() {
                            // out[i] = mid[perm[i]] = in[inner[perm[i]]]
                            let composed: Vec<usize> = perm.iter().map(|&p| inner[p]).collect();
                            let src = g.operands(x)[0];
                            g.rewrite(n, Op::Transpose { perm: composed }, &[src])
                                .map_err(|source| crate::PassError::Ir {
                                    pass: "simplify",
                                    source,
                                })?;
                            changed += 1;
                        }
                    }
                }
                Op::ReshapeTo { .. } | Op::ExpandTo { .. } | Op::Cast { .. } => {
                    let x = ops[0];
                    if g.ty(x) == g.ty(n) {
                        g.replace_uses(n, x);
                        changed += 1;
                    }
                }
                _ => {}
            }
        }
        Ok(format!("{changed} ops simplified"))
    }
}
