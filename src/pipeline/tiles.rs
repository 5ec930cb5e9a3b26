//! The spatial plan for large frames (issue 9, deliverable 4; the released code tiles LR frames
//! above 400² into 256-pixel tiles with 64 of overlap and pastes the centres without blending,
//! spec §4.3 "Spatial tiling"):
//!
//! * The latent is at LR resolution. Where one tile covers the frame for both models, it is the
//!   LR frame at its own size, as the release runs it ([`LatentPad::unpadded`]; sides of at
//!   least 8, whose planes the GPU's views can start at: [`LatentPad::may_run_unpadded`]). Tiles
//!   need multiples of 8: for them (and for the other frames) the
//!   LR frame is reflect-padded at the bottom and right ([`LatentPad`], the same mirror as the
//!   temporal padding, so even a 1-pixel frame pads) and the ×4 output is cropped back to
//!   exactly 4W × 4H. Never resized.
//! * Tiles over the padded latent ([`TilePlan`]): a multiple of 8 in size and position, spread
//!   evenly with at least the requested overlap; one tile when the latent fits.
//! * Feathered blend: along each axis a tile's weight rises with a smoothstep over its overlap with
//!   the previous tile and falls over its overlap with the next; the axis weights are normalised to
//!   sum to 1 at every position and the 2-D weight is their product, so the weights of all tiles
//!   sum to 1 everywhere (a constant image stays constant across seams). The same plan ×4
//!   ([`TilePlan::scaled`]) blends the VAE's pixel tiles.
//! * `--tile N` or `--tile WxH` / `--tile-overlap N` ([`TileOptions`], in latent = LR pixels,
//!   multiples of 8).
//! * `--tile auto`: [`tile_for_binding`] bounds a tile by the adapter's binding limit (its
//!   largest square side and its most pixels), from the bytes per latent pixel the job measures
//!   on a probe graph; where the GPU's memory is known,
//!   [`memory_plan`](crate::pipeline::memory_plan) lowers it to what fits, and
//!   [`TileOptions::cheapest`] weighs the rectangles within that bound for the fewest pixels
//!   processed.

use std::ops::Range;

/// Latent sizes are multiples of this (three ×2 down-samplings in the UNet).
pub const LATENT_MULTIPLE: usize = 8;
/// VAE upscale factor: output pixels per latent pixel.
pub const SCALE: usize = 4;

/// The fewest `[h][w]` planes between two views the job binds of its `[B, C, F, h, w]` tensors:
/// one channel of the decoder's 4-frame input (`chunks::fuse_chunk_into`); a window's 8 frames of
/// a channel, its halves of 4 frames in f32, a CFG half or batch slot are multiples of it. A
/// view at a step of fewer planes (a single frame) would need [`LatentPad::may_run_unpadded`]
/// lowered; `Recorder::dispatch` refuses a view off the GPU's alignment, with a message.
pub const VIEW_PLANES: usize = 4;

/// Reflect padding of an LR frame to the latent size, and the crop back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LatentPad {
    /// LR (= unpadded latent) size.
    pub height: usize,
    pub width: usize,
    /// Rows added at the bottom, columns added at the right.
    pub bottom: usize,
    pub right: usize,
}

impl LatentPad {
    pub fn new(height: usize, width: usize) -> LatentPad {
        assert!(height >= 1 && width >= 1);
        let up = |n: usize| n.div_ceil(LATENT_MULTIPLE) * LATENT_MULTIPLE - n;
        LatentPad { height, width, bottom: up(height), right: up(width) }
    }
    /// No padding: the latent is the LR frame at its own size, as the release runs it (its UNet
    /// steps up to each skip's size where a side is no multiple of 8, spec §9). The job takes it
    /// where one tile covers the frame for both models and [`LatentPad::may_run_unpadded`].
    pub fn unpadded(height: usize, width: usize) -> LatentPad {
        assert!(height >= 1 && width >= 1);
        LatentPad { height, width, bottom: 0, right: 0 }
    }
    /// Whether the job may run this frame unpadded (where one tile covers it): sides of at least
    /// [`LATENT_MULTIPLE`] (three ×2 down-samplings of fewer pixels are not tested against the
    /// release), and [`VIEW_PLANES`] planes of f16 values a multiple of `align`, the GPU's view
    /// offset alignment in bytes: the smallest step between the views of whole planes the job
    /// binds. A 720p output's 180×320 latent and a 1080p output's 270×480 pass at any alignment
    /// WebGPU allows (256). False where there is no padding to skip (sides of multiples of 8).
    pub fn may_run_unpadded(&self, align: u64) -> bool {
        let step = (VIEW_PLANES * 2 * self.height * self.width) as u64;
        (self.bottom > 0 || self.right > 0) && self.height >= LATENT_MULTIPLE && self.width >= LATENT_MULTIPLE && step.is_multiple_of(align.max(1))
    }
    /// Padded latent size (rows, columns).
    pub fn padded(&self) -> (usize, usize) {
        (self.height + self.bottom, self.width + self.right)
    }
    /// The source row for padded row `y` (reflect without repeating the edge, bouncing).
    pub fn source_row(&self, y: usize) -> usize {
        crate::pipeline::windows::mirror_frame(self.height, y)
    }
    /// The source column for padded column `x`.
    pub fn source_col(&self, x: usize) -> usize {
        crate::pipeline::windows::mirror_frame(self.width, x)
    }
    /// Output crop of the ×4 result: rows 0..4H, columns 0..4W of the (4·padded) image.
    pub fn output_crop(&self) -> (Range<usize>, Range<usize>) {
        (0..SCALE * self.height, 0..SCALE * self.width)
    }
    /// CPU reference: pads one `[H][W]` plane.
    pub fn pad_plane(&self, plane: &[f32]) -> Vec<f32> {
        assert_eq!(plane.len(), self.height * self.width);
        let (ph, pw) = self.padded();
        let mut out = Vec::with_capacity(ph * pw);
        for y in 0..ph {
            let sy = self.source_row(y);
            out.extend((0..pw).map(|x| plane[sy * self.width + self.source_col(x)]));
        }
        out
    }
}

