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
        Self {
            needs,
            batch: Batch {
                count: 0,
                timestamps: Vec::new(),
                keys: Vec::new(),
                key_offsets: Vec::new(),
                tags: Vec::new(),
                tag_offsets: Vec::new(),
                properties: Vec::new(),
                property_offsets: Vec::new(),
                bodies: Vec::new(),
                body_offsets: Vec::new(),
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
