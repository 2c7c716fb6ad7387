//! The per-block database of pruning levels: for every block, the order in which its
//! structures (heads or neurons) are removed and the error of every level, by structured OBS
//! (ZipLM) or, as the baseline, by weight magnitude without weight updates.

use bertc_ir::Graph;

use super::blocks::Block;
use super::calibrate::BlockStats;
use super::PruneError;
use crate::obs::{prune_greedy, spd_inverse, Mat};

/// How structures are chosen and the remaining weights treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Structured OBS: remove the structure of least second-order error, update the rest.
    Obs,
    /// Baseline: remove the structures of smallest weight norm, no update.
    Magnitude,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Obs => "obs",
            Method::Magnitude => "magnitude",
        }
    }
}

/// Every pruning level of one block.
#[derive(Clone, Debug)]
pub struct BlockLevels {
    /// Structures in removal order.
    pub order: Vec<usize>,
    /// `error[l]`: the block's output error with the first `l` structures of `order` removed,
    /// as mean squared error per token relative to the energy of the residual stream it is
    /// added to (`error[0] = 0`).
    pub error: Vec<f64>,
}

impl BlockLevels {
    /// The structures kept at `kept` of them, ascending.
    pub fn kept(&self, kept: usize) -> Vec<usize> {
        let removed = self.order.len() - kept.min(self.order.len());
        let mut k: Vec<usize> = self.order[removed..].to_vec();
        k.sort_unstable();
        k
    }

    pub fn error_at(&self, kept: usize) -> f64 {
        self.error[self.order.len() - kept.min(self.order.len())]
    }
}

/// The pruned linear's weight (`out x in`) as f64.
pub fn weight_of(g: &Graph, b: &Block) -> Result<Mat, PruneError> {
    let lin = b.pruned_linear();
    let w = g
        .operand(lin, 1)
        .and_then(|w| g.const_value(w))
        .ok_or_else(|| {
            PruneError::Model(format!("'{}' has no constant weight", g.node(lin).name))
        })?;
    Ok(Mat {
        rows: w.shape[0],
        cols: w.shape[1],
        data: w.to_f64_vec(),
    })
}

/// `Σ_rows ΔW H ΔWᵀ` for a weight change `d` (`out x in`).
fn quad_error(d: &Mat, h: &Mat) -> f64 {
    let n = h.cols;
    let mut total = 0.0;
    for r in 0..d.rows {
        let row = &d.data[r * n..(r + 1) * n];
        let nz: Vec<usize> = (0..n).filter(|&i| row[i] != 0.0).collect();
        for &i in &nz {
            let hrow = &h.data[i * n..(i + 1) * n];
            total += row[i] * nz.iter().map(|&j| hrow[j] * row[j]).sum::<f64>();
        }
    }
    total
}

/// Builds the levels of block `b` from its calibration statistics.
pub fn levels(
    g: &Graph,
    b: &Block,
    stats: &BlockStats,
    method: Method,
) -> Result<BlockLevels, PruneError> {
    let w = weight_of(g, b)?;
    let h = &stats.hessian;
    let size = b.size();
    let groups: Vec<Vec<usize>> = (0..size).map(|i| b.columns(i)).collect();
    // the scale: per-token mean squared error is err/2 (H carries the factor 2)
    let own = std::env::var("BERTC_NORM").is_ok_and(|v| v == "own");
    let norm = match stats.residual_energy {
        Some(e) if e > 0.0 && !own => 2.0 * e,
        _ => {
            // no residual: relative to the block's own output energy tr(W H Wᵀ)
            let e = quad_error(&w, h);
            if e > 0.0 {
                e
            } else {
                1.0
            }
        }
    };
    let (order, raw) = match method {
        Method::Obs => {
            let mut hinv = spd_inverse(h).ok_or_else(|| {
                PruneError::Calibration(format!(
                    "the Hessian of '{}' is not positive definite",
                    g.node(b.pruned_linear()).name
                ))
            })?;
            let mut wm = w.clone();
            let removed = prune_greedy(&mut wm, &mut hinv, &groups, size);
            if removed.len() != size {
                return Err(PruneError::Calibration(format!(
                    "structured OBS stopped after {} of {size} structures of '{}' (singular Hessian)",
                    removed.len(),
                    g.node(b.pruned_linear()).name
                )));
            }
            let mut acc = 0.0;
            let mut errs = vec![0.0];
            for r in &removed {
                acc += r.error;
                errs.push(acc);
            }
            (removed.iter().map(|r| r.group).collect::<Vec<_>>(), errs)
        }
        Method::Magnitude => {
            let norms = structure_norms(g, b, &w)?;
            let mut order: Vec<usize> = (0..size).collect();
            order.sort_by(|&a, &c| norms[a].total_cmp(&norms[c]).then(a.cmp(&c)));
            // the error of zeroing the removed columns, without update, kept incrementally:
            // err = Σ_r d_r·u_r with u_r = H d_rᵀ
            let n = w.cols;
            let mut u = vec![0.0; w.rows * n];
            let mut acc = 0.0;
            let mut errs = vec![0.0];
            for &s in &order {
                let m = &groups[s];
                for r in 0..w.rows {
                    let ur = &mut u[r * n..(r + 1) * n];
                    for &c in m {
                        let wc = w.at(r, c);
                        let inner: f64 = m.iter().map(|&c2| h.at(c, c2) * w.at(r, c2)).sum();
                        acc += wc * (2.0 * ur[c] + inner);
                    }
                    for &c in m {
                        let wc = w.at(r, c);
                        for (x, hv) in ur.iter_mut().zip(&h.data[c * n..(c + 1) * n]) {
                            *x += hv * wc;
                        }
                    }
                }
                errs.push(acc);
            }
            (order, errs)
        }
    };
    Ok(BlockLevels {
        order,
        error: raw.iter().map(|e| e / norm).collect(),
    })
}

/// The L2 norm of all weights a structure owns: its columns of the pruned linear and its rows
/// of the projections that feed it (Q, K, V for a head; the up projection for a neuron).
fn structure_norms(g: &Graph, b: &Block, w: &Mat) -> Result<Vec<f64>, PruneError> {
    let feeders = match b {
        Block::Attn(a) => vec![a.q, a.k, a.v],
        Block::Ffn(f) => vec![f.up],
    };
    let mut norms = vec![0.0; b.size()];
    for (s, n) in norms.iter_mut().enumerate() {
        let cols = b.columns(s);
        for r in 0..w.rows {
            for &c in &cols {
                *n += w.at(r, c).powi(2);
            }
        }
    }
    for f in feeders {
        let fw = g
            .operand(f, 1)
            .and_then(|x| g.const_value(x))
            .ok_or_else(|| {
                PruneError::Model(format!("'{}' has no constant weight", g.node(f).name))
            })?
            .to_f64_vec();
        let k = fw.len() / w.cols.max(1);
        for (s, n) in norms.iter_mut().enumerate() {
            for r in b.columns(s) {
                *n += fw[r * k..(r + 1) * k].iter().map(|v| v * v).sum::<f64>();
            }
        }
    }
    Ok(norms.into_iter().map(f64::sqrt).collect())
}
