//! Structured Optimal Brain Surgeon (ZipLM, Kurtic et al. 2023, section 3): the layer-wise
//! math of structured pruning. For a linear layer `y = W x` with calibration inputs `X`, the
//! Hessian of the reconstruction error is `H = 2/N Σ x xᵀ` (damped by 1% of its mean
//! diagonal). Removing a structure `M` (a set of input columns: one attention head's columns
//! of the output projection, or one FFN neuron's column of the down projection) costs
//! `Σ_rows W[:,M] (H⁻¹[M,M])⁻¹ W[:,M]ᵀ`, and the optimal update of the remaining weights is
//! `W -= W[:,M] (H⁻¹[M,M])⁻¹ H⁻¹[M,:]`, after which `H⁻¹` loses the rows and columns of `M`
//! by the same Schur complement. Greedy removal gives every level of sparsity with its error in
//! one sweep. This module holds the numerics; `prune` uses them.

/// A dense row-major f64 matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct Mat {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f64>,
}

impl Mat {
    pub fn zeros(rows: usize, cols: usize) -> Mat {
        Mat {
            rows,
            cols,
            data: vec![0.0; rows * cols],
        }
    }

    pub fn at(&self, r: usize, c: usize) -> f64 {
        self.data[r * self.cols + c]
    }

    pub fn set(&mut self, r: usize, c: usize, v: f64) {
        self.data[r * self.cols + c] = v;
    }
}

/// Accumulates `H = 2/N Σ x xᵀ` over calibration inputs, in f64. Samples are buffered and
/// folded in blocks (a tiled `XᵀX` over the upper triangle, rows of tiles on all cores), so
/// that the cost is compute, not a sweep of the whole matrix per sample.
pub struct Hessian {
    pub dim: usize,
    /// `Σ x xᵀ`, upper triangle of 4 x 4 tiles until `finish` mirrors it.
    sum: Mat,
    pending: Vec<f32>,
    pub count: usize,
}

const FLUSH_ROWS: usize = 512;
const TILE: usize = 4;

impl Hessian {
    pub fn new(dim: usize) -> Hessian {
        Hessian {
            dim,
            sum: Mat::zeros(dim, dim),
            pending: Vec::new(),
            count: 0,
        }
    }

    /// Adds the rows of `x` (`n x dim`, row-major f32) as samples.
    pub fn add(&mut self, x: &[f32]) {
        let d = self.dim.max(1);
        for row in x.chunks(d) {
            self.pending.extend_from_slice(row);
            self.count += 1;
            if self.pending.len() >= FLUSH_ROWS * d {
                self.flush();
            }
        }
    }

    fn flush(&mut self) {
        use rayon::prelude::*;
        let d = self.dim;
        let n = self.pending.len() / d.max(1);
        if n == 0 {
            return;
        }
        // columns as contiguous f64 runs over the samples
        let mut xt = vec![0f64; d * n];
        for (t, row) in self.pending.chunks(d).enumerate() {
            for (i, &v) in row.iter().enumerate() {
                xt[i * n + t] = v as f64;
            }
        }
        self.pending.clear();
        let xt = &xt;
        self.sum
            .data
            .par_chunks_mut(TILE * d)
            .enumerate()
            .for_each(|(ib, rows)| hessian_rows(xt, n, d, ib * TILE, rows));
    }

    /// `2/N Σ x xᵀ + λ I` with `λ` = `damp` times the mean diagonal.
    pub fn finish(&mut self, damp: f64) -> Mat {
        self.flush();
        let n = self.dim;
        let mut h = self.sum.clone();
        for i in 0..n {
            for j in 0..(i / TILE * TILE) {
                let v = h.at(j, i);
                h.set(i, j, v);
            }
        }
        let scale = 2.0 / self.count.max(1) as f64;
        h.data.iter_mut().for_each(|v| *v *= scale);
        let mean_diag = (0..n).map(|i| h.at(i, i)).sum::<f64>() / n.max(1) as f64;
        let lambda = damp * mean_diag.max(f64::MIN_POSITIVE);
        for i in 0..n {
            let v = h.at(i, i) + lambda;
            h.set(i, i, v);
        }
        h
    }
}

