//! The artifact's tokenizer in C: `glue/tokenizer.c` (the algorithms: normalization, added
//! tokens, pre-tokenization, WordPiece or byte-level BPE, the template and truncation) with the
//! tables of a `bertc_text::Tables` rendered as C arrays and the spec's options as macros, so
//! that the preprocessor keeps only the stages the model's `tokenizer.json` uses.

use std::fmt::Write;

use bertc_text::tables::CLASS_BITS;
use bertc_text::{Model, Piece, PreTokenizer, Tables, TextSpec};

use crate::shim::{c_string, render, ShimInfo};

const TOKENIZER: &str = include_str!("glue/tokenizer.c");

/// `static const T NAME[] = {...};` (C has no empty arrays: an empty list gets one 0).
fn array<T: std::fmt::Display>(out: &mut String, ty: &str, name: &str, v: &[T]) {
    let _ = write!(out, "static const {ty} {name}[] = {{");
    if v.is_empty() {
        out.push('0');
    }
    for (i, x) in v.iter().enumerate() {
        if i % 16 == 0 {
            out.push('\n');
        }
        let _ = write!(out, "{x},");
    }
    out.push_str("\n};\n");
}

/// Bytes as a C string literal, in lines of 64.
fn string(out: &mut String, name: &str, bytes: &[u8]) {
    let _ = write!(out, "static const unsigned char {name}[] =");
    for chunk in bytes.chunks(64).chain(bytes.is_empty().then_some(&[][..])) {
        out.push_str("\n    ");
        out.push_str(&c_string(chunk));
    }
    out.push_str(";\n");
}

fn define(out: &mut String, name: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "#define {name} {value}");
}

fn template(p: &[Piece]) -> Vec<i64> {
    let mut v = Vec::new();
    for piece in p {
        match piece {
            Piece::Special(ids, t) => {
                for &id in ids {
                    v.extend([id as i64, *t as i64]);
                }
            }
            Piece::Sequence { second, type_id } => {
                v.extend([if *second { -2 } else { -1 }, *type_id as i64])
            }
        }
    }
    v
}

