//! The stream header: parsing it (every field bounded and named in errors), the output header
//! of an upscale ([`Header::scaled`], [`Header::with_format`]) and writing it back.

use super::*;

/// A parsed stream header. Fields the engine does not interpret are kept verbatim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub width: u32,
    pub height: u32,
    /// `F` as written (e.g. `30000:1001`), if present.
    pub frame_rate: Option<String>,
    /// `I` as written (`p`, `t`, `b`, `m`, `?`), if present. The upscaler takes progressive
    /// frames only ([`Header::require_progressive`]).
    pub interlacing: Option<String>,
    /// `A` as written (e.g. `1:1`, `0:0`), if present.
    pub pixel_aspect: Option<String>,
    /// `C` as written (e.g. `420p10`), if present; absent means `420jpeg`.
    pub colourspace_tag: Option<String>,
    pub chroma: Chroma,
    pub siting: Siting,
    pub depth: u8,
    pub range: Range,
    /// Every `X` tag as written, in order, without the `X` (e.g. `COLORRANGE=FULL`).
    pub x_tags: Vec<String>,
    /// Unknown fields as written (letter included), in order, kept for the output.
    pub other: Vec<String>,
}

fn parse_ratio(field: char, v: &str) -> Result<String, Y4mError> {
    let ok = v.split_once(':').is_some_and(|(a, b)| a.parse::<u32>().is_ok() && b.parse::<u32>().is_ok());
    if ok {
        Ok(v.to_string())
    } else {
        Err(Y4mError::header(format!("field {field}{v}: expected two integers N:D, like {field}30000:1001")))
    }
}

/// Maps a `C` value to (chroma, siting, depth).
fn parse_colourspace(v: &str) -> Result<(Chroma, Siting, u8), Y4mError> {
    let fixed = match v {
        "420jpeg" | "420" => Some((Chroma::C420, Siting::Center, 8)),
        "420mpeg2" => Some((Chroma::C420, Siting::Left, 8)),
        "420paldv" => Some((Chroma::C420, Siting::TopLeft, 8)),
        "422" => Some((Chroma::C422, Siting::Left, 8)),
        "411" => Some((Chroma::C411, Siting::Left, 8)),
        "444" => Some((Chroma::C444, Siting::Center, 8)),
        "mono" => Some((Chroma::Mono, Siting::Center, 8)),
        _ => None,
    };
    if let Some(f) = fixed {
        return Ok(f);
    }
    let unsupported = || {
        Y4mError::header(format!(
            "unsupported colourspace C{v}: this filter reads 420jpeg, 420, 420mpeg2, 420paldv, 422, 444, mono and 411 \
             (and for high bit depth 420, 422 and 444 with p9…p16, and mono9…mono16); convert first, e.g. ffmpeg … -pix_fmt yuv420p -f yuv4mpegpipe -"
        ))
    };
    let (base, digits) = if let Some(d) = v.strip_prefix("mono") {
        ("mono", d)
    } else if let Some((b, d)) = v.split_once('p') {
        (b, d)
    } else {
        return Err(unsupported());
    };
    let depth: u8 = digits.parse().map_err(|_| unsupported())?;
    if !(9..=16).contains(&depth) {
        return Err(unsupported());
    }
    let (chroma, siting) = match base {
        "420" => (Chroma::C420, Siting::Center),
        "422" => (Chroma::C422, Siting::Left),
        "444" => (Chroma::C444, Siting::Center),
        "mono" => (Chroma::Mono, Siting::Center),
        _ => return Err(unsupported()),
    };
    Ok((chroma, siting, depth))
}

/// The `XYSCSS` values ffmpeg's y4m reader knows where a header has no `C` tag, as the prefixes
/// it matches in the order it tries them, with the `C` tag of the same format. Measured with
/// ffprobe 5.1: `422P10` reads as 8-bit 4:2:2 (it has no entry, and `422` is its prefix),
/// `420P11` and `MONO` as 4:2:0, `444p10` (lowercase) and `444ALPHA` as 8-bit 4:4:4.
const XYSCSS_FORMATS: [(&str, &str); 20] = [
    ("420JPEG", "420jpeg"),
    ("420MPEG2", "420mpeg2"),
    ("420PALDV", "420paldv"),
    ("420P9", "420p9"),
    ("422P9", "422p9"),
    ("444P9", "444p9"),
    ("420P10", "420p10"),
    ("444P10", "444p10"),
    ("420P12", "420p12"),
    ("422P12", "422p12"),
    ("444P12", "444p12"),
    ("420P14", "420p14"),
    ("422P14", "422p14"),
    ("444P14", "444p14"),
    ("420P16", "420p16"),
    ("422P16", "422p16"),
    ("444P16", "444p16"),
    ("411", "411"),
    ("422", "422"),
    ("444", "444"),
];

