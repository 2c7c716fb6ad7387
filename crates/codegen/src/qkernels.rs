//! The portable kernels of int8 linears in Cranelift IR: the per-row activation quantizer
//! (every target runs it) and the int8 GEMM tile for targets whose ISA registers no int8
//! microkernel. Both compute exactly what `Op::QLinear` defines, so that the interpreter is
//! their oracle: the quantizer with the same f32 operations, the tile with exact i32 sums and
//! one fused multiply-add for `acc · (s_x · w_scale) + b`.

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{types, Endianness, FuncRef, InstBuilder, MemFlagsData, Value};
use cranelift_frontend::Variable;

use crate::emit::{mem, Emit, Shape, ROUND_MAGIC};
use crate::kernels::row_range;
use crate::linear::Tile;
use crate::lower::{quant_row_floats, QFormat, QuantRows, PANEL, QPANEL_HEADER};

/// Quantizes the rows of row-block tasks `begin..end` of `x` (`k` f32 each; with `smooth`,
/// each times the `k` multipliers there first) to `abits` bits into `out` in rows of `format`
/// (`quant_row_floats(k, format)` floats a row: the integers as i16 (`Pairs`) or as i8
/// (`Quads`, `Octs`: `abits <= 8`), a zero pad to the format's group, for those the i32 term
/// `-128 Σ xq`, the scale, unused floats up to the row's alignment): `amax = max |x|` (NaN if any element
/// is), `inv = q / amax`, `xq = round_ne(clamp(x · inv, -q, q))`, `s = amax / q`; a row whose
/// `amax` is 0, infinite or NaN gets zeros and `s = 0`.
pub fn quantize(
    e: &mut Emit,
    [x, out, rows]: [Value; 3],
    [begin, end]: [Value; 2],
    k: usize,
    (abits, format): (u8, QFormat),
    smooth: Option<Value>,
) {
    assert!(format == QFormat::Pairs || abits <= 8, "fours hold bytes");
    let q = ((1i32 << (abits - 1)) - 1) as f32;
    let (r0, r1) = row_range(e, begin, end, rows);
    let ldx = k as i64 * 4;
    let ldo = quant_row_floats(k, format) as i64 * 4;
    let quads = format.has_sum_term();
    e.for_range(r0, r1, 1, |e, r| {
        let xr = e.addr(x, r, ldx);
        let or = e.addr(out, r, ldo);
        // the maximum magnitude; fmax propagates NaN
        let vt = e.vty();
        let vz = e.fs(Shape::Vector, 0.0);
        let sz = e.f(0.0);
        let vmax = e.var(vt, vz);
        let smax = e.var(types::F32, sz);
        // x, times the smoothing multipliers when there are
        let value = |e: &mut Emit, off: Value, s: Shape| {
            let a = e.b.ins().iadd(xr, off);
            let v = e.load(s, a, 0);
            match smooth {
                Some(m) => {
                    let ma = e.b.ins().iadd(m, off);
                    let mv = e.load(s, ma, 0);
                    e.b.ins().fmul(v, mv)
                }
                None => v,
            }
        };
        e.row(k, |e, off, s| {
            let v = value(e, off, s);
            let v = e.b.ins().fabs(v);
            let acc = if s == Shape::Vector && e.lanes > 1 {
                vmax
            } else {
                smax
            };
            let m = e.b.use_var(acc);
            let m = e.b.ins().fmax(m, v);
            e.b.def_var(acc, m);
        });
        let amax = e.max_of(vmax, smax);
        // usable: 0 < amax < inf (false for NaN)
        let zero = e.f(0.0);
        let inf = e.f(f32::INFINITY);
        let pos = e.b.ins().fcmp(FloatCC::GreaterThan, amax, zero);
        let fin = e.b.ins().fcmp(FloatCC::LessThan, amax, inf);
        let ok = e.b.ins().band(pos, fin);
        let qc = e.f(q);
        let inv = e.b.ins().fdiv(qc, amax);
        let inv = e.b.ins().select(ok, inv, zero);
        let scale = e.b.ins().fdiv(amax, qc);
        let scale = e.b.ins().select(ok, scale, zero);
        // fours: the sum of the row's integers
        let vsum = (e.lanes > 1).then(|| {
            let z = e.b.ins().iconst(types::I32, 0);
            let z = e.b.ins().splat(types::I32X4, z);
            e.var(types::I32X4, z)
        });
        let ssum = e.b.ins().iconst(types::I32, 0);
        let ssum = e.var(types::I32, ssum);
        e.row(k, |e, off, s| {
            let v = value(e, off, s);
            let iv = e.splat(s, inv);
            let y = e.b.ins().fmul(v, iv);
            let lo = e.fs(s, -q);
            let hi = e.fs(s, q);
            let y = e.b.ins().fmax(y, lo);
            let y = e.b.ins().fmin(y, hi);
            let m = e.fs(s, ROUND_MAGIC);
            let y = e.b.ins().fadd(y, m);
            let y = e.b.ins().fsub(y, m);
            // NaN (x infinite in a row scaled by 0) converts to 0
            let it = if s == Shape::Vector && e.lanes > 1 {
                types::I32X4
            } else {
                types::I32
            };
            let i = e.b.ins().fcvt_to_sint_sat(it, y);
            let flags = MemFlagsData::new().with_endianness(Endianness::Little);
            if quads {
                // element offset `off / 4`, a byte each
                let oa = e.b.ins().ushr_imm_u(off, 2);
                let oa = e.b.ins().iadd(or, oa);
                let acc = match vsum {
                    Some(v) if it != types::I32 => v,
                    _ => ssum,
                };
                let sum = e.b.use_var(acc);
                let sum = e.b.ins().iadd(sum, i);
                e.b.def_var(acc, sum);
                if it == types::I32 {
                    e.b.ins().istore8(mem(), i, oa, 0);
                } else {
                    let n = e.b.ins().snarrow(i, i);
                    let n = e.b.ins().snarrow(n, n);
                    let w = e.b.ins().bitcast(types::I32X4, flags, n);
                    let w = e.b.ins().extractlane(w, 0);
                    e.b.ins().store(mem(), w, oa, 0);
                }
                return;
            }
            // element offset `off / 4`, two bytes each
            let o = e.b.ins().ushr_imm_u(off, 1);
            let oa = e.b.ins().iadd(or, o);
            if it == types::I32 {
                e.b.ins().istore16(mem(), i, oa, 0);
            } else {
                let n = e.b.ins().snarrow(i, i);
                let w = e.b.ins().bitcast(types::I64X2, flags, n);
                let w = e.b.ins().extractlane(w, 0);
                e.b.ins().store(mem(), w, oa, 0);
            }
        });
        // the pad to the group, then (fours) the sum term, then the scale
        let z = e.b.ins().iconst(types::I32, 0);
        let bytes = if quads { 1 } else { 2 };
        for pad in k..k.next_multiple_of(format.group()) {
            let at = (pad * bytes) as i32;
            if quads {
                e.b.ins().istore8(mem(), z, or, at);
            } else {
                e.b.ins().istore16(mem(), z, or, at);
            }
        }
        let at = format.scale_offset(k) as i32;
        if quads {
            let mut total = e.b.use_var(ssum);
            if let Some(v) = vsum {
                let v = e.b.use_var(v);
                for l in 0..4 {
                    let x = e.b.ins().extractlane(v, l);
                    total = e.b.ins().iadd(total, x);
                }
            }
            let term = e.b.ins().imul_imm_s(total, -128);
            e.b.ins().store(mem(), term, or, at - 4);
        }
        e.b.ins().store(mem(), scale, or, at);
    });
}

