use super::*;
use crate::testutil::{fresh_seed, Rng};

/// Every C value the reader accepts, with what it must mean.
const VARIANTS: &[(&str, Chroma, Siting, u8)] = &[
    ("420jpeg", Chroma::C420, Siting::Center, 8),
    ("420paldv", Chroma::C420, Siting::TopLeft, 8),
    ("420mpeg2", Chroma::C420, Siting::Left, 8),
    ("420", Chroma::C420, Siting::Center, 8),
    ("420p10", Chroma::C420, Siting::Center, 10),
    ("420p12", Chroma::C420, Siting::Center, 12),
    ("422", Chroma::C422, Siting::Left, 8),
    ("411", Chroma::C411, Siting::Left, 8),
    ("422p10", Chroma::C422, Siting::Left, 10),
    ("422p12", Chroma::C422, Siting::Left, 12),
    ("444", Chroma::C444, Siting::Center, 8),
    ("444p10", Chroma::C444, Siting::Center, 10),
    ("444p12", Chroma::C444, Siting::Center, 12),
    ("444p16", Chroma::C444, Siting::Center, 16),
    ("mono", Chroma::Mono, Siting::Center, 8),
    ("mono10", Chroma::Mono, Siting::Center, 10),
    ("mono12", Chroma::Mono, Siting::Center, 12),
];

fn random_frame(rng: &mut Rng, format: FrameFormat) -> Frame {
    let max = format.max_sample() as u32 + 1;
    let planes = [0, 1, 2].map(|p| (0..format.plane_len(p)).map(|_| rng.below(max) as u16).collect());
    Frame { format, planes, params: Vec::new() }
}

fn stream(header: &Header, frames: &[Frame]) -> Vec<u8> {
    let mut w = Writer::new(Vec::new(), header.clone()).unwrap();
    for f in frames {
        w.write_frame(f).unwrap();
    }
    w.into_inner()
}

fn read_all(bytes: &[u8]) -> Result<(Header, Vec<Frame>), Y4mError> {
    let mut r = Reader::new(bytes)?;
    let mut out = Vec::new();
    while let Some(f) = r.read_frame()? {
        out.push(f);
    }
    Ok((r.header().clone(), out))
}

#[test]
fn header_round_trips_for_every_colourspace() {
    for &(c, chroma, siting, depth) in VARIANTS {
        let line = format!("YUV4MPEG2 W33 H7 F30000:1001 It A128:117 C{c} XYSCSS=FOO XCOLORRANGE=FULL\n");
        let h = Header::parse(line.as_bytes()).unwrap();
        assert_eq!((h.chroma, h.siting, h.depth), (chroma, siting, depth), "C{c}");
        assert_eq!(h.range, Range::Full, "C{c}");
        assert_eq!((h.width, h.height), (33, 7));
        assert_eq!(h.frame_rate.as_deref(), Some("30000:1001"));
        assert_eq!(h.interlacing.as_deref(), Some("t"));
        assert_eq!(h.pixel_aspect.as_deref(), Some("128:117"));
        assert_eq!(h.x_tags, vec!["YSCSS=FOO".to_string(), "COLORRANGE=FULL".to_string()]);
        assert_eq!(String::from_utf8(h.to_bytes()).unwrap(), line, "C{c}");
        assert_eq!(Header::parse(&h.to_bytes()).unwrap(), h);
    }
}

/// Progressive, unknown and untagged streams pass; interlaced ones are refused with the fix.
#[test]
fn interlaced_input_is_refused_with_the_fix() {
    for tag in ["", " Ip", " I?"] {
        let h = Header::parse(format!("YUV4MPEG2 W8 H8{tag}\n").as_bytes()).unwrap();
        assert!(h.require_progressive().is_ok(), "{tag:?}");
    }
    for (tag, says) in [("t", "top field first"), ("b", "bottom field first"), ("m", "mixed")] {
        let h = Header::parse(format!("YUV4MPEG2 W8 H8 I{tag}\n").as_bytes()).unwrap();
        let e = h.require_progressive().unwrap_err().to_string();
        assert!(e.contains(says) && e.contains("bwdif") && e.contains("setfield=prog"), "I{tag}: {e}");
    }
}

