//! Raising on hand-built graphs: the variants of each pattern that other exporters produce,
//! and near-misses that must not be raised. Each raised graph is checked against the
//! interpreter's result on the graph before raising.

use bertc_interp::{self as interp, Value};
use bertc_ir::{BinaryOp, DType, Dim, Graph, NodeId, Op, ReduceKind, Tensor, TensorType, UnaryOp};
use bertc_passes::canonicalize;

fn weights(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32
                / (1u32 << 24) as f32
                - 0.5
        })
        .collect()
}

fn c(g: &mut Graph, v: f32) -> NodeId {
    g.add_const("c", Tensor::from_f32(vec![], &[v]))
}

fn bin(g: &mut Graph, op: BinaryOp, a: NodeId, b: NodeId) -> NodeId {
    g.add(Op::Binary(op), &[a, b], "b").unwrap()
}

fn hidden_input(g: &mut Graph, h: usize) -> NodeId {
    g.add_input(
        "x",
        TensorType::new(DType::F32, vec![Dim::BATCH, Dim::SEQ, Dim::c(h as i64)]),
    )
}

fn run(g: &Graph, x: Vec<f32>, shape: Vec<usize>) -> Vec<f32> {
    interp::run(g, &[("x", Value::f32(shape, x))]).unwrap()[0]
        .1
        .as_f32()
        .unwrap()
        .to_vec()
}

fn check_raised(mut g: Graph, expect_op: &str, h: usize) {
    let x = weights(2 * 3 * h, 7);
    let before = run(&g, x.clone(), vec![2, 3, h]);
    canonicalize(&mut g).unwrap();
    let counts = g.op_counts();
    assert!(
        counts.iter().any(|(op, _)| *op == expect_op),
        "{expect_op} not raised:\n{}",
        g.to_text()
    );
    let after = run(&g, x, vec![2, 3, h]);
    let err = before
        .iter()
        .zip(&after)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(err < 1e-5, "raising changed the result by {err}");
}

/// `(x - mean) / sqrt(mean((x - mean)^2) + eps) * g + b`, as older exporters write LayerNorm.
#[test]
fn decomposed_layer_norm() {
    let h = 8;
    let mut g = Graph::new();
    let x = hidden_input(&mut g, h);
    let mean = g
        .add(
            Op::Reduce {
                kind: ReduceKind::Mean,
                axes: vec![-1],
                keepdims: true,
            },
            &[x],
            "m",
        )
        .unwrap();
    let d = bin(&mut g, BinaryOp::Sub, x, mean);
    let two = c(&mut g, 2.0);
    let sq = bin(&mut g, BinaryOp::Pow, d, two);
    let var = g
        .add(
            Op::Reduce {
                kind: ReduceKind::Mean,
                axes: vec![-1],
                keepdims: true,
            },
            &[sq],
            "v",
        )
        .unwrap();
    let eps = c(&mut g, 1e-12);
    let ve = bin(&mut g, BinaryOp::Add, var, eps);
    let s = g.add(Op::Unary(UnaryOp::Sqrt), &[ve], "s").unwrap();
    let n = bin(&mut g, BinaryOp::Div, d, s);
    let gamma = g.add_const("g", Tensor::from_f32(vec![h], &weights(h, 1)));
    let beta = g.add_const("b", Tensor::from_f32(vec![h], &weights(h, 2)));
    let m = bin(&mut g, BinaryOp::Mul, gamma, n);
    let y = bin(&mut g, BinaryOp::Add, m, beta);
    g.outputs.push(("y".into(), y));
    check_raised(g, "layer_norm", h);
}

/// A normalisation over the wrong axis is not a layer norm.
#[test]
fn layer_norm_over_another_axis_is_not_raised() {
    let h = 8;
    let mut g = Graph::new();
    let x = hidden_input(&mut g, h);
    let mean = g
        .add(
            Op::Reduce {
                kind: ReduceKind::Mean,
                axes: vec![1],
                keepdims: true,
            },
            &[x],
            "m",
        )
        .unwrap();
    let d = bin(&mut g, BinaryOp::Sub, x, mean);
    let two = c(&mut g, 2.0);
    let sq = bin(&mut g, BinaryOp::Pow, d, two);
    let var = g
        .add(
            Op::Reduce {
                kind: ReduceKind::Mean,
                axes: vec![1],
                keepdims: true,
            },
            &[sq],
            "v",
        )
        .unwrap();
    let eps = c(&mut g, 1e-12);
    let ve = bin(&mut g, BinaryOp::Add, var, eps);
    let s = g.add(Op::Unary(UnaryOp::Sqrt), &[ve], "s").unwrap();
    let n = bin(&mut g, BinaryOp::Div, d, s);
    let gamma = g.add_const("g", Tensor::from_f32(vec![h], &weights(h, 1)));
    let beta = g.add_const("b", Tensor::from_f32(vec![h], &weights(h, 2)));
    let m = bin(&mut g, BinaryOp::Mul, n, gamma);
    let y = bin(&mut g, BinaryOp::Add, m, beta);
    g.outputs.push(("y".into(), y));
    canonicalize(&mut g).unwrap();
    assert!(!g.op_counts().iter().any(|(op, _)| *op == "layer_norm"));
}

