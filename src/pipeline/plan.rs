//! `upscale --plan`: what a run would do, without loading a model or reading a frame.

use std::io::{Read, Seek};

use anyhow::{bail, Context, Result};

use crate::pipeline::tile_choice::PROBE;
use crate::pipeline::graphs::{DECODE_CHUNK, LATENT_CHANNELS, LR_CHANNELS};
use crate::pipeline::groups::{self, WindowsPerCall};
use crate::pipeline::tiles::{LatentPad, TileOptions, TilePlan, TileSize, SCALE};
use crate::pipeline::windows::{self, FrameRange, STRIDE, WINDOW};
use crate::video::y4m::{OutputFormat, Reader};

/// A y4m file's header and frame count (from its size; `None` when the size is not a whole
/// number of frames whose first and last begin with a bare `FRAME` line, or the path is not a
/// regular file, e.g. a pipe).
pub fn y4m_file_frames(p: &std::path::Path) -> Result<(crate::video::y4m::Header, Option<usize>)> {
    let mut f = std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
    let meta = f.metadata().with_context(|| format!("reading {}", p.display()))?;
    if meta.is_dir() {
        bail!("-i {} is a folder: give a y4m file (or pipe the stream in on stdin)", p.display());
    }
    let size = meta.len();
    // The header line, as written (its length locates the first frame).
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if f.read(&mut byte).with_context(|| format!("reading {}", p.display()))? == 0 {
            // As the run's reader: a header must end its line.
            if line.is_empty() {
                bail!("{}: empty input: no y4m stream header (expected \"YUV4MPEG2 …\")", p.display());
            }
            bail!("{}: the stream ended inside its header line (no end of line)", p.display());
        }
        if byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
        if line.len() > 4096 {
            bail!("{}: not a y4m stream header (no end of line in 4096 bytes)", p.display());
        }
    }
    let reader = Reader::new(std::io::Cursor::new([line.as_slice(), b"\n"].concat()))?;
    let h = reader.header().clone();
    let fb = 6 + h.format().frame_bytes().context("the frame size overflows")? as u64;
    let start = line.len() as u64 + 1;
    let body = size - start.min(size);
    // Exact when no FRAME line carries parameters (as ffmpeg writes them): then the size is a
    // whole number of frames and the first and the last start with a bare `FRAME` line. With
    // parameters a size can still divide by chance, but the last frame's line is then elsewhere.
    let mut bare = |at: u64| {
        let mut marker = [0u8; 6];
        f.seek(std::io::SeekFrom::Start(at)).and_then(|_| f.read_exact(&mut marker)).is_ok() && &marker == b"FRAME\n"
    };
    let whole = meta.is_file() && body % fb == 0 && (body == 0 || (bare(start) && bare(size - fb)));
    Ok((h, whole.then_some((body / fb) as usize)))
}

/// stdin as a path, where it is a regular file (`< in.y4m`; Unix).
pub fn stdin_file() -> Option<std::path::PathBuf> {
    let p = std::path::PathBuf::from("/dev/stdin");
    (cfg!(unix) && std::fs::metadata(&p).is_ok_and(|m| m.is_file())).then_some(p)
}

/// [`stdin_file`] where it can be read to measure the clip: on Linux, where `/dev/stdin` opens
/// the file anew, at its start, without moving stdin's own offset (elsewhere it shares it).
pub fn stdin_file_to_measure() -> Option<std::path::PathBuf> {
    stdin_file().filter(|_| cfg!(target_os = "linux"))
}

