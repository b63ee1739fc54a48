//! Zero-copy views of the messages in a [`Batch`].

use crate::{Batch, Fields};

/// One message of a batch, borrowed from the batch's columns. Fields the plugin did not ask
/// for in [`crate::Plugin::NEEDS`] read as empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    timestamp_ms: i64,
    key: &'a [u8],
    tags: &'a [u8],
    properties: &'a [u8],
    body: &'a [u8],
}

/// Message `i`'s slice of a column (empty when the column was not passed). Inlined: it runs
/// four times per message.
#[inline(always)]
fn column<'a>(data: &'a [u8], offsets: &[u32], i: usize) -> &'a [u8] {
    match offsets.get(i..i + 2) {
        Some(&[a, b]) => data.get(a as usize..b as usize).unwrap_or_default(),
        _ => &[],
    }
}

impl<'a> Message<'a> {
    /// The messages of a batch, in order.
    pub fn each(batch: &'a Batch) -> impl Iterator<Item = Message<'a>> + 'a {
        (0..batch.count as usize).map(move |i| Message {
            timestamp_ms: batch.timestamps.get(i).copied().unwrap_or_default(),
            key: column(&batch.keys, &batch.key_offsets, i),
            tags: column(&batch.tags, &batch.tag_offsets, i),
            properties: column(&batch.properties, &batch.property_offsets, i),
            body: column(&batch.bodies, &batch.body_offsets, i),
        })
    }

    /// When the producer made the message (ms since the epoch): a plugin's only clock.
    #[must_use]
    pub fn timestamp_ms(&self) -> i64 {
        self.timestamp_ms
    }

    /// The ordering key the producer set, else the message's first key; `None` without one.
    #[must_use]
    pub fn key(&self) -> Option<&'a [u8]> {
        (!self.key.is_empty()).then_some(self.key)
    }

    /// The tag (RocketMQ's single sub-topic label); empty without one.
    #[must_use]
    pub fn tags(&self) -> &'a str {
        std::str::from_utf8(self.tags).unwrap_or_default()
    }

    /// The user properties, in the producer's order.
    #[must_use]
    pub fn properties(&self) -> Properties<'a> {
        Properties(self.properties)
    }

    /// The first user property called `name`.
    #[must_use]
    pub fn property(&self, name: &str) -> Option<&'a [u8]> {
        // Names compared as bytes: no UTF-8 check of the names passed over.
        let mut rest = self.properties;
        while let Some((n, v, next)) = split_property(rest) {
            if n == name.as_bytes() {
                return Some(v);
            }
            rest = next;
        }
        None
    }

    /// [`Message::property`] as UTF-8 (`None` if it is not).
    #[must_use]
    pub fn property_str(&self, name: &str) -> Option<&'a str> {
        self.property(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The body.
    #[must_use]
    pub fn body(&self) -> &'a [u8] {
        self.body
    }
}

/// Iterator over encoded user properties: `(name, value)`. Stops at the first malformed entry.
#[derive(Debug, Clone)]
pub struct Properties<'a>(&'a [u8]);

impl<'a> Iterator for Properties<'a> {
    type Item = (&'a str, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let (name, value, rest) = split_property(self.0)?;
        let name = std::str::from_utf8(name).ok()?;
        self.0 = rest;
        Some((name, value))
    }
}

/// The first encoded property of `b`: (name, value, the rest); `None` at the end or when
/// malformed.
fn split_property(b: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let n = usize::from(u16::from_le_bytes(b.get(0..2)?.try_into().ok()?));
    let name = b.get(2..2 + n)?;
    let v_at = 2 + n;
    let v = u32::from_le_bytes(b.get(v_at..v_at + 4)?.try_into().ok()?) as usize;
    let value = b.get(v_at + 4..v_at + 4 + v)?;
    Some((name, value, &b[v_at + 4 + v..]))
}

/// Appends one property in the batch encoding (`[u16 LE len][name][u32 LE len][value]`).
pub fn encode_property(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    let n = u16::try_from(name.len()).expect("property name under 64 KiB");
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&u32::try_from(value.len()).expect("property value under 4 GiB").to_le_bytes());
    out.extend_from_slice(value);
}

/// An owned message for native tests: build it, then borrow a [`Message`] with
/// [`MessageBuf::view`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageBuf {
    pub timestamp_ms: i64,
    pub key: Vec<u8>,
    pub tags: String,
    properties: Vec<u8>,
    pub body: Vec<u8>,
}