#[test]
fn header_defaults_and_unknown_fields() {
    let h = Header::parse(b"YUV4MPEG2 W13 H1 Zfoo\n").unwrap();
    assert_eq!((h.chroma, h.siting, h.depth, h.range), (Chroma::C420, Siting::Center, 8, Range::Limited));
    assert_eq!(h.colourspace_tag, None);
    assert_eq!(h.other, vec!["Zfoo".to_string()]);
    assert_eq!(h.to_bytes(), b"YUV4MPEG2 W13 H1 Zfoo\n");
    let l = Header::parse(b"YUV4MPEG2 W13 H1 XCOLORRANGE=LIMITED C444p10").unwrap();
    assert_eq!(l.range, Range::Limited);
    // No C tag: the older XYSCSS one names the format, as ffmpeg's reader takes it (else 4:2:0);
    // a C tag wins over it.
    let x = Header::parse(b"YUV4MPEG2 W12 H2 XYSCSS=444P10\n").unwrap();
    assert_eq!((x.chroma, x.depth, x.colourspace_tag.as_deref()), (Chroma::C444, 10, None));
    assert_eq!(x.to_bytes(), b"YUV4MPEG2 W12 H2 XYSCSS=444P10\n");
    assert_eq!(Header::parse(b"YUV4MPEG2 W12 H2 XYSCSS=411\n").unwrap().chroma, Chroma::C411);
    assert_eq!(Header::parse(b"YUV4MPEG2 W12 H2 XYSCSS=FOO\n").unwrap().chroma, Chroma::C420);
    // As ffprobe 5.1 reads them: prefixes, in its order, case-sensitive.
    for (v, chroma, depth) in [("422P10", Chroma::C422, 8), ("420P11", Chroma::C420, 8), ("MONO", Chroma::C420, 8), ("444p10", Chroma::C444, 8), ("444ALPHA", Chroma::C444, 8), ("444P10X", Chroma::C444, 10), ("422P9", Chroma::C422, 9)] {
        let h = Header::parse(format!("YUV4MPEG2 W12 H2 XYSCSS={v}\n").as_bytes()).unwrap();
        assert_eq!((h.chroma, h.depth), (chroma, depth), "XYSCSS={v}");
    }
    assert_eq!(Header::parse(b"YUV4MPEG2 W12 H2 C422 XYSCSS=444\n").unwrap().chroma, Chroma::C422);
    assert_eq!(Header::parse(b"YUV4MPEG2 W12 H2 XYSCSS=444 XYSCSS=FOO\n").unwrap().chroma, Chroma::C444);
}

/// Without `XCOLORRANGE` grey is full range and colour limited, as ffmpeg reads them (its
/// swscale maps an untagged `Cmono` Y of 16 to RGB 16, an untagged `C420jpeg` one to 0); a
/// converted output whose range would read otherwise without the tag names it.
#[test]
fn untagged_grey_is_full_range_and_a_converted_output_names_its_range() {
    for (c, range) in [("mono", Range::Full), ("mono10", Range::Full), ("420jpeg", Range::Limited), ("444p12", Range::Limited)] {
        assert_eq!(Header::parse(format!("YUV4MPEG2 W8 H8 C{c}").as_bytes()).unwrap().range, range, "{c}");
    }
    let tagged = Header::parse(b"YUV4MPEG2 W8 H8 Cmono XCOLORRANGE=LIMITED").unwrap();
    assert_eq!(tagged.range, Range::Limited);
    let grey = Header::new(8, 8, "mono").unwrap();
    let colour = Header::new(8, 8, "420jpeg").unwrap();
    for (from, to, tag) in [(&grey, Chroma::C420, Some("COLORRANGE=FULL")), (&colour, Chroma::Mono, Some("COLORRANGE=LIMITED")), (&grey, Chroma::Mono, None), (&colour, Chroma::C444, None)] {
        let o = from.with_format(to, 10).unwrap();
        assert_eq!(o.x_tags.first().map(String::as_str), tag, "{:?} to {to:?}", from.chroma);
        assert_eq!(Header::parse(&o.to_bytes()).unwrap().range, from.range, "{:?} to {to:?}", from.chroma);
    }
    // A tag already there is kept as it is, not doubled.
    assert_eq!(tagged.with_format(Chroma::C420, 8).unwrap().x_tags, vec!["COLORRANGE=LIMITED".to_string()]);
}