/// The rows of tasks `begin..end` quantized to `abits` bits as `quantize` defines it, in
/// rows of `format`: through the ISA's hand-written row quantizer `asm` when it has one, else
/// the portable code.
pub fn quantize_rows(
    e: &mut Emit,
    args: [Value; 3],
    range: [Value; 2],
    k: usize,
    (rows, smooth): (QuantRows, Option<Value>),
    asm: Option<FuncRef>,
) {
    assert_eq!(rows.smooth.is_some(), smooth.is_some());
    match asm {
        Some(f) => quantize_asm(e, args, range, k, (rows.format, smooth), f),
        None => quantize(e, args, range, k, (rows.abits, rows.format), smooth),
    }
}

/// `quantize` through the ISA's hand-written row quantizer `f` (one call for the task's rows).
fn quantize_asm(
    e: &mut Emit,
    [x, out, rows]: [Value; 3],
    [begin, end]: [Value; 2],
    k: usize,
    (format, smooth): (QFormat, Option<Value>),
    f: FuncRef,
) {
    let (r0, r1) = row_range(e, begin, end, rows);
    let ldx = k as i64 * 4;
    let ldo = quant_row_floats(k, format) as i64 * 4;
    let xr = e.addr(x, r0, ldx);
    let or = e.addr(out, r0, ldo);
    let n = e.b.ins().isub(r1, r0);
    let kk = e.i(k as i64);
    let (lx, lo) = (e.i(ldx), e.i(ldo));
    let mut args = vec![xr, or, n, kk, lx, lo];
    args.extend(smooth);
    e.b.ins().call(f, &args);
}