/// What `--plan` knows of the adapter a run would take (its limits only: no device is opened).
#[derive(Clone, Copy, Debug)]
pub struct PlanAdapter {
    /// The largest storage binding, in bytes.
    pub max_binding: u64,
    /// A software (CPU) adapter, on which `--windows-per-call auto` keeps one window per call.
    pub software: bool,
    /// The device memory a job may plan for, weights included, and whence: `--gpu-memory`, or
    /// the driver's budget or heap (`gpu::memory`); `None` where neither says.
    pub memory: Option<(u64, &'static str)>,
    /// Byte offsets of bound views are multiples of this (with `DIFFVSR_OFFSET_ALIGNMENT`):
    /// whether a frame one tile covers runs at its own size (`LatentPad::may_run_unpadded`).
    pub offset_alignment: u64,
}

/// What `--plan` prints: the windows to run, the segment, the spatial tiles and a memory
/// estimate, without loading a model or reading a frame. The frame count comes from the input
/// file's size (a stream on stdin has no known length: the plan then gives the windows as they
/// will run). `max_binding` is the adapter's binding limit where known (for `--tile auto`,
/// whose tiles depend on the models' measured tensors and are picked when they load).
#[allow(clippy::too_many_arguments)]
pub fn plan(input: Option<&std::path::Path>, output_format: OutputFormat, matrix: crate::video::color::MatrixChoice, weights: PlanWeights<'_>, frames: Option<FrameRange>, text_encoder: bool, guidance: f32, tiles: TileOptions, windows_per_call: WindowsPerCall, adapter: Option<PlanAdapter>) -> Result<String> {
    let max_binding = adapter.map(|a| a.max_binding);
    use crate::gpu::human_bytes;
    use std::fmt::Write as _;
    let mut o = String::new();
    let stdin = stdin_file_to_measure();
    let (header, t): (crate::video::y4m::Header, Option<usize>) = match input.or(stdin.as_deref()) {
        Some(p) => y4m_file_frames(p)?,
        None => {
            use std::io::IsTerminal;
            if std::io::stdin().is_terminal() {
                bail!("--plan reads the y4m header: stdin is a terminal; pipe a stream in or give -i FILE.y4m");
            }
            (Reader::new(std::io::stdin().lock())?.header().clone(), None)
        }
    };
    // What a run would refuse, --plan refuses too.
    header.require_progressive()?;
    let fmt = header.format();
    let pad = LatentPad::new(fmt.height as usize, fmt.width as usize);
    let (mut ph, mut pw) = pad.padded();
    // A fixed tile that covers the frame runs it at its own size where the adapter's views allow,
    // as the run does (`run_job`); under --tile auto that is known once the models load.
    let own_size = match tiles.tile {
        TileSize::Fixed { rows, cols } => {
            tiles.plan(ph, pw, (rows, cols)).is_ok_and(|p| p.is_whole()) && adapter.is_some_and(|a| pad.may_run_unpadded(a.offset_alignment))
        }
        TileSize::Auto => false,
    };
    writeln!(o, "input:    {}x{} {:?} {}-bit, {}", fmt.width, fmt.height, fmt.chroma, fmt.depth, match t {
        Some(t) => format!("{t} frames (from the file size)"),
        None if input.is_some() => "frame count unknown (the file size is not a whole number of frames, or its FRAME lines carry parameters)".into(),
        None => "frame count unknown until the stream ends (stdin)".into(),
    })?;
    let out = output_format.header(&header, SCALE as u32)?.format();
    let latent = if own_size {
        format!("latent {}x{}, the input's own size as released (one tile covers it)", fmt.width, fmt.height)
    } else if pad.may_run_unpadded(adapter.map_or(1, |a| a.offset_alignment)) && tiles.tile == TileSize::Auto {
        format!("latent {}x{}, the input's own size as released, where one tile covers it and its planes suit the GPU's view alignment; else the input reflect-padded to {pw}x{ph} (tiles are multiples of 8)", fmt.width, fmt.height)
    } else if (ph, pw) != (fmt.height as usize, fmt.width as usize) {
        format!("latent {pw}x{ph} (input reflect-padded to multiples of 8)")
    } else {
        format!("latent {pw}x{ph}")
    };
    writeln!(o, "output:   {}x{} {:?} {}-bit (x{SCALE}); {latent}", out.width, out.height, out.chroma, out.depth)?;
    if own_size {
        (ph, pw) = (fmt.height as usize, fmt.width as usize);
    }
    if let Some(advice) = output_format.advice(&header) {
        writeln!(o, "          {advice}")?;
    }
    let (m_in, m_out) = (matrix.resolve(fmt.width, fmt.height), matrix.resolve(out.width, out.height));
    let why = match matrix {
        crate::video::color::MatrixChoice::Auto => "--matrix auto: BT.709 from 1280 wide or past 576 lines, for each side",
        _ => "--matrix: both sides",
    };
    writeln!(o, "matrix:   {} in ({}x{}), {} out ({}x{}) ({why}); y4m carries no matrix, so tag the encode to match, e.g. -colorspace {}", m_in.name(), fmt.width, fmt.height, m_out.name(), out.width, out.height, m_out.ffmpeg_colorspace())?;
    tiles.check().map_err(anyhow::Error::msg)?;
    // The tile sizes the job tensors below are counted at (the whole latent where unknown).
    let (mut uh, mut uw, mut vh, mut vw) = (ph, pw, ph, pw);
    match tiles.tile {
        TileSize::Fixed { rows, cols } => {
            let p = if own_size { TilePlan::whole(ph, pw) } else { tiles.plan(ph, pw, (rows, cols)).map_err(anyhow::Error::msg)? };
            (uh, uw) = p.tile_size();
            (vh, vw) = (uh, uw);
            writeln!(o, "tiles:    --tile {}: UNet and VAE {} (VAE tiles x{SCALE} in output pixels, blended with the same feathered weights)", tiles.tile, p.summary())?;
        }
        TileSize::Auto => {
            let limit = max_binding.map_or("unknown here (no adapter found)".to_string(), crate::gpu::human_bytes);
            let overlap = tiles.overlap.map_or("a quarter of the tile's shorter side that cuts the frame".to_string(), |v| v.to_string());
            writeln!(o, "tiles:    auto: picked when the models load, per model, from its largest tensor per latent pixel (measured on a {PROBE}x{PROBE} probe graph) and this adapter's binding limit ({limit}), and, where the GPU's memory is known (the driver's figure on Vulkan, Metal and DX12, or --gpu-memory), whose graphs, planned exactly, fit it: of the tiles (rectangles too) that fit, the one that processes the fewest pixels, overlaps counted (more tiles than the largest square's only where that saves at least 5%); one tile when the whole latent fits (by that measure, or by the whole frame's graph recorded exactly); overlap {overlap}; `--tile N` or `--tile WxH` fixes the tiles (then listed here)")?;
        }
    }
    let (start, end) = match frames {
        Some(r) => (r.start, r.end),
        None => (0, None),
    };
    let seg_end = match (end, t) {
        (Some(e), Some(t)) => Some(e.min(t)),
        (e, t) => e.or(t),
    };
    if t == Some(0) && frames.is_none() {
        writeln!(o, "segment:  none: the input has no frames (a run writes the output's header and no frame)")?;
        return Ok(o);
    }
    if let (Some(t), Some(r)) = (t.filter(|&t| start >= t), frames) {
        bail!(r.past_the_end(t, "the input"));
    }
    match (t, seg_end) {
        (Some(t), Some(e)) => {
            let p = windows::segment_plan(t, start, e).map_err(anyhow::Error::msg)?;
            let note = if end.is_some_and(|x| x > t) { format!(" (END cut to the input's {t} frames)") } else { String::new() };
            writeln!(o, "segment:  output frames {}..{}{note}; windows {}..{} of {}; input frames {}..{} used (earlier ones read past, none after read)", p.frames.start, p.frames.end, p.windows.start, p.windows.end, windows::window_count(t), p.reads.start, p.reads.end)?;
            let n = p.windows.len();
            for (k, i) in p.windows.clone().enumerate() {
                if n > 8 && k == 3 {
                    writeln!(o, "  … {} more windows …", n - 6)?;
                }
                if n > 8 && (3..n - 3).contains(&k) {
                    continue;
                }
                writeln!(o, "  window {i}: padded frames {}..{}, input frames {:?}", windows::window_start(i), windows::window_start(i) + WINDOW, windows::window_frames(t, i))?;
            }
        }
        (_, Some(e)) => {
            let (a, b) = (windows::first_window_for(start), windows::last_window_for(e));
            writeln!(o, "segment:  output frames {start}..{e}; windows {a}..{} (fewer if the stream is shorter); input frames from {} kept, none read past frame {}", b + 1, windows::segment_first_read(start), windows::segment_read_limit(e) - 1)?;
        }
        (_, None) => {
            writeln!(o, "segment:  output frames {start} to the end of the stream; windows of {WINDOW} frames at stride {STRIDE} from window {}, each run as soon as its frames have arrived; the tail is mirror-padded", windows::first_window_for(start))?;
        }
    }
    // Memory: weights from the checkpoint files; the job's own buffers, estimated (f32 upper bound).
    let mut weight_bytes = 0u64;
    let mut wl = Vec::new();
    if let PlanWeights::Release(w) = weights {
        let mut files = vec![crate::models::release::video_unet(w).0, crate::models::release::video_vae(w).0];
        if text_encoder {
            files.push(crate::models::release::text_encoder(w).0);
        }
        for f in files {
            let b = dir_or_file_bytes(&f);
            weight_bytes += b.unwrap_or(0);
            wl.push(format!("{} {}", f.file_name().map_or(String::new(), |n| n.to_string_lossy().into_owned()), b.map_or("missing".to_string(), human_bytes)));
        }
    }
    let fixed_tile = matches!(tiles.tile, TileSize::Fixed { .. });
    let g = planned_windows(windows_per_call, adapter.is_some_and(|a| a.software), fixed_tile, (uh, uw) == (ph, pw), ph * pw, windows::windows_to_run(t, start, end));
    match windows_per_call {
        WindowsPerCall::Fixed(n) if g < n => writeln!(o, "windows per UNet call: {g} (--windows-per-call {n}: {})", if g == 1 && (uh, uw) != (ph, pw) { "a tiled frame's windows run one by one" } else { "no call holds more windows than the run has" })?,
        WindowsPerCall::Fixed(_) => writeln!(o, "windows per UNet call: {g}")?,
        WindowsPerCall::Auto if adapter.is_some_and(|a| a.software) => writeln!(o, "windows per UNet call: auto: 1 (a software adapter gains nothing from a larger batch)")?,
        WindowsPerCall::Auto if fixed_tile => writeln!(o, "windows per UNet call: auto: 1 (with a fixed --tile windows are not grouped)")?,
        WindowsPerCall::Auto => writeln!(o, "windows per UNet call: auto: picked when the models load, {g} at most here (on a GPU, with the frame in one tile under --tile auto: as many as keep a call within one {}x{}-latent window's pixels, up to {}, and within the GPU's memory where known; else 1)", groups::GROUP_SIDE, groups::GROUP_SIDE, groups::MAX_AUTO)?,
    }
    let plane = (ph * pw) as u64;
    let f32b = 4u64;
    let gb = g as u64;
    // The UNet's batch per window: the CFG pair, or the positive prompt alone at a guidance of
    // 1 or less (`JobOptions::cfg_halves`).
    let halves = crate::pipeline::options::cfg_halves(guidance) as u64;
    let sample = gb * halves * (LATENT_CHANNELS + LR_CHANNELS) as u64 * WINDOW as u64 * (uh * uw) as u64 * f32b;
    // The f32 latents between steps (a tile per window of a call), and the final latents of a
    // call's windows and the one before them (whole frames).
    let latents = LATENT_CHANNELS as u64 * WINDOW as u64 * (gb * (uh * uw) as u64 + (gb + 1) * plane) * f32b;
    let vae = (LATENT_CHANNELS + LR_CHANNELS * (SCALE * SCALE)) as u64 * DECODE_CHUNK as u64 * (vh * vw) as u64 * f32b;
    // Input frames, the call's windows' LR frames, one decoded chunk and one output frame's
    // RGB cut from it; when the VAE is tiled, the fused chunk's latents read back, one latent
    // tile cut from them and one tile's decoded pixels (each tile is blended into the chunk as
    // it comes). Under --tile auto the tiles are not known here: counted untiled.
    let held = windows::max_frames_held(start, g);
    // And the frames read ahead, as they arrive (u16 samples).
    let ahead = (crate::pipeline::source::READ_AHEAD_FRAMES * fmt.plane_len(0).max(1) * 3 * 2) as u64;
    let host = held as u64 * LR_CHANNELS as u64 * plane * f32b
        + ahead
        + gb * LR_CHANNELS as u64 * WINDOW as u64 * plane * f32b
        + (LR_CHANNELS * SCALE * SCALE) as u64 * (DECODE_CHUNK as u64 * plane + plane) * f32b
        + if (vh, vw) == (ph, pw) { 0 } else { (DECODE_CHUNK * (LATENT_CHANNELS * (ph * pw + vh * vw) + LR_CHANNELS * SCALE * SCALE * vh * vw)) as u64 * f32b };
    let call = match (g, halves) {
        (1, 2) => "the CFG window".to_string(),
        (_, 2) => format!("{g} CFG windows"),
        (1, _) => "the window (no guidance: the positive prompt alone)".to_string(),
        _ => format!("{g} windows (no guidance: the positive prompt alone)"),
    };
    writeln!(o, "memory (estimate):")?;
    match weights {
        PlanWeights::Random => writeln!(o, "  weights:          seeded random (--random-weights), the release's shapes (or those of the config overrides in --weights), none read from disk; `forward --model M --random-weights 1 --random-inputs BxHxW --plan-only` prints each model's size on the device")?,
        PlanWeights::NotFound => writeln!(o, "  weights:          not found: run `diffvsr-wgpu fetch-weights` or give --weights DIR (the job would stop before reading a frame)")?,
        PlanWeights::Release(_) => writeln!(o, "  weights:          {} on disk ({}); on the device about this with f32 storage, about half with f16", human_bytes(weight_bytes), wl.join(", "))?,
    }
    writeln!(o, "  job tensors:      {} ({call} [{},7,8,{uh},{uw}], the latents, {} windows' final latents, and the decode chunk in and out at {vw}x{vh}, f32)", human_bytes(sample + latents + vae), halves * gb, g + 1)?;
    writeln!(o, "  activations:      not estimated here: the UNet's and VAE's arena peaks need the graphs captured (`forward --model M --random-weights 1 --random-inputs BxHxW --plan-only` plans them without running: here, as BxHxW, the UNet call is `--model diffvsr-unet --random-inputs {}x{uh}x{uw}{}` and a decode chunk `--model te3dvae-decoder --random-inputs 1x{vh}x{vw}`; add `--plan-limits BINDING,BUFFER` to plan for another GPU than this one)", halves * gb, if halves == 2 { " --cfg-pair" } else { "" })?;
    match adapter.and_then(|a| a.memory) {
        Some((bytes, whence)) => writeln!(o, "  GPU memory:       {} ({whence}): the weights, the job's tensors and the activations must fit it; --tile auto and --windows-per-call auto plan for it when the models load (--tile auto for less if the GPU then runs out of memory as the job is built)", human_bytes(bytes))?,
        None => writeln!(o, "  GPU memory:       not known here (GPU drivers on Vulkan, Metal and DX12 report it, GL's do not; a software adapter's is the host's; --gpu-memory SIZE gives a figure): --tile auto plans for the binding limit only, then for less if the GPU runs out of memory as the job is built (not on GL, which does not report it)")?,
    }
    writeln!(o, "  host:             {} (at most {held} input frames, {} LR frames, a decoded chunk, an output frame's RGB and {} frames read ahead{}), whatever the clip length", human_bytes(host), if g == 1 { "a window's".to_string() } else { format!("{g} windows'") }, crate::pipeline::source::READ_AHEAD_FRAMES, match tiles.tile {
        TileSize::Auto => "; where --tile auto tiles the VAE, a tile's pixels and the chunk's latents too",
        TileSize::Fixed { .. } if (vh, vw) != (ph, pw) => "; with the VAE tiled, a tile's pixels and the chunk's latents",
        TileSize::Fixed { .. } => "",
    })?;
    Ok(o)
}

/// Where the plan's job takes its weights from.
#[derive(Copy, Clone, Debug)]
pub enum PlanWeights<'a> {
    /// The release's files in this folder (some may be missing).
    Release(&'a std::path::Path),
    /// Seeded random weights (`--random-weights`): nothing is read from disk.
    Random,
    /// No folder given and none fetched.
    NotFound,
}

/// Bytes of a file, or of all files under a folder.
fn dir_or_file_bytes(p: &std::path::Path) -> Option<u64> {
    let m = std::fs::metadata(p).ok()?;
    if m.is_file() {
        return Some(m.len());
    }
    let mut total = 0;
    for e in std::fs::read_dir(p).ok()? {
        total += dir_or_file_bytes(&e.ok()?.path())?;
    }
    Some(total)
}

/// Windows per UNet call as the plan counts them: the run's own rule
/// ([`WindowsPerCall::resolve`]) with what is not known before the models load left out (the
/// GPU's memory, the UNet's bytes per pixel against the binding limit): auto at its most.
fn planned_windows(w: WindowsPerCall, software: bool, fixed_tile: bool, one_tile: bool, latent_px: usize, run_windows: Option<usize>) -> usize {
    let c = groups::GroupContext {
        software,
        unet_tiles: if one_tile { 1 } else { 2 },
        tile_px: latent_px,
        // Under a fixed --tile the run measures nothing (and groups nothing under auto); under
        // --tile auto no tensor is counted against the limit here.
        largest_per_px: (!fixed_tile).then_some(0.0),
        max_binding: u64::MAX,
        run_windows,
        memory_windows: None,
    };
    w.resolve(&c).map_or(1, |g| g.windows)
}

#[cfg(test)]
mod tests {
    use super::{plan, planned_windows, y4m_file_frames, PlanAdapter, PlanWeights, TileOptions, TileSize, WindowsPerCall};
    use crate::video::y4m::OutputFormat;