/// Tile spans along one axis of length `n` (a multiple of 8): each a multiple of 8 long and at a
/// multiple of 8, covering 0..n, consecutive spans overlapping by at least `overlap` (rounded up
/// to 8) where there is more than one.
pub fn axis_spans(n: usize, tile: usize, overlap: usize) -> Result<Vec<Range<usize>>, String> {
    let m = LATENT_MULTIPLE;
    if n == 0 || !n.is_multiple_of(m) {
        return Err(format!("latent size {n} is not a positive multiple of {m}"));
    }
    if tile < m || !tile.is_multiple_of(m) {
        return Err(format!("--tile {tile}: must be a multiple of {m}, at least {m}"));
    }
    let overlap = overlap.div_ceil(m) * m;
    if tile >= n {
        return Ok(std::iter::once(0..n).collect());
    }
    if overlap >= tile {
        return Err(format!("--tile-overlap {overlap} must be below --tile {tile}"));
    }
    // Fewest tiles with at least `overlap` between neighbours, starts spread evenly, in units of 8.
    let count = (n - overlap).div_ceil(tile - overlap);
    let last = (n - tile) / m;
    Ok((0..count)
        .map(|i| {
            let s = m * ((i * last + (count - 1) / 2) / (count - 1).max(1));
            s..s + tile
        })
        .collect())
}

/// Feather weights along one axis for `spans` over 0..n: `w[t][p − start_t]`, summing to 1 at
/// every p.
pub fn axis_weights(spans: &[Range<usize>], n: usize) -> Vec<Vec<f32>> {
    let smooth = |u: f64| {
        let u = u.clamp(0.0, 1.0);
        u * u * (3.0 - 2.0 * u)
    };
    let raw: Vec<Vec<f64>> = spans
        .iter()
        .enumerate()
        .map(|(t, s)| {
            let rise = if t > 0 { spans[t - 1].end.saturating_sub(s.start) } else { 0 };
            let fall = if t + 1 < spans.len() { s.end.saturating_sub(spans[t + 1].start) } else { 0 };
            s.clone()
                .map(|p| {
                    let mut w = 1.0;
                    if rise > 0 {
                        w = f64::min(w, smooth(((p - s.start) as f64 + 0.5) / rise as f64));
                    }
                    if fall > 0 {
                        w = f64::min(w, smooth(((s.end - p) as f64 - 0.5) / fall as f64));
                    }
                    w
                })
                .collect()
        })
        .collect();
    let mut sum = vec![0f64; n];
    for (s, w) in spans.iter().zip(&raw) {
        for (p, &v) in s.clone().zip(w) {
            sum[p] += v;
        }
    }
    spans
        .iter()
        .zip(&raw)
        .map(|(s, w)| s.clone().zip(w).map(|(p, &v)| (v / sum[p]) as f32).collect())
        .collect()
}

/// One tile: where it sits in the padded latent and its blend weights (`[h][w]`, row-major).
#[derive(Clone, Debug, PartialEq)]
pub struct Tile {
    pub rows: Range<usize>,
    pub cols: Range<usize>,
    pub weights: Vec<f32>,
}

/// The tiles of a padded latent, row by row.
#[derive(Clone, Debug, PartialEq)]
pub struct TilePlan {
    pub height: usize,
    pub width: usize,
    pub tiles: Vec<Tile>,
}

impl TilePlan {
    /// One tile over a whole `height`×`width` latent of any size (weight 1): the untiled job,
    /// which runs an unpadded latent where it can ([`LatentPad::unpadded`]).
    pub fn whole(height: usize, width: usize) -> TilePlan {
        assert!(height >= 1 && width >= 1);
        TilePlan::from_spans(height, width, std::slice::from_ref(&(0..height)), std::slice::from_ref(&(0..width)))
    }

    /// Whether one tile covers the latent.
    pub fn is_whole(&self) -> bool {
        self.tiles.len() == 1
    }

    /// Tiles of at most `rows`×`cols` over a `height`×`width` padded latent (multiples of 8),
    /// neighbours overlapping by at least `overlap` along either axis.
    pub fn new(height: usize, width: usize, (rows, cols): TileDims, overlap: usize) -> Result<TilePlan, String> {
        let rs = axis_spans(height, rows, overlap)?;
        let cs = axis_spans(width, cols, overlap)?;
        Ok(TilePlan::from_spans(height, width, &rs, &cs))
    }