impl Header {
    /// A header for a plain stream (no tags beyond `W H F C`), e.g. for tests.
    pub fn new(width: u32, height: u32, colourspace: &str) -> Result<Header, Y4mError> {
        Header::parse(format!("YUV4MPEG2 W{width} H{height} F25:1 C{colourspace}").as_bytes())
    }

    /// Parses a header line (without or with its trailing newline).
    pub fn parse(line: &[u8]) -> Result<Header, Y4mError> {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        // Not a y4m stream at all (a PNG's first line ends in CR LF too) is said first.
        if !line.starts_with(MAGIC) {
            let shown = String::from_utf8_lossy(&line[..line.len().min(16)]).into_owned();
            return Err(Y4mError::header(format!(
                "bad magic {shown:?}: a y4m stream starts with \"YUV4MPEG2 \" (use ffmpeg … -f yuv4mpegpipe -)"
            )));
        }
        if line.ends_with(b"\r") {
            return Err(Y4mError::header(
                "the header line ends in CR LF (a Windows line ending): y4m lines end in LF alone; the file was altered as text \
                 (make it again with ffmpeg … -f yuv4mpegpipe -), or the stream came through a Windows PowerShell pipe, which \
                 re-encodes bytes as text before PowerShell 7.4 (pipe in cmd.exe or PowerShell 7.4 and later, or give -i and -o files)",
            ));
        }
        if line.contains(&b'\r') {
            // Kept inside a field it would move with it in the output header, maybe to the end
            // of the line, which the CR LF check refuses.
            return Err(Y4mError::header(
                "the header line holds a carriage return (CR): y4m header fields are separated by single spaces \
                 (make the stream again with ffmpeg … -f yuv4mpegpipe -)",
            ));
        }
        let rest = &line[MAGIC.len()..];
        let text = std::str::from_utf8(rest).map_err(|_| Y4mError::header("header is not ASCII text"))?;
        if !text.is_empty() && !text.starts_with(' ') {
            return Err(Y4mError::header("bad magic: \"YUV4MPEG2\" must be followed by a space"));
        }
        let (mut w, mut h) = (None, None);
        let mut range_tagged = false;
        let mut hd = Header {
            width: 0,
            height: 0,
            frame_rate: None,
            interlacing: None,
            pixel_aspect: None,
            colourspace_tag: None,
            chroma: Chroma::C420,
            siting: Siting::Center,
            depth: 8,
            range: Range::Limited,
            x_tags: Vec::new(),
            other: Vec::new(),
        };
        for field in text.split(' ').filter(|f| !f.is_empty()) {
            let mut chars = field.chars();
            let tag = chars.next().unwrap_or(' ');
            let v = chars.as_str();
            match tag {
                'W' | 'H' => {
                    let n: u64 = v.parse().map_err(|_| {
                        Y4mError::header(format!("field {field}: {tag} must be a positive integer"))
                    })?;
                    if n == 0 || n > MAX_DIMENSION as u64 {
                        return Err(Y4mError::header(format!(
                            "field {field}: {} must be 1 to {MAX_DIMENSION}",
                            if tag == 'W' { "width" } else { "height" }
                        )));
                    }
                    if tag == 'W' {
                        w = Some(n as u32)
                    } else {
                        h = Some(n as u32)
                    }
                }
                'F' => hd.frame_rate = Some(parse_ratio('F', v)?),
                'A' => hd.pixel_aspect = Some(parse_ratio('A', v)?),
                'I' => {
                    if !matches!(v, "p" | "t" | "b" | "m" | "?") {
                        return Err(Y4mError::header(format!("field {field}: interlacing must be Ip, It, Ib, Im or I?")));
                    }
                    hd.interlacing = Some(v.to_string());
                }
                'C' => {
                    let (c, s, d) = parse_colourspace(v)?;
                    hd.chroma = c;
                    hd.siting = s;
                    hd.depth = d;
                    hd.colourspace_tag = Some(v.to_string());
                }
                'X' => {
                    if let Some(r) = v.strip_prefix("COLORRANGE=") {
                        range_tagged = true;
                        hd.range = match r {
                            "LIMITED" => Range::Limited,
                            "FULL" => Range::Full,
                            _ => {
                                return Err(Y4mError::header(format!(
                                    "field {field}: XCOLORRANGE must be LIMITED or FULL"
                                )))
                            }
                        };
                    }
                    hd.x_tags.push(v.to_string());
                }
                _ => hd.other.push(field.to_string()),
            }
        }
        // Without a C tag, the older XYSCSS one names the format as ffmpeg's reader takes it
        // (its prefixes, in its order: XYSCSS_FORMATS); else 4:2:0.
        if hd.colourspace_tag.is_none() {
            // Every XYSCSS tag is tried; the last that names a format wins.
            let tag = hd.x_tags.iter().rev().filter_map(|t| t.strip_prefix("YSCSS=")).find_map(|v| XYSCSS_FORMATS.iter().find(|(prefix, _)| v.starts_with(prefix)));
            if let Some(Ok((c, s, d))) = tag.map(|(_, c)| parse_colourspace(c)) {
                (hd.chroma, hd.siting, hd.depth) = (c, s, d);
            }
        }
        if !range_tagged {
            hd.range = Range::untagged(hd.chroma);
        }
        hd.width = w.ok_or_else(|| Y4mError::header("missing width field W"))?;
        hd.height = h.ok_or_else(|| Y4mError::header("missing height field H"))?;
        if hd.format().frame_bytes().is_none() {
            return Err(Y4mError::header(format!("frame size {}x{} overflows", hd.width, hd.height)));
        }
        Ok(hd)
    }

