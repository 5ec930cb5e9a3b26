//! The `diffvsr-wgpu` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use diffvsr_wgpu::gpu::TuneMode;
use diffvsr_wgpu::{bench, checkpoint, fetch, forward, gpu, DType, Gpu, GpuOptions};

/// The command line: `upscale` (the DiffVSR job as a y4m filter, also what runs without a
/// command) and the tools around the engine's models.
#[derive(Parser)]
#[command(
    name = "diffvsr-wgpu",
    version,
    about = "DiffVSR video super-resolution engine on any GPU (WGSL kernels on wgpu).",
    long_about = "DiffVSR video super-resolution engine on any GPU (WGSL kernels on wgpu).\n\n\
                  Without a command it is the filter: `upscale` with the options below, the y4m stream \
                  from stdin (or -i) upscaled ×4 to stdout (or -o), e.g. \
                  `ffmpeg -i in.mp4 -f yuv4mpegpipe - | diffvsr-wgpu | ffmpeg -f yuv4mpegpipe -i - out.mp4`. \
                  Large frames run in spatial tiles (--tile). The other commands list GPUs, fetch and convert the weights, encode \
                  prompts, run one forward pass of each model against reference tensors, and benchmark kernels.",
    after_help = "Examples:\n  \
                  diffvsr-wgpu fetch-weights\n  \
                  ffmpeg -i in.mp4 -f yuv4mpegpipe - | diffvsr-wgpu | ffmpeg -f yuv4mpegpipe -i - out.mp4\n  \
                  diffvsr-wgpu -i in.y4m -o out.y4m --gif preview.gif\n  \
                  diffvsr-wgpu -i in.y4m --plan    (what a run would do: windows, tiles, memory)\n  \
                  diffvsr-wgpu devices\n\n\
                  README.md has the rest: prompts, --frames parts, tiles, choosing a GPU."
)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// The filter's options (those of `upscale`) when no command is given.
    #[command(flatten)]
    upscale: UpscaleCli,
}

/// How to choose and use the GPU (commands that run one).
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "GPU")]
struct GpuArgs {
    /// Adapter to use: an index from `devices`, or part of its name.
    #[arg(long, env = "DIFFVSR_ADAPTER")]
    adapter: Option<String>,
    /// Backend to use: vulkan, metal, dx12 or gl.
    #[arg(long, env = "DIFFVSR_BACKEND")]
    backend: Option<String>,
    /// Never use f16 storage, even where the adapter supports it (or DIFFVSR_NO_F16=1).
    #[arg(long)]
    no_f16: bool,
    /// Never use cooperative matrices (tensor cores), even where the adapter reports them (or
    /// DIFFVSR_NO_COOP=1).
    #[arg(long)]
    no_coop: bool,
    /// Give each activation a buffer of its own instead of packing them at offsets of a few
    /// buffers (more memory; or DIFFVSR_NO_PACK_ACTIVATIONS=1).
    #[arg(long)]
    no_pack_activations: bool,
    /// Convolutions, linear layers and attention on f32 storage (the VAE decoders') multiply on
    /// tensor cores with operands rounded to f16, accumulating and storing in f32, as PyTorch's
    /// TF32 default does, where the adapter has cooperative matrices: about 7e-4 relative error
    /// on the VAE goldens, against 2e-3 with f16 storage. auto: on for `upscale`, which decodes
    /// again with f32 operands any chunk that overflows f16's range; off for `forward`, `bench`
    /// (checks against references) and `encode-prompt`. on (or the flag alone, so give a value
    /// where a word follows it): everywhere, an overflow stops with an error.
    #[arg(long, env = "DIFFVSR_F16_OPERANDS", default_value = "auto", value_name = "auto|on|off", num_args = 0..=1, default_missing_value = "on")]
    f16_operands: TuneMode,
    /// Time the candidate tiles of each matmul, convolution and attention shape the first time it runs and
    /// keep the fastest (the same values, sooner): auto tunes on a hardware GPU and not on a
    /// software adapter. The choices persist per adapter and driver in
    /// ~/.cache/diffvsr-wgpu/tuning (DIFFVSR_TUNE_CACHE=DIR moves it, off keeps them to the run).
    #[arg(long, env = "DIFFVSR_TUNE", default_value = "auto", value_name = "auto|on|off")]
    tune: TuneMode,
    /// Apply each GroupNorm (and SiLU) inside the convolution or linear layer that reads it, and
    /// each LayerNorm inside the linear layer that reads it, as they load their input, instead
    /// of in a pass of its own (the same values, a pass over memory less, the normalisation
    /// redone per tap or column tile): auto times both per shape where tuning is on and keeps
    /// them apart where it is off.
    #[arg(long, env = "DIFFVSR_NORM_INTO_CONV", default_value = "auto", value_name = "auto|on|off")]
    norm_into_conv: TuneMode,
    /// Run every resnet's 3×3 convolutions (and the TE-3DVAE's 3×3×3 ones) by Winograd's
    /// F(2×2, 3×3): 4/9 of their multiplies for more passes over memory, values within a few
    /// roundings of the direct convolution's (an experiment: faster or not depends on the GPU;
    /// see BENCHMARKS.md; or DIFFVSR_WINOGRAD=1).
    #[arg(long)]
    winograd: bool,
}

/// A `--gpu-memory` size (`10GiB`, `512MiB`, bytes). A bare number under 1 MiB is refused: no
/// job fits in it, and `--gpu-memory 10` means 10 GiB far more often than 10 bytes.
fn parse_size(s: &str) -> Result<u64, String> {
    let bytes = diffvsr_wgpu::gpu::parse_bytes(s)?;
    if bytes < 1 << 20 && s.trim().chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(format!("{s} bytes is too little GPU memory for any job: give a unit, e.g. {s}GiB"));
    }
    Ok(bytes)
}

impl GpuArgs {
    fn open(&self) -> Result<std::sync::Arc<Gpu>> {
        self.open_planning(false, None)
    }

    /// Opens the adapter for `upscale`, where `--f16-operands auto` means on.
    fn open_for_upscale(&self) -> Result<std::sync::Arc<Gpu>> {
        let mut args = self.clone();
        if args.f16_operands == TuneMode::Auto {
            args.f16_operands = TuneMode::On;
        }
        args.open()
    }