    fn from_spans(height: usize, width: usize, rs: &[Range<usize>], cs: &[Range<usize>]) -> TilePlan {
        let (wr, wc) = (axis_weights(rs, height), axis_weights(cs, width));
        let mut tiles = Vec::new();
        for (r, wy) in rs.iter().zip(&wr) {
            for (c, wx) in cs.iter().zip(&wc) {
                let weights = wy.iter().flat_map(|&a| wx.iter().map(move |&b| a * b)).collect();
                tiles.push(Tile { rows: r.clone(), cols: c.clone(), weights });
            }
        }
        TilePlan { height, width, tiles }
    }

    /// The same tiling in output pixels (×`factor`), with weights recomputed at that resolution.
    pub fn scaled(&self, factor: usize) -> TilePlan {
        let mut rs: Vec<Range<usize>> = self.tiles.iter().map(|t| t.rows.start * factor..t.rows.end * factor).collect();
        let mut cs: Vec<Range<usize>> = self.tiles.iter().map(|t| t.cols.start * factor..t.cols.end * factor).collect();
        for v in [&mut rs, &mut cs] {
            v.sort_by_key(|r| (r.start, r.end));
            v.dedup();
        }
        TilePlan::from_spans(self.height * factor, self.width * factor, &rs, &cs)
    }

    /// The blend: Σ_t weight_t · tile_t over a `[h][w]` plane ([`TilePlan::add_tile`] for each
    /// tile in order).
    pub fn blend(&self, tiles: &[Vec<f32>]) -> Vec<f32> {
        assert_eq!(tiles.len(), self.tiles.len());
        let mut out = vec![0f32; self.height * self.width];
        for (t, data) in tiles.iter().enumerate() {
            self.add_tile(&mut out, t, data);
        }
        out
    }

    /// Adds tile `t`'s term of the blend, weight_t · tile_t (`data`: `[th][tw]`), into `out`
    /// (`[h][w]`, starting at zeros): once every tile has been added in order, `out` is
    /// [`TilePlan::blend`] of them, to the bit, and no tile had to be kept until the last came.
    pub fn add_tile(&self, out: &mut [f32], t: usize, data: &[f32]) {
        let t = &self.tiles[t];
        let tw = t.cols.len();
        assert_eq!(data.len(), t.rows.len() * tw);
        assert_eq!(out.len(), self.height * self.width);
        for (i, y) in t.rows.clone().enumerate() {
            let (w, d) = (&t.weights[i * tw..(i + 1) * tw], &data[i * tw..(i + 1) * tw]);
            for ((o, &w), &d) in out[y * self.width + t.cols.start..y * self.width + t.cols.end].iter_mut().zip(w).zip(d) {
                *o += w * d;
            }
        }
    }

    /// CPU reference of cutting tile `t` out of a `[h][w]` plane.
    pub fn cut(&self, plane: &[f32], t: usize) -> Vec<f32> {
        let t = &self.tiles[t];
        t.rows.clone().flat_map(|y| t.cols.clone().map(move |x| plane[y * self.width + x])).collect()
    }

    /// The size every tile has (rows, columns): all spans along an axis are equally long.
    pub fn tile_size(&self) -> (usize, usize) {
        let t = &self.tiles[0];
        debug_assert!(self.tiles.iter().all(|u| u.rows.len() == t.rows.len() && u.cols.len() == t.cols.len()));
        (t.rows.len(), t.cols.len())
    }

    /// The distinct row spans and column spans, in order.
    pub fn spans(&self) -> (Vec<Range<usize>>, Vec<Range<usize>>) {
        let mut rs: Vec<Range<usize>> = Vec::new();
        let mut cs: Vec<Range<usize>> = Vec::new();
        for t in &self.tiles {
            if !rs.contains(&t.rows) {
                rs.push(t.rows.clone());
            }
            if !cs.contains(&t.cols) {
                cs.push(t.cols.clone());
            }
        }
        (rs, cs)
    }

    /// One line for `--plan` and the job's summary: "one tile (W×H)" or the grid, the tile
    /// size (width × height) and where the tiles start.
    pub fn summary(&self) -> String {
        if self.tiles.len() == 1 {
            return format!("one tile ({}x{}, the whole latent)", self.width, self.height);
        }
        let (rs, cs) = self.spans();
        let (th, tw) = self.tile_size();
        let starts = |v: &[Range<usize>]| v.iter().map(|r| r.start.to_string()).collect::<Vec<_>>().join(",");
        // Overlaps between neighbours along either axis (an axis of one tile has none).
        let overlaps: Vec<usize> = [&rs, &cs].iter().flat_map(|v| v.windows(2).map(|p| p[0].end - p[1].start)).collect();
        let (least, most) = (overlaps.iter().copied().min().unwrap_or(0), overlaps.iter().copied().max().unwrap_or(0));
        let join = match (least, most) {
            (_, 0) => "side by side (no overlap)".to_string(),
            (0, m) => format!("some side by side, others overlapping by up to {m}, feathered"),
            (l, _) => format!("overlapping by at least {l}, feathered"),
        };
        format!("{}x{} = {} tiles of {tw}x{th}, {join} (columns from {}; rows from {})", cs.len(), rs.len(), self.tiles.len(), starts(&cs), starts(&rs))
    }
}

