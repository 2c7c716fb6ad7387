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
}

/// SPDY's correction of the per-block errors by the model's real loss: the dynamic programme
/// assumes that block errors add up equally, which they do not (an early block's error is
/// amplified by the layers after it). Starting from the plain solution, each round measures,
/// for every pruned block, the model's loss with only that block pruned at its chosen level
/// (`loss(kept)`, kept per block), sets the block's coefficient to that loss over its database
/// error, and solves again with the errors scaled.
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
    for _ in 0..rounds {
        let mut measured: Vec<Option<f64>> = vec![None; options.len()];
        for (u, opts) in options.iter().enumerate() {
            let c = &opts[picks[u]];
            if c.kept == dense[u] || c.error <= 0.0 {
                continue;
            }
            let mut kept = dense.to_vec();
            kept[u] = c.kept;
            measured[u] = Some(loss(&kept)? / c.error);
        }
        // blocks left dense take the mean coefficient of those measured
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
            None => return Ok(None),
        }
    }
    Ok(Some(Refined {
        picks,
        coefficients: coef,
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
}
