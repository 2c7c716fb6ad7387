//! Sequential application of a pruning plan with refitting on the pruned model's own inputs
//! (the "true sequential" order of OBC/GPTQ): blocks are rewritten in order, and each block's
//! kept weights are refitted by least squares to reproduce the *dense* model's output of that
//! linear from the inputs the *already pruned* upstream produces, `W_S = (Σ y x̃_Sᵀ)
//! (Σ x̃_S x̃_Sᵀ + λI)⁻¹`. Errors of earlier blocks are so partly corrected by later ones instead
//! of compounding. The residual stream is carried from block to block, so the interpreter runs
//! every block once on the calibration batches.

use bertc_interp::{const_values, eval_nodes_with, Value};
use bertc_ir::{Graph, NodeId, Op};

use super::apply::{apply_block, fold_bias_add, BlockPlan};
use super::blocks::Block;
use super::calibrate::{rows_of, Calibration};
use super::PruneError;
use crate::obs::{spd_inverse, Hessian, Mat};

fn err(e: impl std::fmt::Display) -> PruneError {
    PruneError::Calibration(e.to_string())
}

/// The node a block reads its input from (the residual stream before it).
fn block_input(g: &Graph, b: &Block) -> Option<NodeId> {
    match b {
        Block::Attn(a) => g.operand(a.q, 0),
        Block::Ffn(f) => g.operand(f.up, 0),
    }
}

/// The LayerNorm closing a block (reading its residual add).
fn block_output(g: &Graph, b: &Block) -> Option<NodeId> {
    let add = b.add()?;
    let u = g.users(add);
    (u.len() == 1 && matches!(g.op(u[0]), Op::LayerNorm { .. })).then(|| u[0])
}

/// Whether the blocks form a chain the sequential refit can follow: each block reads the
/// LayerNorm that closes the previous one.
pub fn chainable(g: &Graph, blocks: &[Block]) -> bool {
    blocks
        .iter()
        .all(|b| block_output(g, b).is_some() && block_input(g, b).is_some())
        && blocks
            .windows(2)
            .all(|w| block_output(g, &w[0]) == block_input(g, &w[1]))
}