/// A tile's size in latent pixels: (rows, columns), multiples of 8. A size at or past a frame
/// side covers that side.
pub type TileDims = (usize, usize);

/// `--tile`: `auto` (from the adapter's binding limit and the GPU's memory), a side in latent
/// pixels (= LR pixels; square tiles), or `WxH` (width × height, as video sizes are written),
/// multiples of 8.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TileSize {
    #[default]
    Auto,
    Fixed { rows: usize, cols: usize },
}

impl TileSize {
    /// Square tiles of side `n`.
    pub fn square(n: usize) -> TileSize {
        TileSize::Fixed { rows: n, cols: n }
    }
}

impl std::str::FromStr for TileSize {
    type Err = String;
    fn from_str(s: &str) -> Result<TileSize, String> {
        if s.eq_ignore_ascii_case("auto") {
            return Ok(TileSize::Auto);
        }
        let bad = || format!("--tile {s}: expected auto, a size in LR pixels (a multiple of {LATENT_MULTIPLE}, e.g. 128) or WIDTHxHEIGHT (e.g. 320x192)");
        let side = |v: &str| -> Result<usize, String> {
            let n: usize = v.trim().parse().map_err(|_| bad())?;
            match check_multiple("--tile", n, LATENT_MULTIPLE) {
                Err(e) if v.len() < s.len() => Err(format!("--tile {s}: {}", e.trim_start_matches(&format!("--tile {n}: ")))),
                r => r.map(|_| n),
            }
        };
        match s.split_once(['x', 'X']) {
            Some((w, h)) => Ok(TileSize::Fixed { rows: side(h)?, cols: side(w)? }),
            None => side(s).map(TileSize::square),
        }
    }
}

impl std::fmt::Display for TileSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            TileSize::Auto => write!(f, "auto"),
            TileSize::Fixed { rows, cols } if rows == cols => write!(f, "{rows}"),
            TileSize::Fixed { rows, cols } => write!(f, "{cols}x{rows}"),
        }
    }
}

fn check_multiple(flag: &str, n: usize, min: usize) -> Result<(), String> {
    if n < min || !n.is_multiple_of(LATENT_MULTIPLE) {
        let at_least = if min > 0 { format!(", at least {min}") } else { String::new() };
        return Err(format!("{flag} {n}: must be a multiple of {LATENT_MULTIPLE}{at_least} (LR pixels = latent pixels), e.g. {}", (n / LATENT_MULTIPLE).max(1) * LATENT_MULTIPLE));
    }
    Ok(())
}

/// The job's tile flags: `--tile` and `--tile-overlap` (None: [`default_overlap`] of the tile's
/// shorter side among those that cut the frame).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TileOptions {
    pub tile: TileSize,
    pub overlap: Option<usize>,
}

impl TileOptions {
    /// Checks the flags on their own (before a frame size is known): sizes are multiples of 8
    /// and the overlap is below a fixed tile's longer side (below each side that cuts the frame
    /// is checked by [`TileOptions::plan`] once the frame is known).
    pub fn check(&self) -> Result<(), String> {
        if let TileSize::Fixed { rows, cols } = self.tile {
            check_multiple("--tile", rows, LATENT_MULTIPLE)?;
            check_multiple("--tile", cols, LATENT_MULTIPLE)?;
        }
        if let Some(o) = self.overlap {
            check_multiple("--tile-overlap", o, 0)?;
            // Below a side that cuts the frame: here, below the longer side at least (the
            // shorter may span the frame; `plan` checks the rest once the frame is known).
            if let TileSize::Fixed { rows, cols } = self.tile {
                if o >= rows.max(cols) {
                    return Err(format!("--tile-overlap {o} must be below --tile {}", self.tile));
                }
            }
        }
        Ok(())
    }

    /// The overlap of tiles of `dims` over a `height`×`width` frame: `--tile-overlap`, else
    /// [`default_overlap`] of the tile's shorter side among those that cut the frame.
    pub fn overlap_for(&self, height: usize, width: usize, dims: TileDims) -> usize {
        self.overlap.unwrap_or_else(|| default_overlap(cut_side(height, width, dims)))
    }

    /// How many tiles of `dims` cover a `height`×`width` frame; `None` where the overlap does
    /// not fit them.
    fn count(&self, height: usize, width: usize, dims: TileDims) -> Option<usize> {
        let overlap = self.overlap_for(height, width, dims);
        Some(axis_spans(height, dims.0, overlap).ok()?.len() * axis_spans(width, dims.1, overlap).ok()?.len())
    }

