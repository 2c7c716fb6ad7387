//! ZipLM structured pruning (Kurtic et al. 2023) of attention heads and FFN neurons: find the
//! blocks ([`blocks`]), calibrate their Hessians on real text ([`calibrate`]), build every
//! level of every block with its error by structured OBS or the magnitude baseline
//! ([`database`]), pick one level per block under a latency budget ([`search`]), and rewrite
//! the graph to the smaller shapes ([`apply`], the `prune-structures` pass).

pub mod apply;
pub mod blocks;
pub mod calibrate;
pub mod database;
pub mod search;
pub mod sequential;

pub use apply::{BlockPlan, PruneStructures};
pub use blocks::{find_blocks, Block};
pub use calibrate::{calibrate, Calibration};
pub use database::{levels, BlockLevels, Method};
pub use search::{search, Choice};
pub use sequential::apply_sequential;

use bertc_ir::Graph;

/// Why pruning could not be done.
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    #[error("{0}")]
    Model(String),
    #[error("calibration: {0}")]
    Calibration(String),
    #[error("search: {0}")]
    Search(String),
}

/// The levels of every block, computed on all cores.
pub fn all_levels(
    g: &Graph,
    blocks: &[Block],
    calib: &Calibration,
    method: Method,
) -> Result<Vec<BlockLevels>, PruneError> {
    use rayon::prelude::*;
    blocks
        .par_iter()
        .zip(&calib.blocks)
        .map(|(b, s)| levels(g, b, s, method))
        .collect()
}

/// The plan that keeps `kept[i]` structures of block `i`: the ones its levels keep, with the
/// weights refitted (OBS) or left as they are (magnitude).
pub fn plan(
    g: &Graph,
    blocks: &[Block],
    calib: &Calibration,
    levels: &[BlockLevels],
    kept: &[usize],
    method: Method,
) -> Result<Vec<BlockPlan>, PruneError> {
    use rayon::prelude::*;
    blocks
        .par_iter()
        .enumerate()
        .map(|(i, b)| {
            let keep = levels[i].kept(kept[i]);
            let weight = if method == Method::Obs && !keep.is_empty() && keep.len() < b.size() {
                let w = database::weight_of(g, b)?;
                let cols: Vec<usize> = keep.iter().flat_map(|&s| b.columns(s)).collect();
                let r =
                    crate::obs::refit(&w, &calib.blocks[i].hessian, &cols).ok_or_else(|| {
                        PruneError::Calibration(format!(
                            "the Hessian of '{}' is singular on the kept columns",
                            g.node(b.pruned_linear()).name
                        ))
                    })?;
                Some(r.data.iter().map(|&v| v as f32).collect())
            } else {
                None
            };
            Ok(BlockPlan {
                block: b.clone(),
                kept: keep,
                weight,
            })
        })
        .collect()
}
