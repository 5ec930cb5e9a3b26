//! YUV4MPEG2 (y4m) stream reader and writer for the streaming filter (issue 9, deliverables 5 and 8;
//! the released pipeline reads whole mp4 files instead, spec §4.3).
//!
//! * [`Reader`] parses the stream header (`W`, `H`, `F`, `I`, `A`, `C`, `X…`) from any [`Read`]
//!   (stdin included) and then hands out one [`Frame`] at a time as the bytes arrive, so memory is
//!   one frame, whatever the clip length. Everything is bounded: header lines, `FRAME` lines and
//!   the frame size (checked arithmetic, `W`/`H` at most [`MAX_DIMENSION`]) are checked before
//!   anything is allocated. Every error names the field or the frame index and what is wrong.
//! * [`Writer`] writes a header (usually [`Header::scaled`] of the input's, ×4) and then frames;
//!   a frame's bytes are built first and go out in one `write_all`, so a frame is written whole
//!   or (if the writer itself fails) not at all by this code.
//!
//! Colourspaces (`C` tag): every 4:2:0 variant (`420jpeg` and `420` centred, `420mpeg2` left,
//! `420paldv` top-left, as ffmpeg reads them), `422`, `444`, `mono`, each with the high-bit-depth
//! `pN` suffix (`420p10`, `mono12`, …; 9 to 16 bits, samples little-endian u16), and `411` (DV
//! NTSC's 4:1:1, chroma co-sited with every fourth luma column; 8-bit, as ffmpeg has it). 4:2:2
//! and 4:1:1 chroma is co-sited horizontally, as the y4m format (mjpegtools' "H cosited") and
//! the DV and BT.601 standards have it; ffmpeg's swscale, converting either with no chroma
//! location given, centres it instead (the chroma shifted by ½ or 1½ luma pixels).
//! `444alpha` is refused with a hint. `XCOLORRANGE=LIMITED|FULL` sets the range (without it: full
//! for `mono`, limited for colour, as ffmpeg reads them); every `X` tag, the `C` tag as written and any unknown field are kept verbatim for the
//! output header (a grey↔colour `--output-chroma` adds the `XCOLORRANGE` tag the untagged
//! default would contradict; an `XYSCSS` tag beside a `C` tag is dropped where the ×4 sizes
//! would pass the 96 bytes ffmpeg reads, [`FFMPEG_MAX_HEADER_BYTES`]).
//!
//! Why not the `y4m` crate (0.8): it has no 9/14/16-bit or `mono10` formats, reads no `I` tag and
//! writes none, does not check `W`/`H` bounds with checked arithmetic, writes a frame in four
//! `write_all` calls, and its errors do not say which frame or field is wrong.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};

/// Largest accepted `W` or `H` (input side); a larger value is refused before allocating.
pub const MAX_DIMENSION: u32 = 16384;
/// Largest accepted stream header line, in bytes (the magic and the newline included).
pub const MAX_HEADER_BYTES: usize = 4096;
/// The longest stream header ffmpeg's y4m reader takes (the newline included; 97 bytes is
/// "Header too large" in ffmpeg 5.1, and the same limit stands in its current source).
pub const FFMPEG_MAX_HEADER_BYTES: usize = 96;
/// Largest accepted `FRAME` line, in bytes (the newline included).
pub const MAX_FRAME_LINE_BYTES: usize = 1024;
/// First size of the frame buffer; it doubles as frame bytes arrive, up to the frame size.
const FRAME_BUFFER_START: usize = 1 << 20;

const MAGIC: &[u8] = b"YUV4MPEG2";
const FRAME_MAGIC: &[u8] = b"FRAME";

/// What went wrong, and where: the header (with the field) or a frame (with its 0-based index).
#[derive(Debug)]
pub struct Y4mError {
    /// `None` for the stream header, `Some(i)` for frame `i` (0-based, in stream order).
    pub frame: Option<u64>,
    /// What is wrong and, where it helps, what to do.
    pub message: String,
    /// The I/O error underneath, if any.
    pub io: Option<io::Error>,
    /// The stream ended inside frame `frame` (its FRAME line or its data): the frames before
    /// it are whole.
    pub cut: bool,
}

