//! The commit-log record format (documented byte by byte in `docs/storage-format.md`).
//!
//! All integers are little-endian. A record is:
//! ```text
//! off  bytes  field
//!   0      4  record_bytes   whole record, this field included
//!   4      4  magic          RECORD_MAGIC (format version 1) or FILLER_MAGIC
//!   8      4  crc            CRC32C of bytes [12, record_bytes)
//!  12      8  log_offset     where the record starts in the commit log
//!  20      8  queue_offset   its index in its (topic, queue) consume queue
//!  28      4  queue_id
//!  32      8  born_ms        producer's timestamp
//!  40      8  store_ms       broker's timestamp at append
//!  48      4  flags          application flags, opaque to the store
//!  52      1  topic_bytes    1..=TOPIC_BYTES_MAX
//!  53      n  topic          UTF-8
//!   .      4  props_bytes    0..=PROPERTIES_BYTES_MAX
//!   .      n  properties     entries [code u8][len u16][value]
//!   .      4  body_bytes
//!   .      n  body
//! ```
//! A segment ends with a filler record `[remaining u32][FILLER_MAGIC]`, so every segment is a
//! sequence of whole records.

use bytes::Bytes;

/// Magic of a message record, format version 1 ("WQM" + 0x01).
pub(crate) const RECORD_MAGIC: u32 = 0x0157_514D;
/// Magic of the filler that pads a segment's tail.
pub(crate) const FILLER_MAGIC: u32 = 0xFF57_514D;
/// A filler is at least its length and magic.
pub(crate) const FILLER_BYTES_MIN: usize = 8;
/// Fixed part of a record, up to and including `topic_bytes`.
pub(crate) const HEADER_BYTES: usize = 53;
/// Longest topic name, in bytes.
pub const TOPIC_BYTES_MAX: usize = 127;
/// Most bytes of encoded properties per message.
pub const PROPERTIES_BYTES_MAX: usize = 32 << 10;
/// Most property entries per message (keys and user properties included).
pub const PROPERTIES_COUNT_MAX: usize = 64;
/// Queue ids are below this.
pub const QUEUE_ID_LIMIT: u32 = 1 << 16;
/// Bytes a record adds to its body at most: header, topic, both length fields, properties.
pub const RECORD_OVERHEAD_MAX: usize = HEADER_BYTES + TOPIC_BYTES_MAX + 4 + PROPERTIES_BYTES_MAX + 4;

const OFF_MAGIC: usize = 4;
const OFF_CRC: usize = 8;
const OFF_LOG_OFFSET: usize = 12;
const OFF_QUEUE_OFFSET: usize = 20;
const OFF_QUEUE_ID: usize = 28;
const OFF_BORN: usize = 32;
const OFF_STORE: usize = 40;
const OFF_FLAGS: usize = 48;
const OFF_TOPIC_LEN: usize = 52;

const PROP_TAGS: u8 = 1;
const PROP_KEY: u8 = 2;
const PROP_UNIQUE_ID: u8 = 3;
const PROP_ORDERING_KEY: u8 = 4;
const PROP_DELIVERY_MS: u8 = 5;
const PROP_TRANSACTION: u8 = 6;
const PROP_RECONSUME_TIMES: u8 = 7;
const PROP_USER: u8 = 8;

/// Where a transactional message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransactionState {
    /// A half message: stored, invisible to consumers until committed.
    Prepared,
    Commit,
    Rollback,
}

/// Properties the store records with a message. Unknown property codes are a decode error, so
/// adding one is a format version change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    pub tags: Option<String>,
    pub keys: Vec<String>,
    /// Producer-generated unique message id, indexed for lookup.
    pub unique_id: Option<String>,
    pub ordering_key: Option<String>,
    /// When a delayed message becomes deliverable (ms since the epoch).
    pub delivery_ms: Option<u64>,
    pub transaction: Option<TransactionState>,
    pub reconsume_times: u32,
    pub user: Vec<(String, String)>,
}

/// A message to append.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewMessage {
    pub topic: String,
    pub queue_id: u32,
    pub born_ms: u64,
    pub flags: u32,
    pub properties: Properties,
    pub body: Bytes,
}