    /// The tile within `bound` that makes `--tile auto` process the fewest latent pixels over a
    /// `height`×`width` frame (tiles × their area, overlaps counted): every tile runs all the
    /// steps, so that is its work. The largest square is not always it: at 360×640 under a
    /// 2 GiB binding limit (at most 87 381 pixels a tile, squares of 288) six squares of 288
    /// process 498k pixels, eight of 216² 373k, and four tiles of 216×344 (rows × columns) 297k.
    /// Weighed are the rectangles of at most `bound.area` pixels whose sides that cut the frame
    /// are at least 3/4 of `bound.side`, rounded up to a multiple of 8, so that no tile is a
    /// sliver (with both sides cut, about 1.8 times as long as wide at most, for large tiles);
    /// a side may also cover the frame's whole height or width. Of those with no more tiles than the largest square, the one with the fewest
    /// pixels; more tiles only where they save at least [`CHEAPER`] of its work, since a tile
    /// also costs a fixed overhead (its dispatches, its readback, a seam to blend) that pixels
    /// do not count and no GPU has measured yet. The whole frame when it fits.
    pub fn cheapest(&self, height: usize, width: usize, bound: TileBound) -> TileDims {
        let square = (bound.side.min(height), bound.side.min(width));
        let area = bound.area.max(square.0 * square.1);
        if square == (height, width) || height * width <= area {
            return (height, width);
        }
        let m = LATENT_MULTIPLE;
        let least = (3 * bound.side).div_ceil(4 * m) * m;
        let work = |d: TileDims| self.count(height, width, d).map(|n| (n * d.0 * d.1, n));
        // A square the overlap does not fit (a fixed `--tile-overlap` at its side) bounds
        // nothing: any tile that fits is weighed then.
        let base = work(square).unwrap_or((usize::MAX, usize::MAX));
        // (pixels, tiles, dims): the best with no more tiles than the square, and the best.
        let (mut fewer, mut best) = ((base.0, base.1, square), (base.0, base.1, square));
        for rows in (least.min(height)..=height).step_by(m) {
            for cols in (least.min(width)..=width).step_by(m) {
                if rows * cols > area {
                    break;
                }
                let Some((w, n)) = work((rows, cols)) else { continue };
                if n <= base.1 && (w, n) < (fewer.0, fewer.1) {
                    fewer = (w, n, (rows, cols));
                }
                if (w, n) < (best.0, best.1) {
                    best = (w, n, (rows, cols));
                }
            }
        }
        if best.0 as f64 <= (1.0 - CHEAPER) * fewer.0 as f64 {
            best.2
        } else {
            fewer.2
        }
    }

    /// The plan over a `height`×`width` padded latent with tiles of `dims` (`--tile`, or what
    /// auto picked) and the overlap asked for (or the default for those tiles).
    pub fn plan(&self, height: usize, width: usize, dims: TileDims) -> Result<TilePlan, String> {
        let overlap = self.overlap_for(height, width, dims);
        let cut = cut_side(height, width, dims);
        if overlap >= cut && (dims.0 < height || dims.1 < width) {
            let auto = if self.tile == TileSize::Auto { ", picked by --tile auto" } else { "" };
            return Err(format!("--tile-overlap {overlap} must be below the tile ({}x{}{auto}); lower it or give a larger --tile", dims.1, dims.0));
        }
        TilePlan::new(height, width, dims, overlap)
    }
}

/// The shorter side of tiles of `dims` among those that cut a `height`×`width` frame (a side
/// at or past the frame's covers it); the longer when neither does (one tile).
fn cut_side(height: usize, width: usize, (rows, cols): TileDims) -> usize {
    match (rows < height, cols < width) {
        (true, true) => rows.min(cols),
        (true, false) => rows,
        (false, true) => cols,
        (false, false) => rows.max(cols),
    }
}

/// The least share of the work (latent pixels processed) that more tiles must save for `--tile
/// auto` to take them ([`TileOptions::cheapest`]).
pub const CHEAPER: f64 = 0.05;

/// Fraction of the largest buffer (`max_buffer_size`) `--tile auto` lets one tensor fill: the
/// buffer pool rounds a tensor up by at most 25% (`gpu::pool`), so a tensor within 80% of the
/// limit also fits it as a buffer. (A binding holds the tensor's exact bytes: no headroom.)
pub const BUFFER_HEADROOM: f64 = 0.8;

/// The most bytes one tensor may hold: one binding, and one buffer after the pool's rounding.
pub fn tensor_limit(max_binding_bytes: u64, max_buffer_bytes: u64) -> u64 {
    max_binding_bytes.min((BUFFER_HEADROOM * max_buffer_bytes as f64) as u64)
}

/// How large a model's tile may be under `--tile auto`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TileBound {
    /// The largest square tile's side (a multiple of 8), or at least the frame's longer side
    /// where the whole frame fits.
    pub side: usize,
    /// The most latent pixels one tile may hold, at least the square's (clipped to the frame).
    pub area: usize,
}

impl TileBound {
    /// The whole `height`×`width` frame as one tile.
    pub fn whole(height: usize, width: usize) -> TileBound {
        TileBound { side: height.max(width), area: height * width }
    }

    /// Squares of `side` over a `height`×`width` frame: the pixels of one, clipped to the frame.
    pub fn square(side: usize, height: usize, width: usize) -> TileBound {
        TileBound { side, area: side.min(height) * side.min(width) }
    }
}