bertc_interp::avx2_dispatch!(
    /// Rows `i0..i0+TILE` of `Σ x xᵀ` from columns `j >= i0`, added to `rows`; `xt` holds the
    /// samples column by column (`d` runs of `n`).
    fn hessian_rows(xt: &[f64], n: usize, d: usize, i0: usize, rows: &mut [f64]) = hessian_rows_impl);

#[inline(always)]
fn hessian_rows_impl(xt: &[f64], n: usize, d: usize, i0: usize, rows: &mut [f64]) {
    let ni = (d - i0).min(TILE);
    let col = |c: usize| &xt[c * n..(c + 1) * n];
    let ci: [&[f64]; TILE] = std::array::from_fn(|a| col(i0 + a.min(ni - 1)));
    // tiles of TILE rows by 2 columns, 4 lanes of partial sums over the samples
    for j0 in (i0..d).step_by(2) {
        let nj = (d - j0).min(2);
        let mut acc = [[[0f64; 4]; 2]; TILE];
        let cj: [&[f64]; 2] = std::array::from_fn(|b| col(j0 + b.min(nj - 1)));
        let n4 = n / 4 * 4;
        for t in (0..n4).step_by(4) {
            for a in 0..TILE {
                let x = &ci[a][t..t + 4];
                for b in 0..2 {
                    let y = &cj[b][t..t + 4];
                    for l in 0..4 {
                        acc[a][b][l] += x[l] * y[l];
                    }
                }
            }
        }
        for a in 0..ni {
            for b in 0..nj {
                let mut s: f64 = acc[a][b].iter().sum();
                for t in n4..n {
                    s += ci[a][t] * cj[b][t];
                }
                rows[a * d + j0 + b] += s;
            }
        }
    }
}

#[inline(always)]
fn dot(a: &[f64], b: &[f64]) -> f64 {
    // four partial sums, so the loop vectorises
    let mut acc = [0.0; 4];
    let n4 = a.len().min(b.len()) / 4 * 4;
    for (x, y) in a[..n4].chunks_exact(4).zip(b[..n4].chunks_exact(4)) {
        for l in 0..4 {
            acc[l] += x[l] * y[l];
        }
    }
    let tail: f64 = a[n4..].iter().zip(&b[n4..]).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f64>() + tail
}

bertc_interp::avx2_dispatch!(
    /// The inverse of a symmetric positive definite matrix (Cholesky); `None` if it is not.
    pub fn spd_inverse(a: &Mat) -> Option<Mat> = spd_inverse_impl);

#[inline(always)]
fn spd_inverse_impl(a: &Mat) -> Option<Mat> {
    let n = a.rows;
    // A = L Lᵀ, L lower triangular (row-major)
    let mut l = Mat::zeros(n, n);
    for i in 0..n {
        for j in 0..=i {
            let (ri, rj) = (&l.data[i * n..i * n + j], &l.data[j * n..j * n + j]);
            let s = a.at(i, j) - dot(ri, rj);
            if i == j {
                if s <= 0.0 || !s.is_finite() {
                    return None;
                }
                l.data[i * n + i] = s.sqrt();
            } else {
                l.data[i * n + j] = s / l.data[j * n + j];
            }
        }
    }
    // M = L⁻¹, kept transposed (column j of M as row j of `mt`) so the sums are contiguous
    let mut mt = Mat::zeros(n, n);
    for j in 0..n {
        let col = &mut mt.data[j * n..(j + 1) * n];
        col[j] = 1.0 / l.data[j * n + j];
        for i in j + 1..n {
            let s = dot(&l.data[i * n + j..i * n + i], &col[j..i]);
            col[i] = -s / l.data[i * n + i];
        }
    }
    // A⁻¹ = Mᵀ M: (i, j) = Σ_k M[k,i] M[k,j] = row i of mt · row j of mt, over k >= max(i, j)
    let mut inv = Mat::zeros(n, n);
    for i in 0..n {
        for j in 0..=i {
            let s = dot(
                &mt.data[i * n + i..(i + 1) * n],
                &mt.data[j * n + i..(j + 1) * n],
            );
            inv.data[i * n + j] = s;
            inv.data[j * n + i] = s;
        }
    }
    Some(inv)
}

