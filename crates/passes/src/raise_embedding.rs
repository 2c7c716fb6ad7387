//! `raise-embedding`: a sum of row gathers from constant tables (word, position, token type)
//! becomes `embedding`. The word table is gathered by the `input_ids` input; the index
//! expressions of the other tables are identified by probing: `arange(seq) + offset` (BERT),
//! RoBERTa's padding-aware positions, a graph input of token types, or all zeros (a model with
//! one token type and no input for it).

use bertc_interp::{Data, Value};
use bertc_ir::{BinaryOp, Binding, Dim, Graph, NodeId, Op, Positions, TokenTypes};

use crate::pattern::{binary, single_user, split_by, tree_leaves, tree_root};
use crate::probe;
use crate::{Pass, PassError};

pub struct RaiseEmbedding;

/// `(table, index)` of `gather(const table[rows, width], index) axis=0`.
fn table_gather(g: &Graph, n: NodeId) -> Option<(NodeId, NodeId)> {
    match g.op(n) {
        Op::Gather { axis: 0 } => {
            let o = g.operands(n);
            let t = g.const_value(o[0])?;
            (t.shape.len() == 2 && t.dtype.is_float()).then_some((o[0], o[1]))
        }
        _ => None,
    }
}

fn is_ids_input(g: &Graph, n: NodeId) -> bool {
    matches!(g.op(n), Op::Input { .. })
        && g.ty(n).dtype.is_int()
        && g.ty(n).shape == [Dim::BATCH, Dim::SEQ]
}

enum Role {
    Positions(Positions),
    Zero,
}

/// What an index expression computes, found by evaluating it on probe ids.
fn classify(g: &Graph, idx: NodeId, ids: NodeId) -> Option<Role> {
    let inputs = probe::input_leaves(g, idx);
    if inputs.iter().any(|&i| i != ids) {
        return None;
    }
    let (b, s) = (2usize, 6usize);
    let eval = |vals: Vec<i64>| -> Option<Vec<i64>> {
        let v = probe::eval(
            g,
            idx,
            &[(ids, Value::i64(vec![b, s], vals))],
            Binding { batch: b, seq: s },
        )?;
        // broadcast over the batch when the expression does not depend on it
        let Data::I(x) = v.data else { return None };
        match v.shape.as_slice() {
            [1, n] | [n] if *n == s => Some([x.clone(), x].concat()),
            [bb, n] if *bb == b && *n == s => Some(x),
            _ => None,
        }
    };
    // ids free of small values, so that any small id can serve as the padding token
    let plain: Vec<i64> = (0..(b * s) as i64).map(|i| 11 + i).collect();
    let base = eval(plain.clone())?;
    if base.iter().all(|&v| v == 0) {
        // it must stay zero whatever the ids
        return (eval(vec![1; b * s])? == base).then_some(Role::Zero);
    }
    let off = base[0];
    if (0..b * s).all(|i| base[i] == off + (i % s) as i64) && eval(vec![1; b * s])? == base {
        return Some(Role::Positions(Positions::Arange { offset: off }));
    }
    // padding-aware positions: pad + 1 + count of non-pad tokens so far, pad on pads
    let pad = off - 1;
    let mut ids_with_pads = plain;
    for t in [3usize, 4, 5] {
        ids_with_pads[s + t] = pad; // right padding in the second row
    }
    ids_with_pads[1] = pad; // and a hole in the first
    let got = eval(ids_with_pads.clone())?;
    for bi in 0..b {
        let mut count = 0;
        for t in 0..s {
            let id = ids_with_pads[bi * s + t];
            let want = if id != pad {
                count += 1;
                pad + count
            } else {
                pad
            };
            if got[bi * s + t] != want {
                return None;
            }
        }
    }
    Some(Role::Positions(Positions::PaddingAware { pad }))
}