/// Rows per tile of the portable int8 GEMM: `4 / lanes` accumulators a row for 8 columns
/// (each vector holds two columns' partial sums over the pairs of k), the widened weights
/// and one broadcast row within the registers.
pub fn portable_qmr(lanes: usize, regs: usize) -> usize {
    let acc = if lanes > 1 { 4 } else { 8 };
    (regs.saturating_sub(acc + 2) / acc).clamp(1, 4)
}

/// `fma(a, b, c)` rounded once: the instruction where the target has it, else in f64 (the
/// product of two f32 is exact there; the sum may round twice).
fn fma_once(e: &mut Emit, a: Value, b: Value, c: Value) -> Value {
    if e.fma {
        return e.b.ins().fma(a, b, c);
    }
    let [a, b, c] = [a, b, c].map(|v| e.b.ins().fpromote(types::F64, v));
    let p = e.b.ins().fmul(a, b);
    let s = e.b.ins().fadd(p, c);
    e.b.ins().fdemote(types::F32, s)
}

/// One tile of the portable int8 GEMM into `t.c`: `t.m` rows of the quantized input (stride
/// `lda` bytes, `pairs` pairs of k, the row scale after them) times the int8 panel `t.bp`,
/// dequantized with the bias, `t.ncols` columns stored (row stride `ldc` bytes).
pub fn portable_qtile(e: &mut Emit, t: &Tile, pairs: usize, lda: i64, ldc: i64) {
    for col0 in (0..t.ncols).step_by(8) {
        let store = (t.ncols - col0).min(8);
        let sums = if e.lanes > 1 {
            vector_sums(e, t, pairs, lda, col0)
        } else {
            scalar_sums(e, t, pairs, lda, col0)
        };
        for (i, row) in sums.iter().enumerate() {
            let arow = e.b.ins().iadd_imm_s(t.a, i as i64 * lda);
            let rs = e.b.ins().load(types::F32, mem(), arow, (pairs * 4) as i32);
            for (j, &acc) in row.iter().enumerate().take(store) {
                let col = (col0 + j) as i32;
                let cs =
                    e.b.ins()
                        .load(types::F32, mem(), t.bp, (PANEL as i32 + col) * 4);
                let bias = e.b.ins().load(types::F32, mem(), t.bp, col * 4);
                let af = e.b.ins().fcvt_from_sint(types::F32, acc);
                let sc = e.b.ins().fmul(rs, cs);
                let y = fma_once(e, af, sc, bias);
                let off = i as i64 * ldc + col as i64 * 4;
                e.b.ins().store(mem(), y, t.c, off as i32);
            }
        }
    }
}