impl MessageBuf {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    #[must_use]
    pub fn key(mut self, key: impl AsRef<[u8]>) -> Self {
        self.key = key.as_ref().to_vec();
        self
    }

    #[must_use]
    pub fn tags(mut self, tags: &str) -> Self {
        tags.clone_into(&mut self.tags);
        self
    }

    #[must_use]
    pub fn property(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        encode_property(&mut self.properties, name, value.as_ref());
        self
    }

    #[must_use]
    pub fn body(mut self, body: impl AsRef<[u8]>) -> Self {
        self.body = body.as_ref().to_vec();
        self
    }

    #[must_use]
    pub fn timestamp_ms(mut self, ms: i64) -> Self {
        self.timestamp_ms = ms;
        self
    }

    /// The view a plugin sees (all fields, whatever its needs).
    #[must_use]
    pub fn view(&self) -> Message<'_> {
        Message {
            timestamp_ms: self.timestamp_ms,
            key: &self.key,
            tags: self.tags.as_bytes(),
            properties: &self.properties,
            body: &self.body,
        }
    }
}

/// Builds a [`Batch`] from owned messages, filling the columns in `needs` (the broker does the
/// same from stored messages).
#[must_use]
pub fn batch_of(messages: &[MessageBuf], needs: Fields) -> Batch {
    fn col(out: &mut Vec<u8>, offs: &mut Vec<u32>, want: bool, bytes: &[u8]) {
        if want {
            if offs.is_empty() {
                offs.push(0);
            }
            out.extend_from_slice(bytes);
            offs.push(u32::try_from(out.len()).expect("batch under 4 GiB"));
        }
    }
    let mut b = Batch {
        count: u32::try_from(messages.len()).expect("batch count"),
        timestamps: Vec::with_capacity(messages.len()),
        keys: Vec::new(),
        key_offsets: Vec::new(),
        tags: Vec::new(),
        tag_offsets: Vec::new(),
        properties: Vec::new(),
        property_offsets: Vec::new(),
        bodies: Vec::new(),
        body_offsets: Vec::new(),
    };
    for m in messages {
        b.timestamps.push(m.timestamp_ms);
        col(&mut b.keys, &mut b.key_offsets, needs.contains(Fields::KEY), &m.key);
        col(&mut b.tags, &mut b.tag_offsets, needs.contains(Fields::TAGS), m.tags.as_bytes());
        col(&mut b.properties, &mut b.property_offsets, needs.contains(Fields::PROPERTIES), &m.properties);
        col(&mut b.bodies, &mut b.body_offsets, needs.contains(Fields::BODY), &m.body);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_views_return_each_message_and_only_requested_columns() {
        let msgs = vec![
            MessageBuf::new().key("k1").tags("A").property("tenant", "acme").property("x", "").body("one"),
            MessageBuf::new().body("two").timestamp_ms(7),
        ];
        let b = batch_of(&msgs, Fields::KEY | Fields::PROPERTIES);
        let v: Vec<_> = Message::each(&b).collect();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].key(), Some(&b"k1"[..]));
        assert_eq!(v[0].property_str("tenant"), Some("acme"));
        assert_eq!(v[0].property("x"), Some(&b""[..]));
        assert_eq!(v[0].properties().count(), 2);
        assert_eq!(v[0].body(), b"", "body was not requested");
        assert_eq!(v[0].tags(), "", "tags were not requested");
        assert_eq!(v[1].key(), None);
        assert_eq!(v[1].timestamp_ms(), 7);
        let all = batch_of(&msgs, Fields::all());
        assert_eq!(Message::each(&all).nth(1).unwrap().body(), b"two");
        assert_eq!(Message::each(&all).next().unwrap(), msgs[0].view());
    }

    #[test]
    fn malformed_columns_read_as_empty_not_panic() {
        let mut b = batch_of(&[MessageBuf::new().property("a", "b")], Fields::all());
        b.property_offsets = vec![0, 999];
        b.properties.truncate(3);
        let m = Message::each(&b).next().unwrap();
        assert_eq!(m.properties().count(), 0);
        assert_eq!(crate::key_hash(b"abc"), crate::key_hash(b"abc"));
        assert_ne!(crate::key_hash(b"abc"), crate::key_hash(b"abd"));
    }
}
