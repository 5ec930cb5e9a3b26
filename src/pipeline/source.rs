//! The job's input frames: a y4m [`Reader`] read on the job's own thread (the tests), or
//! [`ReadAhead`], which reads on a thread of its own so that the job answers a stop signal
//! while its input stalls (an `ffmpeg` upstream that waits, a terminal, a slow network file).
//! A read blocked in the kernel cannot be interrupted from Rust; the job waits on a channel
//! instead, checking for a stop between short waits, and the blocked thread goes with the
//! process.

use std::io::Read;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::Duration;

use anyhow::Result;

use crate::pipeline::interrupt;
use crate::video::y4m::{Frame, Header, Reader, Y4mError};

/// Where [`run_job`](crate::pipeline::job::run_job) takes its frames from.
pub trait FrameSource {
    fn header(&self) -> &Header;
    /// The next frame, `None` at the end of the stream.
    fn next_frame(&mut self) -> Result<Option<Frame>>;
}

impl<R: Read> FrameSource for Reader<R> {
    fn header(&self) -> &Header {
        Reader::header(self)
    }

    fn next_frame(&mut self) -> Result<Option<Frame>> {
        Ok(self.read_frame()?)
    }
}

/// Frames a [`ReadAhead`] holds beyond the one the job has: one in the channel, one in the
/// reading thread's hands (for the host memory estimate of `--plan`).
pub const READ_AHEAD_FRAMES: usize = 2;

/// How often a wait for input looks for a stop signal.
const POLL: Duration = Duration::from_millis(50);

/// A y4m stream read on a thread of its own, at most [`READ_AHEAD_FRAMES`] frames ahead.
pub struct ReadAhead {
    header: Header,
    frames: Receiver<Result<Option<Frame>, Y4mError>>,
    ended: bool,
}

impl ReadAhead {
    /// Starts reading `input` and waits for its header (a malformed header is its error; a
    /// stop signal meanwhile is [`interrupt::Interrupted`]).
    pub fn start<R: Read + Send + 'static>(input: R) -> Result<ReadAhead> {
        let (header_tx, header_rx) = mpsc::sync_channel(1);
        let (tx, frames) = mpsc::sync_channel(READ_AHEAD_FRAMES - 1);
        std::thread::Builder::new().name("y4m input".into()).spawn(move || {
            let mut reader = match Reader::new(input) {
                Ok(r) => r,
                Err(e) => return drop(header_tx.send(Err(e))),
            };
            if header_tx.send(Ok(reader.header().clone())).is_err() {
                return;
            }
            loop {
                let r = reader.read_frame();
                let more = matches!(r, Ok(Some(_)));
                // The job has gone (it stopped, failed or has its frames): stop reading.
                if tx.send(r).is_err() || !more {
                    return;
                }
            }
        })?;
        let header = wait(&header_rx)?.ok_or_else(|| anyhow::anyhow!("the y4m input thread ended before reading the header"))??;
        Ok(ReadAhead { header, frames, ended: false })
    }
}

impl FrameSource for ReadAhead {
    fn header(&self) -> &Header {
        &self.header
    }

    fn next_frame(&mut self) -> Result<Option<Frame>> {
        if self.ended {
            return Ok(None);
        }
        match wait(&self.frames)? {
            Some(Ok(Some(frame))) => Ok(Some(frame)),
            Some(Ok(None)) | None => {
                self.ended = true;
                Ok(None)
            }
            Some(Err(e)) => {
                self.ended = true;
                Err(e.into())
            }
        }
    }
}

/// The next value from `rx` (`None` once its sender is gone), checking for a stop signal
/// every [`POLL`].
fn wait<T>(rx: &Receiver<T>) -> Result<Option<T>> {
    loop {
        interrupt::check()?;
        match rx.recv_timeout(POLL) {
            Ok(v) => return Ok(Some(v)),
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream read ahead gives the frames, the end and the errors a reader on this thread
    /// gives, in order: a whole stream, then one cut inside its third frame.
    #[test]
    fn read_ahead_gives_what_the_reader_gives() {
        let mut s = b"YUV4MPEG2 W4 H2 F25:1 C444\n".to_vec();
        for f in 0..3u8 {
            s.extend_from_slice(b"FRAME\n");
            s.extend((0..24).map(|i| i * 7 + f));
        }
        for cut in [s.len(), s.len() - 5] {
            let bytes = s[..cut].to_vec();
            let mut direct = Reader::new(std::io::Cursor::new(bytes.clone())).unwrap();
            let mut ahead = ReadAhead::start(std::io::Cursor::new(bytes)).unwrap();
            assert_eq!(FrameSource::header(&ahead), direct.header());
            loop {
                let (a, d) = (ahead.next_frame(), direct.read_frame());
                match (a, d) {
                    (Ok(a), Ok(d)) => {
                        assert_eq!(a.as_ref().map(|f| &f.planes), d.as_ref().map(|f| &f.planes));
                        if a.is_none() {
                            break;
                        }
                    }
                    (Err(a), Err(d)) => {
                        assert_eq!(format!("{a:#}"), d.to_string());
                        assert!(cut < s.len());
                        break;
                    }
                    (a, d) => panic!("read ahead {a:?}, directly {d:?}"),
                }
            }
            assert!(ahead.next_frame().unwrap().is_none(), "after the end or an error, no more frames");
        }
        // A malformed header is the start's error.
        let e = ReadAhead::start(std::io::Cursor::new(b"RIFF....".to_vec())).err().unwrap();
        assert!(format!("{e:#}").contains("y4m stream"), "{e:#}");
    }
}
