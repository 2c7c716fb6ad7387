//! `static-shapes`: turns ops that take their shape from a tensor (`reshape`, `expand`,
//! `constant_of_shape`, `range`, `slice`) into their static forms when inference knows that
//! tensor's value over `batch` and `seq`. The shape arithmetic that fed them becomes dead.

use bertc_ir::{resolve_bounds, Graph, Op};

use crate::{Pass, PassError};

pub struct StaticShapes;

impl Pass for StaticShapes {
    fn name(&self) -> &'static str {
        "static-shapes"
    }

    fn run(&self, g: &mut Graph) -> Result<String, PassError> {
        let mut changed = 0;
        for n in g.canonical_order() {
            let ops = g.operands(n);
            let known = |i: usize| ops.get(i).and_then(|&o| g.node(o).known.clone());
            let ty = g.ty(n).clone();
            let new = match g.op(n).clone() {
                Op::Reshape { .. } if known(1).is_some() => Some((
                    Op::ReshapeTo {
                        shape: ty.shape.clone(),
                    },
                    vec![ops[0]],
                )),
                Op::Expand if known(1).is_some() => Some((
                    Op::ExpandTo {
                        shape: ty.shape.clone(),
                    },
                    vec![ops[0]],
                )),
                Op::ConstantOfShape { value } if known(0).is_some() => Some((
                    Op::Fill {
                        shape: ty.shape.clone(),
                        value,
                    },
                    vec![],
                )),
                Op::Range if ty.dtype.is_int() => match (known(0), known(2)) {
                    (Some(s), Some(d)) => match (s[0].as_const(), d[0].as_const()) {
                        (Some(start), Some(step)) => Some((
                            Op::Arange {
                                dtype: ty.dtype,
                                start,
                                step,
                                len: ty.shape[0],
                            },
                            vec![],
                        )),
                        _ => None,
                    },
                    _ => None,
                },
                Op::Slice => static_slice(g, &ops).map(|op| (op, vec![ops[0]])),
                _ => None,
            };
            if let Some((op, operands)) = new {
                let name = g.node(n).name.clone();
                let m = g
                    .add(op, &operands, &name)
                    .map_err(|source| PassError::Ir {
                        pass: "static-shapes",
                        source,
                    })?;
                if g.ty(m) == &ty {
                    g.replace_uses(n, m);
                    changed += 1;
                }
            }
        }
        Ok(format!("{changed} ops given static shapes"))
    }
}

fn static_slice(g: &Graph, ops: &[bertc_ir::NodeId]) -> Option<Op> {
    let x = g.ty(ops[0]).clone();
    let consts = |i: usize| -> Option<Vec<i64>> {
        g.node(*ops.get(i)?)
            .known
            .as_ref()?
            .iter()
            .map(|d| d.as_const())
            .collect()
    };
    let starts = consts(1)?;
    let ends = g.node(ops[2]).known.clone()?;
    let axes = match ops.get(3) {
        Some(_) => consts(3)?,
        None => (0..starts.len() as i64).collect(),
    };
    let steps = match ops.get(4) {
        Some(_) => consts(4)?,
        None => vec![1; starts.len()],
    };
    if steps.iter().any(|&s| s != 1) || ends.len() != starts.len() || axes.len() != starts.len() {
        return None;
    }
    let mut ax = Vec::new();
    let mut st = Vec::new();
    let mut en = Vec::new();
    for i in 0..axes.len() {
        let a = if axes[i] < 0 {
            axes[i] + x.rank() as i64
        } else {
            axes[i]
        } as usize;
        let (s, e) = resolve_bounds(*x.shape.get(a)?, starts[i], ends[i], 1).ok()?;
        ax.push(a);
        st.push(s);
        en.push(e);
    }
    Some(Op::SliceTo {
        axes: ax,
        starts: st,
        ends: en,
    })
}
