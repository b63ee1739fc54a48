//! Frames: `frame_bytes u32 | kind u8 | request_id u32 | code u16 | body`.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Largest frame (after the length field) a broker or client accepts: a 4 MiB message batch
/// limit plus headers fits well within it; anything larger is refused before it is buffered.
pub const FRAME_BYTES_MAX: usize = 16 << 20;
/// Bytes of a frame before its body, the length field included.
pub const FRAME_HEADER_BYTES: usize = 4 + 1 + 4 + 2;

/// Request or response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Request = 1,
    Response = 2,
}

/// One frame. For a request `code` is the op; for a response it is the status (0 = ok).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: Kind,
    pub request_id: u32,
    pub code: u16,
    pub body: Bytes,
}

/// A frame to send whose body may be in parts (see [`crate::Writer::shared_bytes`]): large
/// message bodies are written from where they are, not copied into the frame first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutFrame {
    pub kind: Kind,
    pub request_id: u32,
    pub code: u16,
    pub parts: Vec<Bytes>,
}

impl From<Frame> for OutFrame {
    fn from(f: Frame) -> Self {
        Self { kind: f.kind, request_id: f.request_id, code: f.code, parts: vec![f.body] }
    }
}

impl OutFrame {
    fn body_len(&self) -> usize {
        self.parts.iter().map(Bytes::len).sum()
    }

    fn put_header(&self, out: &mut BytesMut) {
        out.put_u32_le((FRAME_HEADER_BYTES - 4 + self.body_len()) as u32);
        out.put_u8(self.kind as u8);
        out.put_u32_le(self.request_id);
        out.put_u16_le(self.code);
    }
}

/// Parts shorter than this are copied next to their neighbours by [`gather_batch`]; longer
/// ones are referenced (a slice of their own in the vectored write).
const GATHER_COPY_BYTES_MAX: usize = 2048;

/// Lays out `first` and as many of `more` as are ready, up to [`WRITE_BATCH_BYTES_MAX`], as
/// the slices of one vectored write into `out`: headers and short parts are copied into
/// `scratch` (whose spare capacity is reused), long parts are referenced where they are.
pub fn gather_batch(first: OutFrame, more: impl Iterator<Item = OutFrame>, scratch: &mut BytesMut, out: &mut Vec<Bytes>) {
    let mut total = 0;
    for f in std::iter::once(first).chain(more) {
        f.put_header(scratch);
        total += FRAME_HEADER_BYTES;
        for p in f.parts {
            total += p.len();
            if p.len() <= GATHER_COPY_BYTES_MAX {
                scratch.extend_from_slice(&p);
            } else {
                if !scratch.is_empty() {
                    out.push(scratch.split().freeze());
                }
                out.push(p);
            }
        }
        if total >= WRITE_BATCH_BYTES_MAX {
            break;
        }
    }
    if !scratch.is_empty() {
        out.push(scratch.split().freeze());
    }
}

impl Frame {
    /// Appends the encoded frame to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(FRAME_HEADER_BYTES + self.body.len());
        out.put_u32_le((FRAME_HEADER_BYTES - 4 + self.body.len()) as u32);
        out.put_u8(self.kind as u8);
        out.put_u32_le(self.request_id);
        out.put_u16_le(self.code);
        out.put_slice(&self.body);
    }

    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::new();
        self.encode(&mut b);
        b.freeze()
    }
}

/// Most bytes of frames gathered into one socket write.
pub const WRITE_BATCH_BYTES_MAX: usize = 1 << 20;

/// A frame that cannot be accepted; the connection cannot continue after it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {n_bytes} bytes exceeds the limit of {max}")]
    TooLarge { n_bytes: usize, max: usize },
    #[error("frame of {n_bytes} bytes is shorter than a frame header")]
    TooShort { n_bytes: usize },
    #[error("unknown frame kind {0}")]
    BadKind(u8),
}