/// A message read back from the log. `body` and `record` are views into the mapped segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub log_offset: u64,
    pub queue_offset: u64,
    pub queue_id: u32,
    pub topic: String,
    pub born_ms: u64,
    pub store_ms: u64,
    pub flags: u32,
    pub properties: Properties,
    pub body: Bytes,
    /// The whole record as stored (for replication and raw forwarding).
    pub record: Bytes,
}

/// Why bytes are not a valid record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("{0} bytes left, too few for a record header")]
    Short(usize),
    #[error("bad magic {0:#010x}")]
    BadMagic(u32),
    #[error("record length {len} out of range (at most {max})")]
    BadLength { len: u64, max: u64 },
    #[error("CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Crc { stored: u32, computed: u32 },
    #[error("record says it is at log offset {found}, but it is at {expected}")]
    WrongOffset { found: u64, expected: u64 },
    #[error("malformed record: {0}")]
    Malformed(&'static str),
}

/// Why a message cannot be appended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("invalid topic {topic:?}: {reason}")]
    InvalidTopic { topic: String, reason: &'static str },
    #[error("queue id {queue_id} is not below {QUEUE_ID_LIMIT}")]
    QueueIdTooLarge { queue_id: u32 },
    #[error("message body of {n_bytes} bytes exceeds the limit of {max}")]
    MessageTooLarge { n_bytes: usize, max: u32 },
    #[error("properties of {n_bytes} bytes exceed the limit of {PROPERTIES_BYTES_MAX}")]
    PropertiesTooLarge { n_bytes: usize },
    #[error("{count} properties exceed the limit of {PROPERTIES_COUNT_MAX}")]
    TooManyProperties { count: usize },
    #[error("property value of {n_bytes} bytes exceeds 65535")]
    PropertyTooLong { n_bytes: usize },
}

/// Checks a topic name: 1..=127 bytes of `[A-Za-z0-9_%.-]`, not starting with a dot (topic
/// names become directory names).
///
/// # Errors
/// [`MessageError::InvalidTopic`] saying what is wrong.
pub fn validate_topic(topic: &str) -> Result<(), MessageError> {
    let bad = |reason| Err(MessageError::InvalidTopic { topic: topic.chars().take(160).collect(), reason });
    if topic.is_empty() {
        return bad("empty");
    }
    if topic.len() > TOPIC_BYTES_MAX {
        return bad("longer than 127 bytes");
    }
    if topic.starts_with('.') {
        return bad("starts with a dot");
    }
    if !topic.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'%' | b'-' | b'.')) {
        return bad("only A-Z a-z 0-9 _ % - . are allowed");
    }
    Ok(())
}

/// The hash of a tag stored in consume-queue entries (0 for no tag). Stable across versions.
pub fn tag_hash(tag: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(tag.as_bytes()) | 1
}

fn put_prop(out: &mut Vec<u8>, code: u8, value: &[u8]) {
    out.push(code);
    out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    out.extend_from_slice(value);
}