/// GELU written as `0.5 * x * (1 + erf(x * 0.7071))`, grouped differently from PyTorch's.
#[test]
fn gelu_erf_other_grouping() {
    let h = 4;
    let mut g = Graph::new();
    let x = hidden_input(&mut g, h);
    let k = c(&mut g, std::f32::consts::FRAC_1_SQRT_2);
    let xs = bin(&mut g, BinaryOp::Mul, k, x);
    let e = g.add(Op::Unary(UnaryOp::Erf), &[xs], "e").unwrap();
    let one = c(&mut g, 1.0);
    let t = bin(&mut g, BinaryOp::Add, one, e);
    let half = c(&mut g, 0.5);
    let hx = bin(&mut g, BinaryOp::Mul, half, x);
    let y = bin(&mut g, BinaryOp::Mul, hx, t);
    g.outputs.push(("y".into(), y));
    check_raised(g, "gelu", h);
}

/// The tanh approximation with `x * x * x` instead of `pow(x, 3)`.
#[test]
fn gelu_tanh_with_products() {
    let h = 4;
    let mut g = Graph::new();
    let x = hidden_input(&mut g, h);
    let xx = bin(&mut g, BinaryOp::Mul, x, x);
    let x3 = bin(&mut g, BinaryOp::Mul, xx, x);
    let k1 = c(&mut g, 0.044715);
    let kx3 = bin(&mut g, BinaryOp::Mul, x3, k1);
    let s = bin(&mut g, BinaryOp::Add, x, kx3);
    let k2 = c(&mut g, (2.0 / std::f32::consts::PI).sqrt());
    let inner = bin(&mut g, BinaryOp::Mul, k2, s);
    let th = g.add(Op::Unary(UnaryOp::Tanh), &[inner], "t").unwrap();
    let one = c(&mut g, 1.0);
    let t = bin(&mut g, BinaryOp::Add, th, one);
    let half = c(&mut g, 0.5);
    let p = bin(&mut g, BinaryOp::Mul, x, t);
    let y = bin(&mut g, BinaryOp::Mul, p, half);
    g.outputs.push(("y".into(), y));
    check_raised(g, "gelu", h);
}

/// `0.4 * x * (1 + erf(...))` is not a GELU.
#[test]
fn wrong_gelu_constant_is_not_raised() {
    let h = 4;
    let mut g = Graph::new();
    let x = hidden_input(&mut g, h);
    let k = c(&mut g, std::f32::consts::SQRT_2);
    let xs = bin(&mut g, BinaryOp::Div, x, k);
    let e = g.add(Op::Unary(UnaryOp::Erf), &[xs], "e").unwrap();
    let one = c(&mut g, 1.0);
    let t = bin(&mut g, BinaryOp::Add, e, one);
    let p = bin(&mut g, BinaryOp::Mul, x, t);
    let bad = c(&mut g, 0.4);
    let y = bin(&mut g, BinaryOp::Mul, p, bad);
    g.outputs.push(("y".into(), y));
    canonicalize(&mut g).unwrap();
    assert!(!g.op_counts().iter().any(|(op, _)| *op == "gelu"));
}

/// A matmul by a constant without bias, and a Gemm with a `[1, n]` bias and no transpose.
#[test]
fn linear_without_bias_and_gemm() {
    let (h, n) = (6, 5);
    let mut g = Graph::new();
    let x = hidden_input(&mut g, h);
    let w = g.add_const("w", Tensor::from_f32(vec![h, n], &weights(h * n, 3)));
    let y = g.add(Op::MatMul, &[x, w], "mm").unwrap();
    g.outputs.push(("y".into(), y));
    check_raised(g, "linear", h);

    let mut g = Graph::new();
    let x = g.add_input(
        "x",
        TensorType::new(DType::F32, vec![Dim::BATCH, Dim::c(h as i64)]),
    );
    let w = g.add_const("w", Tensor::from_f32(vec![h, n], &weights(h * n, 4)));
    let b = g.add_const("b", Tensor::from_f32(vec![1, n], &weights(n, 5)));
    let y = g
        .add(
            Op::Gemm {
                alpha: 1.0,
                beta: 1.0,
                trans_a: false,
                trans_b: false,
            },
            &[x, w, b],
            "gemm",
        )
        .unwrap();
    g.outputs.push(("y".into(), y));
    let xv = weights(3 * h, 9);
    let before = run(&g, xv.clone(), vec![3, h]);
    canonicalize(&mut g).unwrap();
    assert_eq!(g.op_counts(), vec![("linear", 1)]);
    let after = run(&g, xv, vec![3, h]);
    assert!(before.iter().zip(&after).all(|(a, b)| (a - b).abs() < 1e-5));
}

