//! Keeps personal data out: a message whose body carries a payment card number (13-19 digits,
//! spaces or dashes allowed between them, Luhn-valid) or, optionally, an e-mail address is
//! rejected on send (attached as a router) or dead-lettered instead of delivered (attached as
//! a group's filter). Matches are counted (`pii.cards`, `pii.emails`) and logged without the
//! data itself.
//!
//! Configuration: `emails`: `true` to also catch e-mail addresses (default `false`).

use wasmq_plugin_sdk::{Attachment, Delivery, Fields, Level, Message, Plugin, Role, Route, counter_add, export, log};

#[derive(Debug)]
pub struct PiiGuard {
    emails: bool,
}

fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let d = u32::from(*d);
            if i % 2 == 1 { if d * 2 > 9 { d * 2 - 9 } else { d * 2 } } else { d }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// True if `body` holds a Luhn-valid run of 13-19 digits (single spaces or dashes between
/// digits allowed). Longer runs are not card numbers.
#[must_use]
pub fn has_card_number(body: &[u8]) -> bool {
    let mut digits: Vec<u8> = Vec::with_capacity(19);
    let mut i = 0;
    while i <= body.len() {
        let b = body.get(i).copied();
        match b {
            Some(c @ b'0'..=b'9') => digits.push(c - b'0'),
            Some(b' ' | b'-') if !digits.is_empty() && body.get(i + 1).is_some_and(u8::is_ascii_digit) => {}
            _ => {
                if (13..=19).contains(&digits.len()) && luhn(&digits) {
                    return true;
                }
                digits.clear();
            }
        }
        i += 1;
    }
    false
}

/// True if `body` holds something shaped like `local@domain.tld`.
#[must_use]
pub fn has_email(body: &[u8]) -> bool {
    let word = |c: &u8| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-' | b'+');
    body.iter().enumerate().filter(|(_, c)| **c == b'@').any(|(at, _)| {
        let local = body[..at].iter().rev().take_while(|c| word(c)).count();
        let domain = &body[at + 1..];
        let dlen = domain.iter().take_while(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-')).count();
        let domain = &domain[..dlen];
        local > 0
            && domain.iter().position(|c| *c == b'.').is_some_and(|dot| dot > 0 && dot + 2 < domain.len() + 1 && domain.len() - dot > 2)
    })
}

impl PiiGuard {
    fn finding(&self, m: &Message<'_>) -> Option<&'static str> {
        if has_card_number(m.body()) {
            counter_add("pii.cards", 1);
            Some("a card number")
        } else if self.emails && has_email(m.body()) {
            counter_add("pii.emails", 1);
            Some("an e-mail address")
        } else {
            None
        }
    }
}

impl Plugin for PiiGuard {
    const ROLES: &'static [Role] = &[Role::Router, Role::Filter];
    const NEEDS: Fields = Fields::BODY;

    fn init(a: &Attachment) -> Result<Self, String> {
        Ok(Self { emails: a.parse("emails")?.unwrap_or(false) })
    }

    fn route(&mut self, m: &Message<'_>, _queues: u32) -> Route {
        match self.finding(m) {
            Some(what) => {
                log(Level::Warn, &format!("rejected a message carrying {what}"));
                Route::Reject(format!("message carries {what}; personal data is not allowed on this topic"))
            }
            None => Route::DefaultRouting,
        }
    }

    fn filter(&mut self, m: &Message<'_>) -> Delivery {
        match self.finding(m) {
            Some(what) => {
                log(Level::Warn, &format!("dead-lettered a message carrying {what}"));
                Delivery::DeadLetter
            }
            None => Delivery::Deliver,
        }
    }
}

export!(PiiGuard);

#[cfg(test)]
mod tests {
    use super::*;
    use wasmq_plugin_sdk::MessageBuf;

    #[test]
    fn card_numbers_are_found_with_separators_and_luhn_weeds_out_lookalikes() {
        assert!(has_card_number(b"pay with 4111 1111 1111 1111 please"));
        assert!(has_card_number(b"card=5500-0000-0000-0004;"));
        assert!(has_card_number(b"4012888888881881"));
        assert!(!has_card_number(b"order 4111111111111112 (not Luhn-valid)"));
        assert!(!has_card_number(b"phone 0123 456 789"));
        assert!(!has_card_number(b""));
    }

    #[test]
    fn emails_only_when_asked() {
        assert!(has_email(b"write to jane.doe+x@example.com today"));
        assert!(!has_email(b"@ alone, a@b, x@y."));
        let mut g = PiiGuard::init(&Attachment::for_test(Role::Filter, &[])).unwrap();
        assert_eq!(g.filter(&MessageBuf::new().body("jane@example.com").view()), Delivery::Deliver);
        let mut g = PiiGuard::init(&Attachment::for_test(Role::Filter, &[("emails", "true")])).unwrap();
        assert_eq!(g.filter(&MessageBuf::new().body("jane@example.com").view()), Delivery::DeadLetter);
        assert!(matches!(g.route(&MessageBuf::new().body("4111111111111111").view(), 4), Route::Reject(r) if r.contains("card")));
        assert_eq!(g.route(&MessageBuf::new().body("hello").view(), 4), Route::DefaultRouting);
    }
}