/// Cuts frames out of a byte stream, refusing oversized ones from their length field alone.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    max: usize,
}

impl FrameDecoder {
    pub fn new(max: usize) -> Self {
        Self { max: max.min(FRAME_BYTES_MAX) }
    }

    /// The next whole frame in `buf`, if there is one; consumed bytes are removed.
    ///
    /// # Errors
    /// [`FrameError`]: the stream is not valid and must be closed.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if buf.len() < 4 {
            return Ok(None);
        }
        let n = u32::from_le_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
        if n > self.max {
            return Err(FrameError::TooLarge { n_bytes: n, max: self.max });
        }
        if n < FRAME_HEADER_BYTES - 4 {
            return Err(FrameError::TooShort { n_bytes: n });
        }
        if buf.len() < 4 + n {
            buf.reserve(4 + n - buf.len());
            return Ok(None);
        }
        let kind = match buf[4] {
            1 => Kind::Request,
            2 => Kind::Response,
            k => return Err(FrameError::BadKind(k)),
        };
        buf.advance(5);
        let request_id = buf.get_u32_le();
        let code = buf.get_u16_le();
        let body = buf.split_to(n - (FRAME_HEADER_BYTES - 4)).freeze();
        Ok(Some(Frame { kind, request_id, code, body }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn gathered_frames_are_the_encoded_frames(bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..6000), 1..6),
                                                  cut in 0usize..6000) {
            let frames: Vec<Frame> = bodies.iter().enumerate().map(|(i, b)| Frame {
                kind: Kind::Response, request_id: i as u32, code: 0, body: Bytes::from(b.clone()),
            }).collect();
            let mut expected = BytesMut::new();
            for f in &frames { f.encode(&mut expected); }
            // Each body in two parts, cut anywhere, so short and long parts both occur.
            let mut out_frames = frames.iter().map(|f| {
                let at = cut.min(f.body.len());
                OutFrame { kind: f.kind, request_id: f.request_id, code: f.code, parts: vec![f.body.slice(..at), f.body.slice(at..)] }
            });
            let first = out_frames.next().unwrap();
            let (mut scratch, mut parts) = (BytesMut::new(), Vec::new());
            gather_batch(first, out_frames, &mut scratch, &mut parts);
            prop_assert_eq!(parts.concat(), expected.to_vec());
        }

        #[test]
        fn frames_round_trip_in_any_split(bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..8),
                                         split in 1usize..50) {
            let frames: Vec<Frame> = bodies.iter().enumerate().map(|(i, b)| Frame {
                kind: if i % 2 == 0 { Kind::Request } else { Kind::Response },
                request_id: i as u32 * 7,
                code: i as u16,
                body: Bytes::from(b.clone()),
            }).collect();
            let mut stream = BytesMut::new();
            for f in &frames { f.encode(&mut stream); }
            let dec = FrameDecoder::new(FRAME_BYTES_MAX);
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for chunk in stream.chunks(split) {
                buf.extend_from_slice(chunk);
                while let Some(f) = dec.decode(&mut buf).unwrap() { got.push(f); }
            }
            prop_assert_eq!(got, frames);
        }

        #[test]
        fn random_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let dec = FrameDecoder::new(1024);
            let mut buf = BytesMut::from(&b[..]);
            while let Ok(Some(_)) = dec.decode(&mut buf) {}
        }
    }

    #[test]
    fn oversized_frames_are_refused_from_the_length_alone() {
        let dec = FrameDecoder::new(1000);
        let mut buf = BytesMut::from(&u32::MAX.to_le_bytes()[..]);
        assert_eq!(dec.decode(&mut buf), Err(FrameError::TooLarge { n_bytes: u32::MAX as usize, max: 1000 }));
        let mut buf = BytesMut::from(&3u32.to_le_bytes()[..]);
        assert_eq!(dec.decode(&mut buf), Err(FrameError::TooShort { n_bytes: 3 }));
    }
}
