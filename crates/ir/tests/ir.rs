//! The IR's verifier rejects malformed graphs with the node it found, and `Graph::add`
//! refuses operands that do not fit.

use bertc_ir::{BinaryOp, DType, Dim, Graph, IrError, Op, Tensor, TensorType};

fn x(g: &mut Graph) -> bertc_ir::NodeId {
    g.add_input(
        "x",
        TensorType::new(DType::F32, vec![Dim::BATCH, Dim::SEQ, Dim::c(4)]),
    )
}

#[test]
fn add_rejects_operands_that_do_not_fit() {
    let mut g = Graph::new();
    let a = x(&mut g);
    let w = g.add_const("w", Tensor::from_f32(vec![3, 5], &[0.0; 15]));
    let e = g.add(Op::Linear, &[a, w], "proj").unwrap_err();
    assert!(matches!(e, IrError::Type { .. }));
    assert_eq!(
        e.to_string(),
        "node 'proj' (linear): linear input width: 5 does not match 4"
    );
    let i = g.add_const("i", Tensor::from_i64(vec![2], &[1, 2]));
    let e = g
        .add(Op::Binary(BinaryOp::Add), &[a, i], "sum")
        .unwrap_err();
    assert!(e.to_string().contains("operand types differ"), "{e}");
    let b = g.add_input(
        "y",
        TensorType::new(DType::F32, vec![Dim::SEQ, Dim::BATCH, Dim::c(4)]),
    );
    let e = g
        .add(Op::Binary(BinaryOp::Add), &[a, b], "sum")
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("cannot broadcast [batch,seq,4] with [seq,batch,4]"),
        "{e}"
    );
}

#[test]
fn verify_finds_a_missing_operand() {
    let mut g = Graph::new();
    let a = x(&mut g);
    let b = g.add_const("b", Tensor::from_f32(vec![4], &[1.0; 4]));
    let s = g.add(Op::Binary(BinaryOp::Add), &[a, b], "sum").unwrap();
    g.outputs.push(("y".into(), s));
    g.verify().unwrap();
    g.remove_node(b);
    let e = g.verify().unwrap_err();
    assert!(matches!(e, IrError::Verify { .. }));
    assert!(e.to_string().contains("'sum'"), "{e}");
}

#[test]
fn verify_finds_a_dangling_slot_and_a_wrong_type() {
    let mut g = Graph::new();
    let a = x(&mut g);
    let t = g
        .add(Op::Unary(bertc_ir::UnaryOp::Tanh), &[a], "act")
        .unwrap();
    g.outputs.push(("y".into(), t));
    g.add_raw_edge(a, t, 3);
    let e = g.verify().unwrap_err();
    assert!(e.to_string().contains("operand slots"), "{e}");

    let mut g = Graph::new();
    let a = x(&mut g);
    let t = g
        .add(Op::Unary(bertc_ir::UnaryOp::Tanh), &[a], "act")
        .unwrap();
    g.outputs.push(("y".into(), t));
    g.node_mut(t).ty = TensorType::new(DType::F32, vec![Dim::BATCH, Dim::c(4)]);
    let e = g.verify().unwrap_err();
    assert!(
        e.to_string()
            .contains("stored type f32[batch,4] but operands give f32[batch,seq,4]"),
        "{e}"
    );
}

#[test]
fn verify_finds_a_cycle_and_a_missing_output() {
    let mut g = Graph::new();
    let a = x(&mut g);
    let t = g
        .add(Op::Unary(bertc_ir::UnaryOp::Tanh), &[a], "t1")
        .unwrap();
    let u = g
        .add(Op::Unary(bertc_ir::UnaryOp::Tanh), &[t], "t2")
        .unwrap();
    g.outputs.push(("y".into(), u));
    g.add_raw_edge(u, t, 1);
    assert!(matches!(g.verify().unwrap_err(), IrError::Cycle));

    let mut g = Graph::new();
    let a = x(&mut g);
    let t = g
        .add(Op::Unary(bertc_ir::UnaryOp::Tanh), &[a], "t1")
        .unwrap();
    g.outputs.push(("y".into(), t));
    g.remove_node(t);
    assert!(matches!(g.verify().unwrap_err(), IrError::NoOutput(_)));
}

#[test]
fn symbolic_shapes_resolve_through_reshape() {
    let mut g = Graph::new();
    let a = x(&mut g);
    // reshape [batch, seq, 4] -> [-1, 2] -> [batch, seq*2, 2]
    let s1 = g.add_const("s1", Tensor::from_i64(vec![2], &[-1, 2]));
    let r1 = g
        .add(Op::Reshape { allowzero: false }, &[a, s1], "r1")
        .unwrap();
    assert_eq!(g.ty(r1).to_string(), "f32[2*batch*seq,2]");
    let shape = g
        .add(
            Op::Shape {
                start: 0,
                end: None,
            },
            &[a],
            "shape",
        )
        .unwrap();
    assert_eq!(
        g.node(shape).known.as_ref().unwrap(),
        &vec![Dim::BATCH, Dim::SEQ, Dim::c(4)]
    );
}
