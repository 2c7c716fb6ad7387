//! Latency profiles: the measured time of one encoder layer's attention block for every number
//! of kept heads and of its FFN block for kept neurons (in steps), on one machine, for one
//! shape of input and thread count. Written by `bertc profile` (or by the profiler executable
//! it emits for a board) and read by the pruning search through this one interface.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The profile file's format version.
pub const PROFILE_FORMAT: u32 = 1;

/// One measured level: `kept` structures take `ms` milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub kept: usize,
    pub ms: f64,
}

/// A measured latency profile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatencyProfile {
    pub format: u32,
    /// The machine it was measured on (CPU model name).
    pub machine: String,
    /// Target triple and the ISA features the measured code used.
    pub target: String,
    pub cpu_features: Vec<String>,
    /// UTC date and time of the measurement (ISO 8601).
    pub date: String,
    pub batch: usize,
    pub seq: usize,
    pub threads: usize,
    /// The layer shape measured.
    pub hidden: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub intermediate: usize,
    /// Copies of the block each level was measured with (the model's layers), so that the
    /// weights streamed from memory as in the whole model; the times are per block.
    pub layers: usize,
    /// Timed runs per level (the figure is their median).
    pub runs: usize,
    /// Everything but the layers: embedding, its LayerNorm and the output copy.
    pub base_ms: f64,
    /// The whole dense model of this shape (base and the layers, attention and FFN in turn),
    /// measured in the same run. `load` scales the block times so that the dense blocks add up
    /// to it: blocks timed alone miss how the two kinds share caches and memory bandwidth.
    pub model_ms: f64,
    /// Attention block (Q/K/V, attention, output projection, residual, LayerNorm) by kept heads.
    /// As measured in the file; `load` makes it non-decreasing (isotonic regression), so that
    /// noise never says that a block gets faster with more heads.
    pub attention: Vec<Point>,
    /// FFN block (up, activation, down, residual, LayerNorm) by kept neurons.
    pub ffn: Vec<Point>,
    /// The quantization the layers were measured with (`"int8"`), none for fp32.
    #[serde(default)]
    pub quantize: Option<String>,
    /// The caches the measured code's GEMMs were blocked for (the target's: detected on the
    /// host, or declared by its `--cpu` level).
    #[serde(default)]
    pub caches: Option<crate::Caches>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("{file}: {msg}")]
    Read { file: String, msg: String },
    #[error("{file}: {msg}")]
    Mismatch { file: String, msg: String },
}

/// Which block of a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockKind {
    Attention,
    Ffn,
}

impl LatencyProfile {
    pub fn load(path: &Path) -> Result<LatencyProfile, ProfileError> {
        let err = |msg: String| ProfileError::Read {
            file: path.display().to_string(),
            msg,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let mut p: LatencyProfile = serde_json::from_str(&text)
            .map_err(|e| err(format!("not a bertc latency profile: {e}")))?;
        if p.format != PROFILE_FORMAT {
            return Err(err(format!(
                "profile format {} (this bertc reads {PROFILE_FORMAT})",
                p.format
            )));
        }
        for (what, pts, max) in [
            ("attention", &p.attention, p.heads),
            ("ffn", &p.ffn, p.intermediate),
        ] {
            if pts.is_empty() || pts.iter().any(|q| q.kept > max || !q.ms.is_finite()) {
                return Err(err(format!("bad {what} levels")));
            }
            if !pts.iter().any(|q| q.kept == max) {
                return Err(err(format!("no dense {what} level ({max})")));
            }
        }
        // a block never gets faster with more structures: noise that says otherwise is pooled
        p.attention.sort_by_key(|q| q.kept);
        p.ffn.sort_by_key(|q| q.kept);
        monotone(&mut p.attention);
        monotone(&mut p.ffn);
        let dense = p.layers as f64
            * (p.block_ms(BlockKind::Attention, p.heads).unwrap_or(0.0)
                + p.block_ms(BlockKind::Ffn, p.intermediate).unwrap_or(0.0));
        if p.model_ms > p.base_ms && dense > 0.0 {
            let scale = (p.model_ms - p.base_ms) / dense;
            for q in p.attention.iter_mut().chain(p.ffn.iter_mut()) {
                q.ms *= scale;
            }
        }
        Ok(p)
    }

    /// The measured levels of a block kind.
    pub fn points(&self, kind: BlockKind) -> &[Point] {
        match kind {
            BlockKind::Attention => &self.attention,
            BlockKind::Ffn => &self.ffn,
        }
    }

    /// The time of a block at `kept` structures, if that level was measured.
    pub fn block_ms(&self, kind: BlockKind, kept: usize) -> Option<f64> {
        self.points(kind)
            .iter()
            .find(|p| p.kept == kept)
            .map(|p| p.ms)
    }

    /// The predicted time of a model: the base plus each block at its level.
    pub fn predict_ms(&self, blocks: &[(BlockKind, usize)]) -> Option<f64> {
        blocks.iter().try_fold(self.base_ms, |acc, &(k, kept)| {
            Some(acc + self.block_ms(k, kept)?)
        })
    }

    /// Checks that the profile was measured for this layer shape.
    pub fn check_shape(
        &self,
        file: &Path,
        hidden: usize,
        heads: usize,
        head_dim: usize,
        intermediate: usize,
    ) -> Result<(), ProfileError> {
        let have = (self.hidden, self.heads, self.head_dim, self.intermediate);
        let want = (hidden, heads, head_dim, intermediate);
        if have != want {
            return Err(ProfileError::Mismatch {
                file: file.display().to_string(),
                msg: format!(
                    "measured for hidden {} / {} heads of {} / FFN {}, the model has hidden {hidden} / {heads} heads of {head_dim} / FFN {intermediate} (run bertc profile MODEL)",
                    self.hidden, self.heads, self.head_dim, self.intermediate
                ),
            });
        }
        Ok(())
    }
}

/// Isotonic regression (pool adjacent violators, equal weights): the non-decreasing sequence
/// closest to the measured times in least squares. Points must be sorted by `kept`.
fn monotone(points: &mut [Point]) {
    // blocks of (sum, count), merged while a block's mean is below the previous one's
    let mut blocks: Vec<(f64, usize)> = Vec::new();
    for q in points.iter() {
        blocks.push((q.ms, 1));
        while blocks.len() > 1 {
            let (s2, n2) = blocks[blocks.len() - 1];
            let (s1, n1) = blocks[blocks.len() - 2];
            if s1 / n1 as f64 <= s2 / n2 as f64 {
                break;
            }
            blocks.pop();
            *blocks.last_mut().expect("two blocks") = (s1 + s2, n1 + n2);
        }
    }
    let mut i = 0;
    for (s, n) in blocks {
        for q in &mut points[i..i + n] {
            q.ms = s / n as f64;
        }
        i += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotone_pools_violators() {
        let mut p: Vec<Point> = [1.0, 3.0, 2.0, 4.0, 3.5, 3.5, 6.0]
            .iter()
            .enumerate()
            .map(|(k, &ms)| Point { kept: k, ms })
            .collect();
        monotone(&mut p);
        let ms: Vec<f64> = p.iter().map(|q| q.ms).collect();
        assert_eq!(ms, [1.0, 2.5, 2.5, 11.0 / 3.0, 11.0 / 3.0, 11.0 / 3.0, 6.0]);
    }
}
