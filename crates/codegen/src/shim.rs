//! The C side of an artifact: the public header, the glue that implements the ABI around the
//! generated `NAME__forward` (every argument checked before the generated code runs, the
//! workspace owned by the model handle, the CPU feature check), and the executable's `main`
//! (the token-id text I/O contract of `bertc run`). bertc writes these files and compiles
//! them with the target's C compiler; they use libc only. The C is in real files under
//! `glue/` (`header.h`, `glue.c`, `main.c`, `profiler.c`) with `@KEY@` placeholders that one
//! renderer fills; a test compiles every template with `-Wall -Wextra -Werror`.

use super::Program;
use bertc_ir::TokenTypes;

const HEADER: &str = include_str!("glue/header.h");
const GLUE: &str = include_str!("glue/glue.c");
const MAIN: &str = include_str!("glue/main.c");
const PROFILER: &str = include_str!("glue/profiler.c");
const TEXT_API: &str = include_str!("glue/text_api.h");

/// The byte limit of one text (`NAME_MAX_TEXT_BYTES` in the header): bounds the tokenizer's
/// memory.
pub const MAX_TEXT_BYTES: usize = 1 << 20;

/// Fills a template's `@KEY@` placeholders. Every placeholder must have a value and every value
/// a placeholder: a mismatch is a bug in bertc, caught by the test that compiles every
/// template (`glue_compiles_without_warnings`).
pub(crate) fn render(template: &str, vars: &[(&str, String)]) -> String {
    let mut rest = template;
    while let Some(i) = rest.find('@') {
        let after = &rest[i + 1..];
        let len = after
            .find(|c: char| !(c.is_ascii_uppercase() || c == '_'))
            .unwrap_or(after.len());
        if len > 0 && after[len..].starts_with('@') {
            let key = &after[..len];
            assert!(
                vars.iter().any(|(k, _)| *k == key),
                "template placeholder @{key}@ without a value"
            );
            rest = &after[len + 1..];
        } else {
            rest = after;
        }
    }
    let mut out = template.to_string();
    for (key, value) in vars {
        let placeholder = format!("@{key}@");
        assert!(out.contains(&placeholder), "template without @{key}@");
        out = out.replace(&placeholder, value);
    }
    out
}

/// What the glue needs besides the program.
pub struct ShimInfo<'a> {
    /// The C identifier prefixing every symbol.
    pub name: &'a str,
    pub output_kind: &'a str,
    /// CPU features the code needs, with how the glue checks each (`Target::cpu_checks`).
    pub cpu_features: Vec<(&'static str, bertc_targets::CpuCheck)>,
    pub target: &'a str,
    pub source: &'a str,
    /// The model's tokenizer, compiled into the artifact (`NAME_tokenize`, `NAME_run_text`).
    pub text: Option<&'a bertc_text::TextSpec>,
    /// A classifier's label names by logit (`--format json` prints them with scores).
    pub labels: &'a [String],
}

/// The public header.
pub fn header(p: &Program, s: &ShimInfo) -> String {
    let type_vocab = if p.token_types == TokenTypes::Input {
        p.type_vocab
    } else {
        0
    };
    render(
        HEADER,
        &[
            ("N", s.name.to_string()),
            ("UP", s.name.to_uppercase()),
            ("VERSION", env!("CARGO_PKG_VERSION").to_string()),
            ("TARGET", s.target.to_string()),
            ("SOURCE", s.source.to_string()),
            ("VOCAB", p.vocab.to_string()),
            ("MAX_SEQ", p.max_seq.to_string()),
            ("TYPE_VOCAB", type_vocab.to_string()),
            ("KIND", s.output_kind.to_string()),
            ("WIDTH", p.output_width().to_string()),
            ("PER_TOKEN", (p.output_per_token() as u8).to_string()),
            ("TEXT_API", s.text.map_or(String::new(), |t| text_api(s, t))),
        ],
    )
}

/// The last component of a path (a header names files, not this machine's folders).
pub(crate) fn file_name(path: &str) -> String {
    std::path::Path::new(path)
        .file_name()
        .map_or(path.to_string(), |f| f.to_string_lossy().to_string())
}

/// The header's tokenizer section.
fn text_api(s: &ShimInfo, t: &bertc_text::TextSpec) -> String {
    render(
        TEXT_API,
        &[
            ("N", s.name.to_string()),
            ("UP", s.name.to_uppercase()),
            ("KIND", t.model.kind().to_string()),
            ("TOKENIZER", file_name(&t.source)),
            ("MAX_TEXT_BYTES", MAX_TEXT_BYTES.to_string()),
        ],
    )
}

