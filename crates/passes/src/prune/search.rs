//! The search over per-block levels (SPDY's dynamic programme): choose one level per block so
//! that the predicted time of the blocks fits a budget with the least total error.

/// One level a block may take.
#[derive(Clone, Debug, PartialEq)]
pub struct Choice {
    /// Structures kept.
    pub kept: usize,
    /// Predicted time of the block at this level (ms).
    pub ms: f64,
    /// Its error (from the level database).
    pub error: f64,
}

/// Time buckets of the budget: each choice's time is rounded up to a bucket, so a solution
/// never exceeds the budget and overshoots the optimum by at most `blocks / BUCKETS` of it.
const BUCKETS: usize = 4000;

/// For each block, the index of the chosen `Choice`, minimising the summed error with the
/// summed time at most `budget_ms`; `None` when even the cheapest levels do not fit.
pub fn search(options: &[Vec<Choice>], budget_ms: f64) -> Option<Vec<usize>> {
    if budget_ms <= 0.0 || options.iter().any(|o| o.is_empty()) {
        return None;
    }
    let cost = |ms: f64| -> usize { ((ms.max(0.0) / budget_ms) * BUCKETS as f64).ceil() as usize };
    // best[b]: least error with total buckets exactly b; back[u][b]: choice of block u
    let mut best = vec![f64::INFINITY; BUCKETS + 1];
    best[0] = 0.0;
    let mut back: Vec<Vec<u32>> = Vec::with_capacity(options.len());
    for opts in options {
        let mut next = vec![f64::INFINITY; BUCKETS + 1];
        let mut pick = vec![u32::MAX; BUCKETS + 1];
        for (b, &e) in best.iter().enumerate() {
            if !e.is_finite() {
                continue;
            }
            for (i, c) in opts.iter().enumerate() {
                let nb = b + cost(c.ms);
                if nb <= BUCKETS && e + c.error < next[nb] {
                    next[nb] = e + c.error;
                    pick[nb] = i as u32;
                }
            }
        }
        best = next;
        back.push(pick);
    }
    let (mut b, _) = best
        .iter()
        .enumerate()
        .filter(|(_, e)| e.is_finite())
        .min_by(|x, y| x.1.total_cmp(y.1))?;
    let mut picks = vec![0usize; options.len()];
    for u in (0..options.len()).rev() {
        let i = back[u][b] as usize;
        picks[u] = i;
        b -= cost(options[u][i].ms);
    }
    Some(picks)
}

/// The outcome of `refine`: the choice of each block in the last round and the coefficients its
/// errors were scaled by.
#[derive(Clone, Debug, PartialEq)]
pub struct Refined {
    pub picks: Vec<usize>,
    pub coefficients: Vec<f64>,
    /// The measured loss of the chosen configuration.
    pub loss: f64,
}