    /// Opens the adapter; `plan_only` for graphs that are planned and never run (`forward
    /// --plan-only`: nothing is timed; where tuning is on, the choices of earlier runs are
    /// made), with `plan_limits` (binding, buffer) as the adapter's.
    fn open_planning(&self, plan_only: bool, plan_limits: Option<(u64, u64)>) -> Result<std::sync::Arc<Gpu>> {
        // The switches that are also environment variables (GpuOptions::from_env): either turns them on.
        let env = GpuOptions::from_env();
        Gpu::new(&GpuOptions {
            plan_limits,
            tune: self.tune,
            tune_cache: env.tune_cache,
            replay_tuning: plan_only,
            adapter: self.adapter.clone(),
            backend: self.backend.clone(),
            no_f16: self.no_f16 || env.no_f16,
            no_coop: self.no_coop || env.no_coop,
            max_binding: env.max_binding,
            max_memory: env.max_memory,
            max_workgroup_storage: env.max_workgroup_storage,
            offset_alignment: env.offset_alignment,
            no_pack_activations: self.no_pack_activations || env.no_pack_activations,
            f16_operands: self.f16_operands == TuneMode::On,
            norm_into_conv: self.norm_into_conv,
            winograd: self.winograd || env.winograd,
        })
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// List every GPU adapter with the features and limits the engine uses: on Vulkan, Metal and
    /// DX12, or on the one backend named (GL is listed only when named or when nothing else is).
    Devices {
        /// Only this backend: vulkan, metal, dx12 or gl. `--adapter` indices refer to this list.
        #[arg(long, env = "DIFFVSR_BACKEND")]
        backend: Option<String>,
    },
    /// Download the DiffVSR weights from the Hugging Face hub into its standard cache (shared
    /// with Python tools). Resumes broken downloads, verifies sizes and hashes (sha256, or the
    /// git blob id for files outside Git LFS), skips what is
    /// already there; the commands that need the DiffVSR weights then find them by default.
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
        /// Hub cache folder (default: HF_HUB_CACHE, else HUGGINGFACE_HUB_CACHE, else HF_HOME/hub, else
        /// XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// Fetch only repository paths matching this glob (`*` matches across folders; repeat
        /// for several). Default: DiffVSR_UNet.pt, TE-3DVAE.pt and upscaler4x/*.
        #[arg(long)]
        include: Vec<String>,
        /// Re-hash the weights already in the cache, downloading damaged ones again, and convert
        /// the checkpoints to safetensors afresh (the copies the engine loads have no hash).
        #[arg(long)]
        verify: bool,
        /// Further tries after a network failure, each resuming where the last stopped.
        #[arg(long, allow_negative_numbers = true, default_value_t = 5)]
        retries: u32,
        /// Keep the checkpoints as .pt only (by default they are also converted once to
        /// safetensors, in converted/<commit>/ beside the snapshot).
        #[arg(long)]
        no_convert: bool,
    },
    /// Encode a text prompt with the release's CLIP text encoder and save the embedding for reuse.
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
        #[command(flatten)]
        gpu: GpuArgs,
    },
    /// One forward pass of one model on named input tensors (a safetensors file); writes the
    /// result as tensor `output` (f32).
    Forward {
        /// unet | vae-decoder | text-encoder | diffvsr-unet | uav-unet | te3dvae-decoder | uav-vae3d-decoder
        #[arg(long)]
        model: forward::ModelKind,
        /// The model's config.json (default: the released one; for the video UNets the official
        /// configs/unet_3d_config.json or configs/unet_video_config.json).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Weights: a .safetensors file, a PyTorch checkpoint (.pt/.bin; DiffVSR_UNet.pt's 'ema'), or a
        /// folder. Default: the release `fetch-weights` downloaded (DiffVSR and SD×4 models).
        #[arg(long, conflicts_with = "random_weights")]
        weights: Option<PathBuf>,
        /// Build the model with seeded random weights instead (full-size checks without a download).
        #[arg(long, allow_negative_numbers = true)]
        random_weights: Option<u64>,
        /// Inputs (.safetensors): unet: sample [B,C,H,W], timestep [B], class_labels [B],
        /// encoder_hidden_states [B,77,D]; diffvsr-unet, uav-unet: the same with sample
        /// [B,7,F,H,W]; vae-decoder: latents [B,4,h,w] (already divided by the scaling factor);
        /// te3dvae-decoder / uav-vae3d-decoder: latents [B,4,F,h,w] (likewise; output
        /// [B,3,F,H,W]); text-encoder: input_ids [B,77] (token ids as numbers).
        #[arg(long, required_unless_present = "random_inputs")]
        inputs: Option<PathBuf>,
        /// Synthesize seeded inputs of batch B at latent size H×W instead, e.g. 16x128x128 (the
        /// video UNets get windows of 8 frames; text-encoder: B sequences of H·W random tokens,
        /// e.g. 2x77x1).
        #[arg(long, value_parser = parse_bhw, conflicts_with = "inputs")]
        random_inputs: Option<(usize, usize, usize)>,
        /// Where to write the output tensor (.safetensors); nothing is written without it.
        #[arg(long)]
        output: Option<PathBuf>,
        /// Reference output (.safetensors, tensor `output`) to compare with: prints the relative
        /// L2 error and PASS or FAIL, and exits non-zero on FAIL. Without it, an `output` tensor
        /// in the inputs file is the reference.
        #[arg(long)]
        expect: Option<PathBuf>,
        /// Relative L2 tolerance for --expect (default: 1e-4 with f32 storage, 2e-3 with f32
        /// storage on f16 operands, 1e-2 with f16).
        #[arg(long, allow_negative_numbers = true, value_parser = parse_tolerance, requires = "expect")]
        tolerance: Option<f64>,
        /// Storage dtype (default: f16 for the UNet where supported, f32 for the VAE decoder).
        #[arg(long)]
        dtype: Option<DType>,
        /// Print planned memory, dispatch count and GPU time per forward.
        #[arg(long)]
        report: bool,
        /// Timed repetitions for --report (at least 1; the median is reported).
        #[arg(long, allow_negative_numbers = true, default_value_t = 5, value_parser = parse_count)]
        runs: usize,
        /// Also write the report as one JSON object (model, dtype, shape, device, median GPU ms,
        /// dispatches, also by kernel, planned and measured bytes) to this file; implies --report.
        #[arg(long, alias = "report-json")]
        json: Option<PathBuf>,
        /// Print GPU time per kernel, summed over one replay (needs timestamp queries).
        #[arg(long)]
        profile: bool,
        /// UNets: the batch is a classifier-free-guidance pair, as `upscale` runs it (equal
        /// halves but for the prompt), so the layers before the text enters run once for both
        /// halves. Random inputs get equal halves; an inputs file must have them.
        #[arg(long)]
        cfg_pair: bool,
        /// Capture the forward and plan its memory, without creating its activations or running
        /// it: prints the dispatches, FLOPs and memory (weights, inputs, planned activations) a
        /// run would need. It times nothing: where tuning is on, it makes the choices the tuning
        /// cache holds from earlier runs. With --plan-limits, for a GPU larger than this one.
        #[arg(long, conflicts_with_all = ["report", "json", "profile", "output", "expect", "runs"])]
        plan_only: bool,
        /// With --plan-only: plan as if this adapter's largest storage binding and largest
        /// buffer were BINDING and BUFFER, e.g. 2GiB,4GiB (an NVIDIA H100 or H200 on Vulkan), so
        /// a software adapter can plan the full-size shapes a GPU would run.
        #[arg(long, requires = "plan_only", value_parser = parse_plan_limits, value_name = "BINDING,BUFFER")]
        plan_limits: Option<(u64, u64)>,
        #[command(flatten)]
        gpu: GpuArgs,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
    /// Upscale a y4m video ×4 with DiffVSR (stdin to stdout by default; also what runs without
    /// a command), e.g.
    /// `ffmpeg -i in.mp4 -f yuv4mpegpipe - | diffvsr-wgpu upscale | ffmpeg -f yuv4mpegpipe -i - out.mp4`.
    Upscale(UpscaleCli),
    /// Convert weights (a PyTorch .pt/.pth/.bin checkpoint, safetensors files or a folder) to one
    /// safetensors file. Reads pickles without Python and never runs code from them.
    Convert {
        /// Input file or folder.
        input: PathBuf,
        /// Output .safetensors file.
        output: PathBuf,
        /// Entry of the checkpoint holding the state dict (e.g. `ema` for DiffVSR_UNet.pt;
        /// `a/b` for nested dicts). Default: the top level if it holds tensors, else the only
        /// sub-dict of tensors, or `ema` among several.
        #[arg(long)]
        key: Option<String>,
        /// Write floating tensors as f16 or f32. Default: f32 and f16 as stored, bf16 and f64 as f32.
        #[arg(long)]
        dtype: Option<DType>,
    },
}