/// The body of `NAME_cpu_supported`: GCC's `__builtin_cpu_supports` for x86-64's checks,
/// Linux's `getauxval(AT_HWCAP)` and `AT_HWCAP2` bits for aarch64's, each under its
/// architecture's guard.
fn cpu_check(checks: &[(&str, bertc_targets::CpuCheck)]) -> String {
    use bertc_targets::CpuCheck;
    let builtins: Vec<String> = checks
        .iter()
        .filter_map(|(_, c)| match c {
            CpuCheck::Builtin(n) => Some(format!("__builtin_cpu_supports(\"{n}\")")),
            CpuCheck::Hwcap(_) | CpuCheck::Hwcap2(_) => None,
        })
        .collect();
    let hwcaps: Vec<String> = checks
        .iter()
        .filter_map(|(_, c)| match c {
            CpuCheck::Hwcap(bit) => Some(format!("(getauxval(AT_HWCAP) & (1UL << {bit}))")),
            CpuCheck::Hwcap2(bit) => Some(format!("(getauxval(AT_HWCAP2) & (1UL << {bit}))")),
            CpuCheck::Builtin(_) => None,
        })
        .collect();
    let mut s = String::new();
    if !builtins.is_empty() {
        s += &format!(
            "#if defined(__x86_64__)\n    __builtin_cpu_init();\n    if (!({})) return 0;\n#endif\n",
            builtins.join(" && ")
        );
    }
    if !hwcaps.is_empty() {
        s += &format!(
            "#if defined(__aarch64__) && defined(__linux__)\n    if (!({})) return 0;\n#endif\n",
            hwcaps.join(" && ")
        );
    }
    s + "    return 1;"
}

/// The glue implementing the ABI: argument checks, packing of the tokens with mask 1, the
/// workspace, and the thread pool behind `NAME__parallel`.
pub fn glue(c: &crate::Compiled, s: &ShimInfo) -> String {
    let p = &c.program;
    let cpu_check = cpu_check(&s.cpu_features);
    let names: Vec<&str> = s.cpu_features.iter().map(|(name, _)| *name).collect();
    let has_type_input = p.token_types == TokenTypes::Input;
    let needs_first = !p.output_per_token();
    let (ft, fs, fp) = p.flop_counts();
    render(
        GLUE,
        &[
            ("CPU_CHECK", cpu_check),
            ("FLOPS_TOKEN", ft.to_string()),
            ("FLOPS_SEQ", fs.to_string()),
            ("FLOPS_PAIR", fp.to_string()),
            ("FEATURES", names.join(",")),
            ("WS_PER_TOKEN", p.ws_per_token.to_string()),
            ("HAS_TYPE_INPUT", (has_type_input as u8).to_string()),
            ("NEEDS_FIRST", (needs_first as u8).to_string()),
            ("SCRATCH", c.scratch_floats_c.clone()),
            ("CHUNK_TOKENS", c.chunk_tokens.to_string()),
            (
                "UNIT_TOKENS",
                crate::program::THREAD_UNIT_TOKENS.to_string(),
            ),
            (
                "UNITS_PER_THREAD",
                crate::program::UNITS_PER_THREAD.to_string(),
            ),
            ("CTX_LAYOUT", crate::ctx::c_defines()),
            ("UP", s.name.to_uppercase()),
            ("N", s.name.to_string()),
        ],
    )
}

/// The executable's `main`: reads token ids (one sequence a line) from standard input, runs
/// them in batches and prints one line of outputs per input line.
pub fn main_c(s: &ShimInfo) -> String {
    let labels: Vec<String> = s
        .labels
        .iter()
        .map(|l| c_string(json_string(l).as_bytes()))
        .collect();
    render(
        MAIN,
        &[
            (
                "LABELS",
                if labels.is_empty() {
                    "NULL".into()
                } else {
                    labels.join(", ")
                },
            ),
            ("N_LABELS", labels.len().to_string()),
            ("N", s.name.to_string()),
            ("UP", s.name.to_uppercase()),
        ],
    )
}

/// The inside of a JSON string literal for `s`.
fn json_string(s: &str) -> String {
    let q = serde_json::to_string(s).expect("a string serializes");
    q[1..q.len() - 1].to_string()
}

