//! Delivers to a consumer group only the messages that match its conditions; one binary serves
//! many groups, each attached with its own configuration.
//!
//! Configuration:
//! - `where`: conditions joined by ` and `, each `<field> <op> <value>`: field is
//!   `prop:<name>` (a user property), `tag`, or `json:<dotted.path>` (a body field); op is one
//!   of `==`, `!=`, `>`, `>=`, `<`, `<=` (numbers compare as numbers, the rest as text).
//!   Example: `prop:region == eu and json:amount > 100`.
//! - `otherwise`: what happens to a message that does not match: `skip` (default; the group's
//!   offset moves past it) or `dead-letter`.
//!
//! A missing field never matches (but `!=` does).

use serde_json::Value;
use wasmq_plugin_sdk::{Attachment, Delivery, Fields, Message, Plugin, Role, export};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Debug)]
enum Field {
    Prop(String),
    Tag,
    Json(Vec<String>),
}

#[derive(Debug)]
struct Condition {
    field: Field,
    op: Op,
    value: String,
    /// The value as a number, parsed once at `init`.
    number: Option<f64>,
}

#[derive(Debug)]
pub struct ContentFilter {
    conditions: Vec<Condition>,
    otherwise: Delivery,
    needs_json: bool,
}

fn parse_condition(c: &str) -> Result<Condition, String> {
    let ops = [("==", Op::Eq), ("!=", Op::Ne), (">=", Op::Ge), ("<=", Op::Le), (">", Op::Gt), ("<", Op::Lt)];
    let (at, sym, op) = ops
        .iter()
        .filter_map(|(s, o)| c.find(s).map(|i| (i, *s, *o)))
        .min_by_key(|(i, _, _)| *i)
        .ok_or_else(|| format!("condition {c:?} has no operator"))?;
    let (lhs, rhs) = (c[..at].trim(), c[at + sym.len()..].trim().trim_matches('"'));
    let field = if lhs == "tag" {
        Field::Tag
    } else if let Some(p) = lhs.strip_prefix("prop:") {
        Field::Prop(p.to_owned())
    } else if let Some(p) = lhs.strip_prefix("json:") {
        Field::Json(p.split('.').map(str::to_owned).collect())
    } else {
        return Err(format!("condition {c:?}: field must be prop:<name>, tag or json:<path>"));
    };
    if rhs.is_empty() || rhs.starts_with(['=', '<', '>', '!']) || lhs.ends_with(['=', '<', '>', '!']) {
        return Err(format!("condition {c:?}: after the operator comes a value (operators: == != > >= < <=)"));
    }
    Ok(Condition { field, op, value: rhs.to_owned(), number: rhs.parse().ok() })
}

fn compare(actual: &str, c: &Condition) -> bool {
    let op = c.op;
    let ord = match (c.number, c.number.and_then(|_| actual.parse::<f64>().ok())) {
        (Some(want), Some(a)) => a.partial_cmp(&want),
        _ => Some(actual.cmp(c.value.as_str())),
    };
    let Some(ord) = ord else { return op == Op::Ne };
    match op {
        Op::Eq => ord.is_eq(),
        Op::Ne => ord.is_ne(),
        Op::Gt => ord.is_gt(),
        Op::Ge => ord.is_ge(),
        Op::Lt => ord.is_lt(),
        Op::Le => ord.is_le(),
    }
}

fn json_text(v: &Value) -> Option<std::borrow::Cow<'_, str>> {
    match v {
        Value::String(s) => Some(s.as_str().into()),
        Value::Number(_) | Value::Bool(_) => Some(v.to_string().into()),
        _ => None,
    }
}

impl ContentFilter {
    fn matches(&self, m: &Message<'_>) -> bool {
        let doc: Option<Value> = if self.needs_json { serde_json::from_slice(m.body()).ok() } else { None };
        self.conditions.iter().all(|c| {
            let actual: Option<std::borrow::Cow<'_, str>> = match &c.field {
                Field::Tag => Some(m.tags().into()),
                Field::Prop(p) => m.property_str(p).map(Into::into),
                Field::Json(path) => doc.as_ref().and_then(|d| path.iter().try_fold(d, |v, p| v.get(p))).and_then(json_text),
            };
            match actual {
                Some(a) => compare(&a, c),
                None => c.op == Op::Ne,
            }
        })
    }
}

