//! The command line: clap's definitions of every command and its arguments, and the
//! argument groups that several commands share (pruning, quantization).

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

use bertc_passes::OutputKind;

use crate::{compile, help, prune, quantize};

/// Structured pruning (ZipLM) options of `bertc compile`.
#[derive(clap::Args)]
pub(crate) struct PruneArgs {
    /// Prune heads and FFN neurons until the predicted latency is the dense model's / X.
    #[arg(long, requires = "profile", conflicts_with = "latency")]
    pub(crate) speedup: Option<f64>,
    /// Prune until the predicted latency is at most MS milliseconds.
    #[arg(long, requires = "profile")]
    pub(crate) latency: Option<f64>,
    /// The latency profile (from `bertc profile`) the prediction uses.
    #[arg(long)]
    pub(crate) profile: Option<PathBuf>,
    /// Calibration text, one text a line (or an STS Benchmark file). Pruning without it uses
    /// bertc's built-in set of 198 varied English sentences; int8 without it rounds to nearest
    /// (measuring, smoothing and widening 8-bit linears on 64 of the built-in sentences).
    #[arg(long)]
    pub(crate) calibration: Option<PathBuf>,
    /// Calibration texts used (the first N).
    #[arg(long = "calibration-samples", default_value = "512")]
    pub(crate) calibration_samples: usize,
    /// How structures are chosen: obs (second order, with weight updates) or magnitude
    /// (smallest weight norms, no update; the baseline).
    #[arg(long = "prune-method", value_enum, default_value = "obs")]
    pub(crate) prune_method: PruneMethod,
    /// The tokenizer.json for the calibration text (default: the one beside the model).
    #[arg(long = "calibration-tokenizer")]
    pub(crate) calibration_tokenizer: Option<PathBuf>,
    /// Refit the kept weights block by block on the pruned model's own inputs against the
    /// dense outputs (OBC's sequential order), instead of all at once on the dense inputs.
    /// Measured worse on all-MiniLM-L6-v2 (see BENCHMARKS.md); kept for other models.
    #[arg(long)]
    pub(crate) sequential: bool,
    /// Rounds of SPDY's correction: each measures the model's loss with each pruned block
    /// alone and scales the block's error by it before searching again (0: plain search).
    #[arg(long = "spdy-rounds", default_value = "1")]
    pub(crate) spdy_rounds: usize,
}

/// `--quantize` and its accuracy control (the calibration text is `--calibration`).
#[derive(Args)]
pub(crate) struct QuantizeArgs {
    /// Quantize the linears after pruning and fusion (int8: weights per output channel,
    /// activations per token at run time, word embeddings in int8 rows; `run` interprets the
    /// result with its integer arithmetic, `ir` prints it).
    #[arg(long, value_enum)]
    pub(crate) quantize: Option<quantize::Quantize>,
    /// How int8 weights are rounded: rtn or gptq (default: gptq with --calibration, rtn
    /// without).
    #[arg(long = "quantize-method", value_enum, requires = "quantize")]
    pub(crate) quantize_method: Option<quantize::QuantizeMethod>,
    /// With --calibration: a linear whose int8 output is further than this relative RMS
    /// error from its fp32 output stays fp32.
    #[arg(long = "quantize-budget", requires = "quantize", default_value_t = quantize::DEFAULT_BUDGET)]
    pub(crate) quantize_budget: f64,
    /// Bits of the int8 linears' activations: auto (8 where the target multiplies bytes
    /// faster, AVX-VNNI or AVX512-VNNI, measured on --calibration text or 64 built-in sentences
    /// and widened where over the budget; else
    /// the widest the depth allows, 14-16), 8, or wide.
    #[arg(
        long = "quantize-activations",
        value_enum,
        requires = "quantize",
        default_value = "auto"
    )]
    pub(crate) quantize_activations: quantize::Activations,
}