/// A C string literal of these bytes (octal escapes for all but plain ASCII, and for `?`
/// against trigraphs).
pub(crate) fn c_string(bytes: &[u8]) -> String {
    let mut out = String::from("\"");
    for &b in bytes {
        match b {
            b'"' | b'\\' | b'?' => out.push_str(&format!("\\{b:03o}")),
            0x20..=0x7E => out.push(b as char),
            _ => out.push_str(&format!("\\{b:03o}")),
        }
    }
    out.push('"');
    out
}

/// One model compiled into a profiler executable.
pub struct ProfileVariant {
    /// Symbol prefix.
    pub name: String,
    /// `"base"`, `"model"` (the dense layers), `"attention"` or `"ffn"`.
    pub kind: &'static str,
    pub kept: usize,
    /// Floats of each weight `NAME__wI` (compiled with writable weights).
    pub weights: Vec<usize>,
}

/// What the profiler writes besides the times (see `bertc_targets::LatencyProfile`).
pub struct ProfileInfo<'a> {
    /// Copies of the block in each level's model.
    pub layers: usize,
    pub target: &'a str,
    pub cpu_features: &'a [String],
    pub batch: usize,
    pub seq: usize,
    pub threads: usize,
    pub hidden: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub intermediate: usize,
    pub runs: usize,
    /// The quantization the levels were compiled with (`"int8"`), if any.
    pub quantize: Option<&'a str>,
    /// The caches the levels' GEMMs were blocked for.
    pub caches: bertc_targets::Caches,
}

