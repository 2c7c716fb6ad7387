//! Calibration: runs the model in the interpreter on calibration sequences and accumulates, for
//! the pruned linear of every block, `H = 2/N Σ x xᵀ` over its input rows of real tokens (the
//! padding of a batch is left out), the energy of the residual stream the block writes to, and
//! the dense outputs of the pruned linear (the targets of the sequential refit).

use std::collections::HashMap;

use bertc_interp::{bind_inputs, const_values, eval_nodes_with, Value};
use bertc_ir::{Binding, Graph, NodeId};

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
    /// The pruned linear's dense output without its bias, real tokens only (`tokens x out`).
    pub dense_out: Vec<f32>,
}

pub struct Calibration {
    pub blocks: Vec<BlockStats>,
    pub tokens: usize,
    pub sequences: usize,
    /// The padded batches the statistics were gathered on (sorted by length).
    pub batches: Vec<Batch>,
}

/// One padded batch of calibration sequences.
pub struct Batch {
    pub feeds: HashMap<NodeId, Value>,
    pub bind: Binding,
    /// `batch * seq` flags: 1 for real tokens.
    pub mask: Vec<i64>,
}

impl Batch {
    /// Indices of the real tokens in the padded `[batch, seq]` layout.
    pub fn real(&self) -> Vec<usize> {
        (0..self.mask.len())
            .filter(|&t| self.mask[t] == 1)
            .collect()
    }
}

/// Sequences per interpreter batch (sorted by length, so padding stays small).
const BATCH: usize = 32;

/// Checks the sequences and pads them into batches for the interpreter.
pub fn make_batches(g: &Graph, seqs: &[Vec<i64>]) -> Result<Vec<Batch>, PruneError> {
    let ids_in = g
        .input_named("input_ids")
        .ok_or(PruneError::Model("the model has no input_ids input".into()))?;
    let mask_in = g.input_named("attention_mask");
    let types_in = g.input_named("token_type_ids");
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
    let mut out = Vec::new();
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
        out.push(Batch { feeds, bind, mask });
    }
    Ok(out)
}

/// The rows `real` of a `[.., width]` value.
pub(crate) fn rows_of(v: &Value, real: &[usize]) -> Result<Vec<f32>, PruneError> {
    let x = v.as_f32().map_err(PruneError::Calibration)?;
    let w = v.shape.last().copied().unwrap_or(1).max(1);
    Ok(real
        .iter()
        .flat_map(|&t| x[t * w..(t + 1) * w].iter().copied())
        .collect())
}

/// The bias of the linear `n` (zeros when it has none), `width` long.
pub(crate) fn bias_of(g: &Graph, n: NodeId, width: usize) -> Vec<f32> {
    g.operand(n, 2)
        .and_then(|b| g.const_value(b))
        .map(|t| t.to_f32_vec())
        .unwrap_or_else(|| vec![0.0; width])
}

/// Runs calibration on `seqs` (token ids, special tokens included). `progress(done, total)` is
/// called after each batch.
pub fn calibrate(
    g: &Graph,
    blocks: &[Block],
    seqs: &[Vec<i64>],
    damp: f64,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Calibration, PruneError> {
    let batches = make_batches(g, seqs)?;
    let mut hess: Vec<Hessian> = blocks
        .iter()
        .map(|b| {
            let dim = g.ty(b.input_node()).shape.last().and_then(|d| d.as_const());
            Hessian::new(dim.unwrap_or(0) as usize)
        })
        .collect();
    let mut energy = vec![0f64; blocks.len()];
    let mut dense_out: Vec<Vec<f32>> = vec![Vec::new(); blocks.len()];
    let nb = blocks.len();
    // targets: inputs of the pruned linears, their outputs, the residual sums
    let mut targets: Vec<NodeId> = blocks.iter().map(|b| b.input_node()).collect();
    targets.extend(blocks.iter().map(|b| b.pruned_linear()));
    let adds: Vec<Option<usize>> = blocks
        .iter()
        .map(|b| {
            b.add().map(|a| {
                targets.push(a);
                targets.len() - 1
            })
        })
        .collect();
    let biases: Vec<Vec<f32>> = blocks
        .iter()
        .map(|b| {
            let w = g
                .ty(b.pruned_linear())
                .shape
                .last()
                .and_then(|d| d.as_const())
                .unwrap_or(0) as usize;
            bias_of(g, b.pruned_linear(), w)
        })
        .collect();

    let consts = const_values(g);
    let mut tokens = 0usize;
    let mut done = 0usize;
    for batch in &batches {
        let vals = eval_nodes_with(g, &targets, batch.feeds.clone(), &batch.bind, &consts)
            .map_err(|e| PruneError::Calibration(e.to_string()))?;
        let real = batch.real();
        for k in 0..nb {
            hess[k].add(&rows_of(&vals[k], &real)?);
            let mut y = rows_of(&vals[nb + k], &real)?;
            let w = biases[k].len().max(1);
            for row in y.chunks_mut(w) {
                for (v, b) in row.iter_mut().zip(&biases[k]) {
                    *v -= b;
                }
            }
            dense_out[k].extend_from_slice(&y);
            if let Some(ai) = adds[k] {
                let a = rows_of(&vals[ai], &real)?;
                let w = vals[ai].shape.last().copied().unwrap_or(1).max(1);
                for row in a.chunks(w) {
                    let mean = row.iter().map(|&x| x as f64).sum::<f64>() / w as f64;
                    energy[k] += row.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>();
                }
            }
        }
        tokens += real.len();
        done += batch.bind.batch;
        progress(done, seqs.len());
    }
    let blocks = hess
        .iter_mut()
        .zip(adds)
        .zip(energy)
        .zip(dense_out)
        .map(|(((h, a), e), y)| BlockStats {
            hessian: h.finish(damp),
            residual_energy: a.map(|_| e / tokens.max(1) as f64),
            dense_out: y,
        })
        .collect();
    Ok(Calibration {
        blocks,
        tokens,
        sequences: seqs.len(),
        batches,
    })
}