/// The output header must be one the reader takes back: a ×4 output past 16384 a side is
/// refused with the input size that fits.
#[test]
fn an_output_past_the_largest_side_is_refused() {
    let ok = Header::parse(b"YUV4MPEG2 W4096 H2160 C420jpeg").unwrap().scaled(4).unwrap();
    assert!(Header::parse(&ok.to_bytes()).is_ok());
    let e = Header::parse(b"YUV4MPEG2 W7 H4097 C420jpeg").unwrap().scaled(4).unwrap_err().to_string();
    assert!(e.contains("would be 28x16388") && e.contains("inputs up to 4096"), "{e}");
    // A header of the largest length read grows by the larger sizes (and a longer `C` tag):
    // refused rather than written past what a later run reads.
    let pad = |len: usize| {
        let base = b"YUV4MPEG2 W9 H9 C420jpeg X".as_slice();
        [base, &vec![b'a'; len - base.len() - 1], b"\n"].concat()
    };
    let longest = Header::parse(&pad(MAX_HEADER_BYTES)).unwrap();
    let e = OutputFormat::default().header(&longest, 4).unwrap_err().to_string();
    assert!(e.contains("would be 4098 bytes"), "{e}");
    let fits = OutputFormat::default().header(&Header::parse(&pad(MAX_HEADER_BYTES - 2)).unwrap(), 4).unwrap();
    assert_eq!(fits.to_bytes().len(), MAX_HEADER_BYTES);
}

/// ffmpeg reads headers of up to 96 bytes: where the ×4 sizes' extra digits would pass that,
/// the redundant `XYSCSS` tag (ffmpeg writes it beside the `C` tag) is dropped; elsewhere the
/// header keeps it.
#[test]
fn an_output_header_stays_within_what_ffmpeg_reads() {
    let line = |w: u32, rate: &str| format!("YUV4MPEG2 W{w} H480 F{rate} Ip A100:101 C420p16 XYSCSS=420P16 XCOLORRANGE=LIMITED\n");
    // A variable frame rate's long fraction, as ffmpeg writes one: 96 bytes in, 98 out.
    let long = Header::parse(line(640, "2147483647:357913941").as_bytes()).unwrap();
    assert_eq!(long.to_bytes().len(), FFMPEG_MAX_HEADER_BYTES);
    let out = OutputFormat::default().header(&long, 4).unwrap();
    assert_eq!(out.to_bytes(), b"YUV4MPEG2 W2560 H1920 F2147483647:357913941 Ip A100:101 C420p16 XCOLORRANGE=LIMITED\n");
    let short = Header::parse(line(640, "25:1").as_bytes()).unwrap();
    let out = OutputFormat::default().header(&short, 4).unwrap().to_bytes();
    assert!(out.len() <= FFMPEG_MAX_HEADER_BYTES && String::from_utf8(out).unwrap().contains(" XYSCSS=420P16 "));
}

#[test]
fn scaled_header_keeps_everything_but_size() {
    for &(c, ..) in VARIANTS {
        let h = Header::parse(format!("YUV4MPEG2 W7 H13 F24:1 Ip A1:1 C{c} XCOLORRANGE=FULL Qx").as_bytes()).unwrap();
        let o = h.scaled(4).unwrap();
        assert_eq!((o.width, o.height), (28, 52));
        let mut back = o.clone();
        back.width = 7;
        back.height = 13;
        assert_eq!(back, h);
        assert_eq!(
            String::from_utf8(o.to_bytes()).unwrap(),
            format!("YUV4MPEG2 W28 H52 F24:1 Ip A1:1 C{c} XCOLORRANGE=FULL Qx\n")
        );
    }
    let big = Header::new(4096, 4096, "420").unwrap();
    assert_eq!(big.scaled(4).unwrap().width, 16384);
}