/// The `upscale` command's flags.
#[derive(Args)]
struct UpscaleCli {
    /// Input y4m file (default, or `-`: stdin).
    #[arg(help_heading = "Files", short, long)]
    input: Option<PathBuf>,
    /// Output y4m file (default, or `-`: stdout).
    #[arg(help_heading = "Files", short, long)]
    output: Option<PathBuf>,
    /// The DiffVSR release folder (default: the release `fetch-weights` downloaded). A
    /// unet_3d_config.json or vae_config.json beside the checkpoints overrides the built-in configs.
    #[arg(help_heading = "Files", long, env = "DIFFVSR_WEIGHTS")]
    weights: Option<PathBuf>,
    /// Denoising steps (1 to 999).
    #[arg(help_heading = "Sampling", long, allow_negative_numbers = true, value_parser = parse_steps, default_value_t = diffvsr_wgpu::pipeline::scheduler::DEFAULT_STEPS)]
    steps: usize,
    /// Classifier-free guidance scale (at 1 or less none, as in the released pipeline: the UNet
    /// runs on the positive prompt alone, half the work; the negative prompt is still read, to
    /// no effect).
    #[arg(help_heading = "Sampling", long, default_value_t = diffvsr_wgpu::pipeline::scheduler::DEFAULT_GUIDANCE, allow_negative_numbers = true, value_parser = parse_finite)]
    guidance: f32,
    /// Low-res noise augmentation level (0 to 350).
    #[arg(help_heading = "Sampling", long, allow_negative_numbers = true, value_parser = parse_noise_level, default_value_t = diffvsr_wgpu::pipeline::scheduler::DEFAULT_NOISE_LEVEL)]
    noise_level: u32,
    /// Seed of all noise: the same seed gives the same bytes.
    #[arg(help_heading = "Sampling", long, default_value_t = 10, allow_negative_numbers = true, value_parser = parse_seed)]
    seed: u64,
    /// ILT weights: released (0.8/0.2 … 0.2/0.8) or paper (1 − j/3).
    #[arg(help_heading = "Sampling", long, default_value = "released")]
    ilt: diffvsr_wgpu::pipeline::windows::Ilt,
    /// YUV matrix: auto (BT.709 for frames 1280 or more wide or past 576 lines, else BT.601, as mpv guesses; the input and the output each by its own size), bt601, bt709 or bt2020 (non-constant luminance; y4m carries no matrix, so give it for BT.2020 sources).
    #[arg(help_heading = "Colour and output format", long, default_value = "auto")]
    matrix: diffvsr_wgpu::video::color::MatrixChoice,
    /// Output chroma subsampling: 420, 422, 444 or 411 (8-bit only; or yuv420p …; default: the input's).
    #[arg(help_heading = "Colour and output format", long, value_parser = parse_output_chroma)]
    output_chroma: Option<diffvsr_wgpu::video::y4m::Chroma>,
    /// Output bits per sample: 8, 9, 10, 12, 14 (not for monochrome, which ffmpeg's y4m lacks) or 16
    /// (default: the input's). More bits than the
    /// input's keep the model's finer steps, e.g. 10 for a 10-bit encode of an 8-bit source.
    #[arg(help_heading = "Colour and output format", long, value_parser = parse_output_depth)]
    output_depth: Option<u8>,
    /// Prompt.
    #[arg(help_heading = "Prompts", long, default_value = diffvsr_wgpu::pipeline::upscale::DEFAULT_PROMPT, conflicts_with = "prompt_embeds")]
    prompt: String,
    /// Negative prompt.
    #[arg(help_heading = "Prompts", long, default_value = diffvsr_wgpu::pipeline::upscale::DEFAULT_NEGATIVE_PROMPT, conflicts_with = "negative_prompt_embeds")]
    negative_prompt: String,
    /// Prompt embeddings from `encode-prompt` (safetensors `prompt_embeds` [1,77,D]) instead of --prompt.
    #[arg(help_heading = "Prompts", long)]
    prompt_embeds: Option<PathBuf>,
    /// Negative prompt embeddings from `encode-prompt` instead of --negative-prompt.
    #[arg(help_heading = "Prompts", long)]
    negative_prompt_embeds: Option<PathBuf>,
    /// No progress, notes or summary on stderr (only the note that --frames ran past the input's end
    /// stays; progress: frames written, window and step, frames/s, ETA once the length is
    /// known). Ctrl-C (or SIGTERM, SIGHUP) stops after the frame being written (exit code 130;
    /// a second one stops at once).
    #[arg(help_heading = "Frames, progress and planning", long)]
    quiet: bool,
    /// Also write a small animated GIF of the output (at most 320 pixels on the long side, the
    /// stream's frame rate; above 50 fps some frames are skipped to keep its pace), frame by
    /// frame as the output is written; with --frames, of the segment.
    #[arg(help_heading = "Files", long, value_name = "PREVIEW.gif")]
    gif: Option<PathBuf>,
    /// Emit only output frames START to END−1 (counted from 0), bit-identical to the same frames
    /// of a whole-clip run, so a long video can be split over many GPUs and the parts joined
    /// (concatenate the frames). Denoises only the windows that touch the segment; reads the
    /// input from its start but keeps only those windows' frames (from 11 to 14 frames before START on), and stops
    /// reading after the last of them (at most 10 frames past END). `START:` runs to the end of
    /// the stream. END past the end of the stream is not an error: the frames from START
    /// to the last are written and a note says so on stderr; START past the end is an error.
    /// Parts join byte for byte on one kind of GPU with the same tiles: give parts that share
    /// a GPU or run on different cards one fixed --tile (auto picks by free memory).
    #[arg(help_heading = "Frames, progress and planning", long, value_name = "START:END", allow_hyphen_values = true)]
    frames: Option<diffvsr_wgpu::pipeline::windows::FrameRange>,
    /// Spatial tile side in LR pixels (= latent pixels; a multiple of 8), or WxH for
    /// rectangular tiles, for the UNet and the VAE decoder alike; or `auto`: per model, of the
    /// tiles (rectangles too) its biggest tensor allows under the GPU's binding limit and whose
    /// graphs fit the GPU's memory where that is known (the driver's figure on Vulkan, Metal
    /// and DX12, or --gpu-memory), the one that processes the fewest pixels, overlaps counted (sides at
    /// least 3/4 of the largest square's; more tiles than that square's only where they save
    /// 5%); one tile, the whole frame, when it fits. Tiles overlap and are blended with feathered weights.
    /// Where the GPU runs out of memory building the job, auto plans again for less (a note
    /// says so; not on GL, whose driver errors wgpu does not report); a fixed tile is kept: lower it.
    #[arg(help_heading = "Tiles and GPU memory", long, allow_negative_numbers = true, value_name = "N|WxH|auto", default_value = "auto")]
    tile: diffvsr_wgpu::pipeline::tiles::TileSize,
    /// Overlap of neighbouring tiles in LR pixels (a multiple of 8, below each side of the tile
    /// that cuts the frame; default a
    /// quarter of the tile's shorter side that cuts the frame, rounded down to a multiple of 8,
    /// at least 8; none for 8-pixel tiles, which auto picks only with --tile-overlap 0).
    #[arg(help_heading = "Tiles and GPU memory", long, allow_negative_numbers = true, value_name = "N")]
    tile_overlap: Option<usize>,
    /// Windows denoised together in one UNet call (1 to 8), or `auto`: on a GPU, as many as keep
    /// the call within one 128×128-latent window's pixels (the latent is the input's size: 2
    /// from about 90×90 inputs down, up to 4 from 64×64), when the frame is one tile under
    /// --tile auto, and within the GPU's memory where known; else 1. Changes speed and memory,
    /// never the output.
    #[arg(help_heading = "Tiles and GPU memory", long, allow_negative_numbers = true, value_name = "N|auto", default_value = "auto")]
    windows_per_call: diffvsr_wgpu::pipeline::groups::WindowsPerCall,
    /// The GPU memory the job may use, weights included (e.g. 10GiB): `--tile auto` and
    /// `--windows-per-call auto` plan to fit it. Default: what the driver reports this process
    /// may use (Vulkan's budget, Metal's recommended working set, DXGI's budget on DX12); GL
    /// reports nothing, and then only the binding limit is planned for. For sharing a GPU with
    /// other work.
    #[arg(help_heading = "Tiles and GPU memory", long, env = "DIFFVSR_GPU_MEMORY", value_name = "SIZE", value_parser = parse_size, allow_negative_numbers = true)]
    gpu_memory: Option<u64>,
    /// Print the plan (windows, segment, tiles, memory estimate) and exit without loading a
    /// model or reading a frame (the frame count comes from the input file's size).
    #[arg(help_heading = "Frames, progress and planning", long)]
    plan: bool,
    /// Time the job without the release: seeded random weights in place of the checkpoints (the
    /// built-in configs, or the overrides in --weights DIR) and random prompt embeddings unless
    /// given. The output is noise-like, not an upscale.
    #[arg(help_heading = "Frames, progress and planning", long, allow_negative_numbers = true, value_name = "SEED")]
    random_weights: Option<u64>,
    #[command(flatten)]
    gpu: GpuArgs,
}

