//! `fold-constants`: replaces every op whose operands are all constants, and every integer
//! value whose elements inference already knows, by a constant.

use bertc_interp::{eval_op, Value};
use bertc_ir::{Binding, DType, Graph, Op, Tensor};

use crate::{Pass, PassError};

pub struct FoldConstants;

impl Pass for FoldConstants {
    fn name(&self) -> &'static str {
        "fold-constants"
    }

    fn run(&self, g: &mut Graph) -> Result<String, PassError> {
        let mut folded = 0;
        for n in g.canonical_order() {
            let node = g.node(n);
            if matches!(node.op, Op::Input { .. } | Op::Const { .. }) {
                continue;
            }
            let Some(shape) = node
                .ty
                .shape
                .iter()
                .map(|d| d.as_const().map(|v| v as usize))
                .collect::<Option<Vec<usize>>>()
            else {
                continue;
            };
            let value = if let Some(k) = node
                .known
                .as_ref()
                .filter(|k| k.iter().all(|d| d.is_const()))
            {
                let vals: Vec<i64> = k.iter().map(|d| d.as_const().unwrap_or(0)).collect();
                let v = Value::i64(shape, vals);
                if node.ty.dtype == DType::I64 {
                    v.to_tensor()
                } else {
                    cast_tensor(&v, node.ty.dtype)
                }
            } else {
                let ops = g.operands(n);
                let consts: Option<Vec<Value>> = ops
                    .iter()
                    .map(|&o| g.const_value(o).map(Value::from_tensor))
                    .collect();
                let Some(consts) = consts else { continue };
                let refs: Vec<&Value> = consts.iter().collect();
                match eval_op(&node.op, &refs, &Binding { batch: 1, seq: 1 }) {
                    Ok(v) => v.to_tensor(),
                    Err(_) => continue,
                }
            };
            if value.ty() != g.node(n).ty {
                continue;
            }
            let name = g.node(n).name.clone();
            let c = g.add_const(&name, value);
            g.replace_uses(n, c);
            folded += 1;
        }
        Ok(format!("{folded} values folded into constants"))
    }
}

fn cast_tensor(v: &Value, to: DType) -> Tensor {
    let op = Op::Cast { to };
    eval_op(&op, &[v], &Binding { batch: 1, seq: 1 })
        .map(|v| v.to_tensor())
        .unwrap_or_else(|_| v.to_tensor())
}