/// Every format converts to every other, and the header written reads back as that format
/// with the rest of the header as it was; a format asked for that is the input's own keeps
/// the header's bytes (its `XYSCSS` tag included).
#[test]
fn an_output_format_header_reads_back_as_that_format() {
    for &(c, chroma, siting, depth) in VARIANTS {
        let line = format!("YUV4MPEG2 W28 H52 F24:1 Ip A1:1 C{c} XYSCSS=ANY XCOLORRANGE=FULL Qx");
        let h = Header::parse(line.as_bytes()).unwrap();
        assert_eq!(h.with_format(chroma, depth).unwrap().to_bytes(), format!("{line}\n").into_bytes());
        for &(_, to_chroma, _, to_depth) in VARIANTS {
            if (to_chroma, to_depth) == (chroma, depth) {
                continue;
            }
            let o = h.with_format(to_chroma, to_depth).unwrap();
            let back = Header::parse(&o.to_bytes()).unwrap();
            assert_eq!(back, o, "{c} to {to_chroma:?} {to_depth}");
            // 4:2:0 keeps its siting only at 8 bits and when it was 4:2:0 already.
            let expected = match to_chroma {
                Chroma::C420 if chroma == Chroma::C420 && to_depth == 8 => siting,
                Chroma::C422 | Chroma::C411 => Siting::Left,
                _ => Siting::Center,
            };
            assert_eq!((back.chroma, back.siting, back.depth), (to_chroma, expected, to_depth), "{c} to {to_chroma:?} {to_depth}");
            assert_eq!((back.width, back.height, back.range), (28, 52, Range::Full));
            assert_eq!((back.frame_rate.as_deref(), back.interlacing.as_deref(), back.pixel_aspect.as_deref()), (Some("24:1"), Some("p"), Some("1:1")));
            assert_eq!((back.x_tags.clone(), back.other.clone()), (vec!["COLORRANGE=FULL".to_string()], vec!["Qx".to_string()]));
        }
    }
    let h = Header::new(8, 8, "420").unwrap();
    // ffmpeg's y4m has 4:1:1 at 8 bits only: a 4:1:1 output (or input kept) at more is refused.
    for depth in [10, 16] {
        assert!(h.with_format(Chroma::C411, depth).unwrap_err().to_string().contains("only at 8 bits"));
        let e = Header::new(8, 8, "411").unwrap().with_format(Chroma::C411, depth).unwrap_err().to_string();
        assert!(e.contains("--output-chroma 420, 422 or 444"), "{e}");
    }
    assert_eq!(h.with_format(Chroma::C411, 8).unwrap().colourspace_tag.as_deref(), Some("411"));
    assert!(h.with_format(Chroma::C444, 7).is_err());
    assert!(h.with_format(Chroma::C444, 17).is_err());
    // ffmpeg has no 14-bit grey in y4m (it would read `Cmono14` as 8-bit); its other depths pass.
    let mono = Header::new(8, 8, "mono").unwrap();
    assert!(mono.with_format(Chroma::Mono, 14).unwrap_err().to_string().contains("--output-depth 12 or 16"));
    for depth in [9, 10, 12, 16] {
        assert_eq!(mono.with_format(Chroma::Mono, depth).unwrap().colourspace_tag, Some(format!("mono{depth}")));
    }
    assert!(mono.with_format(Chroma::C444, 14).is_ok());
    let mono14 = Header::new(8, 8, "mono14").unwrap();
    assert!(mono14.with_format(Chroma::Mono, 14).is_err(), "nor passed on from a 14-bit grey input");
    assert!(mono14.with_format(Chroma::Mono, 16).is_ok());
}

#[test]
fn frames_round_trip_at_8_10_12_bits_and_awkward_sizes() {
    let seed = fresh_seed();
    let mut rng = Rng::new(seed);
    for &(c, ..) in VARIANTS {
        for (w, h) in [(1, 1), (7, 13), (33, 7), (13, 1)] {
            let header = Header::new(w, h, c).unwrap();
            let mut frames: Vec<Frame> = (0..3).map(|_| random_frame(&mut rng, header.format())).collect();
            frames[1].params = b"Ixyz".to_vec();
            let bytes = stream(&header, &frames);
            let fb = header.format().frame_bytes().unwrap();
            assert_eq!(bytes.len(), header.to_bytes().len() + 3 * (fb + 6) + 5, "C{c} {w}x{h}");
            let (h2, got) = read_all(&bytes).unwrap_or_else(|e| panic!("seed {seed} C{c} {w}x{h}: {e}"));
            assert_eq!(h2, header);
            assert_eq!(got, frames, "seed {seed} C{c} {w}x{h}");
        }
    }
}