#[derive(Subcommand)]
enum BenchWhat {
    /// Time each kernel at DiffVSR's real shapes (GPU timestamps where available).
    Kernels {
        /// Only kernels whose name contains this (in any case), or any of several parts given as A|B.
        #[arg(long)]
        filter: Option<String>,
        #[command(flatten)]
        sizing: BenchSizing,
        /// Also write the run (device, timing, ceilings, every case with its fractions of them, the
        /// cases skipped and why, the tiles tuned away from the rules') as JSON.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Also draw each compute kernel against the measured copy and GEMM roofs (SVG).
        #[arg(long, value_name = "FILE.svg")]
        roofline: Option<PathBuf>,
        #[command(flatten)]
        gpu: GpuArgs,
    },
    /// Measure the adapter's ceilings: the copy bandwidth a kernel sees and the best GEMM.
    Ceilings {
        #[command(flatten)]
        sizing: BenchSizing,
        /// Also write the ceilings as JSON.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        #[command(flatten)]
        gpu: GpuArgs,
    },
}

/// The storage dtype, repetitions and sizes of a benchmark.
#[derive(Args)]
struct BenchSizing {
    /// Storage dtype: f32 or f16 (default: f16 where supported).
    #[arg(long)]
    dtype: Option<DType>,
    /// Timed repetitions per case (at least 1; the median is reported).
    #[arg(long, allow_negative_numbers = true, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    iters: u32,
    /// Small sizes (a smoke run; the default on a software adapter).
    #[arg(long, conflicts_with = "full")]
    quick: bool,
    /// The full sizes (DiffVSR's real shapes for `kernels`) even on a software adapter (slow
    /// there: tens of minutes).
    #[arg(long)]
    full: bool,
}

/// A benchmark's adapter, dtype and whether it runs the quick sizes: real shapes take tens of
/// minutes on a software adapter, so quick there unless `--full`.
fn bench_setup(gpu: &GpuArgs, BenchSizing { dtype, quick, full, .. }: &BenchSizing) -> Result<(std::sync::Arc<Gpu>, DType, bool)> {
    let (dtype, quick, full) = (*dtype, *quick, *full);
    let g = gpu.open()?;
    let software = g.is_software();
    let quick = quick || (software && !full);
    if software && quick && !full {
        diffvsr_wgpu::diagln!("software adapter: using the quick shapes (--full for DiffVSR's real shapes)");
    }
    let dtype = dtype.unwrap_or(if g.has_f16() { DType::F16 } else { DType::F32 });
    g.require_dtype(dtype)?;
    Ok((g, dtype, quick))
}

/// The `upscale` command (and the filter without a command).
/// `--guidance`: any finite number (NaN or infinity would turn every output frame into NaN).
fn parse_finite(s: &str) -> Result<f32, String> {
    match s.trim().parse::<f32>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err("give a number, e.g. 5".into()),
    }
}

/// `--output-chroma`: a subsampling y4m carries in colour.
fn parse_output_chroma(s: &str) -> Result<diffvsr_wgpu::video::y4m::Chroma, String> {
    use diffvsr_wgpu::video::y4m::Chroma;
    match s.trim().trim_start_matches("yuv").trim_end_matches('p') {
        "420" => Ok(Chroma::C420),
        "422" => Ok(Chroma::C422),
        "444" => Ok(Chroma::C444),
        "411" => Ok(Chroma::C411),
        _ => Err("420, 422, 444 or 411 (also written yuv420p, 420p …; the bit depth is --output-depth)".into()),
    }
}

/// `--output-depth`: a bit depth ffmpeg reads from y4m.
fn parse_output_depth(s: &str) -> Result<u8, String> {
    match s.trim().parse::<u8>() {
        Ok(d @ (8 | 9 | 10 | 12 | 14 | 16)) => Ok(d),
        _ => Err("8, 9, 10, 12, 14 or 16 (the depths ffmpeg reads from y4m)".into()),
    }
}

/// `--seed`: a whole number from 0 to 2^64 − 1 (clap's default parser called `-1` an unexpected
/// argument).
fn parse_seed(s: &str) -> Result<u64, String> {
    s.trim().parse::<u64>().map_err(|_| format!("{s}: a whole number from 0 to {}", u64::MAX))
}

/// A whole number from `lo` to `hi`, said so where it is not one.
fn parse_within(s: &str, lo: u64, hi: u64) -> Result<u64, String> {
    s.trim().parse::<u64>().ok().filter(|n| (lo..=hi).contains(n)).ok_or_else(|| format!("a whole number from {lo} to {hi}"))
}

/// `--steps`: 1 to the most the released schedule takes.
fn parse_steps(s: &str) -> Result<usize, String> {
    parse_within(s, 1, diffvsr_wgpu::pipeline::scheduler::MAX_STEPS as u64).map(|n| n as usize)
}

/// `--noise-level`: 0 to the pipeline's `max_noise_level`.
fn parse_noise_level(s: &str) -> Result<u32, String> {
    parse_within(s, 0, diffvsr_wgpu::pipeline::scheduler::MAX_NOISE_LEVEL as u64).map(|n| n as u32)
}

