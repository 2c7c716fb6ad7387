//! `Encoder`: a compiled model, loaded as a shared library, that maps token sequences to
//! L2-normalised mean-pooled embeddings; what `bertc eval`, the pruning search's measured loss
//! and the report's accuracy figures run.

use std::path::Path;
use std::sync::Arc;

use bertc_passes::OutputKind;
use bertc_runtime::{l2_normalize, Artifact, Model};

use crate::scratch::Scratch;
use crate::CliError;

/// A compiled model that maps token sequences to mean-pooled embeddings.
pub struct Encoder {
    model: Model,
    pooled: bool,
    /// Where a library compiled here lives; dropped (removed) after the model.
    _tmp: Option<Scratch>,
}

/// Sequences per call (sorted by length, so padding stays small).
const BATCH: usize = 32;

impl Encoder {
    /// Compiles a raised graph (mean output selected here) to a temporary library.
    pub fn from_graph(g: &bertc_ir::Graph, threads: i32) -> Result<Encoder, CliError> {
        let mut g = g.clone();
        bertc_passes::select_output(&mut g, OutputKind::Mean)?;
        bertc_passes::optimize(&mut g)?;
        let tmp = Scratch::new("eval")?;
        let target = bertc_targets::Target::host();
        let so = crate::scratch::build_so(&g, &target, "evalg", &tmp)?;
        Encoder::from_so(&so, "evalg", threads, Some(tmp))
    }

    pub fn from_so(
        so: &Path,
        name: &str,
        threads: i32,
        tmp: Option<Scratch>,
    ) -> Result<Encoder, CliError> {
        let art = Arc::new(Artifact::open(so, name)?);
        let mut model = art.model(threads)?;
        // pooled (one row per sequence) or per token: compare output sizes for two lengths
        let one = model.run(&[0], Some(&[1]), None, 1, 1)?.len();
        let two = model.run(&[0, 0], Some(&[1, 1]), None, 1, 2)?.len();
        Ok(Encoder {
            model,
            pooled: one == two,
            _tmp: tmp,
        })
    }

    /// L2-normalised mean-pooled embeddings of `seqs`.
    pub fn embed(&mut self, seqs: &[Vec<i64>]) -> Result<Vec<Vec<f32>>, CliError> {
        let mut order: Vec<usize> = (0..seqs.len()).collect();
        order.sort_by_key(|&i| seqs[i].len());
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); seqs.len()];
        for chunk in order.chunks(BATCH) {
            let b = chunk.len();
            let s = chunk
                .iter()
                .map(|&i| seqs[i].len())
                .max()
                .unwrap_or(1)
                .max(1);
            let mut ids = vec![0i32; b * s];
            let mut mask = vec![0i32; b * s];
            for (r, &i) in chunk.iter().enumerate() {
                for (c, &t) in seqs[i].iter().enumerate() {
                    ids[r * s + c] = i32::try_from(t)
                        .map_err(|_| CliError::Input(format!("token id {t} out of range")))?;
                    mask[r * s + c] = 1;
                }
            }
            let y = self.model.run(&ids, Some(&mask), None, b, s)?;
            for (r, &i) in chunk.iter().enumerate() {
                let e = if self.pooled {
                    let w = y.len() / b;
                    y[r * w..(r + 1) * w].to_vec()
                } else {
                    let w = y.len() / (b * s);
                    let m64: Vec<i64> =
                        mask[r * s..(r + 1) * s].iter().map(|&v| v as i64).collect();
                    bertc_runtime::mean_pool(&y[r * s * w..(r + 1) * s * w], &m64, w)
                };
                out[i] = l2_normalize(&e);
            }
        }
        Ok(out)
    }
}