/// Encodes properties, appending to `out`, checking every limit. On error `out` may hold a
/// partial encoding past its old length.
///
/// # Errors
/// A limit that the properties exceed.
pub(crate) fn encode_properties(p: &Properties, out: &mut Vec<u8>) -> Result<(), MessageError> {
    let start = out.len();
    let count = usize::from(p.tags.is_some())
        + p.keys.len()
        + usize::from(p.unique_id.is_some())
        + usize::from(p.ordering_key.is_some())
        + usize::from(p.delivery_ms.is_some())
        + usize::from(p.transaction.is_some())
        + usize::from(p.reconsume_times > 0)
        + p.user.len();
    if count > PROPERTIES_COUNT_MAX {
        return Err(MessageError::TooManyProperties { count });
    }
    let check = |n_bytes: usize| {
        if n_bytes > usize::from(u16::MAX) { Err(MessageError::PropertyTooLong { n_bytes }) } else { Ok(()) }
    };
    if let Some(t) = &p.tags {
        check(t.len())?;
        put_prop(out, PROP_TAGS, t.as_bytes());
    }
    for k in &p.keys {
        check(k.len())?;
        put_prop(out, PROP_KEY, k.as_bytes());
    }
    if let Some(u) = &p.unique_id {
        check(u.len())?;
        put_prop(out, PROP_UNIQUE_ID, u.as_bytes());
    }
    if let Some(k) = &p.ordering_key {
        check(k.len())?;
        put_prop(out, PROP_ORDERING_KEY, k.as_bytes());
    }
    if let Some(d) = p.delivery_ms {
        put_prop(out, PROP_DELIVERY_MS, &d.to_le_bytes());
    }
    if let Some(t) = p.transaction {
        let b = match t {
            TransactionState::Prepared => 1u8,
            TransactionState::Commit => 2,
            TransactionState::Rollback => 3,
        };
        put_prop(out, PROP_TRANSACTION, &[b]);
    }
    if p.reconsume_times > 0 {
        put_prop(out, PROP_RECONSUME_TIMES, &p.reconsume_times.to_le_bytes());
    }
    for (name, value) in &p.user {
        let n = 2 + name.len() + value.len();
        check(n)?;
        if name.len() > usize::from(u16::MAX) {
            return Err(MessageError::PropertyTooLong { n_bytes: name.len() });
        }
        out.push(PROP_USER);
        out.extend_from_slice(&(n as u16).to_le_bytes());
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    if out.len() - start > PROPERTIES_BYTES_MAX {
        return Err(MessageError::PropertiesTooLarge { n_bytes: out.len() - start });
    }
    Ok(())
}

fn utf8(b: &[u8]) -> Result<String, RecordError> {
    String::from_utf8(b.to_vec()).map_err(|_| RecordError::Malformed("property is not UTF-8"))
}

/// The `(code, value)` entries of encoded properties.
fn prop_entries(mut b: &[u8]) -> impl Iterator<Item = Result<(u8, &[u8]), RecordError>> {
    std::iter::from_fn(move || {
        if b.is_empty() {
            return None;
        }
        if b.len() < 3 {
            b = &[];
            return Some(Err(RecordError::Malformed("truncated property header")));
        }
        let len = usize::from(u16::from_le_bytes([b[1], b[2]]));
        let Some(v) = b.get(3..3 + len) else {
            b = &[];
            return Some(Err(RecordError::Malformed("truncated property value")));
        };
        let code = b[0];
        b = &b[3 + len..];
        Some(Ok((code, v)))
    })
}

fn decode_properties(b: &[u8]) -> Result<Properties, RecordError> {
    let mut p = Properties::default();
    for entry in prop_entries(b) {
        let (code, v) = entry?;
        match code {
            PROP_TAGS => p.tags = Some(utf8(v)?),
            PROP_KEY => p.keys.push(utf8(v)?),
            PROP_UNIQUE_ID => p.unique_id = Some(utf8(v)?),
            PROP_ORDERING_KEY => p.ordering_key = Some(utf8(v)?),
            PROP_DELIVERY_MS => {
                let a: [u8; 8] = v.try_into().map_err(|_| RecordError::Malformed("delivery time is not 8 bytes"))?;
                p.delivery_ms = Some(u64::from_le_bytes(a));
            }
            PROP_TRANSACTION => {
                p.transaction = Some(match v {
                    [1] => TransactionState::Prepared,
                    [2] => TransactionState::Commit,
                    [3] => TransactionState::Rollback,
                    _ => return Err(RecordError::Malformed("bad transaction state")),
                });
            }
            PROP_RECONSUME_TIMES => {
                let a: [u8; 4] = v.try_into().map_err(|_| RecordError::Malformed("reconsume times is not 4 bytes"))?;
                p.reconsume_times = u32::from_le_bytes(a);
            }
            PROP_USER => {
                if v.len() < 2 {
                    return Err(RecordError::Malformed("truncated user property"));
                }
                let n = usize::from(u16::from_le_bytes([v[0], v[1]]));
                let name = v.get(2..2 + n).ok_or(RecordError::Malformed("truncated user property name"))?;
                p.user.push((utf8(name)?, utf8(&v[2 + n..])?));
            }
            _ => return Err(RecordError::Malformed("unknown property code")),
        }
    }
    Ok(p)
}

/// Size of the record for a message, given its encoded properties.
pub(crate) fn record_bytes(topic: &str, props_bytes: usize, body_bytes: usize) -> usize {
    HEADER_BYTES + topic.len() + 4 + props_bytes + 4 + body_bytes
}

/// The parts of a record the appender fills in.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Placement {
    pub(crate) log_offset: u64,
    pub(crate) queue_offset: u64,
    pub(crate) store_ms: u64,
}