/// How the hand-built attention applies the mask.
#[derive(Clone, Copy)]
enum MaskStyle {
    /// `(1 - mask) * -10000`, as transformers 3 and 4 exported it.
    Old,
    /// `mask * -10000`: inverted, wrong; must not be raised as a padding mask.
    Inverted,
}

/// Attention over `x[b, s, 8]` with 2 heads: q scaled by 1/sqrt(d) before the product, k
/// transposed in two steps, the mask built from an i64 `attention_mask` input.
fn attention_graph(style: MaskStyle) -> Graph {
    let (h, heads, d) = (8usize, 2usize, 4usize);
    let mut g = Graph::new();
    let x = hidden_input(&mut g, h);
    let mask = g.add_input(
        "attention_mask",
        TensorType::new(DType::I64, vec![Dim::BATCH, Dim::SEQ]),
    );
    let proj = |g: &mut Graph, seed| {
        let w = g.add_const("w", Tensor::from_f32(vec![h, h], &weights(h * h, seed)));
        g.add(Op::MatMul, &[x, w], "p").unwrap()
    };
    let (q, k, v) = (proj(&mut g, 11), proj(&mut g, 12), proj(&mut g, 13));
    let split = |g: &mut Graph, t: NodeId| {
        let shape = g.add_const(
            "shape",
            Tensor::from_i64(vec![4], &[0, 0, heads as i64, d as i64]),
        );
        let r = g
            .add(Op::Reshape { allowzero: false }, &[t, shape], "r")
            .unwrap();
        g.add(
            Op::Transpose {
                perm: vec![0, 2, 1, 3],
            },
            &[r],
            "t",
        )
        .unwrap()
    };
    let sd = c(&mut g, (d as f32).sqrt());
    let qs = bin(&mut g, BinaryOp::Div, q, sd);
    let qh = split(&mut g, qs);
    let kh = split(&mut g, k);
    let kt = g
        .add(
            Op::Transpose {
                perm: vec![0, 1, 3, 2],
            },
            &[kh],
            "kt",
        )
        .unwrap();
    let vh = split(&mut g, v);
    let scores = g.add(Op::MatMul, &[qh, kt], "s").unwrap();
    let mf = g.add(Op::Cast { to: DType::F32 }, &[mask], "mf").unwrap();
    let m1 = g
        .add(Op::Unsqueeze { axes: vec![1, 2] }, &[mf], "m1")
        .unwrap();
    let big = c(&mut g, -10000.0);
    let add_mask = match style {
        MaskStyle::Old => {
            let one = c(&mut g, 1.0);
            let inv = bin(&mut g, BinaryOp::Sub, one, m1);
            bin(&mut g, BinaryOp::Mul, inv, big)
        }
        MaskStyle::Inverted => bin(&mut g, BinaryOp::Mul, m1, big),
    };
    let sm_in = bin(&mut g, BinaryOp::Add, scores, add_mask);
    let p = g.add(Op::Softmax { axis: -1 }, &[sm_in], "sm").unwrap();
    let o = g.add(Op::MatMul, &[p, vh], "o").unwrap();
    let ot = g
        .add(
            Op::Transpose {
                perm: vec![0, 2, 1, 3],
            },
            &[o],
            "ot",
        )
        .unwrap();
    let shape = g.add_const("shape", Tensor::from_i64(vec![3], &[0, 0, -1]));
    let y = g
        .add(Op::Reshape { allowzero: false }, &[ot, shape], "y")
        .unwrap();
    g.outputs.push(("y".into(), y));
    g
}

fn run_attention(g: &Graph) -> Vec<f32> {
    let x = Value::f32(vec![2, 3, 8], weights(48, 21));
    let m = Value::i64(vec![2, 3], vec![1, 1, 1, 1, 1, 0]);
    interp::run(g, &[("x", x), ("attention_mask", m)]).unwrap()[0]
        .1
        .as_f32()
        .unwrap()
        .to_vec()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

#[test]
fn attention_with_old_mask_and_scaled_query() {
    let mut g = attention_graph(MaskStyle::Old);
    let before = run_attention(&g);
    canonicalize(&mut g).unwrap();
    let text = g.to_text();
    assert!(
        text.contains("attention(") && text.contains("%attention_mask) heads=2 scale=0.5"),
        "{text}"
    );
    let err = max_diff(&before, &run_attention(&g));
    assert!(err < 1e-5, "{err}");
}

#[test]
fn attention_with_a_wrong_mask_is_not_raised() {
    let mut g = attention_graph(MaskStyle::Inverted);
    let before = run_attention(&g);
    canonicalize(&mut g).unwrap();
    assert!(
        !g.op_counts().iter().any(|(op, _)| *op == "attention"),
        "{}",
        g.to_text()
    );
    // the same values: the projections became linears (fused multiply-add chains, where the
    // op soup's matmul rounds each product), nothing else
    let err = max_diff(&before, &run_attention(&g));
    assert!(err < 1e-5, "{err}");
}