/// Applies `plan` (one entry per block, in graph order) block by block, refitting the kept
/// weights of each on the pruned model's inputs against the dense outputs in `calib`.
/// Returns the rewritten blocks' descriptions.
pub fn apply_sequential(
    g: &mut Graph,
    blocks: &[Block],
    plan: &[BlockPlan],
    calib: &Calibration,
    damp: f64,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<String>, PruneError> {
    if !chainable(g, blocks) {
        return Err(PruneError::Model(
            "sequential refit needs post-LayerNorm blocks, each reading the previous one's output"
                .into(),
        ));
    }
    let first = block_input(g, &blocks[0]).expect("chainable");
    // the residual stream before the first block, per batch
    let mut consts = const_values(g);
    let mut stream: Vec<Value> = calib
        .batches
        .iter()
        .map(|b| {
            eval_nodes_with(g, &[first], b.feeds.clone(), &b.bind, &consts)
                .map(|mut v| v.remove(0))
                .map_err(err)
        })
        .collect::<Result<_, _>>()?;
    let mut changed = Vec::new();
    let mut adds = Vec::new();
    for (i, (b, p)) in blocks.iter().zip(plan).enumerate() {
        let input = block_input(g, b).expect("chainable");
        let out = block_output(g, b).expect("chainable");
        // the block's pruned-linear input on the pruned upstream (block still dense)
        let mut xs: Vec<Value> = Vec::with_capacity(stream.len());
        for (batch, st) in calib.batches.iter().zip(&stream) {
            let mut feeds = batch.feeds.clone();
            feeds.insert(input, st.clone());
            let v =
                eval_nodes_with(g, &[b.input_node()], feeds, &batch.bind, &consts).map_err(err)?;
            xs.extend(v);
        }
        let cols: Vec<usize> = p.kept.iter().flat_map(|&s| b.columns(s)).collect();
        let mut plan_i = p.clone();
        if !cols.is_empty() && p.weight.is_some() {
            plan_i.weight = Some(refit_on(&xs, calib, i, &cols, damp)?);
        }
        let (what, add) = apply_block(g, &plan_i).map_err(err)?;
        changed.extend(what);
        adds.extend(add);
        g.remove_dead();
        // node ids of removed nodes are reused: convert the constants afresh
        consts = const_values(g);
        // the stream after the rewritten block: feed its new linear's input (the kept columns
        // of the values just computed) and the stream before it
        let new_in = g
            .operands(g.operand(out, 0).expect("layer norm input"))
            .into_iter()
            .find(|&o| o != input)
            .and_then(|lin| {
                matches!(g.op(lin), Op::Linear)
                    .then(|| g.operand(lin, 0))
                    .flatten()
            });
        let mut next = Vec::with_capacity(stream.len());
        for ((batch, st), x) in calib.batches.iter().zip(&stream).zip(&xs) {
            let mut feeds = batch.feeds.clone();
            feeds.insert(input, st.clone());
            if let Some(ni) = new_in {
                if !cols.is_empty() {
                    feeds.insert(ni, take_columns(x, &cols)?);
                }
            }
            let v = eval_nodes_with(g, &[out], feeds, &batch.bind, &consts).map_err(err)?;
            next.extend(v);
        }
        stream = next;
        progress(i + 1, blocks.len());
    }
    for a in adds {
        fold_bias_add(g, a).map_err(err)?;
    }
    g.remove_dead();
    Ok(changed)
}

/// Columns `cols` of the last axis of a value.
fn take_columns(v: &Value, cols: &[usize]) -> Result<Value, PruneError> {
    let x = v.as_f32().map_err(PruneError::Calibration)?;
    let w = v.shape.last().copied().unwrap_or(1).max(1);
    let data: Vec<f32> = x
        .chunks(w)
        .flat_map(|row| cols.iter().map(move |&c| row[c]))
        .collect();
    let mut shape = v.shape.clone();
    if let Some(l) = shape.last_mut() {
        *l = cols.len();
    }
    Ok(Value::f32(shape, data))
}

/// `W_S = (Σ y x̃_Sᵀ)(Σ x̃_S x̃_Sᵀ + λI)⁻¹` over the real tokens, `y` the dense outputs of block
/// `i` (without bias) and `x̃_S` the kept columns of its input on the pruned upstream.
fn refit_on(
    xs: &[Value],
    calib: &Calibration,
    i: usize,
    cols: &[usize],
    damp: f64,
) -> Result<Vec<f32>, PruneError> {
    let k = cols.len();
    let mut h = Hessian::new(k);
    let mut xrows: Vec<f32> = Vec::new();
    for (batch, x) in calib.batches.iter().zip(xs) {
        let real = batch.real();
        let sel = take_columns(x, cols)?;
        let r = rows_of(&sel, &real)?;
        h.add(&r);
        xrows.extend(r);
    }
    let tokens = h.count;
    let hm = h.finish(damp); // 2/N Σ x xᵀ + λI
    let inv = spd_inverse(&hm).ok_or_else(|| {
        PruneError::Calibration(format!("block {i}: the kept inputs' Hessian is singular"))
    })?;
    let y = &calib.blocks[i].dense_out;
    let out = y.len() / tokens.max(1);
    if out * tokens != y.len() {
        return Err(PruneError::Calibration(format!(
            "block {i}: {} dense outputs for {tokens} tokens",
            y.len()
        )));
    }
    // C = 2/N Σ y x̃ᵀ (out x k), then W = C (H)⁻¹
    let mut c = Mat::zeros(out, k);
    for t in 0..tokens {
        let yr = &y[t * out..(t + 1) * out];
        let xr = &xrows[t * k..(t + 1) * k];
        for (o, &yv) in yr.iter().enumerate() {
            let row = &mut c.data[o * k..(o + 1) * k];
            for (cv, &xv) in row.iter_mut().zip(xr) {
                *cv += yv as f64 * xv as f64;
            }
        }
    }
    let scale = 2.0 / tokens.max(1) as f64;
    let mut w = vec![0f32; out * k];
    for o in 0..out {
        let crow = &c.data[o * k..(o + 1) * k];
        for b in 0..k {
            let s: f64 = crow
                .iter()
                .zip(&inv.data[b * k..(b + 1) * k])
                .map(|(x, y)| x * y)
                .sum();
            w[o * k + b] = (s * scale) as f32;
        }
    }
    Ok(w)
}
