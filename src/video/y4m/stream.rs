//! Frames in and out: [`Reader`] hands out one frame at a time as its bytes arrive, [`Writer`]
//! writes each frame whole.

use super::*;

fn read_retrying<R: BufRead>(r: &mut R) -> io::Result<&[u8]> {
    loop {
        match r.fill_buf() {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    r.fill_buf()
}

/// How [`read_line_bounded`]'s message for an input that ends inside a line begins.
const ENDED_INSIDE_A_LINE: &str = "stream ended inside a line";

/// Reads up to and including `\n`, at most `max` bytes. `Ok(None)` on end of input before any byte.
fn read_line_bounded<R: BufRead>(r: &mut R, max: usize) -> io::Result<Result<Option<Vec<u8>>, String>> {
    let mut line = Vec::new();
    loop {
        let buf = read_retrying(r)?;
        if buf.is_empty() {
            if line.is_empty() {
                return Ok(Ok(None));
            }
            return Ok(Err(format!("{ENDED_INSIDE_A_LINE} after {} bytes", line.len())));
        }
        let take = buf.iter().position(|&b| b == b'\n').map(|p| p + 1);
        let n = take.unwrap_or(buf.len()).min(max - line.len());
        line.extend_from_slice(&buf[..n]);
        r.consume(n);
        if line.last() == Some(&b'\n') {
            return Ok(Ok(Some(line)));
        }
        if line.len() >= max {
            return Ok(Err(format!("line longer than {max} bytes without a newline")));
        }
    }
}

/// The known producer bug behind many misaligned high-bit-depth streams, as advice.
fn odd_width_hint(f: &FrameFormat) -> &'static str {
    if f.width % 2 == 1 && f.depth > 8 && matches!(f.chroma, Chroma::C420 | Chroma::C422) {
        "; ffmpeg's y4m writer cuts odd-width chroma rows short above 8 bits: pad the input to an even width \
         (ffmpeg … -vf pad=ceil(iw/2)*2:ih …)"
    } else {
        ""
    }
}

/// Reads frames one at a time from a y4m stream.
pub struct Reader<R: Read> {
    inner: BufReader<R>,
    header: Header,
    format: FrameFormat,
    frame_bytes: usize,
    next_index: u64,
    /// The frame buffer, grown as bytes arrive (the tests check how far).
    pub(super) buf: Vec<u8>,
    done: bool,
}

impl<R: Read> Reader<R> {
    /// Reads and checks the stream header. Nothing is allocated for frames yet.
    pub fn new(inner: R) -> Result<Reader<R>, Y4mError> {
        let mut inner = BufReader::with_capacity(1 << 16, inner);
        let line = read_line_bounded(&mut inner, MAX_HEADER_BYTES)
            .map_err(|e| Y4mError::io(None, "reading the stream header", e))?
            .map_err(|m| Y4mError::header(format!("stream header: {m}")))?
            .ok_or_else(|| Y4mError::header("empty input: no y4m stream header (expected \"YUV4MPEG2 …\")"))?;
        let header = Header::parse(&line)?;
        let format = header.format();
        let frame_bytes = format.frame_bytes().expect("checked by Header::parse");
        Ok(Reader { inner, header, format, frame_bytes, next_index: 0, buf: Vec::new(), done: false })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Frames returned so far (the index the next frame will have).
    pub fn frames_read(&self) -> u64 {
        self.next_index
    }

    /// The next frame, `Ok(None)` at a clean end of stream (end of input between frames).
    /// After an error the reader returns `Ok(None)`.
    pub fn read_frame(&mut self) -> Result<Option<Frame>, Y4mError> {
        if self.done {
            return Ok(None);
        }
        let r = self.read_frame_inner();
        if !matches!(r, Ok(Some(_))) {
            self.done = true;
        }
        r
    }

    fn read_frame_inner(&mut self) -> Result<Option<Frame>, Y4mError> {
        let i = self.next_index;
        let line = match read_line_bounded(&mut self.inner, MAX_FRAME_LINE_BYTES)
            .map_err(|e| Y4mError::io(Some(i), "reading the FRAME line", e))?
        {
            Ok(Some(l)) => l,
            Ok(None) => return Ok(None),
            Err(m) if m.starts_with(ENDED_INSIDE_A_LINE) => return Err(Y4mError::cut(i, format!("truncated: {m} (its FRAME line)"))),
            Err(m) => return Err(Y4mError::frame(i, format!("bad FRAME line: {m}"))),
        };
        let body = &line[..line.len() - 1];
        let params = if body == FRAME_MAGIC {
            Vec::new()
        } else if body.starts_with(FRAME_MAGIC) && body.get(FRAME_MAGIC.len()) == Some(&b' ') {
            body[FRAME_MAGIC.len() + 1..].to_vec()
        } else if body.starts_with(MAGIC) {
            return Err(Y4mError::frame(
                i,
                "a second stream header where a FRAME line should be: two y4m files were concatenated. Join \
                 streams with ffmpeg (its concat demuxer), or upscale them one at a time"
                    .to_string(),
            ));
        } else {
            let shown = String::from_utf8_lossy(&body[..body.len().min(16)]).into_owned();
            return Err(Y4mError::frame(
                i,
                format!(
                    "bad FRAME line {shown:?}: expected \"FRAME\" (is the header's W/H/C right for this stream?){}",
                    odd_width_hint(&self.format)
                ),
            ));
        };
        // The buffer grows with the bytes that arrive (doubling from 1 MiB), so a header that
        // declares a huge frame followed by a short stream costs what the stream holds, not
        // what the header claims; a whole frame keeps its buffer for the next one.
        if self.buf.len() > self.frame_bytes {
            self.buf.truncate(self.frame_bytes);
        }
        let mut got = 0;
        while got < self.frame_bytes {
            if got == self.buf.len() {
                let grown = (2 * self.buf.len()).clamp(FRAME_BUFFER_START.min(self.frame_bytes), self.frame_bytes);
                self.buf.resize(grown, 0);
            }
            match self.inner.read(&mut self.buf[got..]) {
                Ok(0) => {
                    return Err(Y4mError::cut(
                        i,
                        format!("truncated: stream ended after {got} of the frame's {} bytes", self.frame_bytes),
                    ))
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Y4mError::io(Some(i), "reading frame data", e)),
            }
        }
        let f = self.format;
        let max = f.max_sample();
        let mut off = 0;
        let mut planes: [Vec<u16>; 3] = Default::default();
        for (p, plane) in planes.iter_mut().enumerate() {
            let n = f.plane_len(p);
            if f.bytes_per_sample() == 1 {
                *plane = self.buf[off..off + n].iter().map(|&b| b as u16).collect();
                off += n;
            } else {
                *plane = self.buf[off..off + 2 * n].chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
                off += 2 * n;
                if let Some(k) = plane.iter().position(|&s| s > max) {
                    let pw = if p == 0 { f.width } else { f.chroma_size().0 } as usize;
                    return Err(Y4mError::frame(
                        i,
                        format!(
                            "{} sample {} at x={}, y={} exceeds the {}-bit maximum {max} (is C{} right?){}",
                            ["Y", "U", "V"][p],
                            plane[k],
                            k % pw,
                            k / pw,
                            f.depth,
                            self.header.colourspace_tag.as_deref().unwrap_or("420jpeg"),
                            odd_width_hint(&f)
                        ),
                    ));
                }
            }
        }
        self.next_index += 1;
        Ok(Some(Frame { format: f, planes, params }))
    }
}

/// Called with each frame once it is written (e.g. `--gif`'s preview).
pub type FrameHook = Box<dyn FnMut(&Frame) -> io::Result<()>>;

/// Writes a y4m stream: the header on creation, then whole frames.
pub struct Writer<W: Write> {
    inner: W,
    header: Header,
    written: u64,
    /// Bytes handed to `inner` whole (the header and each frame's one `write_all`), and those
    /// of them through the last successful flush.
    bytes: u64,
    flushed: u64,
    on_frame: Option<FrameHook>,
}

impl<W: Write> Writer<W> {
    /// Writes `header` (e.g. `input.scaled(4)?`).
    pub fn new(mut inner: W, header: Header) -> Result<Writer<W>, Y4mError> {
        let h = header.to_bytes();
        inner.write_all(&h).map_err(|e| Y4mError::io(None, "writing the stream header", e))?;
        Ok(Writer { inner, header, written: 0, bytes: h.len() as u64, flushed: 0, on_frame: None })
    }

    /// Calls `hook` with every frame (checked against the header) before its bytes are written:
    /// its error fails the write, naming the frame, with nothing of the frame written, so that
    /// the frames written are still the frames counted (a stream on stdout cannot be cut back).
    pub fn on_frame(&mut self, hook: FrameHook) {
        self.on_frame = Some(hook);
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Frames written so far.
    pub fn frames_written(&self) -> u64 {
        self.written
    }

    /// The length of the stream through the last successful [`Writer::flush`]: the header and
    /// whole frames, all of them out of this writer's hands. After a failed write (a full disk)
    /// the sink may hold part of a frame past it; a file cut back to it is a valid stream.
    pub fn flushed_bytes(&self) -> u64 {
        self.flushed
    }

    /// Builds the frame's bytes (`FRAME` line and planes), checks them against the header, then
    /// writes them with one `write_all`. A frame that does not match is refused before any byte.
    pub fn write_frame(&mut self, frame: &Frame) -> Result<(), Y4mError> {
        let i = self.written;
        let f = self.header.format();
        if frame.format != f {
            return Err(Y4mError::frame(
                i,
                format!("output frame format {:?} does not match the stream header's {:?}", frame.format, f),
            ));
        }
        if frame.params.contains(&b'\n') {
            return Err(Y4mError::frame(i, "FRAME parameters contain a newline"));
        }
        let max = f.max_sample();
        let mut bytes = Vec::with_capacity(FRAME_MAGIC.len() + 2 + frame.params.len() + f.frame_bytes().unwrap_or(0));
        bytes.extend_from_slice(FRAME_MAGIC);
        if !frame.params.is_empty() {
            bytes.push(b' ');
            bytes.extend_from_slice(&frame.params);
        }
        bytes.push(b'\n');
        for (p, plane) in frame.planes.iter().enumerate() {
            if plane.len() != f.plane_len(p) {
                return Err(Y4mError::frame(
                    i,
                    format!("plane {} has {} samples, the format needs {}", ["Y", "U", "V"][p], plane.len(), f.plane_len(p)),
                ));
            }
            if let Some(&s) = plane.iter().find(|&&s| s > max) {
                return Err(Y4mError::frame(
                    i,
                    format!("plane {} has sample {s} above the {}-bit maximum {max}", ["Y", "U", "V"][p], f.depth),
                ));
            }
            if f.bytes_per_sample() == 1 {
                bytes.extend(plane.iter().map(|&s| s as u8));
            } else {
                for &s in plane {
                    bytes.extend_from_slice(&s.to_le_bytes());
                }
            }
        }
        if let Some(hook) = &mut self.on_frame {
            hook(frame).map_err(|e| Y4mError::io(Some(i), "before writing the frame", e))?;
        }
        self.inner.write_all(&bytes).map_err(|e| Y4mError::io(Some(i), "writing the frame", e))?;
        self.written += 1;
        self.bytes += bytes.len() as u64;
        Ok(())
    }

    pub fn flush(&mut self) -> Result<(), Y4mError> {
        // Named by the last frame written (the header's alone before the first).
        let last = self.frames_written().checked_sub(1);
        self.inner.flush().map_err(|e| Y4mError::io(last, "flushing the output", e))?;
        self.flushed = self.bytes;
        Ok(())
    }

    pub fn into_inner(self) -> W {
        self.inner
    }
}