#[test]
fn reads_frames_as_they_arrive_from_a_pipe() {
    // A reader that hands out 1..7 bytes per call, like a pipe under load.
    struct Trickle<'a>(&'a [u8], usize);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.1 = self.1 % 7 + 1;
            let n = self.1.min(buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let mut rng = Rng::new(fresh_seed());
    let header = Header::new(7, 13, "420p10").unwrap();
    let frames: Vec<Frame> = (0..4).map(|_| random_frame(&mut rng, header.format())).collect();
    let bytes = stream(&header, &frames);
    let mut r = Reader::new(Trickle(&bytes, 0)).unwrap();
    for (k, want) in frames.iter().enumerate() {
        assert_eq!(r.frames_read(), k as u64);
        assert_eq!(&r.read_frame().unwrap().unwrap(), want);
    }
    assert!(r.read_frame().unwrap().is_none());
}

fn err_of(bytes: &[u8]) -> Y4mError {
    match read_all(bytes) {
        Ok(_) => panic!("{:?} was accepted", String::from_utf8_lossy(&bytes[..bytes.len().min(60)])),
        Err(e) => e,
    }
}

#[test]
fn malformed_headers_name_the_problem() {
    let cases: &[(&[u8], &str)] = &[
        (b"", "empty input"),
        (b"RIFF....WAVEfmt \n", "bad magic"),
        (b"YUV4MPEG2W7 H7\n", "followed by a space"),
        (b"YUV4MPEG2 H7 C420\n", "missing width"),
        (b"YUV4MPEG2 W7 C420\n", "missing height"),
        (b"YUV4MPEG2 W0 H7\n", "width must be 1 to 16384"),
        (b"YUV4MPEG2 W7 H16385\n", "height must be 1 to 16384"),
        (b"YUV4MPEG2 W99999999999999999999 H7\n", "W must be a positive integer"),
        (b"YUV4MPEG2 W-3 H7\n", "W must be a positive integer"),
        (b"YUV4MPEG2 W7 H7 C411p10\n", "unsupported colourspace C411p10"),
        (b"YUV4MPEG2 W7 H7 C444alpha\n", "unsupported colourspace C444alpha"),
        (b"YUV4MPEG2 W7 H7 C420p7\n", "unsupported colourspace C420p7"),
        (b"YUV4MPEG2 W7 H7 C420p\n", "unsupported colourspace C420p"),
        (b"YUV4MPEG2 W7 H7 Cmono17\n", "unsupported colourspace Cmono17"),
        (b"YUV4MPEG2 W7 H7 F30\n", "field F30"),
        (b"YUV4MPEG2 W7 H7 Ax:1\n", "field Ax:1"),
        (b"YUV4MPEG2 W7 H7 Iq\n", "interlacing"),
        (b"YUV4MPEG2 W7 H7 XCOLORRANGE=TV\n", "XCOLORRANGE must be LIMITED or FULL"),
        (b"YUV4MPEG2 W7 H7", "stream ended inside a line"),
        (b"YUV4MPEG2 W7 H7 C420jpeg\r\n", "CR LF (a Windows line ending)"),
        // Not a y4m stream, whose first line ends in CR LF too: told so first.
        (b"\x89PNG\r\n", "bad magic"),
        // Inside the line a CR would travel with its field, perhaps to the output line's end.
        (b"YUV4MPEG2 W7 H7 Zq\r C420jpeg\n", "carriage return (CR)"),
    ];
    for (bytes, want) in cases {
        let e = err_of(bytes);
        assert_eq!(e.frame, None, "{e}");
        assert!(e.to_string().contains(want), "{:?}: got {e:?}, want it to mention {want:?}", String::from_utf8_lossy(bytes));
    }
    let long = [b"YUV4MPEG2 W7 H7 X".as_slice(), &[b'a'; MAX_HEADER_BYTES]].concat();
    assert!(err_of(&long).to_string().contains("longer than 4096"));
}

/// A header may declare a 1.5 GiB frame (16384² 4:4:4 at 16 bits); a stream that then
/// ends after a few bytes must cost a few bytes, not the declared frame (issue 11: no
/// allocation the input does not pay for). A whole frame of a multi-MiB size still reads.
#[test]
fn frame_buffers_grow_with_the_bytes_that_arrive() {
    let mut short = b"YUV4MPEG2 W16384 H16384 C444p16\nFRAME\n".to_vec();
    short.extend_from_slice(&[7; 1000]);
    let mut r = Reader::new(short.as_slice()).unwrap();
    let e = r.read_frame().unwrap_err();
    assert!(e.to_string().contains("truncated: stream ended after 1000 of"), "{e}");
    assert!(r.buf.capacity() <= FRAME_BUFFER_START, "a 1000-byte frame held a {}-byte buffer", r.buf.capacity());

    let mut rng = Rng::new(fresh_seed());
    let header = Header::new(1031, 777, "444p10").unwrap(); // 4.6 MiB a frame: three doublings
    let frames: Vec<Frame> = (0..2).map(|_| random_frame(&mut rng, header.format())).collect();
    let (_, got) = read_all(&stream(&header, &frames)).unwrap();
    assert!(got.len() == 2 && got[0].planes == frames[0].planes && got[1].planes == frames[1].planes);
}