/// The i32 sums of 8 columns from `col0` for each row of the tile, on i32x4 vectors: each
/// vector holds two columns' sums of the even and the odd k, added at the end.
fn vector_sums(e: &mut Emit, t: &Tile, pairs: usize, lda: i64, col0: usize) -> Vec<Vec<Value>> {
    let zero = e.b.ins().iconst(types::I32, 0);
    let zv = e.b.ins().splat(types::I32X4, zero);
    let acc: Vec<Vec<Variable>> = (0..t.m)
        .map(|_| (0..4).map(|_| e.var(types::I32X4, zv)).collect())
        .collect();
    let le = MemFlagsData::new().with_endianness(Endianness::Little);
    let z = e.i(0);
    let end = e.i(pairs as i64);
    e.for_range(z, end, 1, |e, g| {
        let brow = e.addr(t.bp, g, (PANEL * 2) as i64);
        // the weights of columns col0.. as i32: [c k0, c k1, c+1 k0, c+1 k1] a vector
        let mut w = Vec::with_capacity(4);
        for h in 0..2 {
            let off = (QPANEL_HEADER + col0 * 2 + h * 8) as i32;
            let b16 = e.b.ins().sload8x8(mem(), brow, off);
            w.push(e.b.ins().swiden_low(b16));
            w.push(e.b.ins().swiden_high(b16));
        }
        let ka = e.b.ins().imul_imm_s(g, 4);
        let arow = e.b.ins().iadd(t.a, ka);
        for (i, row) in acc.iter().enumerate() {
            let pair =
                e.b.ins()
                    .load(types::I32, mem(), arow, (i as i64 * lda) as i32);
            let pv = e.b.ins().splat(types::I32X4, pair);
            let p16 = e.b.ins().bitcast(types::I16X8, le, pv);
            let av = e.b.ins().swiden_low(p16); // [a k0, a k1, a k0, a k1]
            for (j, &var) in row.iter().enumerate() {
                let p = e.b.ins().imul(av, w[j]);
                let cur = e.b.use_var(var);
                let s = e.b.ins().iadd(cur, p);
                e.b.def_var(var, s);
            }
        }
    });
    acc.iter()
        .map(|row| {
            let mut cols = Vec::with_capacity(8);
            for &var in row {
                let v = e.b.use_var(var);
                for c in 0..2u8 {
                    let even = e.b.ins().extractlane(v, 2 * c);
                    let odd = e.b.ins().extractlane(v, 2 * c + 1);
                    cols.push(e.b.ins().iadd(even, odd));
                }
            }
            cols
        })
        .collect()
}

/// `vector_sums` on scalars.
fn scalar_sums(e: &mut Emit, t: &Tile, pairs: usize, lda: i64, col0: usize) -> Vec<Vec<Value>> {
    let zero = e.b.ins().iconst(types::I32, 0);
    let acc: Vec<Vec<Variable>> = (0..t.m)
        .map(|_| (0..8).map(|_| e.var(types::I32, zero)).collect())
        .collect();
    let z = e.i(0);
    let end = e.i(pairs as i64);
    e.for_range(z, end, 1, |e, g| {
        let brow = e.addr(t.bp, g, (PANEL * 2) as i64);
        let ka = e.b.ins().imul_imm_s(g, 4);
        let arow = e.b.ins().iadd(t.a, ka);
        let w: Vec<Value> = (0..16)
            .map(|b| {
                let off = (QPANEL_HEADER + col0 * 2 + b) as i32;
                e.b.ins().sload8(types::I32, mem(), brow, off)
            })
            .collect();
        for (i, row) in acc.iter().enumerate() {
            let off = (i as i64 * lda) as i32;
            let a0 = e.b.ins().sload16(types::I32, mem(), arow, off);
            let a1 = e.b.ins().sload16(types::I32, mem(), arow, off + 2);
            for (j, &var) in row.iter().enumerate() {
                let p0 = e.b.ins().imul(a0, w[2 * j]);
                let p1 = e.b.ins().imul(a1, w[2 * j + 1]);
                let cur = e.b.use_var(var);
                let s = e.b.ins().iadd(cur, p0);
                let s = e.b.ins().iadd(s, p1);
                e.b.def_var(var, s);
            }
        }
    });
    acc.iter()
        .map(|row| row.iter().map(|&v| e.b.use_var(v)).collect())
        .collect()
}

