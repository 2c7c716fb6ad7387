//! `name-weights`: gives every weight a name from the op that uses it (`linear3.w`,
//! `layer_norm2.b`, `embedding0.word`), numbered in canonical order, so that the same model
//! imported from ONNX or from safetensors prints the same text.

use bertc_ir::{Graph, Op, TokenTypes};
use std::collections::{HashMap, HashSet};

use crate::{Pass, PassError};

pub struct NameWeights;

fn role(op: &Op, slot: usize) -> String {
    match op {
        Op::Linear | Op::Gemm { .. } => ["x", "w", "b"].get(slot).unwrap_or(&"p").to_string(),
        Op::LayerNorm { .. } | Op::LayerNormalization { .. } => {
            ["x", "g", "b"].get(slot).unwrap_or(&"p").to_string()
        }
        Op::Embedding { types, .. } => {
            let first = 1 + (*types == TokenTypes::Input) as usize;
            ["word", "pos", "type"]
                .get(slot.wrapping_sub(first))
                .unwrap_or(&"ids")
                .to_string()
        }
        _ => format!("{slot}"),
    }
}

impl Pass for NameWeights {
    fn name(&self) -> &'static str {
        "name-weights"
    }

    fn run(&self, g: &mut Graph) -> Result<String, PassError> {
        let mut counters: HashMap<&'static str, usize> = HashMap::new();
        let mut named: HashSet<bertc_ir::NodeId> = HashSet::new();
        let mut renamed = 0;
        for n in g.canonical_order() {
            let op = g.op(n).clone();
            if matches!(op, Op::Input { .. } | Op::Const { .. }) {
                continue;
            }
            let k = counters.entry(op.mnemonic()).or_default();
            let idx = *k;
            *k += 1;
            for (slot, o) in g.operands(n).into_iter().enumerate() {
                if named.contains(&o) {
                    continue;
                }
                let new = format!("{}{idx}.{}", op.mnemonic(), role(&op, slot));
                let node = g.node_mut(o);
                if let Op::Const { name, .. } = &mut node.op {
                    *name = new.clone();
                    node.name = new;
                    named.insert(o);
                    renamed += 1;
                }
            }
        }
        Ok(format!("{renamed} constants named"))
    }
}
