//! Building the columnar [`Batch`] a plugin receives.

use crate::{Batch, Fields};

/// Builds a [`Batch`], filling only the columns in `needs` (timestamps always).
#[derive(Debug)]
pub struct BatchBuilder {
    needs: Fields,
    batch: Batch,
}

fn push_column(data: &mut Vec<u8>, offsets: &mut Vec<u32>, parts: &[&[u8]]) {
    if offsets.is_empty() {
        offsets.push(0);
    }
    for p in parts {
        data.extend_from_slice(p);
    }
    // Batches are bounded far below 4 GiB (a send or pull is at most a frame).
    offsets.push(u32::try_from(data.len()).unwrap_or(u32::MAX));
}

impl BatchBuilder {
    #[must_use]
    pub fn new(needs: Fields) -> Self {
        Self::with_capacity(needs, 0)
    }

    /// A builder with room for `messages` messages' timestamps and offsets (only the needed
    /// columns), so building a batch does not grow them step by step.
    #[must_use]
    pub fn with_capacity(needs: Fields, messages: usize) -> Self {
        let offsets = |f: Fields| Vec::with_capacity(if needs.contains(f) { messages + 1 } else { 0 });
        Self {
            needs,
            batch: Batch {
                count: 0,
                timestamps: Vec::with_capacity(messages),
                keys: Vec::new(),
                key_offsets: offsets(Fields::KEY),
                tags: Vec::new(),
                tag_offsets: offsets(Fields::TAGS),
                properties: Vec::new(),
                property_offsets: offsets(Fields::PROPERTIES),
                bodies: Vec::new(),
                body_offsets: offsets(Fields::BODY),
            },
        }
    }

    /// Appends one message. `key` is the message's ordering key (or first key; empty for
    /// none); `properties` are its user properties.
    pub fn push<'a>(
        &mut self,
        timestamp_ms: i64,
        key: &[u8],
        tags: &[u8],
        properties: impl IntoIterator<Item = (&'a str, &'a [u8])>,
        body: &[u8],
    ) {
        let b = &mut self.batch;
        b.count += 1;
        b.timestamps.push(timestamp_ms);
        if self.needs.contains(Fields::KEY) {
            push_column(&mut b.keys, &mut b.key_offsets, &[key]);
        }
        if self.needs.contains(Fields::TAGS) {
            push_column(&mut b.tags, &mut b.tag_offsets, &[tags]);
        }
        if self.needs.contains(Fields::PROPERTIES) {
            if b.property_offsets.is_empty() {
                b.property_offsets.push(0);
            }
            for (name, value) in properties {
                let n = u16::try_from(name.len()).unwrap_or(u16::MAX);
                b.properties.extend_from_slice(&n.to_le_bytes());
                b.properties.extend_from_slice(&name.as_bytes()[..usize::from(n)]);
                b.properties.extend_from_slice(&u32::try_from(value.len()).unwrap_or(u32::MAX).to_le_bytes());
                b.properties.extend_from_slice(value);
            }
            b.property_offsets.push(u32::try_from(b.properties.len()).unwrap_or(u32::MAX));
        }
        if self.needs.contains(Fields::BODY) {
            push_column(&mut b.bodies, &mut b.body_offsets, &[body]);
        }
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.batch.count as usize
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.batch.count == 0
    }

    #[must_use]
    pub fn finish(self) -> Batch {
        self.batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two(needs: Fields) -> Batch {
        let mut b = BatchBuilder::with_capacity(needs, 2);
        b.push(1, b"k1", b"t1", [("a", &b"1"[..]), ("bb", &b"22"[..])], b"body one");
        b.push(2, b"", b"", [], b"");
        b.finish()
    }

    #[test]
    fn only_the_needed_columns_are_filled_with_count_plus_one_offsets() {
        let b = two(Fields::KEY | Fields::PROPERTIES);
        assert_eq!((b.count, b.timestamps.clone()), (2, vec![1, 2]));
        assert_eq!((b.keys.as_slice(), b.key_offsets.as_slice()), (&b"k1"[..], &[0, 2, 2][..]));
        assert!(b.tags.is_empty() && b.tag_offsets.is_empty() && b.bodies.is_empty() && b.body_offsets.is_empty());
        // [u16 LE name length][name][u32 LE value length][value], per property.
        let want: Vec<u8> = [&[1, 0][..], b"a", &[1, 0, 0, 0], b"1", &[2, 0], b"bb", &[2, 0, 0, 0], b"22"].concat();
        assert_eq!(b.properties, want);
        assert_eq!(b.property_offsets, vec![0, want.len() as u32, want.len() as u32]);
    }

    #[test]
    fn every_column_when_all_are_needed() {
        let b = two(Fields::all());
        assert_eq!((b.tags.as_slice(), b.tag_offsets.as_slice()), (&b"t1"[..], &[0, 2, 2][..]));
        assert_eq!((b.bodies.as_slice(), b.body_offsets.as_slice()), (&b"body one"[..], &[0, 8, 8][..]));
        let none = two(Fields::empty());
        assert_eq!(none.count, 2);
        assert!(none.keys.is_empty() && none.properties.is_empty() && none.property_offsets.is_empty());
    }
}