/// The scale and zero point of `Op::DynamicQuantize` for the sequences `begin..end` of `x`
/// (rows of `k` f32) into `scale[b]` and `zero[b]`: with `per_token`, sequence `b`'s packed
/// rows `seq_start[b]..seq_start[b + 1]`, else its one row `b`; the interpreter's f32
/// operations in its order. `MapOp::Centered` makes the integers from them.
pub fn quant_range(
    e: &mut Emit,
    [x, scale, zero, seq_start]: [Value; 4],
    [begin, end]: [Value; 2],
    k: usize,
    per_token: bool,
) {
    let rowb = k as i64 * 4;
    e.for_range(begin, end, 1, |e, bi| {
        let (r0, r1) = if per_token {
            crate::kernels::seq_rows(e, seq_start, bi)
        } else {
            (bi, e.b.ins().iadd_imm_s(bi, 1))
        };
        let xs = e.addr(x, r0, rowb);
        let rows = e.b.ins().isub(r1, r0);
        let (s, zp) = quant_range_span(e, xs, rows, k);
        let sa = e.addr(scale, bi, 4);
        e.b.ins().store(mem(), s, sa, 0);
        let za = e.addr(zero, bi, 4);
        e.b.ins().store(mem(), zp, za, 0);
    });
}

/// The scale and zero point of `rows` rows of `k` floats at `x`.
fn quant_range_span(e: &mut Emit, x: Value, rows: Value, k: usize) -> (Value, Value) {
    let n = e.b.ins().imul_imm_s(rows, k as i64);
    let vt = e.vty();
    let vinf = e.fs(Shape::Vector, f32::NEG_INFINITY);
    let sinf = e.f(f32::NEG_INFINITY);
    // the maxima of x and of -x, in vectors and in scalars
    let acc = [
        (e.var(vt, vinf), e.var(types::F32, sinf)),
        (e.var(vt, vinf), e.var(types::F32, sinf)),
    ];
    e.span(n, |e, off, s| {
        let a = e.b.ins().iadd(x, off);
        let v = e.load(s, a, 0);
        let nv = e.b.ins().fneg(v);
        for (&(va, sa), t) in acc.iter().zip([v, nv]) {
            let var = if s == Shape::Vector && e.lanes > 1 {
                va
            } else {
                sa
            };
            let m = e.b.use_var(var);
            let m = e.b.ins().fmax(m, t);
            e.b.def_var(var, m);
        }
    });
    let [hi, neg] = acc.map(|(va, sa)| e.max_of(va, sa));
    let zero = e.f(0.0);
    let levels = e.f(255.0);
    let one = e.f(1.0);
    let hi = e.b.ins().fmax(hi, zero);
    let lo = e.b.ins().fneg(neg);
    let lo = e.b.ins().fmin(lo, zero);
    let empty = e.b.ins().fcmp(FloatCC::Equal, hi, lo);
    let span = e.b.ins().fsub(hi, lo);
    let raw = e.b.ins().fdiv(span, levels);
    let s = e.b.ins().select(empty, one, raw);
    let zp = e.b.ins().fdiv(lo, s);
    let zp = e.b.ins().fneg(zp);
    let zp = e.b.ins().fmax(zp, zero);
    let zp = e.b.ins().fmin(zp, levels);
    let magic = e.f(ROUND_MAGIC);
    let zp = e.b.ins().fadd(zp, magic);
    let zp = e.b.ins().fsub(zp, magic);
    (s, zp)
}