/// Encodes a record into `out`, which must be exactly `record_bytes(..)` long.
pub(crate) fn encode_into(out: &mut [u8], m: &NewMessage, props: &[u8], at: Placement) {
    let len = out.len();
    out[0..4].copy_from_slice(&(len as u32).to_le_bytes());
    out[OFF_MAGIC..OFF_MAGIC + 4].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
    out[OFF_LOG_OFFSET..OFF_LOG_OFFSET + 8].copy_from_slice(&at.log_offset.to_le_bytes());
    out[OFF_QUEUE_OFFSET..OFF_QUEUE_OFFSET + 8].copy_from_slice(&at.queue_offset.to_le_bytes());
    out[OFF_QUEUE_ID..OFF_QUEUE_ID + 4].copy_from_slice(&m.queue_id.to_le_bytes());
    out[OFF_BORN..OFF_BORN + 8].copy_from_slice(&m.born_ms.to_le_bytes());
    out[OFF_STORE..OFF_STORE + 8].copy_from_slice(&at.store_ms.to_le_bytes());
    out[OFF_FLAGS..OFF_FLAGS + 4].copy_from_slice(&m.flags.to_le_bytes());
    out[OFF_TOPIC_LEN] = m.topic.len() as u8;
    let mut i = HEADER_BYTES;
    out[i..i + m.topic.len()].copy_from_slice(m.topic.as_bytes());
    i += m.topic.len();
    out[i..i + 4].copy_from_slice(&(props.len() as u32).to_le_bytes());
    i += 4;
    out[i..i + props.len()].copy_from_slice(props);
    i += props.len();
    out[i..i + 4].copy_from_slice(&(m.body.len() as u32).to_le_bytes());
    i += 4;
    out[i..].copy_from_slice(&m.body);
    let crc = crc32c::crc32c(&out[OFF_LOG_OFFSET..]);
    out[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Encodes a filler covering `out` entirely (`out.len() >= FILLER_BYTES_MIN`).
pub(crate) fn encode_filler(out: &mut [u8]) {
    let len = out.len() as u32;
    out[0..4].copy_from_slice(&len.to_le_bytes());
    out[4..8].copy_from_slice(&FILLER_MAGIC.to_le_bytes());
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

/// What the first bytes at a position are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Frame {
    Record { len: usize },
    Filler { len: usize },
}

/// Reads the length and magic at the start of `b`. A record must be at most `record_max`
/// bytes (and fit in `b`); a filler must cover `b` exactly when `filler_fills` (in a segment
/// scan `b` is the rest of the segment).
pub(crate) fn peek(b: &[u8], record_max: usize, filler_fills: bool) -> Result<Frame, RecordError> {
    if b.len() < FILLER_BYTES_MIN {
        return Err(RecordError::Short(b.len()));
    }
    let len = u32_at(b, 0) as usize;
    match u32_at(b, OFF_MAGIC) {
        FILLER_MAGIC if len >= FILLER_BYTES_MIN && len <= b.len() && (!filler_fills || len == b.len()) => Ok(Frame::Filler { len }),
        FILLER_MAGIC => Err(RecordError::BadLength { len: len as u64, max: b.len() as u64 }),
        RECORD_MAGIC => {
            let max = record_max.min(b.len());
            if len < HEADER_BYTES + 1 + 8 || len > max {
                return Err(RecordError::BadLength { len: len as u64, max: max as u64 });
            }
            Ok(Frame::Record { len })
        }
        other => Err(RecordError::BadMagic(other)),
    }
}

/// The fields the store's recovery and dispatch need, read without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordHead<'a> {
    pub(crate) len: usize,
    pub(crate) log_offset: u64,
    pub(crate) queue_offset: u64,
    pub(crate) queue_id: u32,
    pub(crate) store_ms: u64,
    pub(crate) topic: &'a str,
    pub(crate) props: &'a [u8],
}

/// Checks a whole record (`b` is exactly the record): CRC, structure, and that it claims to be
/// at `expected_offset`.
pub(crate) fn check(b: &[u8], expected_offset: u64) -> Result<RecordHead<'_>, RecordError> {
    let stored = u32_at(b, OFF_CRC);
    let computed = crc32c::crc32c(&b[OFF_LOG_OFFSET..]);
    if stored != computed {
        return Err(RecordError::Crc { stored, computed });
    }
    let head = parse_head(b)?;
    if head.log_offset != expected_offset {
        return Err(RecordError::WrongOffset { found: head.log_offset, expected: expected_offset });
    }
    Ok(head)
}

