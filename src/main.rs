//! The `diffvsr-wgpu` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use diffvsr_wgpu::{bench, fetch, gpu, DType, Gpu, GpuOptions};

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
    /// Download the DiffVSR weights from the Hugging Face hub into its standard cache (shared
    /// with Python tools). Resumes broken downloads, verifies sizes and sha256, skips what is
    /// already there; every command then finds the weights by default.
    FetchWeights {
        /// Hub URL (a mirror, or a local server).
        #[arg(long, env = "HF_ENDPOINT", default_value = fetch::DEFAULT_ENDPOINT)]
        endpoint: String,
        /// Access token for gated or private repositories (default: HF_TOKEN, else the token
        /// saved by `huggingface-cli login`).
        #[arg(long)]
        token: Option<String>,
        /// Repository on the hub.
        #[arg(long, default_value = fetch::DIFFVSR_REPO)]
        repo: String,
        /// Branch, tag or commit.
        #[arg(long, default_value = fetch::DEFAULT_REVISION)]
        revision: String,
        /// Hub cache folder (default: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// Fetch only repository paths matching this glob (`*` matches across folders; repeat
        /// for several). Default: DiffVSR_UNet.pt, TE-3DVAE.pt and upscaler4x/*.
        #[arg(long)]
        include: Vec<String>,
        /// Re-hash the weights already in the cache, downloading damaged ones again.
        #[arg(long)]
        verify: bool,
        /// Further tries after a network failure, each resuming where the last stopped.
        #[arg(long, default_value_t = 5)]
        retries: u32,
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
        Cmd::FetchWeights { endpoint, token, repo, revision, cache_dir, include, verify, retries } => {
            let mut o = fetch::FetchOptions::from_env()?;
            o.endpoint = endpoint;
            o.token = token.or(o.token);
            o.repo_id = repo;
            o.revision = revision;
            if let Some(c) = cache_dir {
                o.cache_dir = c;
            }
            if !include.is_empty() {
                o.include = include;
            }
            o.verify_cached = verify;
            o.retries = retries;
            eprintln!("fetching {} ({}) from {} into {}", o.repo_id, o.revision, o.endpoint, o.cache_dir.display());
            let r = fetch::fetch(&o)?;
            let fetched = r.files.iter().filter(|(_, out)| *out != fetch::Outcome::Cached).count();
            eprintln!(
                "{} files at commit {}: {fetched} downloaded ({:.1} MB), {} already cached",
                r.files.len(),
                r.commit,
                r.bytes_downloaded as f64 / 1e6,
                r.files.len() - fetched
            );
            println!("{}", r.snapshot.display());
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
