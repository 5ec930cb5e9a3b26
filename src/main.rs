//! The `diffvsr-wgpu` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use diffvsr_wgpu::{bench, gpu, DType, Gpu, GpuOptions};

#[derive(Parser)]
#[command(name = "diffvsr-wgpu", version, about = "DiffVSR video super-resolution on any GPU (WGSL kernels on wgpu)")]
struct Cli {
    /// Adapter to use: an index from `devices`, or part of its name.
    #[arg(long, global = true, env = "DIFFVSR_ADAPTER")]
    adapter: Option<String>,
    /// Backend to use: vulkan, metal, dx12 or gl.
    #[arg(long, global = true, env = "DIFFVSR_BACKEND")]
    backend: Option<String>,
    /// Never use f16 storage, even where the adapter supports it.
    #[arg(long, global = true)]
    no_f16: bool,
    /// Never use cooperative matrices (tensor cores), even where the adapter reports them.
    #[arg(long, global = true)]
    no_coop: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// List every GPU adapter on every backend, with the features and limits the engine uses.
    Devices,
    /// Encode a text prompt with the release's CLIP text encoder and save the embedding for reuse
    /// (the pipeline reads it with --prompt-embeds).
    EncodePrompt {
        /// The prompt (e.g. "clear, high quality, high-resolution, 4K").
        text: String,
        /// Output file: safetensors with one f32 tensor `prompt_embeds` [1, 77, D].
        #[arg(short, long)]
        output: PathBuf,
        /// Folder holding text_encoder/ and tokenizer/ (the SD x4 upscaler, DiffVSR's upscaler4x/),
        /// or the release's top folder.
        #[arg(long, env = "DIFFVSR_WEIGHTS")]
        weights: Option<PathBuf>,
        /// Storage dtype of the encoder: f32 or f16.
        #[arg(long, default_value = "f32")]
        dtype: DType,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
}

#[derive(Subcommand)]
enum BenchWhat {
    /// Time each kernel at DiffVSR's real shapes (GPU timestamps where available).
    Kernels {
        /// Only kernels whose name contains this.
        #[arg(long)]
        filter: Option<String>,
        /// Storage dtype: f32 or f16 (default: f16 where supported).
        #[arg(long)]
        dtype: Option<DType>,
        /// Timed repetitions per kernel.
        #[arg(long, default_value_t = 10)]
        iters: u32,
        /// Tiny shapes (a smoke run, e.g. on a software adapter).
        #[arg(long)]
        quick: bool,
    },
}

fn run(cli: Cli) -> Result<()> {
    let opts = GpuOptions { adapter: cli.adapter, backend: cli.backend, no_f16: cli.no_f16, no_coop: cli.no_coop };
    match cli.cmd {
        Cmd::Devices => {
            print!("{}", gpu::devices_report());
            Ok(())
        }
        Cmd::EncodePrompt { text, output, weights, dtype } => {
            let Some(weights) = weights else {
                anyhow::bail!("no weights folder: pass --weights DIR (or set DIFFVSR_WEIGHTS)");
            };
            let g = Gpu::new(&opts)?;
            if dtype == DType::F16 && !g.has_f16() {
                anyhow::bail!("--dtype f16: this adapter lacks SHADER_F16; use --dtype f32");
            }
            let t = std::time::Instant::now();
            let r = diffvsr_wgpu::models::clip_text::encode_prompt_to_file(&g, &weights, &text, &output, dtype)?;
            eprintln!(
                "{text:?}: {} of {} tokens used; prompt_embeds {:?} written to {} ({:.1} s)",
                r.used,
                r.ids.len(),
                r.shape,
                output.display(),
                t.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Cmd::Bench { what: BenchWhat::Kernels { filter, dtype, iters, quick } } => {
            let g = Gpu::new(&opts)?;
            let dtype = dtype.unwrap_or(if g.has_f16() { DType::F16 } else { DType::F32 });
            if dtype == DType::F16 && !g.has_f16() {
                anyhow::bail!("--dtype f16: this adapter lacks SHADER_F16; use --dtype f32");
            }
            bench::run_kernels(&g, &bench::BenchOptions { filter, dtype, iters: iters.max(1), quick })
        }
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn,wgpu_hal=off")).init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