/// SPDY's correction of the per-block errors by the model's real loss: the dynamic programme
/// assumes that block errors add up equally, which they do not (an early block's error is
/// amplified by the layers after it). Starting from the plain solution, each round measures,
/// for every block, the model's loss with only that block pruned, at its chosen level (at half
/// its size if it was left dense) (`loss(kept)`, kept per block), sets the block's
/// coefficient to that loss over its database error, and solves again with the errors scaled. Every round's configuration (and the plain
/// one) is then measured whole, and the one of least loss is returned.
pub fn refine(
    options: &[Vec<Choice>],
    budget_ms: f64,
    dense: &[usize],
    rounds: usize,
    loss: &mut dyn FnMut(&[usize]) -> Result<f64, super::PruneError>,
) -> Result<Option<Refined>, super::PruneError> {
    let mut coef = vec![1.0f64; options.len()];
    let Some(mut picks) = search(options, budget_ms) else {
        return Ok(None);
    };
    let kept_of =
        |p: &[usize]| -> Vec<usize> { p.iter().zip(options).map(|(&i, o)| o[i].kept).collect() };
    // every round's solution is judged by the loss of the whole configuration; the best wins
    let mut best = (loss(&kept_of(&picks))?, picks.clone(), coef.clone());
    for _ in 0..rounds {
        // each block measured at its chosen level, or at half its size when left dense
        let mut measured: Vec<Option<f64>> = vec![None; options.len()];
        for (u, opts) in options.iter().enumerate() {
            let mut c = &opts[picks[u]];
            if c.kept == dense[u] {
                match opts
                    .iter()
                    .filter(|x| x.error > 0.0)
                    .min_by_key(|x| x.kept.abs_diff(dense[u] / 2))
                {
                    Some(h) => c = h,
                    None => continue,
                }
            }
            if c.error <= 0.0 {
                continue;
            }
            let mut kept = dense.to_vec();
            kept[u] = c.kept;
            measured[u] = Some(loss(&kept)? / c.error);
        }
        // blocks that cannot be measured take the mean coefficient
        let vals: Vec<f64> = measured.iter().flatten().copied().collect();
        let mean = if vals.is_empty() {
            1.0
        } else {
            vals.iter().sum::<f64>() / vals.len() as f64
        };
        coef = measured.iter().map(|m| m.unwrap_or(mean)).collect();
        let scaled: Vec<Vec<Choice>> = options
            .iter()
            .zip(&coef)
            .map(|(o, &c)| {
                o.iter()
                    .map(|x| Choice {
                        error: x.error * c,
                        ..x.clone()
                    })
                    .collect()
            })
            .collect();
        match search(&scaled, budget_ms) {
            Some(p) => picks = p,
            None => break,
        }
        let l = loss(&kept_of(&picks))?;
        if l < best.0 {
            best = (l, picks.clone(), coef.clone());
        }
    }
    Ok(Some(Refined {
        picks: best.1,
        coefficients: best.2,
        loss: best.0,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(kept: usize, ms: f64, error: f64) -> Choice {
        Choice { kept, ms, error }
    }

    /// Against exhaustive enumeration on small random instances.
    #[test]
    fn matches_brute_force() {
        let mut seed = 11u64;
        let mut rnd = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            (seed >> 33) as f64 / (1u64 << 31) as f64
        };
        for _ in 0..50 {
            let opts: Vec<Vec<Choice>> = (0..4)
                .map(|_| (0..4).map(|k| c(k, 0.1 + rnd(), rnd())).collect())
                .collect();
            let budget = 1.0 + 2.0 * rnd();
            let mut brute: Option<(f64, Vec<usize>)> = None;
            for code in 0..256usize {
                let p: Vec<usize> = (0..4).map(|u| (code >> (2 * u)) & 3).collect();
                let t: f64 = p.iter().enumerate().map(|(u, &i)| opts[u][i].ms).sum();
                let e: f64 = p.iter().enumerate().map(|(u, &i)| opts[u][i].error).sum();
                if t <= budget && brute.as_ref().is_none_or(|b| e < b.0) {
                    brute = Some((e, p));
                }
            }
            let got = search(&opts, budget);
            let eval = |p: &[usize]| -> (f64, f64) {
                let t = p.iter().enumerate().map(|(u, &i)| opts[u][i].ms).sum();
                let e = p.iter().enumerate().map(|(u, &i)| opts[u][i].error).sum();
                (t, e)
            };
            if let Some(p) = &got {
                assert!(eval(p).0 <= budget + 1e-12, "over budget");
            }
            match brute {
                None => assert!(got.is_none()),
                Some((e, p)) => {
                    let slack = budget * (1.0 - 4.0 / BUCKETS as f64);
                    if eval(&p).0 <= slack {
                        // clear of the rounding: the optimum itself
                        let ge = eval(got.as_ref().expect("no solution")).1;
                        assert!((ge - e).abs() < 1e-12, "{ge} vs {e}");
                    } else if let Some(g) = &got {
                        assert!(eval(g).1 >= e - 1e-12);
                    }
                }
            }
        }
    }

    #[test]
    fn impossible_budget() {
        assert!(search(&[vec![c(1, 2.0, 0.0)]], 1.0).is_none());
        assert_eq!(
            search(&[vec![c(1, 2.0, 1.0), c(0, 0.5, 3.0)]], 1.0),
            Some(vec![1])
        );
    }

    /// With a loss that is exactly a weighted sum of block errors, one round learns the
    /// weights and finds the optimum of the true loss, which the plain search misses.
    #[test]
    fn refine_learns_block_weights() {
        // block 0 is cheap to prune by its error but 10x as harmful as it looks
        let opts = vec![
            vec![c(2, 1.0, 0.0), c(1, 0.5, 1.0), c(0, 0.0, 2.0)],
            vec![c(2, 1.0, 0.0), c(1, 0.5, 1.5), c(0, 0.0, 3.0)],
        ];
        let alpha = [10.0, 1.0];
        let dense = [2, 2];
        let mut loss = |kept: &[usize]| -> Result<f64, crate::prune::PruneError> {
            Ok(kept
                .iter()
                .enumerate()
                .map(|(u, &k)| alpha[u] * opts[u].iter().find(|x| x.kept == k).unwrap().error)
                .sum())
        };
        let plain = search(&opts, 1.6).unwrap();
        assert_eq!(plain, vec![1, 0]); // prunes block 0 (error 1.0 < 1.5)
        let r = refine(&opts, 1.6, &dense, 1, &mut loss).unwrap().unwrap();
        assert_eq!(r.picks, vec![0, 1]); // true loss 1.5 instead of 10
        assert!((r.loss - 1.5).abs() < 1e-12);
        assert!((r.coefficients[0] - 10.0).abs() < 1e-12);
    }
}
