//! Primitive encoding: little-endian integers, `u16`-length strings, `u32`-length byte strings,
//! `u32`-count lists. The reader checks every length against what is left before allocating,
//! so no input makes it panic or allocate more than the frame holds.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Why a body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("body ends early: {what} needs {needed} bytes, {left} left")]
    Truncated { what: &'static str, needed: usize, left: usize },
    #[error("{what} is not UTF-8")]
    NotUtf8 { what: &'static str },
    #[error("{what}: {count} exceeds the limit of {max}")]
    TooMany { what: &'static str, count: usize, max: usize },
    #[error("{0} trailing bytes after the body")]
    Trailing(usize),
    #[error("invalid value for {what}: {value}")]
    Invalid { what: &'static str, value: u64 },
}

/// Reads a body. Byte strings are zero-copy slices of the frame.
#[derive(Debug)]
pub struct Reader {
    buf: Bytes,
}

impl Reader {
    pub fn new(buf: Bytes) -> Self {
        Self { buf }
    }

    fn check(&self, what: &'static str, n: usize) -> Result<(), DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated { what, needed: n, left: self.buf.len() });
        }
        Ok(())
    }

    /// The next `n` bytes as a view of the frame (shares its buffer).
    fn take(&mut self, what: &'static str, n: usize) -> Result<Bytes, DecodeError> {
        self.check(what, n)?;
        Ok(self.buf.split_to(n))
    }

    /// The next `N` bytes, copied (no reference-count traffic on the frame's buffer).
    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        self.check(what, N)?;
        let a = self.buf[..N].try_into().expect("checked length");
        self.buf.advance(N);
        Ok(a)
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }

    pub fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    pub fn bool(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(DecodeError::Invalid { what, value: u64::from(v) }),
        }
    }

    pub fn string(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let n = usize::from(self.u16(what)?);
        self.check(what, n)?;
        let s = std::str::from_utf8(&self.buf[..n]).map_err(|_| DecodeError::NotUtf8 { what })?.to_owned();
        self.buf.advance(n);
        Ok(s)
    }

    /// An optional string: a presence byte, then the string.
    pub fn opt_string(&mut self, what: &'static str) -> Result<Option<String>, DecodeError> {
        if self.bool(what)? { self.string(what).map(Some) } else { Ok(None) }
    }

    /// An optional u64: a presence byte, then the number.
    pub fn opt_u64(&mut self, what: &'static str) -> Result<Option<u64>, DecodeError> {
        if self.bool(what)? { self.u64(what).map(Some) } else { Ok(None) }
    }

    pub fn bytes(&mut self, what: &'static str) -> Result<Bytes, DecodeError> {
        let n = self.u32(what)? as usize;
        self.take(what, n)
    }

    /// A list count, checked against `max` and against the bytes left (each item takes at
    /// least `item_bytes_min`), so a forged count cannot make the caller allocate.
    pub fn count(&mut self, what: &'static str, max: usize, item_bytes_min: usize) -> Result<usize, DecodeError> {
        let n = self.u32(what)? as usize;
        if n > max {
            return Err(DecodeError::TooMany { what, count: n, max });
        }
        if n.saturating_mul(item_bytes_min) > self.buf.len() {
            return Err(DecodeError::Truncated { what, needed: n * item_bytes_min, left: self.buf.len() });
        }
        Ok(n)
    }

    /// `n` items read by `item` (`n` already checked by [`Reader::count`]), allocated once.
    pub fn list<T>(&mut self, n: usize, mut item: impl FnMut(&mut Self) -> Result<T, DecodeError>) -> Result<Vec<T>, DecodeError> {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(item(self)?);
        }
        Ok(v)
    }

    /// Whether everything was read (for fields a newer peer adds at the end).
    pub fn at_end(&self) -> bool {
        self.buf.is_empty()
    }

    /// Fails if anything is left.
    pub fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() { Ok(()) } else { Err(DecodeError::Trailing(self.buf.len())) }
    }
}

/// Byte strings at least this long are referenced by [`Writer::shared_bytes`], not copied.
pub(crate) const SHARED_BYTES_MIN: usize = 512;

/// Writes a body.
#[derive(Debug, Default)]
pub struct Writer {
    buf: BytesMut,
    /// The body's earlier parts, when [`Writer::shared_bytes`] referenced a byte string.
    parts: Vec<Bytes>,
}

impl Writer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_capacity(n_bytes: usize) -> Self {
        Self { buf: BytesMut::with_capacity(n_bytes), parts: Vec::new() }
    }

    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.put_u8(v);
        self
    }

    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.put_u16_le(v);
        self
    }

    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.put_u32_le(v);
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.put_u64_le(v);
        self
    }

    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.u8(u8::from(v))
    }

    /// Strings longer than 65,535 bytes are cut at a character boundary; callers validate
    /// lengths first (topic, key and property limits are far below it).
    pub fn string(&mut self, s: &str) -> &mut Self {
        let mut n = s.len().min(usize::from(u16::MAX));
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        self.u16(n as u16);
        self.buf.put_slice(&s.as_bytes()[..n]);
        self
    }

    pub fn opt_string(&mut self, s: Option<&str>) -> &mut Self {
        match s {
            Some(s) => self.bool(true).string(s),
            None => self.bool(false),
        }
    }

    pub fn opt_u64(&mut self, v: Option<u64>) -> &mut Self {
        match v {
            Some(v) => self.bool(true).u64(v),
            None => self.bool(false),
        }
    }

    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.u32(b.len() as u32);
        self.buf.put_slice(b);
        self
    }

    /// As [`Writer::bytes`], but a long byte string becomes a part of its own, shared rather
    /// than copied (a message body sent from the log's mapping or the producer's buffer).
    pub fn shared_bytes(&mut self, b: &Bytes) -> &mut Self {
        if b.len() < SHARED_BYTES_MIN {
            return self.bytes(b);
        }
        self.u32(b.len() as u32);
        self.parts.push(self.buf.split().freeze());
        self.parts.push(b.clone());
        self
    }

    pub fn count(&mut self, n: usize) -> &mut Self {
        self.u32(n as u32)
    }

    /// The body in one buffer (shared parts are copied into it).
    pub fn finish(self) -> Bytes {
        if self.parts.is_empty() {
            return self.buf.freeze();
        }
        let mut out = BytesMut::with_capacity(self.parts.iter().map(Bytes::len).sum::<usize>() + self.buf.len());
        for p in &self.parts {
            out.extend_from_slice(p);
        }
        out.extend_from_slice(&self.buf);
        out.freeze()
    }

    /// The body as its parts in order, for a vectored write: nothing shared is copied.
    pub fn finish_parts(self) -> Vec<Bytes> {
        let mut parts = self.parts;
        if !self.buf.is_empty() || parts.is_empty() {
            parts.push(self.buf.freeze());
        }
        parts
    }
}
