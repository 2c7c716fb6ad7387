//! The artifact's tokenizer in C: `glue/tokenizer.c` (the algorithms: normalization, added
//! tokens, pre-tokenization, WordPiece or byte-level BPE, the template and truncation) with the
//! tables of a `bertc_text::Tables` rendered as C arrays and the spec's options as macros, so
//! that the preprocessor keeps only the stages the model's `tokenizer.json` uses.

use std::fmt::Write;

use bertc_text::tables::CLASS_BITS;
use bertc_text::{Model, Piece, PreTokenizer, Tables, TextSpec};

use crate::shim::{c_string, render, ShimInfo};

const TOKENIZER: &str = include_str!("glue/tokenizer.c");
/// The SentencePiece-style stages (Precompiled, Strip, Replace, Metaspace, Unigram), inserted
/// into `TOKENIZER` for a Unigram model.
const SPM: &str = include_str!("glue/spm.c");

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
        PreTokenizer::Metaspace { .. } => (false, false),
    };
    define(&mut o, "TK_BERT_PRE", flag(bert));
    define(&mut o, "TK_PREFIX_SPACE", flag(prefix_space));
    spm_c(&mut o, spec);
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
        Model::Unigram { scores, unk, .. } => {
            define(&mut o, "TK_WORDPIECE", 0);
            define(&mut o, "TK_BPE", 0);
            define(&mut o, "TK_UNI_UNK", format!("{unk}u"));
            // the unknown token's score: the lowest minus 10 (`tokenizers`' K_UNK_PENALTY);
            // `{:?}` writes the shortest decimal that reads back as the same double
            let min = scores.iter().copied().fold(f64::INFINITY, f64::min);
            define(&mut o, "TK_UNI_UNK_SCORE", format!("({:?})", min - 10.0));
            let s: Vec<String> = scores.iter().map(|x| format!("{x:?}")).collect();
            array(&mut o, "double", "TK_UNI_SCORE", &s);
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

/// The macros and tables of the SentencePiece-style stages: `TK_SPM_STEPS(x)`, the normalizer's
/// steps in order, the charsmap's trie, the Metaspace options.
fn spm_c(o: &mut String, spec: &TextSpec) {
    use bertc_text::{Prepend, SpmStep};
    let flag = |b: bool| b as u8;
    let unigram = matches!(spec.model, Model::Unigram { .. });
    define(o, "TK_UNIGRAM", flag(unigram));
    define(o, "TK_SPM", flag(!spec.spm.is_empty()));
    let mut calls = Vec::new();
    let mut precompiled = false;
    for step in &spec.spm {
        match step {
            SpmStep::Precompiled { trie, normalized } => {
                // one charsmap a tokenizer (the spec refuses a second)
                assert!(!precompiled, "one Precompiled step");
                define(o, "TK_PC_TRIE_N", format!("{}u", trie.len()));
                let hex: Vec<String> = trie.iter().map(|u| format!("{u:#x}u")).collect();
                array(o, "uint32_t", "TK_PC_TRIE", &hex);
                string(o, "TK_PC_NORM", normalized);
                precompiled = true;
                calls.push("spm_precompiled(x)".to_string());
            }
            SpmStep::Strip { left, right } => {
                calls.push(format!("spm_strip(x, {}, {})", flag(*left), flag(*right)))
            }
            SpmStep::Replace {
                unit,
                min,
                literal,
                content,
            } => calls.push(format!(
                "spm_replace(x, {}, {}, {min}, {}, {}, {})",
                c_string(unit.as_bytes()),
                unit.len(),
                flag(*literal),
                c_string(content.as_bytes()),
                content.len()
            )),
        }
    }
    define(o, "TK_PRECOMPILED", flag(precompiled));
    let _ = writeln!(
        o,
        "#define TK_SPM_STEPS(x) do {{ {} }} while (0)",
        calls.iter().map(|c| format!("{c};")).collect::<String>()
    );
    let (metaspace, repl, prepend, split, ws) = match spec.pre_tokenizer {
        PreTokenizer::Metaspace {
            replacement,
            prepend,
            split,
            whitespace_split,
        } => (true, replacement, prepend, split, whitespace_split),
        _ => (false, ' ', Prepend::Never, false, false),
    };
    define(o, "TK_METASPACE", flag(metaspace));
    define(o, "TK_MS_REPL", c_string(repl.to_string().as_bytes()));
    let scheme = match prepend {
        Prepend::Never => 0,
        Prepend::Always => 1,
        Prepend::First => 2,
    };
    define(o, "TK_MS_PREPEND", scheme);
    define(o, "TK_MS_SPLIT", flag(split));
    define(o, "TK_WS_SPLIT", flag(ws));
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
            (
                "SPM",
                match spec.model {
                    Model::Unigram { .. } => SPM.to_string(),
                    _ => String::new(),
                },
            ),
        ],
    )
}