    /// The frame format this header describes.
    /// Refuses interlaced frames (`It`, `Ib`, `Im`): DiffVSR upscales whole frames, and two
    /// fields woven into one would be upscaled with their combing (×4 taller) into an output
    /// that is no longer made of fields. `Ip`, `I?` and no `I` tag pass.
    pub fn require_progressive(&self) -> Result<(), Y4mError> {
        let order = match self.interlacing.as_deref() {
            Some("t") => "It: interlaced, top field first",
            Some("b") => "Ib: interlaced, bottom field first",
            Some("m") => "Im: mixed progressive and interlaced frames",
            _ => return Ok(()),
        };
        Err(Y4mError::header(format!(
            "the input is interlaced ({order}), and the upscaler takes progressive frames. Deinterlace it in the ffmpeg that decodes (-vf bwdif=mode=send_frame), or if its frames are progressive and only labelled interlaced, relabel them (-vf setfield=prog)"
        )))
    }

    pub fn format(&self) -> FrameFormat {
        FrameFormat { width: self.width, height: self.height, chroma: self.chroma, siting: self.siting, depth: self.depth }
    }

    /// The output header for an upscale by `factor`: same colourspace tag, depth, range, frame
    /// rate, interlacing, pixel aspect, `X` tags and unknown fields; `W`, `H` times `factor`.
    pub fn scaled(&self, factor: u32) -> Result<Header, Y4mError> {
        let mul = |v: u32, what: &str| {
            v.checked_mul(factor).filter(|&v| v > 0).ok_or_else(|| {
                Y4mError::header(format!("output {what} {v}×{factor} does not fit in 32 bits or is 0"))
            })
        };
        let mut out = self.clone();
        out.width = mul(self.width, "width")?;
        out.height = mul(self.height, "height")?;
        // The output must be a stream this reader (and so a later run on it) accepts.
        if out.width > MAX_DIMENSION || out.height > MAX_DIMENSION {
            return Err(Y4mError::header(format!(
                "the ×{factor} output of a {}x{} input would be {}x{}: at most {MAX_DIMENSION} a side, so inputs up to {m} \
                 (scale or crop first, e.g. ffmpeg … -vf scale={m}:{m}:force_original_aspect_ratio=decrease:force_divisible_by=2 …)",
                self.width,
                self.height,
                out.width,
                out.height,
                m = MAX_DIMENSION / factor,
            )));
        }
        if out.format().frame_bytes().is_none() {
            return Err(Y4mError::header(format!("output frame size {}x{} overflows", out.width, out.height)));
        }
        Ok(out)
    }