#[test]
fn malformed_frames_name_the_frame_and_the_problem() {
    let mut rng = Rng::new(fresh_seed());
    let header = Header::new(7, 13, "420p10").unwrap();
    let frames: Vec<Frame> = (0..3).map(|_| random_frame(&mut rng, header.format())).collect();
    let good = stream(&header, &frames);
    let hl = header.to_bytes().len();
    let fl = 6 + header.format().frame_bytes().unwrap();

    // Truncated inside frame 2's data.
    let e = err_of(&good[..good.len() - 5]);
    assert_eq!(e.frame, Some(2));
    assert!(e.to_string().contains("truncated") && e.to_string().contains(&format!("{} of", fl - 6 - 5)), "{e}");
    assert!(e.cut, "a stream cut inside a frame says so (the frames before it are whole)");
    // Truncated inside frame 1's FRAME line.
    let e = err_of(&good[..hl + fl + 3]);
    assert_eq!(e.frame, Some(1));
    assert!(e.cut && e.to_string().contains("truncated: stream ended inside a line after 3 bytes (its FRAME line)"), "{e}");
    // A bad FRAME line for frame 1.
    let mut bad = good.clone();
    bad[hl + fl..hl + fl + 5].copy_from_slice(b"FRAMX");
    let e = err_of(&bad);
    assert_eq!(e.frame, Some(1));
    assert!(e.to_string().contains("y4m frame 1: bad FRAME line \"FRAMX") && !e.cut, "{e}");
    // FRAME glued to parameters without a space.
    let mut bad = good.clone();
    bad.splice(hl + 5..hl + 5, b"Ix".iter().copied());
    assert!(err_of(&bad).to_string().contains("y4m frame 0: bad FRAME line"));
    // Two streams concatenated: the second header where frame 3's FRAME line would be.
    let e = err_of(&[good.as_slice(), &good].concat());
    assert_eq!(e.frame, Some(3));
    assert!(e.to_string().contains("two y4m files were concatenated"), "{e}");
    // A FRAME line that never ends.
    let mut bad = good[..hl].to_vec();
    bad.extend_from_slice(b"FRAME ");
    bad.extend(std::iter::repeat_n(b'x', 2000));
    let e = err_of(&bad);
    assert_eq!(e.frame, Some(0));
    assert!(e.to_string().contains("longer than 1024"), "{e}");
    // A 10-bit sample above 1023 in frame 2's V plane at (3, 4).
    let mut bad = good.clone();
    let (cw, ch) = header.format().chroma_size();
    let v_off = hl + 2 * fl + 6 + 2 * (7 * 13 + (cw * ch) as usize) + 2 * (4 * cw as usize + 3);
    bad[v_off..v_off + 2].copy_from_slice(&2000u16.to_le_bytes());
    let e = err_of(&bad);
    assert_eq!(e.frame, Some(2));
    assert!(e.to_string().contains("V sample 2000 at x=3, y=4 exceeds the 10-bit maximum 1023"), "{e}");
    // After an error the reader stops.
    let mut r = Reader::new(&bad[..]).unwrap();
    assert!(r.read_frame().unwrap().is_some());
    assert!(r.read_frame().unwrap().is_some());
    assert!(r.read_frame().is_err());
    assert!(r.read_frame().unwrap().is_none());
}

