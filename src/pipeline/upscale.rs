//! The `upscale` command: the release's models loaded, the input and output opened, the job
//! run with progress on stderr and an optional GIF preview.

use std::io::{Read, Write};

use anyhow::{bail, Context, Result};

use crate::pipeline::groups::WindowsPerCall;
use crate::paths::one_file;
use crate::pipeline::interrupt;
use crate::pipeline::job::{run_job, JobStats};
use crate::pipeline::options::{JobOptions, PromptEmbeds};
use crate::pipeline::out_file::OutFile;
use crate::pipeline::plan::y4m_file_frames;
use crate::pipeline::progress::Progress;
use crate::pipeline::tiles::{LatentPad, TileOptions, TileSize, SCALE};
use crate::pipeline::windows::{FrameRange, Ilt};
use crate::video::color::{MatrixChoice, YuvParams};
use crate::pipeline::source::{FrameSource, ReadAhead};
use crate::video::preview::GifPreview;
use crate::video::y4m::Writer;
use crate::{DType, Gpu};

/// The released prompt (spec §4.3).
pub const DEFAULT_PROMPT: &str = "clear, high quality, high-resolution, 4K";
/// The released negative prompt (spec §4.3).
pub const DEFAULT_NEGATIVE_PROMPT: &str = "low quality, blurry, low-resolution, noisy, unsharp, weird textures, worst quality";

/// What the `upscale` command was given.
#[derive(Clone, Debug)]
pub struct UpscaleArgs {
    /// Input y4m file (`None`: stdin).
    pub input: Option<std::path::PathBuf>,
    /// Output y4m file (`None`: stdout).
    pub output: Option<std::path::PathBuf>,
    /// The release folder (DiffVSR_UNet.pt, TE-3DVAE.pt, upscaler4x/, config overrides).
    pub weights: std::path::PathBuf,
    pub steps: usize,
    pub guidance: f32,
    pub noise_level: u32,
    pub seed: u64,
    pub ilt: Ilt,
    pub matrix: MatrixChoice,
    /// `--output-chroma`, `--output-depth`: the output's format where it is not the input's.
    pub output_format: crate::video::y4m::OutputFormat,
    pub prompt: String,
    pub negative_prompt: String,
    /// `prompt_embeds` files (from `encode-prompt`) for the prompt and the negative prompt; the
    /// text encoder is not loaded when both are given.
    pub prompt_embeds: Option<std::path::PathBuf>,
    pub negative_prompt_embeds: Option<std::path::PathBuf>,
    pub quiet: bool,
    /// `--frames START:END`: only these output frames.
    pub frames: Option<FrameRange>,
    /// `--gif PREVIEW.gif`: a small animated preview of the frames written.
    pub gif: Option<std::path::PathBuf>,
    /// `--tile`, `--tile-overlap`.
    pub tiles: TileOptions,
    /// `--windows-per-call`.
    pub windows_per_call: WindowsPerCall,
    /// `--random-weights SEED`: seeded synthetic weights in place of the checkpoints (the
    /// configs as usual: built in, or the overrides in `weights`), and random prompt
    /// embeddings where none are given, for timing the job without the release. The output is
    /// not an upscale.
    pub random_weights: Option<u64>,
    /// `--f16-operands auto`: a decode chunk that overflows f16 operands is decoded again with
    /// f32 operands ([`JobOptions::redecode_overflow`]).
    pub redecode_overflow: bool,
}

/// Refuses `--noise-level` past the class table of the UNet config at `path` (an override
/// beside the checkpoints: `upscale` before loading, `--plan`).
pub fn noise_level_fits(path: &std::path::Path, level: u32) -> Result<()> {
    let c = crate::config::VideoUNetConfig::from_file(path, crate::config::VideoUNetKind::DiffVsr)?;
    crate::pipeline::graphs::check_noise_level(level, c.base.num_class_embeds, &path.display().to_string())
}

/// True when `e` comes from a closed output pipe (the downstream reader quit).
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<crate::video::y4m::Y4mError>().is_some_and(|y| y.is_broken_pipe())
            || c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Prompt embeddings (positive, negative): from files where given, else from the release's text