    /// The plan counts windows per call as the run picks them: under a fixed `--tile` that
    /// covers a small frame auto groups nothing (the plan had said 4 at a 64² latent).
    #[test]
    fn planned_windows_follow_the_run() {
        let auto = WindowsPerCall::Auto;
        assert_eq!(planned_windows(auto, false, false, true, 64 * 64, None), 4);
        assert_eq!(planned_windows(auto, false, true, true, 64 * 64, None), 1);
        assert_eq!(planned_windows(auto, true, false, true, 64 * 64, None), 1);
        assert_eq!(planned_windows(auto, false, false, false, 64 * 64, None), 1);
        assert_eq!(planned_windows(WindowsPerCall::Fixed(3), false, true, true, 64 * 64, None), 3);
        assert_eq!(planned_windows(WindowsPerCall::Fixed(3), false, true, false, 64 * 64, None), 1);
        // No call holds more windows than the run has.
        assert_eq!(planned_windows(auto, false, false, true, 64 * 64, Some(2)), 2);
    }

    /// An 8×8 4:2:0 stream of `n` frames (96 bytes each) behind `marker` lines.
    fn stream(n: usize, marker: &str) -> Vec<u8> {
        let mut s = b"YUV4MPEG2 W8 H8 F25:1 Ip C420jpeg\n".to_vec();
        for k in 0..n {
            s.extend_from_slice(marker.as_bytes());
            s.extend((0..96).map(|i| (i * 7 + k * 3) as u8));
        }
        s
    }

