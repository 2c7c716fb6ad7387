//! Quantized graphs as ONNX Runtime's quantizer writes them: `quantize_dynamic`
//! (`DynamicQuantizeLinear` + `MatMulInteger`, a quantized embedding table `Gather` +
//! `DequantizeLinear`), static QDQ (`QuantizeLinear`/`DequantizeLinear` pairs, per tensor and
//! per axis), `QLinearMatMul`, and ORT's fused `MatMulIntegerToFloat` and
//! `DynamicQuantizeMatMul`. Each is imported as the integer and float ops that define it, so
//! that the interpreter executes the file's own arithmetic: round half to even, saturation to
//! the integer type, exact integer sums (ONNX's definitions; ORT's `DynamicQuantizeLinear`
//! takes a scale of 1 for an all-zero tensor, as here).
//!
//! Dynamically quantized graphs are raised for code generation by the `raise-quantized` pass
//! (the activation quantization kept as `dynamic_quantize`, the integer weights as f32), static QDQ
//! pairs by `raise-qdq` (each pair one `qdq` quantization point). `QLinearMatMul` (ONNX
//! Runtime's operator format) runs in `bertc run`; `bertc compile` stops at it with an error
//! naming the node (`interpreted_only_node`).

use bertc_ir::{BinaryOp, DType, Dim, NodeId, Op, ReduceKind, UnaryOp};

use super::compose::Composer;
use super::proto::NodeProto;
use super::{Attrs, Builder};
use crate::ImportError;
use prost::Message;
use std::path::Path;

/// The default-domain quantization ops the importer claims.
pub const QUANT_OPS: &[&str] = &[
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "MatMulInteger",
    "QLinearMatMul",
    "QuantizeLinear",
];

/// The quantization ops of ONNX Runtime's `com.microsoft` domain the importer claims.
pub const QUANT_CONTRIB_OPS: &[&str] = &["DynamicQuantizeMatMul", "MatMulIntegerToFloat"];

/// The quantization ops that `bertc run` executes but code generation does not: ONNX
/// Runtime's operator format (`QuantFormat.QOperator`) multiplies quantized integers inside
/// attention, which bertc's kernels compute in f32.
pub const INTERPRETED_ONLY_OPS: &[&str] = &["QLinearMatMul"];

/// The first node of `INTERPRETED_ONLY_OPS` in an ONNX file (`(node, op)`), if any, which the
/// driver reports before compiling. `None` also when the file does not decode (the import
/// reports that).
pub fn interpreted_only_node(path: &Path) -> Option<(String, String)> {
    let bytes = std::fs::read(path).ok()?;
    let model = super::proto::ModelProto::decode(&bytes[..]).ok()?;
    model.graph?.node.into_iter().find_map(|n| {
        let default = n.domain.is_empty() || n.domain == "ai.onnx";
        let only = default && INTERPRETED_ONLY_OPS.contains(&n.op_type.as_str());
        only.then(|| {
            let name = if n.name.is_empty() {
                n.output.first().cloned().unwrap_or_default()
            } else {
                n.name
            };
            (name, n.op_type)
        })
    })
}

/// The value range of a quantized integer type.
fn range(t: DType) -> Option<(f32, f32)> {
    Some(match t {
        DType::U8 => (0.0, 255.0),
        DType::I8 => (-128.0, 127.0),
        DType::I16 => (-32768.0, 32767.0),
        _ => return None,
    })
}

