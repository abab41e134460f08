//! Reads size-prefixed request frames from a socket straight into one growing buffer, and
//! hands out each body as a `Bytes` slice of it: no copy between the socket and the
//! request decoder (a `BufReader` would copy every byte once more), and one allocation per
//! many small requests or per large frame instead of one per request.
//!
//! A body slice keeps its buffer alive; produce data is copied out at append, so a buffer
//! lives as long as the requests read into it are being served.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use futures::io::{AsyncRead, AsyncReadExt};

use super::request_memory::{RequestMemory, Reservation};
use crate::protocol::frame::{self, FrameError};

/// Bytes asked of the socket at least, so small pipelined requests share one read.
const READ_MIN_BYTES: usize = 8 * 1024;
/// Bytes zeroed at once for reads at most: a large frame is made readable in steps, not
/// all before its first read.
const READ_MAX_BYTES: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("peer closed the connection")]
    Closed,
    #[error("peer closed the connection mid-frame")]
    ClosedMidFrame,
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("socket read failed: {0}")]
    Io(#[from] std::io::Error),
}

/// `buf[..filled]` holds bytes read from the socket; `buf[filled..]` is zeroed room for the
/// next read. Safe Rust reads only into initialised memory, so room is zeroed once and kept
/// across short reads rather than zeroed again for each read.
pub struct FrameReader<R> {
    reader: R,
    buf: BytesMut,
    filled: usize,
    /// When the frame being read began to arrive (`None` between frames), for whoever
    /// bounds how long a request may take to arrive.
    frame_started: Rc<Cell<Option<Instant>>>,
    /// The shard's budget for requests in flight (`queued.max.request.bytes`), if bounded.
    memory: Option<Rc<RequestMemory>>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(reader: R, memory: Option<Rc<RequestMemory>>) -> Self {
        FrameReader { reader, buf: BytesMut::new(), filled: 0, frame_started: Rc::default(), memory }
    }

    /// When the frame being read began to arrive; readable while `next_frame` runs.
    pub fn frame_started(&self) -> Rc<Cell<Option<Instant>>> {
        self.frame_started.clone()
    }

    /// The next request body (the bytes after the size prefix), at most `max` bytes, and
    /// the memory reserved for it (held until its response is written).
    pub async fn next_frame(&mut self, max: usize) -> Result<(Bytes, Reservation), ReadError> {
        self.fill(4).await.map_err(|e| match e {
            ReadError::ClosedMidFrame if self.filled == 0 => ReadError::Closed,
            e => e,
        })?;
        let prefix = [self.buf[0], self.buf[1], self.buf[2], self.buf[3]];
        let len = frame::body_len(prefix, max)?;
        // Reserved before the buffer grows for it. While the shard's budget is taken the
        // socket is not read (back-pressure) and the request is not "slow": its receive
        // time starts once memory is there.
        let reservation = match &self.memory {
            Some(memory) => {
                self.frame_started.set(None);
                let reservation = memory.reserve(len).await;
                self.frame_started.set(Some(Instant::now()));
                reservation
            }
            None => None,
        };
        self.fill(4 + len).await?;
        self.buf.advance(4);
        self.filled -= 4 + len;
        // Bytes already here belong to the next (pipelined) request, which has begun.
        self.frame_started.set((self.filled > 0).then(Instant::now));
        Ok((self.buf.split_to(len).freeze(), reservation))
    }

    /// Reads until the buffer holds at least `need` bytes.
    async fn fill(&mut self, need: usize) -> Result<(), ReadError> {
        while self.filled < need {
            let end = self.filled + (need - self.filled).clamp(READ_MIN_BYTES, READ_MAX_BYTES);
            if self.buf.len() < end {
                // Room for the whole frame at once, so a large frame is never moved twice.
                // This reuses the allocation when every body handed out of it is gone;
                // otherwise it moves the partial frame (less than one frame) to a new one.
                self.buf.reserve(need.max(end) - self.buf.len());
                self.buf.resize(end, 0);
            }
            let n = self.reader.read(&mut self.buf[self.filled..]).await?;
            if n == 0 {
                return Err(ReadError::ClosedMidFrame);
            }
            if self.filled == 0 {
                self.frame_started.set(Some(Instant::now()));
            }
            self.filled += n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use futures::FutureExt;

    /// `Trickle` never blocks, so every read completes at the first poll.
    fn now<T>(f: impl std::future::Future<Output = T>) -> T {
        f.now_or_never().expect("ready at once")
    }

    /// Hands out its bytes a few at a time, as a socket may.
    struct Trickle {
        data: Vec<u8>,
        pos: usize,
        step: usize,
    }

    impl AsyncRead for Trickle {
        fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
            let n = self.step.min(buf.len()).min(self.data.len() - self.pos);
            let pos = self.pos;
            buf[..n].copy_from_slice(&self.data[pos..pos + n]);
            self.pos += n;
            Poll::Ready(Ok(n))
        }
    }

    fn framed(bodies: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for b in bodies {
            out.extend_from_slice(&(b.len() as i32).to_be_bytes());
            out.extend_from_slice(b);
        }
        out
    }

    #[test]
    fn splits_frames_whatever_the_read_sizes() {
        let bodies: Vec<Vec<u8>> =
            (0..50u32).map(|i| (0..(i * 997 % 200_000 + 8)).map(|j| (i + j) as u8).collect()).collect();
        for step in [1, 3, 4096, 70_000, usize::MAX] {
            let mut r = FrameReader::new(Trickle { data: framed(&bodies), pos: 0, step }, None);
            let mut held = Vec::new();
            for b in &bodies {
                let (got, _) = now(r.next_frame(1 << 20)).expect("frame");
                assert_eq!(&got[..], &b[..], "step {step}");
                held.push(got); // bodies stay valid while later frames are read
            }
            for (got, b) in held.iter().zip(&bodies) {
                assert_eq!(&got[..], &b[..]);
            }
            assert!(matches!(now(r.next_frame(1 << 20)), Err(ReadError::Closed)));
        }
    }

    #[test]
    fn limits_and_truncation() {
        let mut r = FrameReader::new(Trickle { data: framed(&[vec![0; 100]]), pos: 0, step: 7 }, None);
        let e = now(r.next_frame(99)).expect_err("too large");
        assert!(matches!(e, ReadError::Frame(FrameError::TooLarge { size: 100, max: 99 })));
        let mut data = framed(&[vec![1; 100]]);
        data.truncate(50);
        let mut r = FrameReader::new(Trickle { data, pos: 0, step: 7 }, None);
        let e = now(r.next_frame(1000)).expect_err("cut");
        assert!(matches!(e, ReadError::ClosedMidFrame));
        let mut r = FrameReader::new(Trickle { data: vec![0, 0], pos: 0, step: 7 }, None);
        let e = now(r.next_frame(1000)).expect_err("cut prefix");
        assert!(matches!(e, ReadError::ClosedMidFrame));
    }
}