    #[test]
    fn a_file_is_counted_only_where_its_frame_lines_are_bare() {
        let dir = crate::testutil::scratch_dir("plan-file-frames");
        let count = |name: &str, bytes: Vec<u8>| {
            let p = dir.join(name);
            std::fs::write(&p, bytes).unwrap();
            y4m_file_frames(&p).unwrap().1
        };
        assert_eq!(count("plain.y4m", stream(3, "FRAME\n")), Some(3));
        assert_eq!(count("empty.y4m", stream(0, "FRAME\n")), Some(0));
        // 34 frames behind `FRAME Ip` lines are 34 × 105 = 35 × 102 bytes: 35 plain frames by
        // size alone.
        assert_eq!(count("params.y4m", stream(34, "FRAME Ip\n")), None);
        // Cut short by a part of a frame: no whole number of frames.
        let mut cut = stream(3, "FRAME\n");
        cut.truncate(cut.len() - 5);
        assert_eq!(count("cut.y4m", cut), None);
        // A header without its end of line is refused, as the run refuses it.
        std::fs::write(dir.join("no-newline.y4m"), b"YUV4MPEG2 W8 H8 F25:1 Ip C420jpeg").unwrap();
        let e = y4m_file_frames(&dir.join("no-newline.y4m")).unwrap_err().to_string();
        assert!(e.contains("ended inside its header line"), "{e}");
        std::fs::write(dir.join("empty.y4m"), b"").unwrap();
        assert!(y4m_file_frames(&dir.join("empty.y4m")).unwrap_err().to_string().contains("empty input: no y4m stream header"));
        // A folder is told to be one, as the run tells it.
        let e = y4m_file_frames(&dir).unwrap_err().to_string();
        assert!(e.contains("is a folder: give a y4m file"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A fixed tile that covers a frame whose sides are no multiples of 8 runs it at its own size
    /// where the adapter's views allow (as `run_job` does), padded where they do not.
    #[test]
    fn a_covering_fixed_tile_plans_the_frame_at_its_own_size() {
        let dir = crate::testutil::scratch_dir("plan-own-size");
        let p = dir.join("odd.y4m");
        let mut s = b"YUV4MPEG2 W20 H12 F25:1 C444\n".to_vec();
        s.extend_from_slice(b"FRAME\n");
        s.extend((0..3 * 20 * 12).map(|i| i as u8));
        std::fs::write(&p, s).unwrap();
        let tiles = TileOptions { tile: TileSize::Fixed { rows: 32, cols: 32 }, overlap: None };
        let run = |align: u64| {
            let adapter = PlanAdapter { max_binding: 1 << 30, software: true, memory: None, offset_alignment: align };
            plan(Some(&p), OutputFormat::default(), crate::video::color::MatrixChoice::Auto, PlanWeights::Random, None, false, 5.0, tiles, WindowsPerCall::Auto, Some(adapter)).unwrap()
        };
        let own = run(32);
        assert!(own.contains("latent 20x12, the input's own size as released") && own.contains("one tile (20x12, the whole latent)"), "{own}");
        let padded = run(256);
        assert!(padded.contains("latent 24x16 (input reflect-padded") && padded.contains("one tile (24x16, the whole latent)"), "{padded}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