impl Y4mError {
    fn header(message: impl Into<String>) -> Y4mError {
        Y4mError { frame: None, message: message.into(), io: None, cut: false }
    }
    fn frame(index: u64, message: impl Into<String>) -> Y4mError {
        Y4mError { frame: Some(index), message: message.into(), io: None, cut: false }
    }
    fn cut(index: u64, message: impl Into<String>) -> Y4mError {
        Y4mError { cut: true, ..Y4mError::frame(index, message) }
    }
    fn io(frame: Option<u64>, what: &str, e: io::Error) -> Y4mError {
        Y4mError { frame, message: format!("{what}: {e}"), io: Some(e), cut: false }
    }
    /// True when the underlying error is a closed pipe (the downstream reader quit): the filter
    /// should end quietly then.
    pub fn is_broken_pipe(&self) -> bool {
        self.io.as_ref().is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    }
}

impl fmt::Display for Y4mError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.frame {
            None => write!(f, "y4m stream header: {}", self.message),
            Some(i) => write!(f, "y4m frame {i}: {}", self.message),
        }
    }
}

// No `source`: the message already says the I/O error (`Y4mError::io`), and a chained report
// would print it twice. The error itself stays in `io` (`is_broken_pipe`).
impl std::error::Error for Y4mError {}

/// Chroma subsampling of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chroma {
    /// Half width, half height chroma.
    C420,
    /// Half width, full height chroma.
    C422,
    /// Full-size chroma.
    C444,
    /// Quarter width, full height chroma (DV NTSC's `yuv411p`; 8-bit only in y4m).
    C411,
    /// Luma only (no U, V planes).
    Mono,
}

/// Where a chroma sample sits relative to the luma grid (for 4:2:0; 4:2:2 and 4:1:1 are always
/// `Left`: co-sited with the first luma column of each pair, or four; 4:4:4 and mono are
/// `Center` and it does not matter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Siting {
    /// Centred between luma samples in both directions (`420jpeg`, `420`, the y4m default).
    Center,
    /// Co-sited with the even luma columns, centred vertically (`420mpeg2`).
    Left,
    /// Co-sited with the even luma columns and rows (`420paldv`).
    TopLeft,
}

/// Quantisation range, from `XCOLORRANGE`; without the tag, full for grey (`mono`) and limited
/// for colour, as ffmpeg reads them ([`Range::untagged`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Range {
    /// Y in 16..235, U/V in 16..240 (scaled by 2^(depth−8)).
    Limited,
    /// Y, U, V in 0..2^depth − 1.
    Full,
}

impl Range {
    /// The range of a stream without an `XCOLORRANGE` tag, as ffmpeg takes it: grey (`mono`,
    /// which ffmpeg's own y4m output tags when it knows) full, colour limited.
    pub fn untagged(chroma: Chroma) -> Range {
        match chroma {
            Chroma::Mono => Range::Full,
            _ => Range::Limited,
        }
    }

    /// Its `X` tag, without the `X`.
    pub fn tag(self) -> &'static str {
        match self {
            Range::Limited => "COLORRANGE=LIMITED",
            Range::Full => "COLORRANGE=FULL",
        }
    }
}

/// `--output-chroma` and `--output-depth`: the output's chroma format and bit depth where they
/// are not the input's (`None`: the input's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutputFormat {
    pub chroma: Option<Chroma>,
    pub depth: Option<u8>,
}

impl OutputFormat {
    /// The output header of an upscale by `factor` of a stream whose header is `input`.
    pub fn header(self, input: &Header, factor: u32) -> Result<Header, Y4mError> {
        let h = input.scaled(factor)?;
        let mut h = h.with_format(self.chroma.unwrap_or(h.chroma), self.depth.unwrap_or(h.depth))?;
        // The larger sizes add up to two digits: an input header ffmpeg just takes (96 bytes)
        // would give one it refuses. Its `XYSCSS` tag, which ffmpeg writes beside the `C` tag of
        // colour streams and reads only where there is none, goes then (11–16 bytes with its
        // space: enough for every header ffmpeg writes for colour).
        if h.to_bytes().len() > FFMPEG_MAX_HEADER_BYTES && input.to_bytes().len() <= FFMPEG_MAX_HEADER_BYTES && h.colourspace_tag.is_some() {
            h.x_tags.retain(|x| !x.starts_with("YSCSS="));
        }
        let len = h.to_bytes().len();
        if len > FFMPEG_MAX_HEADER_BYTES {
            log::warn!("the output's y4m header is {len} bytes, over the {FFMPEG_MAX_HEADER_BYTES} ffmpeg reads (\"Header too large\"): the input's header carries long tags; make the input with ffmpeg … -f yuv4mpegpipe - to read the output with ffmpeg");
        }
        // The larger sizes (and a new `C` tag) lengthen the line: it must still be one this
        // reader, and so a later run on the output, takes.
        let len = h.to_bytes().len();
        if len > MAX_HEADER_BYTES {
            return Err(Y4mError::header(format!(
                "the output header would be {len} bytes, over the {MAX_HEADER_BYTES} a y4m header may have here: the input's header carries \
                 long tags or unknown fields (make the stream again with ffmpeg … -f yuv4mpegpipe -)"
            )));
        }
        Ok(h)
    }