impl Pass for RaiseEmbedding {
    fn name(&self) -> &'static str {
        "raise-embedding"
    }

    fn run(&self, g: &mut Graph) -> Result<String, PassError> {
        let mut raised = Vec::new();
        for n in g.canonical_order() {
            if !g.contains(n) {
                continue;
            }
            // start from the word gather: a table indexed directly by an ids input
            let Some((_, idx)) = table_gather(g, n) else {
                continue;
            };
            if !is_ids_input(g, idx) {
                continue;
            }
            let Some(mut root) = tree_root(g, n, BinaryOp::Add) else {
                continue;
            };
            let mut leaves = tree_leaves(g, root, BinaryOp::Add);
            // a static QDQ file's point between the word and type rows' sum and the position
            // row: `qdq(word + type) + pos`
            let mut sum_qdq = None;
            if let Some((p, pos_add, pos)) = single_user(g, root).and_then(|q| {
                let Op::Qdq(p) = *g.op(q) else { return None };
                let a = single_user(g, q)?;
                let (x, y) = binary(g, a, BinaryOp::Add)?;
                let (_, pos) = split_by(x, y, |o| o != q)?;
                (leaves.len() == 2 && table_gather(g, pos).is_some()).then_some((p, a, pos))
            }) {
                sum_qdq = Some((p, pos));
                leaves.push(pos);
                root = pos_add;
            }
            let Some(gathers) = leaves
                .iter()
                .map(|&l| table_gather(g, l))
                .collect::<Option<Vec<_>>>()
            else {
                continue;
            };
            if !(2..=3).contains(&gathers.len()) {
                continue;
            }
            // word table: the largest table indexed by an input; a second input is token types
            let mut direct: Vec<(NodeId, NodeId)> = gathers
                .iter()
                .copied()
                .filter(|&(_, i)| is_ids_input(g, i))
                .collect();
            direct
                .sort_by_key(|&(t, _)| std::cmp::Reverse(g.ty(t).shape[0].as_const().unwrap_or(0)));
            let (word, ids) = direct[0];
            let mut type_input = None;
            let mut type_table = None;
            let mut positions = None;
            let mut ok = true;
            if let Some(&(t, i)) = direct.get(1) {
                type_input = Some(i);
                type_table = Some(t);
            }
            if direct.len() > 2 {
                continue;
            }
            for &(t, i) in gathers.iter().filter(|&&(_, i)| !is_ids_input(g, i)) {
                match classify(g, i, ids) {
                    Some(Role::Positions(p)) if positions.is_none() => positions = Some((t, p)),
                    Some(Role::Zero) if type_table.is_none() => type_table = Some(t),
                    _ => ok = false,
                }
            }
            let Some((pos_table, positions)) = positions.filter(|_| ok) else {
                continue;
            };
            // the point must sit before the position row, after word and type
            if sum_qdq
                .is_some_and(|(_, pos)| table_gather(g, pos).map(|(t, _)| t) != Some(pos_table))
                || sum_qdq.is_some() && type_table.is_none()
            {
                continue;
            }
            let sum_qdq = sum_qdq.map(|(p, _)| p);
            let types = match (type_input, type_table) {
                (Some(_), _) => TokenTypes::Input,
                (None, Some(_)) => TokenTypes::Zero,
                (None, None) => TokenTypes::Absent,
            };
            let mut operands = vec![ids];
            operands.extend(type_input);
            operands.push(word);
            operands.push(pos_table);
            operands.extend(type_table);
            let name = g.node(root).name.clone();
            let e = g
                .add(
                    Op::Embedding {
                        positions,
                        types,
                        sum_qdq,
                    },
                    &operands,
                    &name,
                )
                .map_err(|source| PassError::Ir {
                    pass: "raise-embedding",
                    source,
                })?;
            if g.ty(e) != g.ty(root) {
                continue;
            }
            let rows = g.ty(pos_table).shape[0].as_const().unwrap_or(0).max(0);
            let max = positions.max_seq(rows as usize);
            g.max_seq = Some(g.max_seq.map_or(max, |m| m.min(max)));
            g.replace_uses(root, e);
            g.remove_dead();
            raised.push(format!("{positions:?}, types {types:?}"));
        }
        Ok(match raised.len() {
            0 => "no embedding recognised".into(),
            _ => format!("{} embedding ({})", raised.len(), raised.join("; ")),
        })
    }
}