impl Composer<'_> {
    /// `scale` (and a zero point) shaped to broadcast along `axis` of `x`: a scalar or a
    /// one-element tensor as it is, a 1-D tensor of `x`'s size on that axis as `[C, 1, ..]`.
    fn along_axis(
        &mut self,
        p: NodeId,
        x: NodeId,
        axis: i64,
        s: &str,
    ) -> Result<NodeId, ImportError> {
        let pt = self.b.g.ty(p).clone();
        if pt.rank() == 0 || pt.static_numel() == Some(1) {
            return Ok(p);
        }
        let xr = self.b.g.ty(x).rank() as i64;
        let ax = if axis < 0 { axis + xr } else { axis };
        if pt.rank() != 1 || !(0..xr).contains(&ax) || pt.shape[0] != self.dims(x)[ax as usize] {
            return Err(self.err(format!(
                "{s} of shape {pt} does not apply along axis {axis} of {} (blocked quantization is not supported)",
                self.b.g.ty(x)
            )));
        }
        let trailing = (xr - 1 - ax) as usize;
        if trailing == 0 {
            return Ok(p);
        }
        let mut shape = vec![pt.shape[0]];
        shape.extend(std::iter::repeat_n(Dim::c(1), trailing));
        self.add(Op::ReshapeTo { shape }, &[p], &format!("{s}_axis"))
    }

    fn cast(&mut self, x: NodeId, to: DType, s: &str) -> Result<NodeId, ImportError> {
        if self.b.g.ty(x).dtype == to {
            return Ok(x);
        }
        self.add(Op::Cast { to }, &[x], s)
    }

    /// `saturate(round(x / scale) + zp)` as `to` (`zp` already shaped, f32).
    fn quantize(
        &mut self,
        x: NodeId,
        scale: NodeId,
        zp: Option<NodeId>,
        to: DType,
    ) -> Result<NodeId, ImportError> {
        let (lo, hi) = range(to).ok_or_else(|| {
            self.err(format!(
                "quantization to {to} is not supported (uint8, int8, int16)"
            ))
        })?;
        let d = self.bin(BinaryOp::Div, x, scale, "scaled")?;
        let r = self.un(UnaryOp::Round, d, "rounded")?;
        let z = self.plus(r, zp, "shifted")?;
        let lo = self.scalar(lo, "qmin");
        let hi = self.scalar(hi, "qmax");
        let c = self.bin(BinaryOp::Max, z, lo, "above")?;
        let c = self.bin(BinaryOp::Min, c, hi, "saturated")?;
        self.add(Op::Cast { to }, &[c], "")
    }

    /// `(x - zp)` in i32, with `zp` a scalar or, for `per_row`, one value per row of `x`.
    fn centered(
        &mut self,
        x: NodeId,
        zp: Option<NodeId>,
        per_row: bool,
        s: &str,
    ) -> Result<NodeId, ImportError> {
        let xi = self.cast(x, DType::I32, &format!("{s}_i32"))?;
        let Some(zp) = zp else { return Ok(xi) };
        let mut z = self.cast(zp, DType::I32, &format!("{s}_zp_i32"))?;
        if per_row && self.b.g.ty(z).rank() == 1 && self.b.g.ty(z).static_numel() != Some(1) {
            z = self.add(
                Op::Unsqueeze { axes: vec![1] },
                &[z],
                &format!("{s}_zp_col"),
            )?;
        }
        self.bin(BinaryOp::Sub, xi, z, &format!("{s}_centered"))
    }

    /// `MatMulInteger(a, b, a_zp, b_zp)`: exact i32 sums of `(a - a_zp)(b - b_zp)`.
    fn matmul_integer(
        &mut self,
        a: NodeId,
        b: NodeId,
        a_zp: Option<NodeId>,
        b_zp: Option<NodeId>,
    ) -> Result<NodeId, ImportError> {
        let a = self.centered(a, a_zp, true, "a")?;
        let b = self.centered(b, b_zp, false, "b")?;
        self.add(Op::MatMul, &[a, b], "acc")
    }

    /// `DynamicQuantizeLinear(x)`: `(y, scale, zero_point)`, uint8 over the whole tensor.
    fn dynamic_quantize(&mut self, x: NodeId) -> Result<[NodeId; 3], ImportError> {
        let all = |keepdims| Op::Reduce {
            kind: ReduceKind::Max,
            axes: vec![],
            keepdims,
        };
        let zero = self.scalar(0.0, "zero");
        let max = self.add(all(false), &[x], "max")?;
        let max = self.bin(BinaryOp::Max, max, zero, "max0")?;
        let neg = self.un(UnaryOp::Neg, x, "neg")?;
        let negmin = self.add(all(false), &[neg], "negmin")?;
        let min = self.un(UnaryOp::Neg, negmin, "min")?;
        let min = self.bin(BinaryOp::Min, min, zero, "min0")?;
        let span = self.bin(BinaryOp::Sub, max, min, "span")?;
        let q = self.scalar(255.0, "levels");
        let scale = self.bin(BinaryOp::Div, span, q, "raw_scale")?;
        // ONNX Runtime: a scale of 1 when the range is empty (an all-zero tensor)
        let empty = self.bin(BinaryOp::Equal, max, min, "empty")?;
        let one = self.scalar(1.0, "one");
        let scale = self.add(Op::Where, &[empty, one, scale], "y_scale")?;
        let m = self.bin(BinaryOp::Div, min, scale, "min_scaled")?;
        let zp = self.un(UnaryOp::Neg, m, "zp_raw")?;
        let hi = self.scalar(255.0, "zp_max");
        let zp = self.bin(BinaryOp::Max, zp, zero, "zp_lo")?;
        let zp = self.bin(BinaryOp::Min, zp, hi, "zp_hi")?;
        let zp = self.un(UnaryOp::Round, zp, "zp_f")?;
        let y = self.quantize(x, scale, Some(zp), DType::U8)?;
        let zp8 = self.add(Op::Cast { to: DType::U8 }, &[zp], "y_zero_point")?;
        Ok([y, scale, zp8])
    }
}