fn parse_head(b: &[u8]) -> Result<RecordHead<'_>, RecordError> {
    let topic_len = usize::from(b[OFF_TOPIC_LEN]);
    let mut i = HEADER_BYTES;
    let topic = b.get(i..i + topic_len).ok_or(RecordError::Malformed("topic past end"))?;
    let topic = std::str::from_utf8(topic).map_err(|_| RecordError::Malformed("topic is not UTF-8"))?;
    i += topic_len;
    let props_len = b.get(i..i + 4).map(|_| u32_at(b, i) as usize).ok_or(RecordError::Malformed("properties length past end"))?;
    i += 4;
    let props = b.get(i..i + props_len).ok_or(RecordError::Malformed("properties past end"))?;
    i += props_len;
    let body_len = b.get(i..i + 4).map(|_| u32_at(b, i) as usize).ok_or(RecordError::Malformed("body length past end"))?;
    i += 4;
    if i + body_len != b.len() {
        return Err(RecordError::Malformed("body length disagrees with record length"));
    }
    Ok(RecordHead {
        len: b.len(),
        log_offset: u64_at(b, OFF_LOG_OFFSET),
        queue_offset: u64_at(b, OFF_QUEUE_OFFSET),
        queue_id: u32_at(b, OFF_QUEUE_ID),
        store_ms: u64_at(b, OFF_STORE),
        topic,
        props,
    })
}

/// Decodes a checked record into a message whose body is a view of `record`.
pub(crate) fn decode(record: Bytes, expected_offset: u64) -> Result<StoredMessage, RecordError> {
    let head = check(&record, expected_offset)?;
    let properties = decode_properties(head.props)?;
    let body_start = HEADER_BYTES + head.topic.len() + 4 + head.props.len() + 4;
    Ok(StoredMessage {
        log_offset: head.log_offset,
        queue_offset: head.queue_offset,
        queue_id: head.queue_id,
        topic: head.topic.to_owned(),
        born_ms: u64_at(&record, OFF_BORN),
        store_ms: head.store_ms,
        flags: u32_at(&record, OFF_FLAGS),
        properties,
        body: record.slice(body_start..),
        record: record.clone(),
    })
}

/// The tag hash and index keys of a record, read from its encoded properties.
pub(crate) struct DispatchInfo<'a> {
    pub(crate) tag_hash: u64,
    pub(crate) unique_id: Option<&'a [u8]>,
    pub(crate) keys: Vec<&'a [u8]>,
}

