//! The epilogues of `bertc --help` and `bertc compile --help`: examples (each runs as shown:
//! tests/help_examples.rs) and the targets table rendered from `bertc-targets`.

use std::fmt::Write as _;

pub const EXAMPLES: &str = "\
Examples:
  bertc inspect examples/bert-micro-random/model.onnx
  bertc ir examples/bert-micro-random/model.onnx            # raised IR
  bertc ir examples/bert-micro-random --raw                  # IR as imported from safetensors
  echo '2 73 1043 3' | bertc run examples/bert-micro-random --output mean
  bertc run examples/bert-micro-random --text 'Hello world!' --output pooler";

/// `bertc compile --help`'s epilogue: the artifacts, and the targets with their C compilers,
/// runners and CPU levels as `bertc-targets` describes them.
pub fn compile_help() -> String {
    let mut s = String::from(
        "Artifacts (OUT is a path; its file name names the symbols, e.g. model_run):
  exe        OUT: reads texts on stdin (token ids with --input ids, or when the model has no
             tokenizer.json), prints one line per input line (--format json: an object)
  staticlib  libOUT.a + OUT.h   (-o libOUT.a or OUT.a: that file, the symbols OUT_)
  sharedlib  libOUT.so + OUT.h  (-o libOUT.so or OUT.so: that file, the symbols OUT_)
  obj        OUT.o + OUT.h      (-o OUT.o: the same)

Targets: the C compiler each needs to link (Debian packages), how its executables run here,
and its CPUs (--cpu; the default is native on this machine's architecture, else the first):
",
    );
    for triple in bertc_targets::TRIPLES {
        let t = bertc_targets::Target::from_triple(triple).expect("a known triple");
        let runner = t.runner();
        let _ = writeln!(
            s,
            "  {triple:28} {} ({})\n  {:28} {}; --cpu {}",
            t.cc(),
            t.cc_packages(),
            "",
            if runner.is_empty() {
                "runs here".to_string()
            } else {
                format!("linked -static, runs under {}", runner.join(" "))
            },
            bertc_targets::cpu_names(t.arch),
        );
    }
    s.push('\n');
    s.push_str(EXAMPLES_COMPILE);
    s
}

const EXAMPLES_COMPILE: &str = "Examples:
  bertc compile model.onnx -o model --output mean
  echo 'A man is playing a guitar.' | ./model          # the sentence's mean-pooled embedding
  printf 'A query\\tA passage\\n' | ./model --format json    # a pair, one JSON object a line
  echo '2 73 1043 3' | ./model --input ids             # token ids, as the tokenizer gives
  echo 'A man is playing a guitar.' | ./model --tokenize
  bertc compile ./my-model -o embed --emit staticlib --output mean    # libembed.a, embed.h
  bertc compile model.onnx -o model-arm --target aarch64-unknown-linux-gnu
  bertc profile model.onnx --batch 1 --seq 128 --threads 1 -o p.json   # then prune to half:
  bertc compile model.onnx -o model2x --speedup 2 --profile p.json   # built-in calibration text
  bertc compile model.onnx -o model2x --speedup 2 --profile p.json --calibration texts.txt \\
        --report model2x.html
  bertc compile model.onnx -o model-q8 --quantize int8     # int8 weights, round to nearest
  bertc compile model.onnx -o model-q8 --quantize int8 --calibration texts.txt \\
        --report model-q8.html                              # GPTQ, each linear's error
  bertc profile model.onnx -o q8.json --threads 1 --quantize int8   # prune the int8 model:
  bertc compile model.onnx -o model-q8x2 --quantize int8 --speedup 2 --profile q8.json \\
        --calibration texts.txt";