/// The frame hook sees each frame before its bytes are written; its error names the frame and
/// writes nothing of it.
#[test]
fn writer_hook_sees_each_written_frame() {
    let mut rng = Rng::new(fresh_seed());
    let header = Header::new(5, 3, "420jpeg").unwrap();
    let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let mut w = Writer::new(Vec::new(), header.clone()).unwrap();
    let s = seen.clone();
    w.on_frame(Box::new(move |f| {
        s.borrow_mut().push(f.clone());
        if s.borrow().len() == 2 {
            return Err(io::Error::other("preview disk full"));
        }
        Ok(())
    }));
    let frames: Vec<Frame> = (0..2).map(|_| random_frame(&mut rng, header.format())).collect();
    w.write_frame(&frames[0]).unwrap();
    let e = w.write_frame(&frames[1]).unwrap_err();
    assert!(e.to_string().contains("y4m frame 1: before writing the frame: preview disk full"), "{e}");
    assert_eq!(*seen.borrow(), frames);
    // Nothing of the failed frame is written: the stream holds the frames counted.
    assert_eq!(w.frames_written(), 1);
    assert_eq!(w.into_inner(), stream(&header, &frames[..1]));
}

#[test]
fn flushed_bytes_count_whole_frames_through_the_last_flush() {
    let header = Header::new(7, 5, "420").unwrap();
    let h = header.to_bytes().len() as u64;
    let record = 6 + header.format().frame_bytes().unwrap() as u64;
    let frame = random_frame(&mut Rng::new(fresh_seed()), header.format());
    let mut w = Writer::new(Vec::new(), header).unwrap();
    assert_eq!(w.flushed_bytes(), 0);
    w.flush().unwrap();
    assert_eq!(w.flushed_bytes(), h);
    w.write_frame(&frame).unwrap();
    assert_eq!(w.flushed_bytes(), h, "written, not flushed");
    w.write_frame(&frame).unwrap();
    w.flush().unwrap();
    assert_eq!(w.flushed_bytes(), h + 2 * record);
    assert_eq!(w.into_inner().len() as u64, h + 2 * record);
}

#[test]
fn writer_refuses_mismatched_frames_before_writing() {
    let mut rng = Rng::new(fresh_seed());
    let header = Header::new(13, 7, "422p12").unwrap();
    let mut w = Writer::new(Vec::new(), header.clone()).unwrap();
    let good = random_frame(&mut rng, header.format());
    w.write_frame(&good).unwrap();
    let before = w.into_inner();
    let mut w = Writer::new(Vec::new(), header.clone()).unwrap();
    w.write_frame(&good).unwrap();

    let mut short = good.clone();
    short.planes[1].pop();
    let e = w.write_frame(&short).unwrap_err();
    assert!(e.to_string().contains("y4m frame 1: plane U has"), "{e}");
    let mut hot = good.clone();
    hot.planes[2][5] = 4096;
    assert!(w.write_frame(&hot).unwrap_err().to_string().contains("sample 4096 above the 12-bit maximum 4095"));
    let other = random_frame(&mut rng, Header::new(13, 7, "420p12").unwrap().format());
    assert!(w.write_frame(&other).unwrap_err().to_string().contains("does not match"));
    assert_eq!(w.frames_written(), 1);
    assert_eq!(w.into_inner(), before, "a refused frame wrote bytes");
}

/// tests/data/y4m: streams written by ffmpeg (`tools/make_y4m_samples.sh`), 2 frames each.
const FFMPEG_SAMPLES: &[(&str, u32, Chroma, Siting, u8, Range, &str)] = &[
    ("gray", 13, Chroma::Mono, Siting::Center, 8, Range::Full, "p"),
    ("yuv420p", 13, Chroma::C420, Siting::Center, 8, Range::Limited, "p"),
    ("yuv420p_full", 13, Chroma::C420, Siting::Center, 8, Range::Full, "p"),
    ("yuv420p_left", 13, Chroma::C420, Siting::Left, 8, Range::Limited, "p"),
    ("yuv420p_topleft", 13, Chroma::C420, Siting::TopLeft, 8, Range::Limited, "p"),
    ("yuv420p_tt", 13, Chroma::C420, Siting::Center, 8, Range::Limited, "t"),
    ("yuv422p", 13, Chroma::C422, Siting::Left, 8, Range::Limited, "p"),
    ("yuv411p", 13, Chroma::C411, Siting::Left, 8, Range::Limited, "p"),
    ("yuv444p", 13, Chroma::C444, Siting::Center, 8, Range::Limited, "p"),
    ("w14_gray", 14, Chroma::Mono, Siting::Center, 8, Range::Full, "p"),
    ("w14_gray10le", 14, Chroma::Mono, Siting::Center, 10, Range::Full, "p"),
    ("w14_gray12le", 14, Chroma::Mono, Siting::Center, 12, Range::Full, "p"),
    ("w14_yuv420p", 14, Chroma::C420, Siting::Center, 8, Range::Limited, "p"),
    ("w14_yuv420p10le", 14, Chroma::C420, Siting::Center, 10, Range::Limited, "p"),
    ("w14_yuv420p12le", 14, Chroma::C420, Siting::Center, 12, Range::Limited, "p"),
    ("w14_yuv422p", 14, Chroma::C422, Siting::Left, 8, Range::Limited, "p"),
    ("w14_yuv422p10le", 14, Chroma::C422, Siting::Left, 10, Range::Limited, "p"),
    ("w14_yuv422p12le", 14, Chroma::C422, Siting::Left, 12, Range::Limited, "p"),
    ("w14_yuv444p", 14, Chroma::C444, Siting::Center, 8, Range::Limited, "p"),
    ("w14_yuv444p10le", 14, Chroma::C444, Siting::Center, 10, Range::Limited, "p"),
    ("w14_yuv444p12le", 14, Chroma::C444, Siting::Center, 12, Range::Limited, "p"),
];

