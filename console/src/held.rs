//! Messages the broker holds back: undecided transactions (by topic and producer group, with
//! check-backs) and scheduled messages (waiting, overdue, due soon).

use leptos::prelude::*;
use wasmq_admin_types::{Scheduled, Transactions};

use crate::{api, error_view, polled, refresh_tick};

#[allow(unreachable_pub, reason = "#[component] declares its props struct `pub`")]
#[component]
pub(crate) fn Held() -> impl IntoView {
    let tick = refresh_tick();
    let tx = polled::<Transactions>(tick, None, "/transactions".into());
    let scheduled = polled::<Scheduled>(tick, None, "/scheduled".into());
    view! {
        <section id="held">
            <h2>"Transactions"</h2>
            {move || tx.get().map(|r| match r {
                Ok(t) => view! {
                    <p id="transactions">{format!(
                        "{} undecided; since start {} committed, {} rolled back, {} discarded after too many checks, {} checks sent, {} answered unknown, {} late ends",
                        t.pending.iter().map(|p| p.pending).sum::<u64>(), t.committed, t.rolled_back, t.discarded, t.checks_sent, t.unknown_answers, t.late_ends
                    )}</p>
                    <table id="pending-transactions">
                        <tr><th>"Topic"</th><th>"Producer group"</th><th>"Undecided"</th><th>"Oldest"</th><th>"Checks sent"</th><th>"Most checks"</th></tr>
                        {t.pending.into_iter().map(|p| view! {
                            <tr><td>{p.topic}</td><td>{p.producer_group}</td><td>{p.pending}</td><td>{api::time(p.oldest_stored_ms)}</td><td>{p.checks}</td><td>{p.most_checks}</td></tr>
                        }).collect_view()}
                    </table>
                    <h3>"Connected producer groups"</h3>
                    <table>
                        <tr><th>"Producer group"</th><th>"Connections"</th></tr>
                        {t.producers.into_iter().map(|p| view! { <tr><td>{p.producer_group}</td><td>{p.connections}</td></tr> }).collect_view()}
                    </table>
                }.into_any(),
                Err(e) => error_view(e),
            })}
            <h2>"Scheduled messages"</h2>
            {move || scheduled.get().map(|r| match r {
                Ok(s) => view! {
                    <p id="scheduled">{format!(
                        "{} waiting ({} overdue); next due {}; {} delivered and {} dropped since start",
                        s.pending, s.overdue, s.next_due_ms.map(api::time).unwrap_or_else(|| "-".into()), s.released, s.dropped
                    )}</p>
                    <table id="due-within">
                        <tr><th>"Due within"</th><th>"Messages"</th></tr>
                        {s.due_within.into_iter().map(|d| view! { <tr><td>{api::duration(d.within_ms)}</td><td>{d.count}</td></tr> }).collect_view()}
                    </table>
                }.into_any(),
                Err(e) => error_view(e),
            })}
        </section>
    }
}