/// The optimal weights over the kept input columns `cols`: the least-squares refit
/// `W[:,S]' = W H[:,S] (H[S,S])⁻¹`, which equals the result of removing the other columns by
/// successive OBS updates in any order (row-major `out x |S|`); `None` if `H[S,S]` is singular.
pub fn refit(w: &Mat, h: &Mat, cols: &[usize]) -> Option<Mat> {
    use rayon::prelude::*;
    let n = h.cols;
    let k = cols.len();
    let mut hss = Mat::zeros(k, k);
    for (a, &i) in cols.iter().enumerate() {
        for (b, &j) in cols.iter().enumerate() {
            hss.data[a * k + b] = h.data[i * n + j];
        }
    }
    let inv = spd_inverse(&hss)?;
    let mut out = Mat::zeros(w.rows, k);
    out.data
        .par_chunks_mut(k.max(1))
        .enumerate()
        .for_each(|(r, orow)| refit_row(&w.data[r * n..(r + 1) * n], h, cols, &inv, orow));
    Some(out)
}

bertc_interp::avx2_dispatch!(
    /// One row of the refit: `(W H)[r, S] (H[S,S])⁻¹`.
    fn refit_row(wr: &[f64], h: &Mat, cols: &[usize], inv: &Mat, orow: &mut [f64]) = refit_row_impl);

#[inline(always)]
fn refit_row_impl(wr: &[f64], h: &Mat, cols: &[usize], inv: &Mat, orow: &mut [f64]) {
    let n = h.cols;
    let k = cols.len();
    // H is symmetric, so its column s is its row s
    let wh: Vec<f64> = cols
        .iter()
        .map(|&s| dot(wr, &h.data[s * n..(s + 1) * n]))
        .collect();
    for (b, o) in orow.iter_mut().enumerate() {
        *o = dot(&wh, &inv.data[b * k..(b + 1) * k]);
    }
}

/// One greedy step's outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct Removal {
    /// Index into the `groups` given to `prune_greedy`.
    pub group: usize,
    /// The increase of the layer's reconstruction error that this removal caused.
    pub error: f64,
}

#[inline(always)]
fn sub_inverse(hinv: &Mat, m: &[usize]) -> Option<Mat> {
    let mut s = Mat::zeros(m.len(), m.len());
    for (a, &i) in m.iter().enumerate() {
        for (b, &j) in m.iter().enumerate() {
            s.set(a, b, hinv.at(i, j));
        }
    }
    spd_inverse(&s)
}

/// For every group, the Gram matrix `Σ_rows W[r,M]ᵀ W[r,M]` (`|M| x |M|`, row-major), in one
/// sweep over the rows of `w`.
#[inline(always)]
fn group_grams(w: &Mat, groups: &[Vec<usize>], alive: &[bool]) -> Vec<Vec<f64>> {
    let mut grams: Vec<Vec<f64>> = groups
        .iter()
        .map(|m| vec![0.0; m.len() * m.len()])
        .collect();
    for r in 0..w.rows {
        let row = &w.data[r * w.cols..(r + 1) * w.cols];
        for (g, m) in groups.iter().enumerate() {
            if !alive[g] {
                continue;
            }
            let gram = &mut grams[g];
            for (a, &i) in m.iter().enumerate() {
                let wi = row[i];
                for (b, &j) in m.iter().enumerate() {
                    gram[a * m.len() + b] += wi * row[j];
                }
            }
        }
    }
    grams
}

bertc_interp::avx2_dispatch!(
    /// Greedily removes `count` groups of input columns from `w` (`out x in`), updating the
    /// remaining weights optimally after each removal; `hinv` is `H⁻¹` (`in x in`) and is updated
    /// too (its rows and columns of removed groups are left stale: they are never read again).
    /// Returns the removals in order with their errors; the removed columns of `w` are zero.
    pub fn prune_greedy(
    w: &mut Mat,
    hinv: &mut Mat,
    groups: &[Vec<usize>],
    count: usize,
) -> Vec<Removal> = prune_greedy_impl);