/// The C `main` of a profiler: times every variant (warm-up, then `runs` timed inferences
/// each, median) on inputs of the profile's shape and writes the latency profile JSON.
pub fn profiler_c(variants: &[ProfileVariant], p: &ProfileInfo) -> String {
    let mut decls = String::new();
    let mut table = String::new();
    let mut wtables = String::new();
    for v in variants {
        let n = &v.name;
        let mut entries = String::new();
        for (i, len) in v.weights.iter().enumerate() {
            decls += &format!("extern float {n}__w{i}[];\n");
            entries += &format!("{{{n}__w{i}, {len}}}, ");
        }
        wtables += &format!("static const weight W_{n}[] = {{{entries}{{NULL, 0}}}};\n");
        decls += &format!(
            "void *{n}_create(int32_t threads);\nint32_t {n}_run(void *m, const int32_t *ids, const int32_t *mask, const int32_t *types, int32_t batch, int32_t seq, float *out, size_t out_len);\nvoid {n}_destroy(void *m);\nsize_t {n}_output_len(int32_t batch, int32_t seq);\n"
        );
        table += &format!(
            "    {{\"{}\", {}, {n}_create, {n}_run, {n}_destroy, {n}_output_len, W_{n}}},\n",
            v.kind, v.kept
        );
    }
    let features = p
        .cpu_features
        .iter()
        .map(|f| format!("\\\"{f}\\\""))
        .collect::<Vec<_>>()
        .join(", ");
    render(
        PROFILER,
        &[
            ("DECLS", decls),
            ("WTABLES", wtables),
            ("TABLE", table),
            ("FEATURES", features),
            ("FORMAT", bertc_targets::PROFILE_FORMAT.to_string()),
            ("BATCH", p.batch.to_string()),
            ("SEQ", p.seq.to_string()),
            ("LAYERS", p.layers.max(1).to_string()),
            ("RUNS", p.runs.max(1).to_string()),
            ("THREADS", p.threads.to_string()),
            ("TARGET", p.target.to_string()),
            ("HIDDEN", p.hidden.to_string()),
            ("HEADS", p.heads.to_string()),
            ("HEAD_DIM", p.head_dim.to_string()),
            ("INTERMEDIATE", p.intermediate.to_string()),
            ("L1D", p.caches.l1d.to_string()),
            ("L2", p.caches.l2.to_string()),
            ("L3", p.caches.l3.to_string()),
            (
                "QUANTIZE",
                p.quantize
                    .map_or("null".to_string(), |q| format!("\\\"{q}\\\"")),
            ),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use bertc_ir::Graph;
    use bertc_targets::Target;

    const MODEL: &str = "\
graph(%input_ids: i64[batch,seq], %attention_mask: i64[batch,seq], %token_type_ids: i64[batch,seq]) max_seq=16 {
  %0:f32[batch,seq,16] = embedding(%input_ids, %token_type_ids, @e.word:f32[32,16], @e.pos:f32[16,16], @e.type:f32[2,16]) positions=arange(offset=0) types=input
  %1:f32[batch,seq,16] = layer_norm(%0, @ln.g:f32[16], @ln.b:f32[16]) eps=1e-12
  %2:f32[batch,16] = mean_pool(%1, %attention_mask)
  return mean=%2
}
";

    const WORDPIECE: &str = r###"{"model": {"type": "WordPiece", "unk_token": "[UNK]",
        "vocab": {"[UNK]": 0, "[CLS]": 1, "[SEP]": 2, "a": 3, "##b": 4}},
        "normalizer": {"type": "BertNormalizer", "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "BertProcessing", "cls": ["[CLS]", 1], "sep": ["[SEP]", 2]},
        "added_tokens": [{"id": 0, "content": "[UNK]", "normalized": false, "lstrip": true}]}"###;
    const BPE: &str = r#"{"model": {"type": "BPE", "merges": ["a b"],
        "vocab": {"a": 0, "b": 1, "ab": 2, "<s>": 3, "</s>": 4}},
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": true},
        "post_processor": {"type": "RobertaProcessing", "cls": ["<s>", 3], "sep": ["</s>", 4]},
        "added_tokens": [{"id": 3, "content": "<s>", "normalized": true}]}"#;

    /// Every template, rendered for a small model (without a tokenizer, with a WordPiece,
    /// a byte-level BPE and a Unigram one), compiles with `-Wall -Wextra -Werror` with the host's C
    /// compiler (the header through the glue, the tokenizer and `main` that include it).
    #[test]
    fn glue_compiles_without_warnings() {
        let specs = [
            None,
            Some(bertc_text::TextSpec::from_json(WORDPIECE, "wordpiece.json").unwrap()),
            Some(bertc_text::TextSpec::from_json(BPE, "bpe.json").unwrap()),
            Some(
                bertc_text::TextSpec::from_file(std::path::Path::new(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/../../tests/data/unigram/tokenizer.json"
                )))
                .unwrap(),
            ),
        ];
        for (i, text) in specs.iter().enumerate() {
            glue_compiles(text.as_ref(), &format!("{i}"));
        }
    }

    fn glue_compiles(text: Option<&bertc_text::TextSpec>, tag: &str) {
        let labels = ["positive".to_string(), "n\u{e9}gatif \"?\"".to_string()];
        let target = Target::host();
        let g = Graph::from_text(MODEL).unwrap();
        let c = crate::compile(&g, &target, "m").unwrap();
        let info = ShimInfo {
            name: "m",
            output_kind: "mean",
            cpu_features: target.cpu_checks(),
            target: &target.triple,
            source: "test",
            text,
            labels: &labels,
        };
        let tmp = tempfile::Builder::new()
            .prefix(&format!("bertc-glue-{tag}"))
            .tempdir()
            .unwrap();
        let dir = tmp.path();
        let variants = [ProfileVariant {
            name: "m".into(),
            kind: "attention",
            kept: 2,
            weights: vec![16, 32],
        }];
        let features = vec!["avx2".to_string()];
        let pinfo = ProfileInfo {
            layers: 2,
            target: &target.triple,
            cpu_features: &features,
            batch: 1,
            seq: 8,
            threads: 1,
            hidden: 16,
            heads: 2,
            head_dim: 8,
            intermediate: 32,
            runs: 3,
            quantize: Some("int8"),
            caches: target.caches,
        };
        let files = [
            ("m.h", header(&c.program, &info)),
            ("m_glue.c", glue(&c, &info)),
            ("m_main.c", main_c(&info)),
            ("profiler.c", profiler_c(&variants, &pinfo)),
            (
                "m_text.c",
                text.map_or(String::new(), |t| {
                    crate::tokenizer::tokenizer_c(&info, t, &bertc_text::Tables::new(t))
                }),
            ),
        ];
        for (f, text) in &files {
            std::fs::write(dir.join(f), text).unwrap();
        }
        let sources: &[&str] = if text.is_some() {
            &["m_glue.c", "m_main.c", "profiler.c", "m_text.c"]
        } else {
            &["m_glue.c", "m_main.c", "profiler.c"]
        };
        for f in sources {
            let out = target
                .toolchain()
                .check_warnings(f)
                .current_dir(dir)
                .output()
                .expect("the C compiler");
            assert!(
                out.status.success(),
                "{f}:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