/// encoder (loaded once, both prompts encoded in one batch).
fn prompt_embeds(gpu: &Gpu, a: &UpscaleArgs) -> Result<(PromptEmbeds, PromptEmbeds)> {
    let (mut pos, mut neg) = embeds_files(a)?;
    if pos.is_none() || neg.is_none() {
        let enc = weights_fit(gpu, "the text encoder (about 1.3 GiB in f32, freed once the prompts are encoded)", || crate::models::clip_text::TextEncoder::load(gpu, &a.weights, DType::F32))
            .context("loading the text encoder (or give --prompt-embeds and --negative-prompt-embeds, from `encode-prompt` on any GPU)")?;
        let mut rec = gpu.recorder();
        let e = enc.encode(&mut rec, &[&a.negative_prompt, &a.prompt])?;
        rec.submit();
        let v = e.to_f32(gpu)?;
        let s = e.shape();
        let half = v.len() / 2;
        if neg.is_none() {
            neg = Some(PromptEmbeds::new(v[..half].to_vec(), vec![1, s[1], s[2]]).context("the negative prompt's embeddings")?);
        }
        if pos.is_none() {
            pos = Some(PromptEmbeds::new(v[half..].to_vec(), vec![1, s[1], s[2]]).context("the prompt's embeddings")?);
        }
    }
    let (pos, neg) = (pos.expect("set above"), neg.expect("set above"));
    // Both halves of a CFG pair run in one batch, so they need one token count. (A width the
    // UNet does not take is named once it loads.)
    if pos.shape[1] != neg.shape[1] {
        let from = |f: &Option<std::path::PathBuf>, flag: &str| f.as_ref().map_or("from the text encoder".to_string(), |p| format!("from {flag} {}", p.display()));
        bail!(
            "the prompt's embeddings are {:?} ({}) and the negative prompt's {:?} ({}): the two must have one token count, 77 as encode-prompt writes them",
            pos.shape,
            from(&a.prompt_embeds, "--prompt-embeds"),
            neg.shape,
            from(&a.negative_prompt_embeds, "--negative-prompt-embeds")
        );
    }
    Ok((pos, neg))
}

/// The `--prompt-embeds` and `--negative-prompt-embeds` files' embeddings, where given.
fn embeds_files(a: &UpscaleArgs) -> Result<(Option<PromptEmbeds>, Option<PromptEmbeds>)> {
    let from_file = |p: &Option<std::path::PathBuf>, flag: &str| p.as_deref().map(|p| PromptEmbeds::from_file(p).with_context(|| flag.to_string())).transpose();
    Ok((from_file(&a.prompt_embeds, "--prompt-embeds")?, from_file(&a.negative_prompt_embeds, "--negative-prompt-embeds")?))
}

/// The filter reads and writes y4m streams: a terminal as stdin would wait for a stream that
/// never comes, and as stdout would fill with binary samples.
/// The terminal check of `check_streams` for this process's stdin and stdout, where no file replaces them (the
/// binary calls it before opening the GPU; [`upscale`] again).
pub fn check_std_streams(input: Option<&std::path::Path>, output: Option<&std::path::Path>) -> Result<()> {
    use std::io::IsTerminal;
    check_streams(input.is_none() && std::io::stdin().is_terminal(), output.is_none() && std::io::stdout().is_terminal())
}

fn check_streams(stdin_is_terminal: bool, stdout_is_terminal: bool) -> Result<()> {
    if stdin_is_terminal {
        bail!(
            "no input: stdin is a terminal, and the filter reads a y4m stream. Pipe one in \
             (ffmpeg -i in.mp4 -f yuv4mpegpipe - | diffvsr-wgpu | ...) or give -i FILE.y4m"
        );
    }
    if stdout_is_terminal {
        bail!(
            "stdout is a terminal, and the filter writes a y4m stream (binary). Pipe it on \
             (... | ffmpeg -f yuv4mpegpipe -i - out.mp4) or give -o FILE.y4m"
        );
    }
    Ok(())
}