#[inline(always)]
fn prune_greedy_impl(
    w: &mut Mat,
    hinv: &mut Mat,
    groups: &[Vec<usize>],
    count: usize,
) -> Vec<Removal> {
    let n = hinv.cols;
    let mut alive: Vec<bool> = vec![true; groups.len()];
    let mut dead_col = vec![false; n];
    let mut out = Vec::new();
    let singletons = groups.iter().all(|m| m.len() == 1);
    for _ in 0..count.min(groups.len()) {
        // cost of each alive group: tr((H⁻¹[M,M])⁻¹ Σ_r W[r,M]ᵀ W[r,M])
        let best = if singletons {
            // one column a group: Σ_r W[r,i]² / H⁻¹[i,i], the column sums in one row sweep
            let mut sq = vec![0.0; n];
            for row in w.data.chunks(n) {
                for (a, &x) in sq.iter_mut().zip(row) {
                    *a += x * x;
                }
            }
            (0..groups.len())
                .filter(|&g| alive[g])
                .filter_map(|g| {
                    let i = groups[g][0];
                    let d = hinv.data[i * n + i];
                    (d > 0.0).then(|| {
                        let mut inv = Mat::zeros(1, 1);
                        inv.data[0] = 1.0 / d;
                        (g, sq[i] / d, inv)
                    })
                })
                .min_by(|a, b| a.1.total_cmp(&b.1))
        } else {
            let grams = group_grams(w, groups, &alive);
            (0..groups.len())
                .filter(|&g| alive[g])
                .filter_map(|g| {
                    let inv = sub_inverse(hinv, &groups[g])?;
                    let c: f64 = inv.data.iter().zip(&grams[g]).map(|(a, b)| a * b).sum();
                    Some((g, c, inv))
                })
                .min_by(|a, b| a.1.total_cmp(&b.1))
        };
        let Some((g, err, inv)) = best else { break };
        let m = &groups[g];
        let k = m.len();
        // rows M of H⁻¹ (read by both updates, left unchanged by them)
        let hm: Vec<Vec<f64>> = m
            .iter()
            .map(|&j| hinv.data[j * n..(j + 1) * n].to_vec())
            .collect();
        // row -= row[M] (H⁻¹[M,M])⁻¹ H⁻¹[M,:], for W's rows and H⁻¹'s
        let mut coef = vec![0.0; k];
        let mut update = |row: &mut [f64]| {
            for (b, cb) in coef.iter_mut().enumerate() {
                *cb = m
                    .iter()
                    .enumerate()
                    .map(|(a, &i)| row[i] * inv.at(a, b))
                    .sum();
            }
            for (cb, h) in coef.iter().zip(&hm) {
                for (x, y) in row.iter_mut().zip(h) {
                    *x -= cb * y;
                }
            }
        };
        for row in w.data.chunks_mut(n) {
            update(row);
        }
        // H⁻¹ over the rows still alive
        for &c in m {
            dead_col[c] = true;
        }
        for (r, row) in hinv.data.chunks_mut(n).enumerate() {
            if !dead_col[r] {
                update(row);
            }
        }
        // removed columns stay exactly zero (the update leaves them at rounding noise)
        for row in w.data.chunks_mut(n) {
            for (x, &dead) in row.iter_mut().zip(&dead_col) {
                if dead {
                    *x = 0.0;
                }
            }
        }
        alive[g] = false;
        out.push(Removal {
            group: g,
            error: err,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rand(seed: &mut u64) -> f64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 11) as f64 / (1u64 << 53) as f64) - 0.5
    }

    /// The OBS update equals the least-squares refit of the remaining columns:
    /// `W' = W H[:,S] H[S,S]⁻¹` on the kept set `S`.
    #[test]
    fn greedy_removal_matches_least_squares() {
        let (n_in, n_out, n_samples) = (12, 5, 200);
        let mut seed = 7u64;
        let x: Vec<f32> = (0..n_in * n_samples)
            .map(|i| (rand(&mut seed) + 0.3 * ((i % n_in) as f64 / n_in as f64)) as f32)
            .collect();
        let mut w = Mat::zeros(n_out, n_in);
        w.data.iter_mut().for_each(|v| *v = rand(&mut seed));
        let mut hs = Hessian::new(n_in);
        hs.add(&x);
        let h = hs.finish(0.01);
        let mut hinv = spd_inverse(&h).unwrap();
        let groups: Vec<Vec<usize>> = (0..n_in / 2).map(|g| vec![2 * g, 2 * g + 1]).collect();
        let w0 = w.clone();
        let removed = prune_greedy(&mut w, &mut hinv, &groups, 3);
        assert_eq!(removed.len(), 3);
        let gone: Vec<usize> = removed
            .iter()
            .flat_map(|r| groups[r.group].clone())
            .collect();
        let keep: Vec<usize> = (0..n_in).filter(|c| !gone.contains(c)).collect();
        // least squares on the kept columns
        let mut hss = Mat::zeros(keep.len(), keep.len());
        for (a, &i) in keep.iter().enumerate() {
            for (b, &j) in keep.iter().enumerate() {
                hss.set(a, b, h.at(i, j));
            }
        }
        let hss_inv = spd_inverse(&hss).unwrap();
        for r in 0..n_out {
            for (b, &j) in keep.iter().enumerate() {
                // (W H[:,S] H[S,S]⁻¹)[r, b]
                let mut v = 0.0;
                for (a, _) in keep.iter().enumerate() {
                    let whs: f64 = (0..n_in).map(|c| w0.at(r, c) * h.at(c, keep[a])).sum();
                    v += whs * hss_inv.at(a, b);
                }
                assert!(
                    (w.at(r, j) - v).abs() < 1e-8,
                    "row {r} col {j}: {} vs {v}",
                    w.at(r, j)
                );
            }
            for &g in &gone {
                assert_eq!(w.at(r, g), 0.0);
            }
        }
        // errors are non-negative and the total matches the reconstruction error increase
        assert!(removed.iter().all(|r| r.error >= 0.0));
        let err_of = |wm: &Mat| -> f64 {
            let mut e = 0.0;
            for r in 0..n_out {
                for i in 0..n_in {
                    for j in 0..n_in {
                        e += (w0.at(r, i) - wm.at(r, i)) * h.at(i, j) * (w0.at(r, j) - wm.at(r, j));
                    }
                }
            }
            e
        };
        let total: f64 = removed.iter().map(|r| r.error).sum();
        assert!(
            (err_of(&w) - total).abs() < 1e-8 * total.max(1.0),
            "{} vs {total}",
            err_of(&w)
        );
    }

    /// The tiled accumulation equals the plain sum, across flushes and odd sizes.
    #[test]
    fn hessian_matches_the_plain_sum() {
        let (dim, n) = (7, 1100);
        let mut seed = 3u64;
        let x: Vec<f32> = (0..dim * n).map(|_| rand(&mut seed) as f32).collect();
        let mut hs = Hessian::new(dim);
        hs.add(&x[..dim * 300]);
        hs.add(&x[dim * 300..]);
        let h = hs.finish(0.0);
        for i in 0..dim {
            for j in 0..dim {
                let s: f64 = x
                    .chunks(dim)
                    .map(|r| r[i] as f64 * r[j] as f64)
                    .sum::<f64>()
                    * 2.0
                    / n as f64;
                assert!(
                    (h.at(i, j) - s).abs() < 1e-9,
                    "{i},{j}: {} vs {s}",
                    h.at(i, j)
                );
            }
        }
    }

    #[test]
    fn inverse_of_an_spd_matrix() {
        let mut a = Mat::zeros(3, 3);
        a.data = vec![4.0, 1.0, 0.5, 1.0, 3.0, 0.2, 0.5, 0.2, 2.0];
        let inv = spd_inverse(&a).unwrap();
        for i in 0..3 {
            for j in 0..3 {
                let v: f64 = (0..3).map(|k| a.at(i, k) * inv.at(k, j)).sum();
                assert!((v - (i == j) as u8 as f64).abs() < 1e-12);
            }
        }
        let mut b = a.clone();
        b.set(0, 0, -1.0);
        assert!(spd_inverse(&b).is_none());
    }
}
