//! `pmq`: merge expert models, then quantize the merged model guided by the experts.

mod bench_cmd;
mod compare_cmd;
mod demo_cmd;
mod eval_cmd;
mod finetune_cmd;
mod flag_values;
mod labelled;
mod merge_cmd;
mod output;
mod quant_flags;
mod quantize_cmd;
mod recipe;
mod solve_cmd;
mod testbed_cmd;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "pmq",
    version,
    about = "Expert-guided post-merge quantization (E-PMQ) and its baselines"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Merge K fine-tuned experts that share a base checkpoint into one model.
    Merge(merge_cmd::MergeArgs),
    /// Quantize a whole (merged) model layer by layer: RTN, GPTQ, AWQ or E-PMQ.
    Quantize(quantize_cmd::QuantizeArgs),
    /// Compare two BERT models' sentence embeddings (mean cosine) on a JSONL text file.
    Compare(compare_cmd::CompareArgs),
    /// The real testbed: fetch it, list it, export task splits.
    Testbed(testbed_cmd::TestbedArgs),
    /// Quantize one linear layer (RTN, GPTQ or E-PMQ) from a layer file; for research and checks.
    Solve(solve_cmd::SolveArgs),
    /// Train one expert per testbed task (full fine-tuning or a linear probe).
    Finetune(finetune_cmd::FinetuneArgs),
    /// Per-task test accuracy of a model (HF or pmq GPTQ) with the experts' heads.
    Eval(eval_cmd::EvalArgs),
    /// The paper's tables on the real testbed (main, α ablation, bits, calibration budget).
    Bench(bench_cmd::BenchArgs),
    /// The whole path on the real testbed: fetch, fine-tune experts, merge, quantize, evaluate.
    Demo(demo_cmd::DemoArgs),
    /// Merge, quantize, export and evaluate from one recipe file (YAML; the merge section may
    /// be mergekit's); reruns skip finished steps.
    Run(recipe::RunArgs),
}

/// mimalloc keeps freed large buffers (Hessians, weights, activations: tens to hundreds of
/// MiB, freed and reallocated per linear and batch) mapped for reuse; glibc unmaps every
/// buffer over 32 MiB, so each reuse page-faults and zeroes it again.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `purge_delay` option (`mi_option_purge_delay` in mimalloc.h, v2 and v3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed memory committed for reuse instead of purging it back to the OS 10 ms after
/// it is freed: the pipeline frees and reallocates buffers of tens to hundreds of MiB per
/// linear and per task, and every purge made the next use fault the pages in and zero them
/// again (on the 2-core bench machine: the peer benchmark's run 40.8 s → 33.7 s, peak RSS
/// 1.45 → 1.76 GiB). The environment still decides when set (`MIMALLOC_PURGE_DELAY=10`
/// restores mimalloc's default).
fn keep_freed_memory() {
    // SAFETY: sets one option of the allocator; called before any thread is started
    unsafe { libmimalloc_sys::mi_option_set_default(MI_OPTION_PURGE_DELAY, -1) }
}

/// `pmq quantize` runs its calibration batches on rayon's threads, as many at once as there
/// are threads, and candle then runs each batch's element-wise operations on a spinning thread
/// pool of its own (`CANDLE_NUM_THREADS`, by default one thread per core) beside them: two
/// pools for the same cores. With one candle thread those operations run on the batch's own
/// thread (the GEMMs still use every core): the pipeline benchmark's passes 8–10 % faster
/// (`--no-true-sequential`: 25.4 → 23.7 s, mean of 3 alternating runs), the peer benchmark's
/// run 2–3 %. Set before any thread starts; `CANDLE_NUM_THREADS` still decides when set.
fn one_candle_thread_for_batch_parallel_passes(command: &Command) {
    if matches!(command, Command::Quantize(_)) && std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

fn main() -> std::process::ExitCode {
    keep_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PMQ_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    one_candle_thread_for_batch_parallel_passes(&cli.command);
    install_signal_handler();
    let result = match cli.command {
        Command::Merge(args) => merge_cmd::run(args),
        Command::Solve(args) => solve_cmd::run(args),
        Command::Quantize(args) => quantize_cmd::run(args),
        Command::Compare(args) => compare_cmd::run(args),
        Command::Testbed(args) => testbed_cmd::run(args),
        Command::Finetune(args) => finetune_cmd::run(args),
        Command::Eval(args) => eval_cmd::run(args),
        Command::Bench(args) => bench_cmd::run(args),
        Command::Demo(args) => demo_cmd::run(args),
        Command::Run(args) => recipe::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// On SIGINT, SIGTERM or SIGHUP: remove every temporary file and directory this process has
/// next to its outputs (putting back an output that was being replaced), then exit with
/// 128 + the signal number. Outputs only ever appear complete, so nothing partial stays.
fn install_signal_handler() {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = match signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot install the signal handler ({e}); an interrupt may leave temporary files behind");
            return;
        }
    };
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            let name = match sig {
                SIGINT => "SIGINT",
                SIGTERM => "SIGTERM",
                _ => "SIGHUP",
            };
            let n = pmq_io::debris::remove_registered();
            eprintln!("error: interrupted by {name}; removed {n} temporary file(s)/directory(ies), no output was written");
            std::process::exit(128 + sig);
        }
    });
}