/// A count of at least one (`--runs`).
fn parse_count(s: &str) -> Result<usize, String> {
    match s.parse::<usize>().map_err(|e| e.to_string())? {
        0 => Err("at least 1".to_string()),
        n => Ok(n),
    }
}

/// `--tolerance`: a relative error, positive and finite.
fn parse_tolerance(s: &str) -> Result<f64, String> {
    let v: f64 = s.trim().parse().map_err(|e| format!("{e}"))?;
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err("a positive relative error, e.g. 1e-4".into())
    }
}

fn run_upscale(mut u: UpscaleCli) -> Result<()> {
    // `-` names stdin or stdout, as in ffmpeg's own command lines (not a file called `-`).
    u.input = u.input.filter(|p| p.as_os_str() != "-");
    u.output = u.output.filter(|p| p.as_os_str() != "-");
    let tiles = diffvsr_wgpu::pipeline::tiles::TileOptions { tile: u.tile, overlap: u.tile_overlap };
    tiles.check().map_err(anyhow::Error::msg)?;
    diffvsr_wgpu::pipeline::upscale::check_settings(u.steps, u.noise_level, u.guidance)?;
    let output_format = diffvsr_wgpu::video::y4m::OutputFormat { chroma: u.output_chroma, depth: u.output_depth };
    if u.plan {
        let weights = u.weights.clone().or_else(|| fetch::default_weights_dir().ok());
        let text_encoder = u.prompt_embeds.is_none() || u.negative_prompt_embeds.is_none();
        // The adapter's binding limit (its limits only: no device is opened).
        let opts = GpuOptions { adapter: u.gpu.adapter.clone(), backend: u.gpu.backend.clone(), ..GpuOptions::from_env() };
        use diffvsr_wgpu::pipeline::plan::{plan, PlanAdapter, PlanWeights};
        // No adapter at all still plans (for the binding limit "unknown here"); an adapter or
        // backend that was named and is not there is an error, as for a run.
        let chosen = match gpu::select_adapter(&opts) {
            Err(e) if opts.adapter.is_some() || opts.backend.is_some() => {
                return Err(e.context("--plan: the adapter or backend asked for (--adapter, --backend, or DIFFVSR_ADAPTER, DIFFVSR_BACKEND)"));
            }
            r => r.ok(),
        };
        if let Some(a) = &chosen {
            gpu::check_can_run(a).map_err(|e| e.context("--plan"))?;
        }
        let adapter = chosen.map(|a| {
            let b = gpu::device::binding_limit(&a.limits());
            let software = a.get_info().device_type == wgpu::DeviceType::Cpu;
            let memory = match (u.gpu_memory, gpu::memory::heap_report(&a)) {
                (Some(cap), _) => Some((cap, "--gpu-memory")),
                (None, Some(r)) if !software => Some(r.figure()),
                _ => None,
            };
            let offset_alignment = u64::from(gpu::device::offset_alignment_for(&a.limits(), &opts));
            PlanAdapter { max_binding: opts.max_binding.map_or(b, |m| b.min(m.max(4))), software, memory, offset_alignment }
        });
        // What the run refuses before loading: a noise level past an override config's table
        // (random weights without --weights take the built-in configs).
        let configs_from = if u.random_weights.is_some() && u.weights.is_none() { None } else { weights.as_deref() };
        if let Some(c) = configs_from.and_then(|w| diffvsr_wgpu::models::release::video_unet(w).1) {
            diffvsr_wgpu::pipeline::upscale::noise_level_fits(&c, u.noise_level).map_err(|e| e.context("--plan"))?;
        }
        let weights = match (&weights, u.random_weights) {
            (_, Some(_)) => PlanWeights::Random,
            (Some(w), None) => PlanWeights::Release(w),
            (None, None) => PlanWeights::NotFound,
        };
        diffvsr_wgpu::out!("{}", plan(u.input.as_deref(), output_format, u.matrix, weights, u.frames, text_encoder, u.guidance, tiles, u.windows_per_call, adapter)?);
        return Ok(());
    }
    let weights = match (u.weights, u.random_weights) {
        (Some(w), _) => w,
        // Random weights need no release; the built-in configs apply.
        (None, Some(_)) => PathBuf::new(),
        (None, None) => fetch::default_weights_dir()?,
    };
    // Before the GPU opens (its warnings would come first).
    diffvsr_wgpu::pipeline::upscale::check_std_streams(u.input.as_deref(), u.output.as_deref())?;
    let g = u.gpu.open_for_upscale()?;
    g.set_memory_cap(u.gpu_memory);
    let a = diffvsr_wgpu::pipeline::upscale::UpscaleArgs {
        input: u.input,
        output: u.output,
        weights,
        steps: u.steps,
        guidance: u.guidance,
        noise_level: u.noise_level,
        seed: u.seed,
        ilt: u.ilt,
        matrix: u.matrix,
        output_format,
        prompt: u.prompt,
        negative_prompt: u.negative_prompt,
        prompt_embeds: u.prompt_embeds,
        negative_prompt_embeds: u.negative_prompt_embeds,
        quiet: u.quiet,
        frames: u.frames,
        gif: u.gif,
        tiles,
        windows_per_call: u.windows_per_call,
        random_weights: u.random_weights,
        redecode_overflow: u.gpu.f16_operands == TuneMode::Auto,
    };
    stop_on_signals();
    match diffvsr_wgpu::pipeline::upscale::upscale(&g, &a) {
        // The downstream reader quit: end quietly.
        Err(e) if diffvsr_wgpu::pipeline::upscale::is_broken_pipe(&e) => Ok(()),
        r => r.map(|_| ()),
    }
}

/// A stop signal during `convert` or `fetch-weights` removes the temporary files of the
/// safetensors copy being written (gigabytes, hidden beside the output) and ends the process
/// (exit 130); downloads keep their `blobs/<etag>.incomplete` files, which the next run resumes.
fn remove_temporaries_on_signals() {
    let r = ctrlc::set_handler(|| {
        diffvsr_wgpu::weights::remove_temporaries();
        diffvsr_wgpu::diagln!("\nstopped by a signal (Ctrl-C, SIGTERM or SIGHUP)");
        std::process::exit(130);
    });
    if let Err(e) = r {
        log::warn!("no stop-signal handler ({e}): a stop may leave a conversion's temporary files");
    }
}

/// Ctrl-C (SIGINT; the console's Ctrl-C on Windows), and SIGTERM and SIGHUP (`kill`, a container
/// or service manager stopping the job, a closed terminal) ask the job to stop after the frame it
/// is writing, so the output holds only whole frames; a second signal ends the process at once.
fn stop_on_signals() {
    use diffvsr_wgpu::pipeline::interrupt;
    let r = ctrlc::set_handler(|| {
        if interrupt::request() {
            diffvsr_wgpu::diagln!("\nstop signal again: stopping at once (the frame being written may be cut)");
            // Files this run created and wrote no frame to go, as in an orderly stop.
            diffvsr_wgpu::pipeline::out_file::remove_unfinished();
            std::process::exit(130);
        }
        diffvsr_wgpu::diagln!("\nstop signal (Ctrl-C, SIGTERM or SIGHUP): stopping after the frame being written (again to stop at once)");
    });
    if let Err(e) = r {
        log::warn!("signal handler not installed ({e}): Ctrl-C or SIGTERM will end the job at once");
    }
}