fn sample(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/y4m/{name}.y4m", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn reads_ffmpeg_streams_and_writes_them_back_byte_for_byte() {
    for &(name, w, chroma, siting, depth, range, interlacing) in FFMPEG_SAMPLES {
        let bytes = sample(name);
        let (h, frames) = read_all(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((h.width, h.height, h.chroma, h.siting, h.depth, h.range), (w, 7, chroma, siting, depth, range), "{name}");
        assert_eq!(h.interlacing.as_deref(), Some(interlacing), "{name}");
        assert_eq!(h.frame_rate.as_deref(), Some("30000:1001"), "{name}");
        assert!(h.pixel_aspect.is_some(), "{name}");
        assert_eq!(frames.len(), 2, "{name}");
        assert_eq!(stream(&h, &frames), bytes, "{name}: not written back byte for byte");
        let out = String::from_utf8(h.scaled(4).unwrap().to_bytes()).unwrap();
        let first = String::from_utf8(bytes[..bytes.iter().position(|&b| b == b'\n').unwrap() + 1].to_vec()).unwrap();
        assert_eq!(out, first.replace(&format!("W{w} H7"), &format!("W{} H28", 4 * w)), "{name}");
    }
}

#[test]
fn ffmpeg_high_bit_depth_samples_agree_with_its_8_bit_ones() {
    // The same test picture at 8, 10 and 12 bits: samples scaled down by 2^(d−8) land within
    // 2 codes of the 8-bit ones (ffmpeg scales and dithers each depth separately). A wrong
    // byte order or plane offset would be far off.
    for (base, hi) in [
        ("w14_gray", ["w14_gray10le", "w14_gray12le"]),
        ("w14_yuv420p", ["w14_yuv420p10le", "w14_yuv420p12le"]),
        ("w14_yuv422p", ["w14_yuv422p10le", "w14_yuv422p12le"]),
        ("w14_yuv444p", ["w14_yuv444p10le", "w14_yuv444p12le"]),
    ] {
        let (_, f8) = read_all(&sample(base)).unwrap();
        for name in hi {
            let (h, f) = read_all(&sample(name)).unwrap();
            let shift = h.depth - 8;
            for (a, b) in f.iter().zip(&f8) {
                for p in 0..3 {
                    assert_eq!(a.planes[p].len(), b.planes[p].len());
                    for (x, y) in a.planes[p].iter().zip(&b.planes[p]) {
                        let d = ((*x as f64) / (1u32 << shift) as f64 - *y as f64).abs();
                        assert!(d <= 2.0, "{name} plane {p}: {x} vs 8-bit {y}");
                    }
                }
            }
        }
    }
}

#[test]
fn ffmpeg_odd_width_high_bit_depth_is_refused_with_a_hint() {
    let e = err_of(&sample("odd_width_yuv420p10le"));
    assert_eq!(e.frame, Some(0), "{e}");
    assert!(e.to_string().contains("pad the input to an even width"), "{e}");
}

#[test]
fn writer_reports_a_closed_pipe() {
    struct Closed;
    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let e = Writer::new(Closed, Header::new(1, 1, "mono").unwrap()).err().unwrap();
    assert!(e.is_broken_pipe());
}