/// "1 frame", "2 frames".
fn count(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// The files the job writes (`-o`, `--gif`) must be creatable (not a folder, in a folder that
/// exists), and must not be its input, or each other: creating one truncates it, and the
/// input's frames not yet read would be lost. Where the input is stdin redirected from a file
/// (`< in.y4m`), that file counts as the input (Unix).
fn check_paths(a: &UpscaleArgs) -> Result<()> {
    let stdin = crate::pipeline::plan::stdin_file();
    let input = a.input.as_deref().or(stdin.as_deref());
    if let Some(i) = &a.input {
        if i.is_dir() {
            bail!("-i {} is a folder: give a y4m file (or pipe the stream in on stdin)", i.display());
        }
    }
    // A path the job cannot create fails now, not after minutes of model loading.
    for (flag, path) in [("-o", &a.output), ("--gif", &a.gif)] {
        if let Some(p) = path {
            crate::weights::check_output_folder(p).with_context(|| flag.to_string())?;
        }
    }
    if let (Some(i), Some(o)) = (input, &a.output) {
        if one_file(i, o) {
            bail!("-o {} is the input file: writing it would destroy the frames not yet read. Write to another file", o.display());
        }
    }
    if let Some(g) = &a.gif {
        if input.is_some_and(|i| one_file(i, g)) {
            bail!("--gif {} is the input file: writing it would destroy the frames not yet read. Give another path", g.display());
        }
        // (By inode where both exist, else by folder and name: `out.y4m` and `./out.y4m`.)
        if a.output.as_deref().is_some_and(|o| one_file(o, g)) {
            bail!("--gif {} is also the output (-o): give the preview its own path", g.display());
        }
    }
    Ok(())
}

/// Settings given that change nothing in this run, said before it starts.
fn idle_settings(a: &UpscaleArgs) -> Vec<String> {
    let mut notes = Vec::new();
    // A negative prompt given beside a guidance of 1 or less (the choice alone is no mistake).
    let negative_given = a.negative_prompt != DEFAULT_NEGATIVE_PROMPT || a.negative_prompt_embeds.is_some();
    if crate::pipeline::options::cfg_halves(a.guidance) == 1 && negative_given {
        notes.push(format!(
            "--guidance {}: at 1 or less there is no classifier-free guidance (the UNet runs on the positive prompt alone): the negative prompt has no effect",
            a.guidance
        ));
    }
    if a.random_weights.is_some() {
        for (flag, text, default, embeds) in [
            ("--prompt", &a.prompt, DEFAULT_PROMPT, &a.prompt_embeds),
            ("--negative-prompt", &a.negative_prompt, DEFAULT_NEGATIVE_PROMPT, &a.negative_prompt_embeds),
        ] {
            if text != default && embeds.is_none() {
                notes.push(format!("{flag} has no effect with --random-weights: there is no text encoder, and random embeddings stand in"));
            }
        }
    }
    notes
}

/// The sampler's numbers a run refuses (and `--plan` with it).
pub fn check_settings(steps: usize, noise_level: u32, guidance: f32) -> Result<()> {
    if noise_level > crate::pipeline::scheduler::MAX_NOISE_LEVEL {
        bail!("--noise-level {noise_level}: at most {}", crate::pipeline::scheduler::MAX_NOISE_LEVEL);
    }
    if steps == 0 || steps > crate::pipeline::scheduler::MAX_STEPS {
        bail!("--steps {steps}: between 1 and {} (the released schedule's timesteps)", crate::pipeline::scheduler::MAX_STEPS);
    }
    if !guidance.is_finite() {
        bail!("--guidance {guidance}: a finite number (the default is {})", crate::pipeline::scheduler::DEFAULT_GUIDANCE);
    }
    Ok(())
}

/// The `upscale` command: loads the models from the release folder, then runs [`run_job`] from
/// the input to the output with progress on stderr.
pub fn upscale(gpu: &Gpu, a: &UpscaleArgs) -> Result<JobStats> {
    use crate::models::registry::{default_dtype, load_model, Model, ModelKind};
    use crate::models::release;
    check_settings(a.steps, a.noise_level, a.guidance)?;
    a.tiles.check().map_err(anyhow::Error::msg)?;
    check_std_streams(a.input.as_deref(), a.output.as_deref())?;
    check_paths(a)?;
    // The clip's length, for the ETA and the windows per call, when the input is a file (from
    // its size; stdin too where it is one). (Only a regular file: a named pipe must not be
    // read twice.)
    let input_frames = match a.input.clone().or_else(crate::pipeline::plan::stdin_file_to_measure) {
        Some(p) if std::fs::metadata(&p).is_ok_and(|m| m.is_file()) => y4m_file_frames(&p).ok().and_then(|(_, t)| t),
        _ => None,
    };
    // A START past the end of an input file is so known: refused before loading.
    if let (Some(p), Some(r), Some(t)) = (&a.input, a.frames, input_frames) {
        if r.start >= t {
            bail!(r.past_the_end(t, &p.display().to_string()));
        }
    }
    // Open the input first: a malformed stream is reported before minutes of model loading.
    // Read on a thread of its own: a stop signal is answered while the input stalls.
    let input: Box<dyn Read + Send> = match &a.input {
        Some(p) => Box::new(std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?),
        None => Box::new(std::io::stdin()),
    };
    let reader = ReadAhead::start(input)?;
    reader.header().require_progressive()?;
    let out_header = a.output_format.header(reader.header(), SCALE as u32)?;
    if let (Some(advice), false) = (a.output_format.advice(reader.header()), a.quiet) {
        crate::diagln!("note: {advice}");
    }
    if let (Some(note), false) = (matrix_note(a.matrix, reader.header().format(), out_header.format()), a.quiet) {
        crate::diagln!("note: {note}");
    }
    // Fixed tiles against the frame (an overlap at or above a side that cuts it), and the
    // frame's latents against the largest buffer, before loading.
    let fmt = reader.header().format();
    let (ph, pw) = LatentPad::new(fmt.height as usize, fmt.width as usize).padded();
    if let TileSize::Fixed { rows, cols } = a.tiles.tile {
        a.tiles.plan(ph, pw, (rows, cols)).map_err(anyhow::Error::msg)?;
    }
    crate::pipeline::tile_choice::check_whole_frame(ph, pw, gpu.limits.max_buffer_size)?;
    // The files written, opened now: one the job cannot write fails before the models load.
    let mut out_file = a.output.as_deref().map(|p| OutFile::open("-o", p)).transpose()?;
    let mut gif_file = a.gif.as_deref().map(|p| OutFile::open("--gif", p)).transpose()?;
    if a.random_weights.is_some() && !a.weights.as_os_str().is_empty() && !a.weights.is_dir() {
        bail!("--weights {}: no such folder (with --random-weights it holds the configs to use in place of the built-in ones; leave it out for those)", a.weights.display());
    }

    let unet_dtype = default_dtype(gpu, ModelKind::DiffvsrUnet);
    let vae_dtype = default_dtype(gpu, ModelKind::Te3dVaeDecoder);
    let (uw, mut uc) = release::video_unet(&a.weights);
    let (vw, mut vc) = release::video_vae(&a.weights);
    if a.weights.as_os_str().is_empty() {
        // `--random-weights` without `--weights`: the built-in configs, not files in the
        // working folder.
        (uc, vc) = (None, None);
    }
    // Before anything loads (the release's own config takes every level; an override may not).
    if let Some(p) = &uc {
        noise_level_fits(p, a.noise_level)?;
    }
    let load = |kind, config: Option<&std::path::Path>, weights: &std::path::Path, dtype| match a.random_weights {
        Some(seed) => crate::models::registry::load_model_from(gpu, kind, config, &mut crate::weights::WeightStore::synthetic(seed), dtype),
        None => load_model(gpu, kind, config, weights, dtype),
    };
    let embeds_given = a.prompt_embeds.is_some() && a.negative_prompt_embeds.is_some();
    if a.random_weights.is_none() {
        if !a.weights.exists() {
            bail!("--weights {}: no such folder. Give the DiffVSR release folder, or run 'diffvsr-wgpu fetch-weights' and leave --weights out", a.weights.display());
        }
        if !a.weights.is_dir() {
            bail!("--weights {} is a file: give the release folder that holds DiffVSR_UNet.pt, TE-3DVAE.pt and upscaler4x/", a.weights.display());
        }
        // Everything missing at once, before minutes of loading.
        let missing = release::missing_for_upscale(&a.weights, !embeds_given);
        if !missing.is_empty() {
            bail!(
                "{} is not a complete DiffVSR release: no {}. Run 'diffvsr-wgpu fetch-weights' or give --weights DIR{}",
                a.weights.display(),
                missing.join(", no "),
                if embeds_given { "" } else { " (the text encoder is not needed with --prompt-embeds and --negative-prompt-embeds)" }
            );
        }
        for file in [release::UNET_CHECKPOINT, release::VAE_CHECKPOINT] {
            if let (Some(note), false) = (release::stale_copy(&a.weights, file), a.quiet) {
                crate::diagln!("note: {note}");
            }
        }
    }
    let loading = std::time::Instant::now();
    // The prompts first: the text encoder is loaded, run and freed before the video models, so
    // it never shares the GPU with them, and a missing one is reported before their load.
    // With random weights there is no text encoder: a missing file's embeddings are random.
    let encoded = if a.random_weights.is_some() && !embeds_given {
        embeds_files(a)?
    } else {
        let (p, n) = prompt_embeds(gpu, a)?;
        (Some(p), Some(n))
    };
    // The encoder's buffers went back to the pool: hand them to the driver.
    gpu.pool.trim();
    // A stop asked for while the models load ends the job between them (nothing written yet:
    // the files this run created go again), not after the load and the first window's setup.
    interrupt::check()?;
    let unet = match weights_fit(gpu, &format!("the DiffVSR UNet (the release's: about 1.8 GiB in f16, 3.6 GiB in f32; here {})", unet_dtype.name()), || load(ModelKind::DiffvsrUnet, uc.as_deref(), &uw, unet_dtype))? {
        Model::VideoUnet(u) => u,
        _ => bail!("internal: {} did not load as a video UNet", uw.display()),
    };
    interrupt::check()?;
    let vae = match weights_fit(gpu, &format!("the TE-3DVAE decoder (the release's: about 0.5 GiB in f32; here {})", vae_dtype.name()), || load(ModelKind::Te3dVaeDecoder, vc.as_deref(), &vw, vae_dtype))? {
        Model::Te3dVaeDecoder(v) => v,
        _ => bail!("internal: {} did not load as the TE-3DVAE decoder", vw.display()),
    };
    // --random-weights without an embeddings file: random ones of the UNet's width.
    let d = unet.config.base.cross_attention_dim;
    let mut rng = crate::rng::Rng::new(a.random_weights.unwrap_or_default() ^ 0x5EED);
    let mut random = || PromptEmbeds::new(rng.normals(77 * d, 1.0), vec![1, 77, d]);
    let positive = match encoded.0 {
        Some(e) => e,
        None => random()?,
    };
    let negative = match encoded.1 {
        Some(e) => e,
        None => random()?,
    };
    // Embeddings from another text encoder are refused now, not after the first window's capture.
    let source = |flag: &'static str, file: &Option<std::path::PathBuf>| if file.is_some() { flag } else { "the text encoder" };
    for (from, e) in [(source("--prompt-embeds", &a.prompt_embeds), &positive), (source("--negative-prompt-embeds", &a.negative_prompt_embeds), &negative)] {
        if e.shape[2] != d {
            bail!(
                "{from}: embeddings of shape {:?}, but this UNet takes a width of {d} (cross_attention_dim): they come from another text encoder; \
                 encode the prompt again with this release's (diffvsr-wgpu encode-prompt TEXT -o FILE), or give its text (--prompt, --negative-prompt) instead",
                e.shape
            );
        }
    }
    if positive.shape != negative.shape {
        bail!("--prompt-embeds {:?} and --negative-prompt-embeds {:?} differ in shape: encode both with the same text encoder", positive.shape, negative.shape);
    }
    interrupt::check()?;
    if !a.quiet {
        // Waits for the uploads: the time is the models' on the GPU, not only read and queued.
        gpu.sync()?;
        // f32 storage whose convolutions round their operands to f16 (`--f16-operands`).
        let operands = if crate::ops::conv::on_f16_operands(gpu, vae_dtype) { " on f16 operands" } else { "" };
        // Tuning runs as each graph is first captured: say why the first window takes longer.
        let tuning = if gpu.tuner().is_on() { "; the first window also times the kernel tiles of shapes the tuning cache lacks (--tune off skips it)" } else { "" };
        crate::diagln!(
            "models loaded in {:.1} s (UNet {}, TE-3DVAE {}{operands}; {} on the GPU){tuning}",
            loading.elapsed().as_secs_f64(),
            unet_dtype.name(),
            vae_dtype.name(),
            crate::gpu::human_bytes(gpu.pool.stats().live_bytes)
        );
    }
    if a.random_weights.is_some() && !a.quiet {
        crate::diagln!("--random-weights: synthetic weights, the output is not an upscale (a timing run)");
    }
    if !a.quiet {
        idle_settings(a).iter().for_each(|n| crate::diagln!("note: {n}"));
    }
    let opts = JobOptions {
        steps: a.steps,
        guidance: a.guidance,
        noise_level: a.noise_level,
        seed: a.seed,
        ilt: a.ilt,
        positive,
        negative,
        matrix: a.matrix,
        frames: a.frames,
        tiles: a.tiles,
        windows_per_call: a.windows_per_call,
        input_frames,
        redecode_overflow: a.redecode_overflow,
    };

    let output: Box<dyn Write> = match out_file.as_mut() {
        Some(f) => Box::new(f.start()?),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut writer = Writer::new(std::io::BufWriter::new(output), out_header)?;
    // --gif: each frame also goes to the preview as it is written.
    let preview = match (&a.gif, gif_file.as_mut()) {
        (Some(p), Some(f)) => {
            let h = writer.header();
            let params = YuvParams { matrix: opts.matrix.resolve(h.width, h.height), range: h.range, depth: h.depth };
            let gif = GifPreview::new(std::io::BufWriter::new(f.start()?), h, params).with_context(|| format!("--gif {}", p.display()))?;
            Some(std::rc::Rc::new(std::cell::RefCell::new(gif)))
        }
        _ => None,
    };
    if let Some(p) = &preview {
        let p = p.clone();
        writer.on_frame(Box::new(move |f| p.borrow_mut().push(f).map_err(|e| std::io::Error::other(format!("--gif: {e:#}")))));
    }
    let mut reporter = crate::pipeline::progress::Reporter::new(std::io::stderr(), crate::pipeline::progress::Style::for_stderr(), a.steps, a.frames, input_frames);
    let mut frames_done = 0usize;
    let result = run_job(gpu, &unet, unet_dtype, &vae, vae_dtype, reader, &mut writer, &opts, |p| {
        if let Progress::Frames { done, .. } = p {
            frames_done = done;
            if done == 1 {
                crate::pipeline::out_file::frame_written();
            }
        }
        if !a.quiet {
            reporter.event(p);
        }
    });
    reporter.clear();
    let elapsed = reporter.elapsed();
    // The files stay where the job wrote a frame or ended well (a stream of a header only);
    // else they are abandoned: an existing file keeps its bytes, a created one goes again.
    // Kept: frames written whole (flushed; a frame whose write or flush failed is not one).
    let keep = frames_done > 0 || result.is_ok();
    let whole = writer.flushed_bytes();
    for f in out_file.iter_mut() {
        if keep {
            f.keep()
        } else {
            f.abandon()
        }
    }
    // A GIF of no frame is no picture (viewers and ffmpeg refuse it): a stream of a header only
    // gives none.
    for f in gif_file.iter_mut() {
        if frames_done > 0 {
            f.keep()
        } else {
            f.abandon();
            if result.is_ok() && !a.quiet {
                crate::diagln!("note: the input has no frame to write, so --gif wrote no preview");
            }
        }
    }
    drop(writer);
    // A failed write (a full disk) may leave part of a frame in the file: cut back to the whole
    // frames, which `--frames` then continues.
    let cut_back = match (out_file.as_ref(), result.is_err() && keep) {
        (Some(f), true) => f.cut_back(whole).unwrap_or_else(|e| {
            log::warn!("{e:#}");
            false
        }),
        _ => false,
    };
    // The preview is closed (its trailer written) whether the job ended, failed or stopped; an
    // abandoned one (no frame written) takes none of it.
    // It shows the frames the output holds: one handed over whose write failed is left out.
    let gif = preview.map(|p| std::rc::Rc::try_unwrap(p).ok().expect("the writer and its hook are gone").into_inner().finish(frames_done));
    let stats = match result {
        // After Ctrl-C, an error is the stop itself, or its echo (a pipeline's other ends got
        // the signal too: a truncated input, a closed output).
        Err(e) if interrupt::requested() || interrupt::is_interrupted(&e) => {
            let start = a.frames.map_or(0, |r| r.start);
            let end = a.frames.and_then(|r| r.end).map_or(String::new(), |e| e.to_string());
            let detail = if frames_done == 0 {
                "stopped before any output frame was written".to_string()
            } else {
                format!(
                    "stopped after {frames_done} whole output frames (frames {start}..{}); the rest can be run later with --frames {}:{end} and the parts joined",
                    start + frames_done,
                    start + frames_done
                )
            };
            return Err(interrupt::Interrupted { detail }.into());
        }
        // An input cut inside a frame: the run's frames up to the cut were written (the error
        // says which), and there is nothing after it to go on to.
        Err(e) if e.downcast_ref::<crate::pipeline::job::CutInput>().is_some() => return Err(e),
        // Failed after whole frames: they stay, and where to go on from is said.
        Err(e) if frames_done > 0 && !is_broken_pipe(&e) => {
            let start = a.frames.map_or(0, |r| r.start);
            let end = a.frames.and_then(|r| r.end).map_or(String::new(), |e| e.to_string());
            // Where the output is a regular -o file it was cut back to them; elsewhere (stdout,
            // a pipe, a device) part of the next may follow them.
            let held = match (&a.output, cut_back) {
                (Some(p), true) => format!(", kept in {}, which the parts join to", p.display()),
                _ => ", then perhaps part of the next: keep only the whole ones to join the parts".to_string(),
            };
            bail!(
                "{e:#}\n{} written (frames {start}..{}{held}); once the cause is mended, --frames {}:{end} runs the rest",
                count(frames_done, "whole output frame"),
                start + frames_done,
                start + frames_done
            );
        }
        r => r?,
    };
    if let (Some(g), Some(p)) = (gif, &a.gif) {
        g.with_context(|| format!("--gif {}", p.display()))?;
    }
    if !a.quiet {
        let g = &stats.windows_per_call;
        let tuned = match gpu.tuner().is_on() {
            true => {
                let picks = gpu.tuner().picks();
                format!("; kernel tiles tuned for {} shapes, {} of them read from the tuning cache (--tune)", picks.len(), picks.iter().filter(|t| t.cached).count())
            }
            false => String::new(),
        };
        crate::diagln!(
            "{} in, {} out, {}, {:.1} s (denoising {:.1} s, decoding and writing {:.1} s); tiles: {}; windows per UNet call: {} ({}){tuned}",
            count(stats.frames_in, "frame"),
            stats.frames_out,
            count(stats.windows, "window"),
            elapsed.as_secs_f64(),
            stats.denoising.as_secs_f64(),
            stats.decoding.as_secs_f64(),
            stats.tiles,
            g.windows,
            g.why
        );
    }
    if stats.redecoded > 0 && !a.quiet {
        crate::diagln!("note: {} overflowed f16 operands and ran again on f32 operands (--f16-operands off runs them all so)", count(stats.redecoded, "decode"));
    }
    if let (Some(t), Some(r)) = (stats.cut_at, a.frames) {
        // Said even with --quiet: the output is shorter than asked.
        crate::diagln!("note: --frames {r}: the input has only {t} frames; wrote frames {}..{t} ({} frames)", r.start, stats.frames_out);
    }
    Ok(stats)
}

/// What `load` loads, its uploads flushed and done (a weights upload stages as much again as
/// the weights, and the staging can run out too); where the GPU ran out of memory, an error that
/// says the weights of `what` do not fit, which smaller tiles (the advice of the error inside)
/// do not change.
fn weights_fit<T>(gpu: &Gpu, what: &str, load: impl FnOnce() -> Result<T>) -> Result<T> {
    let loaded = load().and_then(|m| {
        gpu.settle()?;
        Ok(m)
    });
    loaded.map_err(|e| match crate::gpu::out_of_memory(&e) {
        Some(oom) => anyhow::anyhow!(
            "{}: the weights of {what} do not fit beside what else holds the GPU's memory (tiles do not change what weights take). \
             Close other programs using the GPU, or use one with more memory",
            oom.detail
        ),
        None => e,
    })
}

/// Where `--matrix auto` reads the input and writes the output by different matrices (an SD
/// input's HD upscale), what to tag the encode with: players and encoders that guess by size
/// agree, but anything that takes BT.601 for untagged video shifts the hues.
fn matrix_note(choice: MatrixChoice, input: crate::video::y4m::FrameFormat, output: crate::video::y4m::FrameFormat) -> Option<String> {
    let (m_in, m_out) = (choice.resolve(input.width, input.height), choice.resolve(output.width, output.height));
    let colour = |f: &crate::video::y4m::FrameFormat| f.chroma != crate::video::y4m::Chroma::Mono;
    (m_in != m_out && choice == MatrixChoice::Auto && colour(&input) && colour(&output)).then(|| {
        format!(
            "--matrix auto reads the {}x{} input as {} and writes the {}x{} output as {} (as players guess by size): tag the encode with -colorspace {} (or give --matrix {} to keep the input's, and tag -colorspace {})",
            input.width,
            input.height,
            m_in.name(),
            output.width,
            output.height,
            m_out.name(),
            m_out.ffmpeg_colorspace(),
            m_in.flag(),
            m_in.ffmpeg_colorspace()
        )
    })
}

#[cfg(test)]
mod tests {
    /// An SD input's HD upscale under `--matrix auto` is read and written by different matrices:
    /// the run says what to tag the encode with; not where both sides agree, a matrix is given,
    /// or a side is grey.
    #[test]
    fn a_matrix_change_by_size_is_told() {
        use crate::video::color::{Matrix, MatrixChoice};
        use crate::video::y4m::{Chroma, FrameFormat, Siting};
        let f = |width, height, chroma| FrameFormat { width, height, chroma, siting: Siting::Left, depth: 8 };
        let note = super::matrix_note(MatrixChoice::Auto, f(640, 360, Chroma::C420), f(2560, 1440, Chroma::C420)).unwrap();
        assert!(note.contains("640x360 input as BT.601") && note.contains("2560x1440 output as BT.709") && note.contains("-colorspace bt709") && note.contains("--matrix bt601") && note.contains("-colorspace smpte170m"), "{note}");
        assert_eq!(super::matrix_note(MatrixChoice::Auto, f(1280, 720, Chroma::C420), f(5120, 2880, Chroma::C420)), None);
        assert_eq!(super::matrix_note(MatrixChoice::Fixed(Matrix::Bt601), f(640, 360, Chroma::C420), f(2560, 1440, Chroma::C420)), None);
        assert_eq!(super::matrix_note(MatrixChoice::Auto, f(640, 360, Chroma::Mono), f(2560, 1440, Chroma::Mono)), None);
        // The flag the note names is one --matrix takes.
        for m in [Matrix::Bt601, Matrix::Bt709, Matrix::Bt2020] {
            assert_eq!(m.flag().parse::<MatrixChoice>(), Ok(MatrixChoice::Fixed(m)));
        }
    }

    use super::{check_settings, check_streams, idle_settings, UpscaleArgs, DEFAULT_NEGATIVE_PROMPT, DEFAULT_PROMPT};

    /// A guidance of 1 or less, and prompts beside random weights, are said to change nothing.
    #[test]
    fn idle_settings_are_said() {
        let a = UpscaleArgs {
            input: None,
            output: None,
            weights: Default::default(),
            steps: 50,
            guidance: 5.0,
            noise_level: 50,
            seed: 10,
            ilt: crate::pipeline::windows::Ilt::Released,
            matrix: crate::video::color::MatrixChoice::Auto,
            output_format: crate::video::y4m::OutputFormat { chroma: None, depth: None },
            prompt: DEFAULT_PROMPT.into(),
            negative_prompt: DEFAULT_NEGATIVE_PROMPT.into(),
            prompt_embeds: None,
            negative_prompt_embeds: None,
            quiet: false,
            frames: None,
            gif: None,
            tiles: Default::default(),
            windows_per_call: Default::default(),
            random_weights: None,
            redecode_overflow: false,
        };
        assert!(idle_settings(&a).is_empty());
        let unguided = UpscaleArgs { guidance: 1.0, ..a.clone() };
        assert!(idle_settings(&unguided).is_empty(), "no negative prompt was given");
        let unguided = UpscaleArgs { negative_prompt: "blurry".into(), ..unguided };
        assert!(idle_settings(&unguided)[0].contains("the negative prompt has no effect"), "{:?}", idle_settings(&unguided));
        let random = UpscaleArgs { random_weights: Some(1), ..a.clone() };
        assert!(idle_settings(&random).is_empty(), "the default prompts are no choice");
        let prompted = UpscaleArgs { prompt: "a cat".into(), ..random.clone() };
        assert!(idle_settings(&prompted)[0].starts_with("--prompt has no effect"), "{:?}", idle_settings(&prompted));
        let with_embeds = UpscaleArgs { prompt_embeds: Some("pos.safetensors".into()), ..prompted };
        assert!(idle_settings(&with_embeds).is_empty());
    }
    use crate::pipeline::scheduler::{Ddim, MAX_STEPS};

    /// Every step count the settings pass, the schedule takes: the refusal comes before the
    /// models load, not from the schedule after them (1000 steps reach t = 1000).
    #[test]
    fn settings_take_what_the_schedule_takes() {
        for steps in [1, 50, MAX_STEPS] {
            check_settings(steps, 50, 5.0).unwrap();
            Ddim::released().steps(steps).unwrap();
        }
        for steps in [0, MAX_STEPS + 1] {
            let e = check_settings(steps, 50, 5.0).unwrap_err().to_string();
            assert!(e.contains(&format!("--steps {steps}: between 1 and {MAX_STEPS}")), "{e}");
        }
        assert!(check_settings(50, 351, 5.0).is_err() && check_settings(50, 50, f32::NAN).is_err());
    }

    /// A terminal for stdin or stdout is refused with the pipe to use, before any work.
    #[test]
    fn a_terminal_is_no_y4m_stream() {
        assert!(check_streams(false, false).is_ok());
        let e = check_streams(true, false).unwrap_err().to_string();
        assert!(e.contains("stdin is a terminal") && e.contains("-i FILE.y4m"), "{e}");
        let e = check_streams(false, true).unwrap_err().to_string();
        assert!(e.contains("stdout is a terminal") && e.contains("-o FILE.y4m"), "{e}");
    }
}