fn run(cli: Cli) -> Result<()> {
    let Some(cmd) = cli.cmd else {
        return run_upscale(cli.upscale);
    };
    match cmd {
        Cmd::Devices { backend } => {
            diffvsr_wgpu::out!("{}", gpu::devices_report(backend.as_deref())?);
            Ok(())
        }
        Cmd::FetchWeights { endpoint, token, repo, revision, cache_dir, include, verify, retries, no_convert } => {
            remove_temporaries_on_signals();
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
            o.convert = !no_convert;
            diffvsr_wgpu::diagln!("fetching {} ({}) from {} into {}", o.repo_id, o.revision, o.endpoint, o.cache_dir.display());
            let r = fetch::fetch(&o)?;
            let fetched = r.files.iter().filter(|(_, out)| *out != fetch::Outcome::Cached).count();
            diffvsr_wgpu::diagln!(
                "{} files at commit {}: {fetched} downloaded ({:.1} MB), {} already cached",
                r.files.len(),
                r.commit,
                r.bytes_downloaded as f64 / 1e6,
                r.files.len() - fetched
            );
            for c in &r.converted {
                diffvsr_wgpu::diagln!("converted: {}", c.display());
            }
            for e in &r.convert_errors {
                diffvsr_wgpu::diagln!("warning: {e} (the .pt files are complete and load directly)");
            }
            diffvsr_wgpu::outln!("{}", r.snapshot.display());
            Ok(())
        }
        Cmd::EncodePrompt { text, output, weights, dtype, gpu } => {
            diffvsr_wgpu::weights::check_output_file(&output)?;
            let weights = match weights {
                Some(w) => w,
                // The fetched release (its top folder holds upscaler4x/), or an error saying
                // exactly what to run.
                None => fetch::default_weights_dir()?,
            };
            let g = gpu.open()?;
            g.require_dtype(dtype)?;
            let t = std::time::Instant::now();
            let r = diffvsr_wgpu::models::clip_text::encode_prompt_to_file(&g, &weights, &text, &output, dtype)?;
            diffvsr_wgpu::diagln!(
                // (A prompt cut at the limit was warned of by the tokenizer, with what was cut.)
                "{text:?}: {} of {} tokens used; prompt_embeds {:?} written to {} ({:.1} s)",
                r.used,
                r.ids.len(),
                r.shape,
                output.display(),
                t.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Cmd::Forward { model, config, weights, random_weights, inputs, random_inputs, output, expect, tolerance, dtype, report, runs, json, profile, cfg_pair, plan_only, plan_limits, gpu } => {
            let g = gpu.open_planning(plan_only, plan_limits)?;
            let o = forward::ForwardOptions { model, config, weights, random_weights, inputs, random_inputs, output, expect, tolerance, dtype, report, runs, json, profile, cfg_pair, plan_only };
            forward::run(&g, &o)
        }
        Cmd::Bench { what: BenchWhat::Kernels { filter, sizing, json, roofline, gpu } } => {
            let (g, dtype, quick) = bench_setup(&gpu, &sizing)?;
            bench::run_kernels(&g, &bench::BenchOptions { filter, dtype, iters: sizing.iters.max(1), quick, json, roofline }).map(drop)
        }
        Cmd::Bench { what: BenchWhat::Ceilings { sizing, json, gpu } } => {
            let (g, dtype, quick) = bench_setup(&gpu, &sizing)?;
            bench::run_ceilings(&g, dtype, quick, sizing.iters.max(1), json.as_deref()).map(drop)
        }
        Cmd::Upscale(u) => run_upscale(u),
        Cmd::Convert { input, output, key, dtype } => {
            remove_temporaries_on_signals();
            if std::fs::canonicalize(&input).ok().is_some_and(|i| std::fs::canonicalize(&output).is_ok_and(|o| o == i)) {
                anyhow::bail!("convert: the output {} is the input: give the converted file a path of its own", output.display());
            }
            diffvsr_wgpu::weights::check_output_file(&output)?;
            let summary = checkpoint::convert::convert(&input, &output, key.as_deref(), dtype)?;
            diffvsr_wgpu::outln!("converted {} -> {}", input.display(), output.display());
            diffvsr_wgpu::out!("{summary}");
            Ok(())
        }
    }
}

/// `--random-inputs BxHxW`: three positive sizes, H and W at most 16384 (a y4m frame's
/// largest side) and at most 2^30 latent pixels in all, so a typo fails here, not as an
/// allocation of hundreds of GB.
fn parse_bhw(s: &str) -> Result<(usize, usize, usize), String> {
    let v: Vec<usize> = s.split('x').map(|p| p.trim().parse().map_err(|_| format!("'{s}' is not BxHxW (three whole numbers), e.g. 16x128x128"))).collect::<Result<_, _>>()?;
    let [b, h, w] = v[..] else {
        return Err(format!("'{s}' has {} parts: BxHxW has three, e.g. 16x128x128", v.len()));
    };
    if b == 0 || h == 0 || w == 0 {
        return Err(format!("'{s}': every size must be positive, e.g. 16x128x128"));
    }
    if h > 16384 || w > 16384 || b.saturating_mul(h).saturating_mul(w) > 1 << 30 {
        return Err(format!("'{s}': at most 16384 a side and 2^30 pixels in all (B·H·W)"));
    }
    Ok((b, h, w))
}

/// Mesa's Vulkan drivers try to reach a Wayland compositor when the instance is created and print
/// "error: XDG_RUNTIME_DIR is invalid or not set" where the variable is missing (servers, CI,
/// ssh sessions), although nothing is wrong for compute. Give them a private, empty runtime
/// folder instead, before any thread exists.
fn quiet_display_probe() {
    // Only where Mesa's Wayland probe runs (not Windows or macOS).
    if cfg!(any(windows, target_os = "macos")) || std::env::var_os("XDG_RUNTIME_DIR").is_some() {
        return;
    }
    let dir = std::env::temp_dir().join("diffvsr-wgpu-runtime");
    if std::fs::create_dir_all(&dir).is_ok() {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        }
        std::env::set_var("XDG_RUNTIME_DIR", &dir);
    }
}

/// The variables clap reads as flags (`env = …` above).
const FLAG_VARIABLES: [&str; 8] = ["DIFFVSR_ADAPTER", "DIFFVSR_BACKEND", "DIFFVSR_F16_OPERANDS", "DIFFVSR_TUNE", "DIFFVSR_NORM_INTO_CONV", "DIFFVSR_WEIGHTS", "DIFFVSR_GPU_MEMORY", "HF_ENDPOINT"];

/// An empty flag variable is no setting (`DIFFVSR_WEIGHTS= diffvsr-wgpu …`, a shell's way to
/// clear one for a command); clap would take it as an empty value and refuse it as a missing
/// `--weights`. (Other variables keep their own meaning of empty: `DIFFVSR_TUNE_CACHE=` turns
/// the tuning cache off.)
fn drop_empty_settings() {
    for k in FLAG_VARIABLES {
        if std::env::var_os(k).is_some_and(|v| v.is_empty()) {
            std::env::remove_var(k);
        }
    }
}

/// Notes for an error `text` naming a flag the environment set (`--weights` from
/// `DIFFVSR_WEIGHTS`, say) where the command line (`args`) did not: a stale export in a shell
/// profile is otherwise hard to trace from a message about a flag never typed.
fn env_notes(text: &str, args: &[String], var: impl Fn(&str) -> Option<String>) -> Vec<String> {
    use clap::CommandFactory;
    fn flags(c: &clap::Command, out: &mut Vec<(String, String)>) {
        out.extend(c.get_arguments().filter_map(|a| Some((a.get_long()?.to_string(), a.get_env()?.to_string_lossy().into_owned()))));
        c.get_subcommands().for_each(|s| flags(s, out));
    }
    let mut all = Vec::new();
    flags(&Cli::command(), &mut all);
    all.sort();
    all.dedup();
    let typed = |long: &str| args.iter().any(|a| a == &format!("--{long}") || a.starts_with(&format!("--{long}=")));
    let named = |long: &str| text.match_indices(&format!("--{long}")).any(|(i, m)| !text[i + m.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-'));
    all.into_iter()
        .filter(|(long, _)| named(long) && !typed(long))
        .filter_map(|(long, env)| var(&env).map(|v| format!("note: --{long} was not given: it came from the environment, {env}={v}")))
        .collect()
}

/// A note for a parse error about a bare file name (`diffvsr-wgpu in.y4m` reads as a command
/// name, `-i in.y4m out.y4m` as one after the options): files are given with `-i` and `-o`.
fn file_note(e: &clap::Error, args: &[String]) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    // The word clap took for a command: an unknown one, or one after options it cannot follow
    // (not a flag's bad value, which clap quotes too: `--steps 7.5`).
    let word = match e.kind() {
        ErrorKind::InvalidSubcommand => e.get(ContextKind::InvalidSubcommand),
        ErrorKind::ArgumentConflict | ErrorKind::UnknownArgument => e.get(ContextKind::InvalidArg).or_else(|| e.get(ContextKind::InvalidSubcommand)),
        _ => None,
    };
    let Some(ContextValue::String(word)) = word else { return None };
    let bare = args.iter().skip(1).find(|a| *a == word && !a.starts_with('-') && (a.contains('.') || std::path::Path::new(a).exists()))?;
    Some(format!("note: '{bare}' reads as a command; files are given with -i and -o, e.g. diffvsr-wgpu -i in.y4m -o out.y4m"))
}

fn main() -> ExitCode {
    drop_empty_settings();
    quiet_display_probe();
    // Warnings and errors read as the program's own messages ("warning: …", as "error:" and
    // "note:"), another crate's naming it; RUST_LOG's debug and trace lines keep their level
    // and module.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn,wgpu_hal=off"))
        .format(|buf, r| {
            use std::io::Write;
            // Another crate's (wgpu's) are said to be its.
            let from = if r.target().starts_with("diffvsr_wgpu") { String::new() } else { format!(" ({})", r.target()) };
            match r.level() {
                log::Level::Error => writeln!(buf, "error{from}: {}", r.args()),
                log::Level::Warn => writeln!(buf, "warning{from}: {}", r.args()),
                level => writeln!(buf, "[{level} {}] {}", r.target(), r.args()),
            }
        })
        .init();
    // Lossy: a file name that is not UTF-8 is still read by clap from args_os.
    let args: Vec<String> = std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect();
    let notes = |text: &str| env_notes(text, &args, |k| std::env::var(k).ok()).into_iter().for_each(|n| diffvsr_wgpu::diagln!("{n}"));
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            if e.use_stderr() {
                notes(&e.to_string());
                if let Some(n) = file_note(&e, &args) {
                    diffvsr_wgpu::diagln!("{n}");
                }
            }
            return ExitCode::from(e.exit_code() as u8);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // Stopped by Ctrl-C (or SIGTERM, SIGHUP): said as such, with the shell's exit code for
        // SIGINT whichever signal it was (the handler is not told).
        Err(e) if diffvsr_wgpu::pipeline::interrupt::is_interrupted(&e) => {
            diffvsr_wgpu::diagln!("{e:#}");
            ExitCode::from(130)
        }
        // A stop signal came first, and the error is its echo (the upstream ffmpeg got it too
        // and closed the pipe before the stream's header, say).
        Err(e) if diffvsr_wgpu::pipeline::interrupt::requested() => {
            diffvsr_wgpu::diagln!("stopped by a signal (Ctrl-C, SIGTERM or SIGHUP); then: {e:#}");
            ExitCode::from(130)
        }
        Err(e) => {
            diffvsr_wgpu::diagln!("error: {e:#}");
            notes(&format!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}

/// `--plan-limits BINDING,BUFFER`: two sizes, the binding no larger than the buffer.
fn parse_plan_limits(s: &str) -> std::result::Result<(u64, u64), String> {
    let (binding, buffer) = s.split_once(',').ok_or_else(|| format!("'{s}': give the largest binding and the largest buffer, e.g. 2GiB,4GiB"))?;
    let (binding, buffer) = (gpu::parse_bytes(binding)?, gpu::parse_bytes(buffer)?);
    if binding > buffer {
        return Err(format!("'{s}': a binding cannot be larger than a buffer"));
    }
    Ok((binding, buffer))
}

#[cfg(test)]
mod tests {
    use super::{parse_bhw, parse_finite, parse_output_chroma, parse_output_depth, parse_seed, parse_tolerance};

    /// The flag variables emptied ones are dropped of are exactly those clap reads.
    #[test]
    fn flag_variables_are_the_ones_clap_reads() {
        use clap::CommandFactory;
        fn collect(c: &clap::Command, out: &mut std::collections::BTreeSet<String>) {
            out.extend(c.get_arguments().filter_map(|a| a.get_env()).map(|e| e.to_string_lossy().into_owned()));
            c.get_subcommands().for_each(|s| collect(s, out));
        }
        let mut read = std::collections::BTreeSet::new();
        collect(&super::Cli::command(), &mut read);
        let listed: std::collections::BTreeSet<String> = super::FLAG_VARIABLES.iter().map(|s| s.to_string()).collect();
        assert_eq!(read, listed);
    }

    /// Forward's settings that would change nothing are refused: a tolerance without a
    /// reference, timed runs of a plan; their defaults stay silent.
    #[test]
    fn forward_settings_without_effect_are_refused() {
        use clap::Parser;
        let parse = |a: &[&str]| super::Cli::try_parse_from(["diffvsr-wgpu", "forward", "--model", "unet", "--random-weights", "1", "--random-inputs", "1x8x8"].iter().chain(a).copied());
        let e = parse(&["--tolerance", "1e-3"]).err().unwrap().to_string();
        assert!(e.contains("--expect"), "{e}");
        let e = parse(&["--plan-only", "--runs", "3"]).err().unwrap().to_string();
        assert!(e.contains("--runs"), "{e}");
        assert!(parse(&["--plan-only"]).is_ok() && parse(&["--tolerance", "1e-3", "--expect", "r.safetensors"]).is_ok() && parse(&["--report", "--runs", "3"]).is_ok());
    }

    /// A bare file name taken for a command is told how files are given.
    #[test]
    fn bare_files_are_told_about_i_and_o() {
        use clap::Parser;
        for args in [&["diffvsr-wgpu", "in.y4m"][..], &["diffvsr-wgpu", "-i", "in.y4m", "out.y4m"]] {
            let e = super::Cli::try_parse_from(args).err().unwrap();
            let owned: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            let n = super::file_note(&e, &owned).unwrap_or_else(|| panic!("{args:?}: no note for {e}"));
            assert!(n.contains("given with -i and -o"), "{n}");
        }
        // A mistyped command is not a file, nor a flag's bad value with a dot.
        for args in [&["diffvsr-wgpu", "upscle"][..], &["diffvsr-wgpu", "--steps", "7.5"], &["diffvsr-wgpu", "--frames", "1.5:3"]] {
            let e = super::Cli::try_parse_from(args).err().unwrap();
            let owned: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            assert_eq!(super::file_note(&e, &owned), None, "{args:?}");
        }
    }

    /// An error naming a flag the environment set, not the command line, says so.
    #[test]
    fn flags_from_the_environment_are_named() {
        let var = |k: &str| (k == "DIFFVSR_WEIGHTS").then(|| "/nonexistent".to_string());
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let e = "--weights /nonexistent: no such folder";
        assert_eq!(super::env_notes(e, &args(&["diffvsr-wgpu", "-i", "in.y4m"]), var), ["note: --weights was not given: it came from the environment, DIFFVSR_WEIGHTS=/nonexistent"]);
        for typed in [&["diffvsr-wgpu", "--weights", "/nonexistent"][..], &["diffvsr-wgpu", "--weights=/nonexistent"]] {
            assert!(super::env_notes(e, &args(typed), var).is_empty(), "{typed:?}");
        }
        assert!(super::env_notes("--steps 0: between 1 and 999", &args(&["x"]), var).is_empty());
        // A longer flag that begins with another's name is not that flag.
        let var = |k: &str| (k == "DIFFVSR_TUNE").then(|| "on".to_string());
        assert!(super::env_notes("--tune-cache: not a folder", &args(&["x"]), var).is_empty());
        assert_eq!(super::env_notes("invalid value 'x' for '--tune <MODE>'", &args(&["x"]), var).len(), 1);
    }

    /// A negative number for a flag that takes a count or a size is named as that flag's
    /// invalid value, not taken for an unknown option ("unexpected argument '-1'"); so is a
    /// count of zero repetitions.
    #[test]
    fn negative_counts_are_named_as_the_flags_values() {
        use clap::Parser;
        for (args, flag) in [
            (&["upscale", "--steps", "-1"][..], "--steps"),
            (&["upscale", "--noise-level", "-5"], "--noise-level"),
            (&["upscale", "--frames", "-1"], "--frames"),
            (&["upscale", "--frames", "-1:5"], "--frames"),
            (&["upscale", "--gpu-memory", "-1"], "--gpu-memory"),
            (&["upscale", "--tile", "-8"], "--tile"),
            (&["upscale", "--tile-overlap", "-8"], "--tile-overlap"),
            (&["upscale", "--windows-per-call", "-2"], "--windows-per-call"),
            (&["upscale", "--random-weights", "-1"], "--random-weights"),
            (&["forward", "--model", "unet", "--runs", "-3"], "--runs"),
            (&["bench", "kernels", "--iters", "-1"], "--iters"),
            // Zero repetitions would time nothing (they ran once, quietly).
            (&["bench", "kernels", "--iters", "0"], "--iters"),
            (&["forward", "--model", "unet", "--runs", "0"], "--runs"),
        ] {
            let e = super::Cli::try_parse_from(std::iter::once("diffvsr-wgpu").chain(args.iter().copied())).err().unwrap_or_else(|| panic!("{args:?} parsed")).to_string();
            assert!(e.contains(&format!("invalid value '{}'", args[args.len() - 1])) && e.contains(flag), "{args:?}: {e}");
        }
    }

    /// Sampler numbers out of range say the range (not "invalid digit" or u32's range); a bare
    /// `--gpu-memory` number too small for any job asks for a unit.
    #[test]
    fn ranges_and_units_are_said() {
        use clap::Parser;
        for (args, want) in [
            (&["--steps", "-1"][..], "a whole number from 1 to 999"),
            (&["--steps", "1000"], "a whole number from 1 to 999"),
            (&["--noise-level", "-5"], "a whole number from 0 to 350"),
            (&["--noise-level", "351"], "a whole number from 0 to 350"),
            (&["--gpu-memory", "10"], "give a unit, e.g. 10GiB"),
            (&["--gpu-memory", "10PB"], "GB and TB read as those"),
        ] {
            let e = super::Cli::try_parse_from(std::iter::once("diffvsr-wgpu").chain(args.iter().copied())).err().unwrap_or_else(|| panic!("{args:?} parsed")).to_string();
            assert!(e.contains(want), "{args:?}: {e}");
        }
        for ok in [&["--steps", "999", "--noise-level", "0"][..], &["--gpu-memory", "10GB"], &["--gpu-memory", "8589934592"]] {
            super::Cli::try_parse_from(std::iter::once("diffvsr-wgpu").chain(ok.iter().copied())).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
    }

    /// Malformed numbers on the command line fail in the parser with what is wrong: a wrong
    /// number of parts, a zero, a size that would allocate hundreds of GB, NaN or infinity.
    #[test]
    fn command_line_numbers_are_checked_where_they_are_read() {
        assert_eq!(parse_bhw("2x64x48"), Ok((2, 64, 48)));
        for (s, want) in [("1x8", "has 2 parts"), ("2x", "three whole numbers"), ("0x8x8", "positive"), ("1x99999x99999", "at most 16384"), ("64x16384x16384", "2^30")] {
            let e = parse_bhw(s).unwrap_err();
            assert!(e.contains(want), "{s}: {e}");
        }
        assert_eq!(parse_finite("-5"), Ok(-5.0));
        for s in ["nan", "inf", "-inf", "1e39"] {
            assert!(parse_finite(s).is_err(), "{s}");
        }
        assert_eq!(parse_tolerance("1e-3"), Ok(1e-3));
        for s in ["nan", "0", "-1", "inf"] {
            assert!(parse_tolerance(s).is_err(), "{s}");
        }
        assert_eq!((parse_seed("0"), parse_seed("18446744073709551615")), (Ok(0), Ok(u64::MAX)));
        // A negative seed reaches the parser (not clap's "unexpected argument").
        use clap::Parser;
        let e = super::Cli::try_parse_from(["diffvsr-wgpu", "--seed", "-1", "--plan"]).err().unwrap().to_string();
        assert!(e.contains("a whole number from 0 to"), "{e}");
        for s in ["-1", "1.5", "18446744073709551616", ""] {
            assert!(parse_seed(s).unwrap_err().contains("a whole number from 0 to"), "{s}");
        }
        use diffvsr_wgpu::video::y4m::Chroma;
        assert_eq!((parse_output_chroma("444"), parse_output_chroma("yuv422p"), parse_output_chroma("420")), (Ok(Chroma::C444), Ok(Chroma::C422), Ok(Chroma::C420)));
        assert_eq!(parse_output_chroma("yuv411p"), Ok(Chroma::C411));
        for s in ["mono", "410", "yuv420p10", ""] {
            assert!(parse_output_chroma(s).unwrap_err().contains("420, 422, 444 or 411"), "{s}");
        }
        assert_eq!((parse_output_depth("10"), parse_output_depth("16")), (Ok(10), Ok(16)));
        for s in ["7", "11", "17", "ten"] {
            assert!(parse_output_depth(s).unwrap_err().contains("8, 9, 10, 12, 14 or 16"), "{s}");
        }
    }
}