    /// This header with another chroma format or bit depth (`--output-chroma`,
    /// `--output-depth`); everything else kept. Unchanged (the same bytes) when both are the
    /// header's own. A new `C` tag names the format as ffmpeg writes it: an 8-bit 4:2:0 stream
    /// keeps its chroma siting (`420jpeg`, `420mpeg2`, `420paldv`); a converted one, and every
    /// high-bit-depth 4:2:0 one (`420p10`), is centred, which is what those tags mean to this
    /// reader. ffmpeg's `XYSCSS` tag, an older spelling of the `C` tag, is dropped rather than
    /// left contradicting it; grey turned colour or colour turned grey gains an `XCOLORRANGE`
    /// tag where it had none (an untagged grey stream is full range, colour limited). 4:1:1 above 8 bits and 14-bit grey, which ffmpeg's y4m lacks, are
    /// refused.
    pub fn with_format(&self, chroma: Chroma, depth: u8) -> Result<Header, Y4mError> {
        if chroma == Chroma::Mono && depth == 14 {
            // ffmpeg reads `Cmono14` as its `mono` prefix, 8-bit: the frames would be misread
            // (a 14-bit grey input too, passed on as it is).
            return Err(Y4mError::header(
                "14-bit monochrome: ffmpeg's y4m reader knows mono, mono9, mono10, mono12 and mono16, and would read `Cmono14` as 8-bit; give --output-depth 12 or 16",
            ));
        }
        if chroma == Chroma::C411 && depth != 8 {
            // ffmpeg's y4m has no high-bit-depth 4:1:1 (a 4:1:1 input too, asked for more bits).
            return Err(Y4mError::header(format!(
                "4:1:1 at {depth} bits: ffmpeg's y4m carries 4:1:1 only at 8 bits; give --output-chroma 420, 422 or 444 with --output-depth {depth}, or --output-depth 8"
            )));
        }
        if chroma == self.chroma && depth == self.depth {
            return Ok(self.clone());
        }
        if !(8..=16).contains(&depth) {
            return Err(Y4mError::header(format!("output bit depth {depth}: y4m carries 8 to 16 bits")));
        }
        let siting = match chroma {
            Chroma::C420 if chroma == self.chroma && depth == 8 => self.siting,
            Chroma::C422 | Chroma::C411 => Siting::Left,
            _ => Siting::Center,
        };
        let base = match (chroma, siting, depth) {
            (Chroma::C420, Siting::Center, 8) => "420jpeg",
            (Chroma::C420, Siting::Left, 8) => "420mpeg2",
            (Chroma::C420, Siting::TopLeft, 8) => "420paldv",
            (Chroma::C420, ..) => "420p",
            (Chroma::C422, ..) => if depth == 8 { "422" } else { "422p" },
            (Chroma::C411, ..) => "411",
            (Chroma::C444, ..) => if depth == 8 { "444" } else { "444p" },
            (Chroma::Mono, ..) => "mono",
        };
        let tag = if depth == 8 { base.to_string() } else { format!("{base}{depth}") };
        let mut out = self.clone();
        (out.chroma, out.siting, out.depth) = (chroma, siting, depth);
        out.colourspace_tag = Some(tag);
        out.x_tags.retain(|x| !x.starts_with("YSCSS="));
        if out.range != Range::untagged(chroma) && !out.x_tags.iter().any(|x| x.starts_with("COLORRANGE=")) {
            // Grey without a range tag is full range, colour limited: a grey input turned
            // colour (or the reverse) names its range, or readers would take the other one.
            out.x_tags.push(out.range.tag().to_string());
        }
        if out.format().frame_bytes().is_none() {
            return Err(Y4mError::header(format!("output frame size {}x{} at {depth} bits overflows", out.width, out.height)));
        }
        Ok(out)
    }

    /// The header line, newline included.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = format!("YUV4MPEG2 W{} H{}", self.width, self.height);
        if let Some(f) = &self.frame_rate {
            s += &format!(" F{f}");
        }
        if let Some(i) = &self.interlacing {
            s += &format!(" I{i}");
        }
        if let Some(a) = &self.pixel_aspect {
            s += &format!(" A{a}");
        }
        if let Some(c) = &self.colourspace_tag {
            s += &format!(" C{c}");
        }
        for x in &self.x_tags {
            s += &format!(" X{x}");
        }
        for o in &self.other {
            s += &format!(" {o}");
        }
        s.push('\n');
        s.into_bytes()
    }
}