/// The tables and macros `glue/tokenizer.c` reads.
fn tables_c(spec: &TextSpec, t: &Tables) -> String {
    let mut o = String::new();
    let flag = |b: bool| b as u8;
    let n = spec.normalizer;
    define(&mut o, "TK_CLEAN", flag(n.is_some_and(|n| n.clean_text)));
    define(
        &mut o,
        "TK_CJK",
        flag(n.is_some_and(|n| n.handle_chinese_chars)),
    );
    define(&mut o, "TK_STRIP", flag(n.is_some_and(|n| n.strip_accents)));
    define(&mut o, "TK_LOWER", flag(n.is_some_and(|n| n.lowercase)));
    define(&mut o, "TK_NORMALIZE", flag(n.is_some()));
    let (bert, prefix_space) = match spec.pre_tokenizer {
        PreTokenizer::Bert => (true, false),
        PreTokenizer::ByteLevel { add_prefix_space } => (false, add_prefix_space),
    };
    define(&mut o, "TK_BERT_PRE", flag(bert));
    define(&mut o, "TK_PREFIX_SPACE", flag(prefix_space));
    for (name, bit) in CLASS_BITS {
        define(&mut o, &format!("C_{name}"), format!("{bit}u"));
    }
    define(&mut o, "C_CCC_SHIFT", bertc_text::tables::class::CCC_SHIFT);
    define(&mut o, "TK_CLASS_N", t.class_starts.len());
    array(&mut o, "uint32_t", "TK_CLASS_START", &t.class_starts);
    array(&mut o, "uint32_t", "TK_CLASS_VAL", &t.class_values);
    let ascii: Vec<u32> = (0..128u32)
        .map(|cp| {
            let i = t.class_starts.partition_point(|&s| s <= cp) - 1;
            t.class_values[i]
        })
        .collect();
    array(&mut o, "uint32_t", "TK_ASCII_CLASS", &ascii);
    for (prefix, map) in [("DEC", &t.decompose), ("LOW", &t.lowercase)] {
        if let Some(m) = map {
            define(&mut o, &format!("TK_{prefix}_N"), m.cps.len());
            array(&mut o, "uint32_t", &format!("TK_{prefix}_CP"), &m.cps);
            array(&mut o, "uint32_t", &format!("TK_{prefix}_OFF"), &m.off);
            array(&mut o, "uint32_t", &format!("TK_{prefix}_POOL"), &m.pool);
        }
    }
    define(&mut o, "TK_VOCAB_MAX_LEN", format!("{}u", t.vocab.max_len));
    define(
        &mut o,
        "TK_VOCAB_MASK",
        format!("{}u", t.vocab.slots.len() - 1),
    );
    string(&mut o, "TK_VOCAB_POOL", &t.vocab.pool);
    array(&mut o, "uint32_t", "TK_VOCAB_OFF", &t.vocab.off);
    array(&mut o, "uint32_t", "TK_VOCAB_SLOTS", &t.vocab.slots);
    match &spec.model {
        Model::WordPiece {
            unk,
            prefix,
            max_input_chars_per_word,
            ..
        } => {
            define(&mut o, "TK_WORDPIECE", 1);
            define(&mut o, "TK_BPE", 0);
            define(&mut o, "TK_WP_UNK", format!("{unk}u"));
            string(&mut o, "TK_WP_PREFIX", prefix.as_bytes());
            define(&mut o, "TK_WP_PREFIX_LEN", prefix.len());
            define(&mut o, "TK_WP_MAX_CHARS", max_input_chars_per_word);
        }
        Model::Bpe {
            unk,
            fuse_unk,
            ignore_merges,
            ..
        } => {
            define(&mut o, "TK_WORDPIECE", 0);
            define(&mut o, "TK_BPE", 1);
            define(&mut o, "TK_BPE_UNK", unk.map_or(-1, |u| u as i64));
            define(&mut o, "TK_BPE_FUSE_UNK", flag(*fuse_unk));
            define(&mut o, "TK_BPE_IGNORE_MERGES", flag(*ignore_merges));
            let bytes = t.byte_tokens.as_deref().unwrap_or_default();
            let bytes: Vec<String> = bytes.iter().map(|b| format!("{b}u")).collect();
            array(&mut o, "uint32_t", "TK_BPE_BYTE", &bytes);
            let m = t.merges.as_ref().expect("BPE tables have merges");
            define(&mut o, "TK_MERGE_MASK", format!("{}u", m.left.len() - 1));
            let hex = |v: &[u32]| v.iter().map(|x| format!("{x:#x}u")).collect::<Vec<_>>();
            array(&mut o, "uint32_t", "TK_MERGE_L", &hex(&m.left));
            array(&mut o, "uint32_t", "TK_MERGE_R", &hex(&m.right));
            array(&mut o, "uint32_t", "TK_MERGE_RANK", &m.rank);
            array(&mut o, "uint32_t", "TK_MERGE_NEW", &m.merged);
        }
    }
    define(&mut o, "TK_ADDED_N", format!("{}u", spec.added.len()));
    define(
        &mut o,
        "TK_ADDED_STRIP",
        flag(spec.added.iter().any(|a| a.lstrip || a.rstrip)),
    );
    string(&mut o, "TK_ADDED_POOL", &t.added.pool);
    array(&mut o, "uint32_t", "TK_ADDED_OFF", &t.added.off);
    let ids: Vec<u32> = spec.added.iter().map(|a| a.id).collect();
    array(&mut o, "uint32_t", "TK_ADDED_ID", &ids);
    let flags: Vec<u8> = spec
        .added
        .iter()
        .map(|a| a.normalized as u8 | (a.lstrip as u8) << 1 | (a.rstrip as u8) << 2)
        .collect();
    array(&mut o, "unsigned char", "TK_ADDED_FLAGS", &flags);
    for (name, pieces, pair) in [
        ("SINGLE", &spec.template.single, false),
        ("PAIR", &spec.template.pair, true),
    ] {
        let v = template(pieces);
        define(&mut o, &format!("TK_{name}_N"), v.len() / 2);
        define(
            &mut o,
            &format!("TK_{name}_ADDED"),
            spec.template.added(pair),
        );
        array(&mut o, "int32_t", &format!("TK_{name}"), &v);
    }
    o
}

/// The C source of the artifact's tokenizer and `NAME_run_text`.
pub fn tokenizer_c(s: &ShimInfo, spec: &TextSpec, tables: &Tables) -> String {
    render(
        TOKENIZER,
        &[
            ("N", s.name.to_string()),
            ("UP", s.name.to_uppercase()),
            ("VERSION", env!("CARGO_PKG_VERSION").to_string()),
            ("KIND", spec.model.kind().to_string()),
            ("SOURCE", crate::shim::file_name(&spec.source)),
            ("TABLES", tables_c(spec, tables)),
        ],
    )
}
