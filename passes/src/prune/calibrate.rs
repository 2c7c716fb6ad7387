//! Calibration: runs the model in the interpreter on calibration sequences and accumulates, for
//! the pruned linear of every block, `H = 2/N Σ x xᵀ` over its input rows of real tokens (the
//! padding of a batch is left out), and the energy of the residual stream the block writes to.

use std::collections::HashMap;

use bertc_compiler::interp::{bind_inputs, const_values, eval_nodes_with, Value};
use bertc_compiler::ir::Graph;

use super::blocks::Block;
use super::PruneError;
use crate::obs::{Hessian, Mat};

/// Per-block calibration statistics.
pub struct BlockStats {
    /// The damped Hessian of the pruned linear's input.
    pub hessian: Mat,
    /// Mean over tokens of `‖a - mean(a)‖²` of the residual sum the block's output is added to
    /// (what the following LayerNorm divides by); `None` when the block has no residual add.
    pub residual_energy: Option<f64>,
}

pub struct Calibration {
    pub blocks: Vec<BlockStats>,
    pub tokens: usize,
    pub sequences: usize,
}

/// Sequences per interpreter batch (sorted by length, so padding stays small).
const BATCH: usize = 32;

/// Runs calibration on `seqs` (token ids, special tokens included). `progress(done, total)` is
/// called after each batch.
pub fn calibrate(
    g: &Graph,
    blocks: &[Block],
    seqs: &[Vec<i64>],
    damp: f64,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Calibration, PruneError> {
    let input = |name: &str| g.input_named(name);
    let ids_in =
        input("input_ids").ok_or(PruneError::Model("the model has no input_ids input".into()))?;
    let mask_in = input("attention_mask");
    let types_in = input("token_type_ids");
    let max = g.max_seq.unwrap_or(usize::MAX);
    if let Some((i, s)) = seqs
        .iter()
        .enumerate()
        .find(|(_, s)| s.is_empty() || s.len() > max)
    {
        return Err(PruneError::Calibration(format!(
            "calibration sequence {} has {} tokens (the model takes 1 to {max})",
            i + 1,
            s.len()
        )));
    }
    let mut order: Vec<usize> = (0..seqs.len()).collect();
    order.sort_by_key(|&i| seqs[i].len());

    let mut hess: Vec<Hessian> = blocks
        .iter()
        .map(|b| {
            let dim = g.ty(b.input_node()).shape.last().and_then(|d| d.as_const());
            Hessian::new(dim.unwrap_or(0) as usize)
        })
        .collect();
    let mut energy = vec![0f64; blocks.len()];
    let mut targets: Vec<_> = blocks.iter().map(|b| b.input_node()).collect();
    let adds: Vec<Option<usize>> = blocks
        .iter()
        .map(|b| {
            b.add().map(|a| {
                targets.push(a);
                targets.len() - 1
            })
        })
        .collect();

    let consts = const_values(g);
    let mut tokens = 0usize;
    let mut done = 0usize;
    for chunk in order.chunks(BATCH) {
        let b = chunk.len();
        let s = chunk.iter().map(|&i| seqs[i].len()).max().unwrap_or(1);
        let mut ids = vec![0i64; b * s];
        let mut mask = vec![0i64; b * s];
        for (r, &i) in chunk.iter().enumerate() {
            for (c, &t) in seqs[i].iter().enumerate() {
                ids[r * s + c] = t;
                mask[r * s + c] = 1;
            }
        }
        let mut feeds = HashMap::new();
        feeds.insert(ids_in, Value::i64(vec![b, s], ids));
        if let Some(m) = mask_in {
            feeds.insert(m, Value::i64(vec![b, s], mask.clone()));
        } else if chunk.iter().any(|&i| seqs[i].len() != s) {
            return Err(PruneError::Model(
                "the model has no attention_mask input: calibration sequences must have equal lengths"
                    .into(),
            ));
        }
        if let Some(t) = types_in {
            feeds.insert(t, Value::i64(vec![b, s], vec![0; b * s]));
        }
        let bind = bind_inputs(g, &feeds).map_err(|e| PruneError::Calibration(e.to_string()))?;
        let vals = eval_nodes_with(g, &targets, feeds, &bind, &consts)
            .map_err(|e| PruneError::Calibration(e.to_string()))?;
        let real: Vec<usize> = (0..b * s).filter(|&t| mask[t] == 1).collect();
        for (k, h) in hess.iter_mut().enumerate() {
            let v = vals[k].as_f32().map_err(PruneError::Calibration)?;
            let d = h.dim;
            let rows: Vec<f32> = real
                .iter()
                .flat_map(|&t| v[t * d..(t + 1) * d].iter().copied())
                .collect();
            h.add(&rows);
            if let Some(ai) = adds[k] {
                let a = vals[ai].as_f32().map_err(PruneError::Calibration)?;
                let w = a.len() / (b * s);
                for &t in &real {
                    let row = &a[t * w..(t + 1) * w];
                    let mean = row.iter().map(|&x| x as f64).sum::<f64>() / w as f64;
                    energy[k] += row.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>();
                }
            }
        }
        tokens += real.len();
        done += b;
        progress(done, seqs.len());
    }
    let blocks = hess
        .iter_mut()
        .zip(adds)
        .zip(energy)
        .map(|((h, a), e)| BlockStats {
            hessian: h.finish(damp),
            residual_energy: a.map(|_| e / tokens.max(1) as f64),
        })
        .collect();
    Ok(Calibration {
        blocks,
        tokens,
        sequences: seqs.len(),
    })
}