    /// What to tell the user about the output format this gives `input`, if anything: a 4:1:1
    /// input keeps 4:1:1 unless told otherwise, as ffmpeg would, but encoders then pick 4:2:2,
    /// which most players cannot play.
    pub fn advice(self, input: &Header) -> Option<&'static str> {
        (input.chroma == Chroma::C411 && self.chroma.is_none()).then_some(
            "the input is 4:1:1 (DV NTSC) and the output keeps it; most encoders pick 4:2:2 for it (libx264: High 4:2:2, which most players and browsers cannot play): --output-chroma 420 writes 4:2:0",
        )
    }
}

/// Size and sample format of one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameFormat {
    pub width: u32,
    pub height: u32,
    pub chroma: Chroma,
    pub siting: Siting,
    /// Bits per sample, 8 to 16.
    pub depth: u8,
}

impl Chroma {
    /// How many luma samples share one chroma sample along (x, y): 1, 2 or 4.
    pub fn subsampling(self) -> (u32, u32) {
        match self {
            Chroma::C420 => (2, 2),
            Chroma::C422 => (2, 1),
            Chroma::C411 => (4, 1),
            Chroma::C444 | Chroma::Mono => (1, 1),
        }
    }
}

impl FrameFormat {
    /// Width and height of the U and V planes ((0, 0) for mono). Odd sizes round up.
    pub fn chroma_size(&self) -> (u32, u32) {
        if self.chroma == Chroma::Mono {
            return (0, 0);
        }
        let (sx, sy) = self.chroma.subsampling();
        (self.width.div_ceil(sx), self.height.div_ceil(sy))
    }
    /// Samples in plane `i` (0 = Y, 1 = U, 2 = V).
    pub fn plane_len(&self, i: usize) -> usize {
        if i == 0 {
            self.width as usize * self.height as usize
        } else {
            let (cw, ch) = self.chroma_size();
            cw as usize * ch as usize
        }
    }
    /// 1 for 8-bit samples, 2 (little-endian) above.
    pub fn bytes_per_sample(&self) -> usize {
        if self.depth > 8 {
            2
        } else {
            1
        }
    }
    /// Largest sample value, 2^depth − 1.
    pub fn max_sample(&self) -> u16 {
        ((1u32 << self.depth) - 1) as u16
    }
    /// Bytes of one frame's planes (the `FRAME` line excluded), with checked arithmetic.
    pub fn frame_bytes(&self) -> Option<usize> {
        let y = (self.width as usize).checked_mul(self.height as usize)?;
        let (cw, ch) = self.chroma_size();
        let c = (cw as usize).checked_mul(ch as usize)?.checked_mul(2)?;
        y.checked_add(c)?.checked_mul(self.bytes_per_sample())
    }
}

/// One frame: planes Y, U, V as u16 samples (U and V empty for mono), row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub format: FrameFormat,
    pub planes: [Vec<u16>; 3],
    /// What followed `FRAME` on its line (without the separating space). Read, not passed on:
    /// the output's frame lines are bare (a frame's own `I`, the one parameter with a meaning,
    /// matters only in mixed-interlace streams, which are refused).
    pub params: Vec<u8>,
}

impl Frame {
    /// A frame of `format` with every sample `value` (for tests and padding).
    pub fn filled(format: FrameFormat, value: [u16; 3]) -> Frame {
        let planes = [0, 1, 2].map(|i| vec![value[i]; format.plane_len(i)]);
        Frame { format, planes, params: Vec::new() }
    }
}

mod header;
mod stream;
#[cfg(test)]
mod tests;

pub use header::Header;
pub use stream::{FrameHook, Reader, Writer};