impl Plugin for ContentFilter {
    const ROLES: &'static [Role] = &[Role::Filter];
    const NEEDS: Fields = Fields::TAGS.union(Fields::PROPERTIES).union(Fields::BODY);

    fn init(a: &Attachment) -> Result<Self, String> {
        let conditions = a
            .get("where")
            .unwrap_or_default()
            .split(" and ")
            .filter(|c| !c.trim().is_empty())
            .map(parse_condition)
            .collect::<Result<Vec<_>, _>>()?;
        let otherwise = match a.get("otherwise").unwrap_or("skip") {
            "skip" => Delivery::Skip,
            "dead-letter" => Delivery::DeadLetter,
            other => return Err(format!("otherwise={other:?}: use skip or dead-letter")),
        };
        let needs_json = conditions.iter().any(|c| matches!(c.field, Field::Json(_)));
        Ok(Self { conditions, otherwise, needs_json })
    }

    /// Only what the conditions look at: a filter on properties is not passed bodies.
    fn needs(&self) -> Fields {
        self.conditions.iter().fold(Fields::empty(), |f, c| {
            f | match c.field {
                Field::Tag => Fields::TAGS,
                Field::Prop(_) => Fields::PROPERTIES,
                Field::Json(_) => Fields::BODY,
            }
        })
    }

    fn filter(&mut self, m: &Message<'_>) -> Delivery {
        if self.matches(m) { Delivery::Deliver } else { self.otherwise }
    }
}

export!(ContentFilter);

#[cfg(test)]
mod tests {
    use super::*;
    use wasmq_plugin_sdk::MessageBuf;

    fn filter(w: &str) -> ContentFilter {
        ContentFilter::init(&Attachment::for_test(Role::Filter, &[("where", w)])).unwrap()
    }

    #[test]
    fn properties_and_json_fields_combine() {
        let mut f = filter("prop:region == eu and json:amount > 100");
        let m = |region: &str, amount: &str| MessageBuf::new().property("region", region).body(format!(r#"{{"amount":{amount}}}"#));
        assert_eq!(f.filter(&m("eu", "150").view()), Delivery::Deliver);
        assert_eq!(f.filter(&m("eu", "99.5").view()), Delivery::Skip);
        assert_eq!(f.filter(&m("us", "150").view()), Delivery::Skip);
        assert_eq!(f.filter(&MessageBuf::new().property("region", "eu").body("oops").view()), Delivery::Skip);
    }

    #[test]
    fn tags_text_comparison_and_dead_letter() {
        let mut f =
            ContentFilter::init(&Attachment::for_test(Role::Filter, &[("where", "tag != debug"), ("otherwise", "dead-letter")])).unwrap();
        assert_eq!(f.filter(&MessageBuf::new().tags("debug").view()), Delivery::DeadLetter);
        assert_eq!(f.filter(&MessageBuf::new().tags("order").view()), Delivery::Deliver);
        assert_eq!(f.filter(&MessageBuf::new().view()), Delivery::Deliver);
        assert_eq!(filter("").filter(&MessageBuf::new().view()), Delivery::Deliver, "no conditions: everything");
        assert!(ContentFilter::init(&Attachment::for_test(Role::Filter, &[("where", "body == x")])).is_err());
        assert!(ContentFilter::init(&Attachment::for_test(Role::Filter, &[("where", "tag x")])).is_err());
        assert_eq!(filter("prop:a == 1 and tag == x").needs(), Fields::PROPERTIES | Fields::TAGS);
        assert_eq!(filter("json:a.b > 2").needs(), Fields::BODY);
        for bad in ["tag === x", "tag == ", "prop:a =< 3", "prop:a >> 3"] {
            let e = ContentFilter::init(&Attachment::for_test(Role::Filter, &[("where", bad)])).unwrap_err();
            assert!(e.contains("operator"), "{bad}: {e}");
        }
    }
}