/// Reads what dispatch needs from encoded properties (already validated by `check`'s caller or
/// produced by the encoder).
pub(crate) fn dispatch_info(props: &[u8]) -> Result<DispatchInfo<'_>, RecordError> {
    let mut info = DispatchInfo { tag_hash: 0, unique_id: None, keys: Vec::new() };
    for entry in prop_entries(props) {
        let (code, v) = entry?;
        match code {
            PROP_TAGS => {
                let t = std::str::from_utf8(v).map_err(|_| RecordError::Malformed("tag is not UTF-8"))?;
                info.tag_hash = tag_hash(t);
            }
            PROP_KEY => info.keys.push(v),
            PROP_UNIQUE_ID => info.unique_id = Some(v),
            _ => {}
        }
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode(m: &NewMessage, at: Placement) -> Vec<u8> {
        let mut props = Vec::new();
        encode_properties(&m.properties, &mut props).unwrap();
        let mut out = vec![0; record_bytes(&m.topic, props.len(), m.body.len())];
        encode_into(&mut out, m, &props, at);
        out
    }

    fn arb_text() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9 é_-]{0,20}"
    }

    prop_compose! {
        fn arb_message()(
            topic in "[A-Za-z0-9_%-]{1,40}",
            queue_id in 0u32..QUEUE_ID_LIMIT,
            born_ms: u64,
            flags: u32,
            tags in proptest::option::of(arb_text()),
            keys in proptest::collection::vec(arb_text(), 0..4),
            unique_id in proptest::option::of(arb_text()),
            ordering_key in proptest::option::of(arb_text()),
            delivery_ms in proptest::option::of(any::<u64>()),
            transaction in proptest::option::of(prop_oneof![
                Just(TransactionState::Prepared), Just(TransactionState::Commit), Just(TransactionState::Rollback)]),
            reconsume_times: u32,
            user in proptest::collection::vec((arb_text(), arb_text()), 0..4),
            body in proptest::collection::vec(any::<u8>(), 0..2000),
        ) -> NewMessage {
            NewMessage { topic, queue_id, born_ms, flags, body: Bytes::from(body), properties: Properties {
                tags, keys, unique_id, ordering_key, delivery_ms, transaction, reconsume_times, user } }
        }
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip(m in arb_message(), log_offset in 0u64..1 << 40, queue_offset: u64, store_ms: u64) {
            let bytes = encode(&m, Placement { log_offset, queue_offset, store_ms });
            prop_assert_eq!(peek(&bytes, usize::MAX, true).unwrap(), Frame::Record { len: bytes.len() });
            let got = decode(Bytes::from(bytes), log_offset).unwrap();
            prop_assert_eq!(got.topic, m.topic);
            prop_assert_eq!(got.queue_id, m.queue_id);
            prop_assert_eq!(got.queue_offset, queue_offset);
            prop_assert_eq!(got.born_ms, m.born_ms);
            prop_assert_eq!(got.store_ms, store_ms);
            prop_assert_eq!(got.flags, m.flags);
            prop_assert_eq!(got.properties, m.properties);
            prop_assert_eq!(got.body, m.body);
        }

        #[test]
        fn any_single_bit_flip_is_detected(m in arb_message(), bit in any::<proptest::sample::Index>()) {
            let mut bytes = encode(&m, Placement { log_offset: 4096, queue_offset: 1, store_ms: 2 });
            let i = bit.index(bytes.len() * 8);
            bytes[i / 8] ^= 1 << (i % 8);
            let framed = peek(&bytes, usize::MAX, true);
            let ok = matches!(framed, Ok(Frame::Record { len }) if len == bytes.len())
                && check(&bytes, 4096).is_ok();
            prop_assert!(!ok, "flipped bit {} went unnoticed", i);
        }

        #[test]
        fn garbage_never_panics(b in proptest::collection::vec(any::<u8>(), 0..512), off: u64) {
            if let Ok(Frame::Record { len }) = peek(&b, usize::MAX, true) {
                let _ = decode(Bytes::copy_from_slice(&b[..len]), off);
            }
        }
    }

    #[test]
    fn topic_names() {
        for ok in ["a", "orders", "%RETRY%group-1", "a.b_c-d"] {
            assert!(validate_topic(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".hidden", "a/b", "a b", "ü", &"x".repeat(128)] {
            assert!(validate_topic(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn limits_are_enforced() {
        let mut out = Vec::new();
        let p = Properties { keys: vec!["k".into(); PROPERTIES_COUNT_MAX + 1], ..Default::default() };
        assert_eq!(encode_properties(&p, &mut out), Err(MessageError::TooManyProperties { count: PROPERTIES_COUNT_MAX + 1 }));
        let p = Properties { tags: Some("x".repeat(70_000)), ..Default::default() };
        assert!(matches!(encode_properties(&p, &mut out), Err(MessageError::PropertyTooLong { .. })));
        let p = Properties { user: vec![("n".into(), "v".repeat(30_000)); 2], ..Default::default() };
        assert!(matches!(encode_properties(&p, &mut out), Err(MessageError::PropertiesTooLarge { .. })));
    }
}