impl Builder {
    /// Imports a quantization node: the value of each output (`None`: not computed).
    pub(super) fn add_quant(
        &mut self,
        node: &NodeProto,
        name: &str,
        ins: Vec<Option<NodeId>>,
    ) -> Result<Vec<Option<NodeId>>, ImportError> {
        let attrs = Attrs(&node.attribute);
        let mut f = Composer::new(self, node, name, ins);
        let axis = attrs.int("axis").unwrap_or(1);
        if attrs.int("block_size").unwrap_or(0) != 0 {
            return Err(f.err("blocked quantization (block_size) is not supported"));
        }
        Ok(match node.op_type.as_str() {
            "QuantizeLinear" => {
                let x = f.req(0, "x")?;
                let scale = f.req(1, "y_scale")?;
                let to = match (f.opt(2), attrs.int("output_dtype").unwrap_or(0)) {
                    (Some(z), _) => f.b.g.ty(z).dtype,
                    (None, 0) => DType::U8,
                    (None, t) => DType::from_onnx(t as i32)
                        .ok_or_else(|| f.err(format!("unsupported output_dtype {t}")))?,
                };
                if attrs.int("saturate").unwrap_or(1) == 0 {
                    return Err(f.err("saturate = 0 is not supported"));
                }
                let scale = f.along_axis(scale, x, axis, "y_scale")?;
                let zp = match f.opt(2) {
                    Some(z) => {
                        let z = f.along_axis(z, x, axis, "y_zero_point")?;
                        Some(f.cast(z, DType::F32, "zp_f32")?)
                    }
                    None => None,
                };
                vec![Some(f.quantize(x, scale, zp, to)?)]
            }
            "DequantizeLinear" => {
                let x = f.req(0, "x")?;
                let scale = f.req(1, "x_scale")?;
                let scale = f.along_axis(scale, x, axis, "x_scale")?;
                let xf = f.cast(x, DType::F32, "x_f32")?;
                let centered = match f.opt(2) {
                    Some(z) => {
                        let z = f.along_axis(z, x, axis, "x_zero_point")?;
                        let zf = f.cast(z, DType::F32, "zp_f32")?;
                        f.bin(BinaryOp::Sub, xf, zf, "centered")?
                    }
                    None => xf,
                };
                vec![Some(f.bin(BinaryOp::Mul, centered, scale, "")?)]
            }
            "DynamicQuantizeLinear" => {
                let x = f.req(0, "x")?;
                f.dynamic_quantize(x)?.map(Some).to_vec()
            }
            "MatMulInteger" => {
                let (a, b) = (f.req(0, "A")?, f.req(1, "B")?);
                let (az, bz) = (f.opt(2), f.opt(3));
                vec![Some(f.matmul_integer(a, b, az, bz)?)]
            }
            "QLinearMatMul" => {
                let a = f.req(0, "a")?;
                let (a_s, a_z) = (f.req(1, "a_scale")?, f.req(2, "a_zero_point")?);
                let b = f.req(3, "b")?;
                let (b_s, b_z) = (f.req(4, "b_scale")?, f.req(5, "b_zero_point")?);
                let (y_s, y_z) = (f.req(6, "y_scale")?, f.req(7, "y_zero_point")?);
                let acc = f.matmul_integer(a, b, Some(a_z), Some(b_z))?;
                let acc = f.cast(acc, DType::F32, "acc_f32")?;
                // ONNX Runtime's requantization: acc * (a_scale * b_scale / y_scale)
                let ab = f.bin(BinaryOp::Mul, a_s, b_s, "ab_scale")?;
                let m = f.bin(BinaryOp::Div, ab, y_s, "multiplier")?;
                let r = f.bin(BinaryOp::Mul, acc, m, "requant")?;
                let one = f.scalar(1.0, "unit");
                let to = f.b.g.ty(y_z).dtype;
                let zf = f.cast(y_z, DType::F32, "y_zp_f32")?;
                vec![Some(f.quantize(r, one, Some(zf), to)?)]
            }
            "MatMulIntegerToFloat" | "DynamicQuantizeMatMul" => {
                let dynamic = node.op_type == "DynamicQuantizeMatMul";
                let (a, b) = (f.req(0, "A")?, f.req(1, "B")?);
                let (a, a_s, a_z, b_s, b_z, bias) = if dynamic {
                    let [q, s, z] = f.dynamic_quantize(a)?;
                    (q, s, Some(z), f.req(2, "b_scale")?, f.opt(3), f.opt(4))
                } else {
                    let a_s = f.req(2, "a_scale")?;
                    let b_s = f.req(3, "b_scale")?;
                    (a, a_s, f.opt(4), b_s, f.opt(5), f.opt(6))
                };
                let acc = f.matmul_integer(a, b, a_z, b_z)?;
                let acc = f.cast(acc, DType::F32, "acc_f32")?;
                let s = f.bin(BinaryOp::Mul, a_s, b_s, "scale")?;
                let y = f.bin(BinaryOp::Mul, acc, s, "scaled_acc")?;
                vec![Some(f.plus(y, bias, "")?)]
            }
            _ => {
                return Err(ImportError::UnsupportedOp {
                    file: f.b.file.clone(),
                    node: name.into(),
                    op: node.op_type.clone(),
                })
            }
        })
    }
}