impl QuantizeArgs {
    pub(crate) fn options(&self, p: &PruneArgs) -> Option<quantize::QuantizeOptions> {
        Some(quantize::QuantizeOptions {
            scheme: self.quantize?,
            method: self.quantize_method,
            budget: self.quantize_budget,
            calibration: p.calibration.clone(),
            samples: p.calibration_samples,
            tokenizer: p.calibration_tokenizer.clone(),
            activations: self.quantize_activations,
            // the host's until the command's target is known (`QuantizeOptions::for_target`)
            bytes_faster: quantize::bytes_are_faster(&bertc_targets::Target::host()),
            builtin: true,
        })
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum PruneMethod {
    Obs,
    Magnitude,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ProfileEmit {
    Profile,
    Exe,
}

impl PruneArgs {
    pub(crate) fn options(
        &self,
        quantize: Option<quantize::Quantize>,
    ) -> Option<prune::PruneOptions> {
        if self.speedup.is_none() && self.latency.is_none() {
            return None;
        }
        Some(prune::PruneOptions {
            speedup: self.speedup,
            latency_ms: self.latency,
            profile: self.profile.clone()?,
            calibration: self.calibration.clone(),
            samples: self.calibration_samples,
            method: match self.prune_method {
                PruneMethod::Obs => bertc_passes::prune::Method::Obs,
                PruneMethod::Magnitude => bertc_passes::prune::Method::Magnitude,
            },
            tokenizer: self.calibration_tokenizer.clone(),
            sequential: self.sequential,
            spdy_rounds: self.spdy_rounds,
            quantize: quantize.map(|q| q.name()),
        })
    }
}

/// bertc: an ahead-of-time compiler for BERT-family text encoders.
#[derive(Parser)]
#[command(name = "bertc", version, about, after_help = help::EXAMPLES)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) cmd: Cmd,
}

#[derive(Subcommand)]
pub(crate) enum Cmd {
    /// Compile a model to a native executable, library or object.
    #[command(after_help = help::compile_help())]
    Compile {
        /// An .onnx file, or a folder: Hugging Face (config.json + safetensors), or an ONNX
        /// export (model.onnx or onnx/model.onnx beside tokenizer.json) without safetensors.
        #[arg(value_parser = model_arg)]
        model: PathBuf,
        /// The output path (see the artifact names below).
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
        /// What to produce.
        #[arg(long, value_enum, default_value = "exe")]
        emit: compile::Emit,
        /// Target triple (default: this machine's).
        #[arg(long)]
        target: Option<String>,
        /// CPU model whose features the code may use.
        #[arg(long)]
        cpu: Option<String>,
        /// The data caches to block the GEMMs and attention for, as L1D,L2,L3 (e.g.
        /// 32K,512K,32M; default: the --cpu level's, or this machine's).
        #[arg(long)]
        caches: Option<bertc_targets::Caches>,
        /// What the artifact outputs: last_hidden_state, pooler, mean, cls, max, logits or
        /// embedding (a sentence-transformers folder's pooling and normalization; the default
        /// for such a folder, else last_hidden_state).
        #[arg(long)]
        output: Option<OutputKind>,
        /// Longest sequence the artifact accepts (default: the model's maximum).
        #[arg(long = "max-seq")]
        max_seq: Option<usize>,
        /// Prefix of the C symbols (default: the output file name).
        #[arg(long)]
        name: Option<String>,
        /// The tokenizer.json compiled into the artifact (default: the model folder's, or the
        /// one beside the .onnx file); `none`: the artifact takes token ids only.
        #[arg(long)]
        tokenizer: Option<PathBuf>,
        /// Link the executable statically: no shared C library needed where it runs (always
        /// so for other architectures than this machine's).
        #[arg(long = "static")]
        static_exe: bool,
        /// Print nothing on success.
        #[arg(short, long)]
        quiet: bool,
        #[command(flatten)]
        quant: QuantizeArgs,
        #[command(flatten)]
        prune: PruneArgs,
        /// Write an HTML report of what pruning (--speedup or --latency) and quantization
        /// with --calibration did.
        #[arg(long)]
        report: Option<PathBuf>,
        /// STS Benchmark file to score the dense and the pruned model on for the report.
        #[arg(long, requires = "report")]
        sts: Option<PathBuf>,
    },
    /// Measure this machine's latency profile for structured pruning.
    #[command(after_help = "\
Measures one encoder layer's attention block for every number of kept heads and its FFN block
for kept neurons in steps, with the generated kernels, at the given shape and threads; writes
the JSON profile that `bertc compile --speedup/--latency --profile` reads. The layer shape
comes from MODEL, or from --hidden/--heads/--intermediate.

Examples:
  bertc profile model.onnx --batch 1 --seq 128 --threads 2 -o model.profile.json
  bertc profile model.onnx --target aarch64-unknown-linux-gnu --emit exe -o profiler-arm
  ./profiler-arm board.profile.json      # on the board")]
    Profile {
        /// A model whose layer shape to measure (.onnx or Hugging Face folder).
        #[arg(value_parser = model_arg)]
        model: Option<PathBuf>,
        /// Where to write the profile (or the profiler, with --emit exe).
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
        /// Target triple (default: this machine's).
        #[arg(long)]
        target: Option<String>,
        #[arg(long)]
        cpu: Option<String>,
        /// The caches to block for, as L1D,L2,L3 (as `bertc compile --caches`; recorded in
        /// the profile).
        #[arg(long)]
        caches: Option<bertc_targets::Caches>,
        /// `profile` measures here; `exe` writes the profiler executable for the target.
        #[arg(long, value_enum, default_value = "profile")]
        emit: ProfileEmit,
        #[arg(long, default_value = "1")]
        batch: usize,
        #[arg(long, default_value = "128")]
        seq: usize,
        /// Worker threads (0: all cores).
        #[arg(long, default_value = "0")]
        threads: usize,
        /// FFN neurons between measured levels.
        #[arg(long = "ffn-step", default_value = "32")]
        ffn_step: usize,
        /// Timed runs per level (the median is kept).
        #[arg(long, default_value = "30")]
        runs: usize,
        #[arg(long)]
        hidden: Option<usize>,
        #[arg(long)]
        heads: Option<usize>,
        #[arg(long)]
        intermediate: Option<usize>,
        /// Encoder layers (copies of the block measured together; default: the model's, or 6).
        #[arg(long)]
        layers: Option<usize>,
        /// Measure the layers quantized (for `compile --speedup/--latency --quantize`).
        #[arg(long, value_enum)]
        quantize: Option<quantize::Quantize>,
    },
    /// Score a model or a compiled shared library on sentence similarity.
    #[command(after_help = "\
--sts prints the Spearman correlation (x100) of the cosine similarities of the mean-pooled
embeddings against the gold scores of an STS Benchmark file; --against prints how closely
the embeddings agree with another model's on the same sentences (mean and least cosine).

Examples:
  bertc eval model.onnx --sts sts-test.csv
  bertc compile model.onnx -o small --emit sharedlib --output mean
  bertc eval libsmall.so --tokenizer tokenizer.json --sts sts-test.csv --against model.onnx")]
    Eval {
        /// A model (.onnx or Hugging Face folder) or a shared library artifact (libNAME.so).
        #[arg(value_parser = model_arg)]
        model: PathBuf,
        /// Symbol prefix of a .so artifact (default: its file name without lib).
        #[arg(long)]
        name: Option<String>,
        /// The tokenizer.json (default: the one beside the model).
        #[arg(long)]
        tokenizer: Option<PathBuf>,
        /// An STS Benchmark file (tab-separated: ..., score, sentence 1, sentence 2).
        #[arg(long)]
        sts: Option<PathBuf>,
        /// Another model or artifact to compare embeddings with.
        #[arg(long)]
        against: Option<PathBuf>,
        /// Symbol prefix of the --against .so artifact.
        #[arg(long = "against-name")]
        against_name: Option<String>,
        /// Worker threads (0: all cores).
        #[arg(long, default_value = "0")]
        threads: i32,
    },
    /// Measure generated code: the GEMM kernel (--gemm) or whole inferences of a model.
    #[command(after_help = "\
Examples:
  bertc bench --gemm 128x768x768             # GFLOP/s of the GEMM kernel, one thread, vs the FMA peak
  bertc bench --gemm 128x384x1536 --quantize int8   # the int8 kernel (integer ops counted as flops)
  bertc bench model.onnx --batch 1 --seq 128 # compile to a shared library and time inferences
  bertc bench model.onnx --curve --runs 5    # tokens per second from 1 x 16 to 64 x 128
  bertc bench model.onnx --tokenize          # its tokenizer against the tokenizers crate
  bertc compile model.onnx -o model --emit sharedlib
  bertc bench libmodel.so --name model --batch 8 --seq 128 --ragged
  bertc bench libmodel.so --against model.onnx --threads 2   # two artifacts, interleaved")]
    Bench {
        /// A model (.onnx or Hugging Face folder) or a compiled shared library (.so).
        #[arg(value_parser = model_arg)]
        model: Option<PathBuf>,
        /// Time the GEMM kernel on an MxKxN problem instead of a model.
        #[arg(long)]
        gemm: Option<String>,
        /// Symbol prefix of a .so artifact.
        #[arg(long)]
        name: Option<String>,
        #[arg(long, default_value = "1")]
        batch: usize,
        #[arg(long, default_value = "128")]
        seq: usize,
        /// Sequence i of the batch has (i+1)*seq/batch real tokens, the rest padding.
        #[arg(long)]
        ragged: bool,
        /// Time the throughput curve (batch 1 to 64 at seq 128, seq 16 to 512 at batch 1, a
        /// ragged batch of 64 against a dense one of as many tokens) instead of one shape; each
        /// round times every shape, so that the machine's drift hits them alike.
        #[arg(long, conflicts_with_all = ["batch", "seq", "ragged", "gemm"])]
        curve: bool,
        /// Time the artifact's compiled-in tokenizer against the `tokenizers` crate (one
        /// thread each) instead of inferences.
        #[arg(long, conflicts_with_all = ["batch", "seq", "ragged", "gemm", "curve", "against"])]
        tokenize: bool,
        /// With --tokenize: the texts (one a line, or an STS Benchmark file; default: the
        /// built-in calibration set).
        #[arg(long, requires = "tokenize")]
        texts: Option<PathBuf>,
        /// Worker threads (0: all cores).
        #[arg(long, default_value = "0")]
        threads: i32,
        /// Timed runs (after 3 warm-up runs).
        #[arg(long, default_value = "30")]
        runs: usize,
        /// CPU model for the generated code (default: this machine's).
        #[arg(long)]
        cpu: Option<String>,
        /// The caches to block for when compiling here, as L1D,L2,L3 (as `bertc compile
        /// --caches`).
        #[arg(long)]
        caches: Option<bertc_targets::Caches>,
        /// Another model or .so artifact to time in the same run (e.g. dense against pruned).
        #[arg(long)]
        against: Option<PathBuf>,
        /// Symbol prefix of the --against .so artifact.
        #[arg(long = "against-name")]
        against_name: Option<String>,
        /// Quantize MODEL when compiling it here (not --against), or time the int8 GEMM
        /// kernel with --gemm.
        #[arg(long, value_enum)]
        quantize: Option<quantize::Quantize>,
    },
    /// Print a model's architecture, sizes, parameters and op counts.
    #[command(
        after_help = "MODEL is an .onnx file, a Hugging Face folder (config.json + safetensors), or a folder holding an ONNX export (model.onnx) without safetensors.\n\nExample:\n  bertc inspect model.onnx"
    )]
    Inspect {
        /// An .onnx file, or a folder: Hugging Face (config.json + safetensors), or an ONNX
        /// export (model.onnx or onnx/model.onnx beside tokenizer.json) without safetensors.
        #[arg(value_parser = model_arg)]
        model: PathBuf,
    },
    /// Print the IR of a model, raised (default) or as imported (--raw).
    #[command(
        after_help = "Examples:\n  bertc ir model.onnx --raw | less\n  bertc ir model.onnx --output mean\n  bertc ir model.onnx --output mean --lowered --target aarch64-unknown-linux-gnu"
    )]
    Ir {
        /// An .onnx file, or a folder: Hugging Face (config.json + safetensors), or an ONNX
        /// export (model.onnx or onnx/model.onnx beside tokenizer.json) without safetensors.
        #[arg(value_parser = model_arg)]
        model: PathBuf,
        /// Print the IR as the importer built it, before canonicalisation and raising.
        #[arg(long)]
        raw: bool,
        /// Keep only this output (last_hidden_state, pooler, mean, cls, max, logits,
        /// embedding).
        #[arg(long)]
        output: Option<OutputKind>,
        /// Print what each pass did (to stderr).
        #[arg(long)]
        report: bool,
        /// Also run the fusion passes that `bertc compile` runs (with --output).
        #[arg(long, requires = "output")]
        optimize: bool,
        #[command(flatten)]
        quant: QuantizeArgs,
        /// Print the lowered program code generation builds instead (buffers, weights in their
        /// layouts, steps with the kernels chosen for the target; with --output, fused).
        #[arg(long, requires = "output", conflicts_with = "raw")]
        lowered: bool,
        /// With --lowered: the target triple (default: this machine's).
        #[arg(long, requires = "lowered")]
        target: Option<String>,
        /// With --lowered: the CPU whose kernels to choose.
        #[arg(long, requires = "lowered")]
        cpu: Option<String>,
        /// With --lowered: the caches to block for, as L1D,L2,L3 (as `bertc compile --caches`).
        #[arg(long, requires = "lowered")]
        caches: Option<bertc_targets::Caches>,
        /// Prune as `bertc compile` does (--speedup or --latency with --profile).
        #[command(flatten)]
        prune: PruneArgs,
    },
    /// Run a model with the reference interpreter.
    #[command(after_help = "\
