//! Orders messages by a field of their JSON body, e.g. `order_id`: every message of one order
//! lands in the same queue, in the order it was sent, whatever key the producer set.
//!
//! Configuration:
//! - `field`: the field, dotted for nesting (`order.id`); default `order_id`.
//! - `missing`: when the body is not JSON or lacks the field: `message-key` (default; order by
//!   the producer's key) or `none` (no order: the producer's queue stands).

use serde_json::Value;
use wasmq_plugin_sdk::{Attachment, Fields, Message, OrderingKey, Plugin, Role, counter_add, export, key_hash};

#[derive(Debug)]
pub struct JsonOrderKey {
    path: Vec<String>,
    missing: OrderingKey,
}

/// The field's value as key bytes: strings as they are, numbers and booleans as JSON text.
fn key_of(body: &[u8], path: &[String]) -> Option<Vec<u8>> {
    let doc: Value = serde_json::from_slice(body).ok()?;
    let v = path.iter().try_fold(&doc, |v, p| v.get(p))?;
    match v {
        Value::String(s) => Some(s.clone().into_bytes()),
        Value::Number(_) | Value::Bool(_) => Some(v.to_string().into_bytes()),
        _ => None,
    }
}

impl Plugin for JsonOrderKey {
    const ROLES: &'static [Role] = &[Role::OrderingKey];
    const NEEDS: Fields = Fields::BODY;

    fn init(a: &Attachment) -> Result<Self, String> {
        let field = a.get("field").unwrap_or("order_id");
        if field.is_empty() || field.split('.').any(str::is_empty) {
            return Err(format!("field {field:?} is not a dotted field name"));
        }
        let missing = match a.get("missing").unwrap_or("message-key") {
            "message-key" => OrderingKey::MessageKey,
            "none" => OrderingKey::None,
            other => return Err(format!("missing={other:?}: use message-key or none")),
        };
        Ok(Self { path: field.split('.').map(str::to_owned).collect(), missing })
    }

    fn ordering_key(&mut self, m: &Message<'_>) -> OrderingKey {
        match key_of(m.body(), &self.path) {
            Some(k) => OrderingKey::Hashed(key_hash(&k)),
            None => {
                counter_add("missing", 1);
                self.missing
            }
        }
    }
}

export!(JsonOrderKey);

#[cfg(test)]
mod tests {
    use super::*;
    use wasmq_plugin_sdk::MessageBuf;

    fn selector(config: &[(&str, &str)]) -> JsonOrderKey {
        JsonOrderKey::init(&Attachment::for_test(Role::OrderingKey, config)).unwrap()
    }

    #[test]
    fn the_same_order_id_gives_the_same_key_whatever_else_differs() {
        let mut s = selector(&[]);
        let a = s.ordering_key(&MessageBuf::new().body(r#"{"order_id":"A-1","step":1}"#).key("x").view());
        let b = s.ordering_key(&MessageBuf::new().body(r#"{"step":2,"order_id":"A-1"}"#).key("y").view());
        let c = s.ordering_key(&MessageBuf::new().body(r#"{"order_id":"A-2"}"#).view());
        assert_eq!(a, OrderingKey::Hashed(key_hash(b"A-1")));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(s.ordering_key(&MessageBuf::new().body(r#"{"order_id":42}"#).view()), OrderingKey::Hashed(key_hash(b"42")));
    }

    #[test]
    fn nested_fields_and_missing_values() {
        let mut s = selector(&[("field", "order.id"), ("missing", "none")]);
        assert_eq!(s.ordering_key(&MessageBuf::new().body(r#"{"order":{"id":"z"}}"#).view()), OrderingKey::Hashed(key_hash(b"z")));
        assert_eq!(s.ordering_key(&MessageBuf::new().body("not json").view()), OrderingKey::None);
        assert_eq!(s.ordering_key(&MessageBuf::new().body(r#"{"order":{}}"#).view()), OrderingKey::None);
        assert_eq!(selector(&[]).ordering_key(&MessageBuf::new().body("{}").view()), OrderingKey::MessageKey);
        assert!(JsonOrderKey::init(&Attachment::for_test(Role::OrderingKey, &[("field", "a..b")])).is_err());
    }
}