/// `--tile auto` for one model: the tiles whose largest tensor, at `bytes_per_px` per latent
/// pixel of the tile, fits one binding (`max_binding_bytes`) and, rounded up by the pool, one
/// buffer (`max_buffer_bytes`): the whole `height`×`width` frame where it fits, else the
/// largest square side and the most pixels. Errors when not even an 8×8 tile fits.
pub fn tile_for_binding(max_binding_bytes: u64, max_buffer_bytes: u64, bytes_per_px: f64, height: usize, width: usize) -> Result<TileBound, String> {
    let limit = tensor_limit(max_binding_bytes, max_buffer_bytes) as f64;
    let area = (limit / bytes_per_px).floor().min(usize::MAX as f64) as usize;
    // A whole non-square latent that fits needs no tiling.
    if area >= height * width {
        return Ok(TileBound { area, ..TileBound::whole(height, width) });
    }
    let m = LATENT_MULTIPLE;
    let side = (area as f64).sqrt() as usize / m * m;
    if side < m {
        return Err(format!("not even an 8x8 tile's largest tensor fits one binding of {}", crate::gpu::human_bytes(limit as u64)));
    }
    Ok(TileBound { side, area })
}

/// Default overlap for a tile side: a quarter of it (the release: 64 of 256), at least 8, a
/// multiple of 8; none for the smallest tile (8), which cannot overlap its neighbour and stay a
/// step ahead.
pub fn default_overlap(tile: usize) -> usize {
    if tile <= LATENT_MULTIPLE {
        return 0;
    }
    (tile / 4 / LATENT_MULTIPLE).max(1) * LATENT_MULTIPLE
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{fresh_seed, Rng};

    #[test]
    fn latent_padding_and_crop() {
        for (h, w) in [(1usize, 1usize), (7, 13), (33, 8), (180, 320), (13, 33)] {
            let p = LatentPad::new(h, w);
            let (ph, pw) = p.padded();
            assert_eq!((ph % 8, pw % 8), (0, 0));
            assert!(p.bottom < 8 && p.right < 8);
            assert_eq!(p.output_crop(), (0..4 * h, 0..4 * w));
        }
        let p = LatentPad::new(7, 13);
        assert_eq!((p.bottom, p.right), (1, 3));
        assert_eq!(p.source_row(7), 5);
        assert_eq!((13..16).map(|x| p.source_col(x)).collect::<Vec<_>>(), vec![11, 10, 9]);
        let mut rng = Rng::new(fresh_seed());
        let plane = rng.normals(7 * 13, 1.0);
        let padded = p.pad_plane(&plane);
        assert_eq!(padded.len(), 8 * 16);
        assert_eq!(padded[7 * 16 + 13], plane[5 * 13 + 11]);
        assert_eq!(padded[2 * 16 + 4], plane[2 * 13 + 4]);
    }

    #[test]
    fn spans_cover_with_the_overlap() {
        for n in [8usize, 56, 184, 264, 320, 1000] {
            for (tile, ov) in [(64usize, 16usize), (96, 24), (256, 64), (8, 0), (40, 8)] {
                let spans = axis_spans(n, tile, ov).unwrap();
                assert_eq!(spans[0].start, 0);
                assert_eq!(spans.last().unwrap().end, n);
                for s in &spans {
                    assert!(s.start.is_multiple_of(8) && s.len().is_multiple_of(8) && s.len() <= tile.max(8) && s.end <= n);
                }
                for p in spans.windows(2) {
                    assert!(p[0].end >= p[1].start + ov.min(tile), "n={n} tile={tile} ov={ov}: {spans:?}");
                    assert!(p[1].start > p[0].start);
                }
            }
        }
        assert!(axis_spans(13, 8, 0).unwrap_err().contains("multiple of 8"));
        assert!(axis_spans(64, 12, 0).unwrap_err().contains("--tile 12"));
        assert!(axis_spans(64, 16, 16).unwrap_err().contains("--tile-overlap"));
        // The summary says what the spans do: 24 rows in tiles of 16 overlap by 8 even with no
        // overlap asked for, while 32 columns sit side by side.
        let plan = TilePlan::new(24, 32, (16, 16), 0).unwrap();
        assert!(plan.summary().contains("some side by side, others overlapping by up to 8"), "{}", plan.summary());
        assert!(TilePlan::new(32, 32, (16, 16), 0).unwrap().summary().contains("side by side (no overlap)"));
        assert!(TilePlan::new(32, 32, (16, 16), 8).unwrap().summary().contains("overlapping by at least 8"));
    }

    #[test]
    fn weights_sum_to_one_and_keep_constants_across_seams() {
        let seed = fresh_seed();
        let mut rng = Rng::new(seed);
        for (h, w) in [(8usize, 8usize), (56, 104), (264, 40), (104, 264)] {
            for (tile, ov) in [(32usize, 8usize), (48, 16), (64, 24)] {
                let plan = TilePlan::new(h, w, (tile, tile), ov).unwrap();
                let k = 0.3 + rng.uniform();
                let tiles: Vec<Vec<f32>> = plan.tiles.iter().map(|t| vec![k; t.rows.len() * t.cols.len()]).collect();
                let out = plan.blend(&tiles);
                assert!(out.iter().all(|&v| (v - k).abs() < 1e-5), "seed {seed} {h}x{w} tile {tile}");
                // Any image cut into tiles and blended back is itself.
                let img = rng.normals(h * w, 1.0);
                let tiles: Vec<Vec<f32>> = (0..plan.tiles.len()).map(|t| plan.cut(&img, t)).collect();
                let back = plan.blend(&tiles);
                for (a, b) in back.iter().zip(&img) {
                    assert!((a - b).abs() < 1e-5);
                }
                assert!(plan.tiles.iter().all(|t| t.weights.iter().all(|&v| (0.0..=1.0).contains(&v))));
                // ×4 for the VAE: same property.
                let big = plan.scaled(4);
                let tiles: Vec<Vec<f32>> = big.tiles.iter().map(|t| vec![k; t.rows.len() * t.cols.len()]).collect();
                assert!(big.blend(&tiles).iter().all(|&v| (v - k).abs() < 1e-5));
                assert_eq!(big.tiles.len(), plan.tiles.len());
            }
        }
    }

    #[test]
    fn weights_are_feathered_not_pasted() {
        let plan = TilePlan::new(8, 104, (64, 64), 24).unwrap();
        assert_eq!(plan.tiles.len(), 2);
        let (a, b) = (&plan.tiles[0], &plan.tiles[1]);
        let overlap = a.cols.end - b.cols.start;
        assert!(overlap >= 24);
        // Across the overlap the first tile's weight falls smoothly from ~1 to ~0.
        let row: Vec<f32> = (b.cols.start..a.cols.end).map(|x| a.weights[x - a.cols.start]).collect();
        assert!(row.windows(2).all(|p| p[1] < p[0]), "{row:?}");
        assert!(row[0] > 0.95 && *row.last().unwrap() < 0.05, "{row:?}");
        assert!(row.windows(2).all(|p| p[0] - p[1] < 0.15), "a step in {row:?}");
    }

    #[test]
    fn tile_for_binding_fits_the_limit() {
        // The TE-3DVAE's largest tensor in f32 (4 frames × 16 output pixels × 256 channels × 4
        // bytes per latent pixel): a 720p output (184×320 latent) on a 2 GiB binding limit is tiled.
        let per_px = 4.0 * 16.0 * 256.0 * 4.0;
        let two = 2u64 << 30;
        let c = tile_for_binding(two, u64::MAX, per_px, 184, 320).unwrap();
        assert!(c.side < 184 && c.side.is_multiple_of(8));
        assert!((c.side * c.side) as f64 * per_px <= two as f64 && ((c.side + 8) * (c.side + 8)) as f64 * per_px > two as f64);
        // The most pixels: exactly what fits, more than the square holds.
        assert!(c.area as f64 * per_px <= two as f64 && (c.area + 1) as f64 * per_px > two as f64 && c.area > c.side * c.side);
        // The buffer limit counts too, after the pool's rounding headroom.
        let by_buffer = tile_for_binding(two, 1 << 30, per_px, 184, 320).unwrap();
        assert!(by_buffer.side < c.side && by_buffer.area as f64 * per_px <= BUFFER_HEADROOM * (1u64 << 30) as f64);
        // A small clip fits whole.
        let c = tile_for_binding(two, u64::MAX, per_px, 64, 64).unwrap();
        assert!(c.side >= 64 && c.area >= 64 * 64);
        let auto = TileOptions::default();
        assert_eq!(auto.plan(64, 64, auto.cheapest(64, 64, c)).unwrap().tiles.len(), 1);
        // Nothing fits a 1 MB binding.
        assert!(tile_for_binding(1_000_000, u64::MAX, per_px, 64, 64).unwrap_err().contains("not even an 8x8 tile"));
        assert_eq!(default_overlap(256), 64);
        assert_eq!((default_overlap(8), default_overlap(16), default_overlap(40)), (0, 8, 8));
    }

    /// `--tile auto` takes the tile that processes the fewest pixels within its bound, often a
    /// rectangle and not the largest square; more tiles than the square's only where that saves
    /// at least 5%.
    #[test]
    fn the_cheapest_tile_is_not_always_the_largest_square() {
        let auto = TileOptions::default();
        let work = |o: &TileOptions, h: usize, w: usize, d: TileDims| {
            let p = o.plan(h, w, d).unwrap();
            (p.tiles.len() * p.tile_size().0 * p.tile_size().1, p.tiles.len())
        };
        // 640×360 under a 2 GiB binding limit at the UNet's 24 576 bytes per pixel: four tiles
        // of 216×344 (rows × columns), where squares would take six of 288² or eight of 216².
        let bound = tile_for_binding(2 << 30, u64::MAX, 24_576.0, 360, 640).unwrap();
        assert_eq!((bound.side, bound.area), (288, 87_381));
        assert_eq!(auto.cheapest(360, 640, bound), (216, 344));
        assert_eq!(work(&auto, 360, 640, (216, 344)), (4 * 216 * 344, 4));
        assert_eq!(work(&auto, 360, 640, (288, 288)), (6 * 288 * 288, 6));
        assert_eq!(work(&auto, 360, 640, (216, 216)), (8 * 216 * 216, 8));
        // Against every rectangle, over awkward frames and bounds (brute force).
        for (h, w) in [(480, 856), (544, 960), (720, 1280), (24, 200), (136, 240), (64, 2000)] {
            for (side, extra) in [(16, 0), (40, 100), (96, 0), (176, 3000), (200, 0), (288, 1900)] {
                for o in [auto, TileOptions { tile: TileSize::Auto, overlap: Some(16) }] {
                    let bound = TileBound { side, area: side * side + extra };
                    let d = o.cheapest(h, w, bound);
                    let at = format!("{h}x{w} within {bound:?}, overlap {:?}: {d:?}", o.overlap);
                    assert!(d.0.is_multiple_of(8) && d.1.is_multiple_of(8) && d.0 <= h && d.1 <= w, "{at}");
                    assert!(d.0 * d.1 <= bound.area.max(side.min(h) * side.min(w)), "{at}");
                    let square = (side.min(h), side.min(w));
                    if h * w <= bound.area || square == (h, w) {
                        assert_eq!(d, (h, w), "{at}");
                        continue;
                    }
                    let least = (3 * side).div_ceil(32) * 8;
                    assert!((d.0 == h || d.0 >= least) && (d.1 == w || d.1 >= least), "a sliver: {at}");
                    let Ok(base) = o.plan(h, w, square).map(|_| work(&o, h, w, square)) else { continue };
                    let mut all = vec![base];
                    for r in (least.min(h)..=h).step_by(8) {
                        for c in (least.min(w)..=w).step_by(8).take_while(|c| r * c <= bound.area) {
                            if o.plan(h, w, (r, c)).is_ok() {
                                all.push(work(&o, h, w, (r, c)));
                            }
                        }
                    }
                    let fewer = all.iter().filter(|x| x.1 <= base.1).min().unwrap();
                    let best = all.iter().min().unwrap();
                    let want = if best.0 as f64 <= 0.95 * fewer.0 as f64 { best } else { fewer };
                    assert_eq!(work(&o, h, w, d), *want, "{at}");
                    assert!(want.0 <= base.0, "{at}");
                }
            }
        }
        // A fixed overlap is respected: no cut side at or below it.
        let wide = TileOptions { tile: TileSize::Auto, overlap: Some(224) };
        let d = wide.cheapest(360, 640, bound);
        assert!(wide.plan(360, 640, d).is_ok() && (d.0 > 224 || d.0 == 360) && d.1 > 224, "{d:?}");
        // One at the square's side: a tile spanning the frame's height still fits.
        let at_side = TileOptions { tile: TileSize::Auto, overlap: Some(200) };
        let d = at_side.cheapest(64, 2000, TileBound { side: 200, area: 200 * 200 });
        assert!(d.0 == 64 && d.1 > 200 && at_side.plan(64, 2000, d).is_ok(), "{d:?}");
    }

    #[test]
    fn tile_flags_are_checked() {
        use crate::pipeline::tiles::TileSize;
        let f = |tile: TileSize, overlap: Option<usize>| TileOptions { tile, overlap }.check();
        let sq = TileSize::square;
        assert!(f(TileSize::Auto, None).is_ok() && f(sq(64), Some(16)).is_ok() && f(sq(64), Some(0)).is_ok());
        assert!(f(sq(64), Some(12)).unwrap_err().contains("--tile-overlap 12: must be a multiple of 8"));
        assert!(f(sq(64), Some(64)).unwrap_err().contains("--tile-overlap 64 must be below --tile 64"));
        let rect = "320x192".parse::<TileSize>().unwrap();
        assert_eq!(rect, TileSize::Fixed { rows: 192, cols: 320 });
        assert_eq!(rect.to_string(), "320x192");
        assert!(f(rect, Some(320)).unwrap_err().contains("--tile-overlap 320 must be below --tile 320x192"));
        // Below the shorter side only where that side cuts the frame: known at plan time.
        assert!(f(rect, Some(192)).is_ok() && f(rect, Some(64)).is_ok());
        let o = TileOptions { tile: rect, overlap: Some(192) };
        assert!(o.plan(192, 1000, (192, 320)).is_ok());
        assert!(o.plan(400, 1000, (192, 320)).unwrap_err().contains("--tile-overlap 192 must be below the tile (320x192)"));
        assert!("60".parse::<TileSize>().unwrap_err().contains("--tile 60: must be a multiple of 8"));
        assert!("320x60".parse::<TileSize>().unwrap_err().contains("--tile 320x60: must be a multiple of 8"));
        assert!("0".parse::<TileSize>().unwrap_err().contains("at least 8"));
        assert!("big".parse::<TileSize>().unwrap_err().contains("auto, a size"));
        assert!("320x".parse::<TileSize>().unwrap_err().contains("WIDTHxHEIGHT"));
        assert_eq!("AUTO".parse::<TileSize>().unwrap(), TileSize::Auto);
        assert_eq!("128".parse::<TileSize>().unwrap(), sq(128));
        assert_eq!(sq(128).to_string(), "128");
        // Auto with an overlap at least the tile it picked: named at plan time.
        let o = TileOptions { tile: TileSize::Auto, overlap: Some(32) };
        assert!(o.plan(64, 64, (32, 32)).unwrap_err().contains("picked by --tile auto"));
        assert_eq!(o.plan(16, 16, (32, 32)).unwrap().tiles.len(), 1);
        // A rectangle's default overlap is a quarter of the shorter side that cuts the frame.
        let d = TileOptions::default();
        assert_eq!((d.overlap_for(368, 640, (368, 264)), d.overlap_for(368, 640, (216, 344)), d.overlap_for(368, 640, (400, 640))), (64, 48, 160));
        let p = d.plan(368, 640, (216, 344)).unwrap();
        assert_eq!((p.tiles.len(), p.tile_size()), (4, (216, 344)));
    }
}