Input: one sequence per line of standard input, as space-separated token ids (or --text).
Output: one line per input line, the output values separated by spaces, row-major.

Examples:
  echo '2 73 1043 3' | bertc run model.onnx --output last_hidden_state
  bertc run model.onnx --mask mask.txt --type-ids types.txt < ids.txt
  bertc run ./my-model --text 'A sentence.' --text 'Another one.' --output mean")]
    Run {
        /// An .onnx file, or a folder: Hugging Face (config.json + safetensors), or an ONNX
        /// export (model.onnx or onnx/model.onnx beside tokenizer.json) without safetensors.
        #[arg(value_parser = model_arg)]
        model: PathBuf,
        /// What to print: last_hidden_state, pooler, mean, cls, max, logits or embedding (the
        /// default for a sentence-transformers folder, else last_hidden_state).
        #[arg(long)]
        output: Option<OutputKind>,
        /// Attention masks (0 or 1), one line per input line; default all ones.
        #[arg(long)]
        mask: Option<PathBuf>,
        /// Token type ids, one line per input line; default all zeros.
        #[arg(long = "type-ids")]
        type_ids: Option<PathBuf>,
        /// A text to tokenize with the model's tokenizer.json instead of reading ids (repeatable).
        #[arg(long)]
        text: Vec<String>,
        /// The tokenizer.json to use with --text (default: the one beside the model).
        #[arg(long)]
        tokenizer: Option<PathBuf>,
        /// Interpret the graph after the fusion passes that `bertc compile` runs.
        #[arg(long)]
        optimize: bool,
        #[command(flatten)]
        quant: QuantizeArgs,
        /// Prune as `bertc compile` does (--speedup or --latency with --profile), then run.
        #[command(flatten)]
        prune: PruneArgs,
    },
}

/// A model argument: a folder that holds only an ONNX export names its `model.onnx`
/// (`bertc_import::model_file`), so that every command treats it as that file.
fn model_arg(s: &str) -> Result<PathBuf, String> {
    Ok(bertc_import::model_file(std::path::Path::new(s)))
}
