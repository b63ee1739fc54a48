//! Messages: lookup by id and by key, and one message shown whole — its fields, properties and
//! body as text, JSON or hex.

use leptos::prelude::*;
use leptos::task::spawn_local;
use wasmq_admin_types::MessageView;

use crate::{api, error_view};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyAs {
    Text,
    Json,
    Hex,
}

/// `00000010  7b 22 6e 22 3a 31 7d                              |{"n":1}|`, 16 bytes a line.
fn hex_dump(bytes: &[u8]) -> String {
    bytes
        .chunks(16)
        .enumerate()
        .map(|(i, line)| {
            let hex: Vec<String> = line.iter().map(|b| format!("{b:02x}")).collect();
            let ascii: String = line.iter().map(|&b| if (0x20..0x7f).contains(&b) { b as char } else { '.' }).collect();
            format!("{:08x}  {:<47}  |{ascii}|\n", i * 16, hex.join(" "))
        })
        .collect()
}

fn render(bytes: &[u8], as_: BodyAs) -> String {
    match as_ {
        BodyAs::Text => String::from_utf8_lossy(bytes).into_owned(),
        BodyAs::Json => match serde_json::from_slice::<serde_json::Value>(bytes) {
            Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_default(),
            Err(e) => format!("not JSON: {e}"),
        },
        BodyAs::Hex => hex_dump(bytes),
    }
}

/// One message: where it is, its fields and properties, and its body as text, JSON or hex.
#[allow(unreachable_pub, reason = "#[component] declares its props struct `pub`")]
#[component]
pub(crate) fn MessageBody(m: MessageView) -> impl IntoView {
    let bytes = api::body_bytes(&m.body_base64);
    let looks_json = serde_json::from_slice::<serde_json::Value>(&bytes).is_ok();
    let printable = std::str::from_utf8(&bytes).is_ok();
    let (as_, set_as) = signal(if looks_json {
        BodyAs::Json
    } else if printable {
        BodyAs::Text
    } else {
        BodyAs::Hex
    });
    let mode = move |a: BodyAs, label: &'static str, id: &'static str| {
        view! { <button id=id class:active=move || as_.get() == a on:click=move |_| set_as.set(a)>{label}</button> }
    };
    let shown = bytes.clone();
    view! {
        <div class="message-view">
            <dl>
                <dt>"Where"</dt><dd>{format!("{} · queue {} · offset {} · log offset {}", m.topic, m.queue_id, m.queue_offset, m.log_offset)}</dd>
                <dt>"Id"</dt><dd class="message-id">{m.unique_id.clone().unwrap_or_default()}</dd>
                <dt>"Keys"</dt><dd>{m.keys.join(", ")}</dd>
                <dt>"Tags"</dt><dd>{m.tags.clone().unwrap_or_default()}</dd>
                <dt>"Stored"</dt><dd>{api::time(m.store_ms)}</dd>
                <dt>"Born"</dt><dd>{api::time(m.born_ms)}</dd>
                <dt>"Delivery"</dt><dd>{m.delivery_ms.map(api::time).unwrap_or_else(|| "at once".into())}</dd>
                <dt>"Retries"</dt><dd>{m.reconsume_times}</dd>
                <dt>"Size"</dt><dd>{format!("{}{}", api::bytes(m.body_size as u64), if m.body_truncated { " (shown in part)" } else { "" })}</dd>
            </dl>
            {(!m.properties.is_empty()).then(|| view! {
                <table class="properties">
                    <tr><th>"Property"</th><th>"Value"</th></tr>
                    {m.properties.iter().map(|(k, v)| view! { <tr><td>{k.clone()}</td><td>{v.clone()}</td></tr> }).collect_view()}
                </table>
            })}
            <div class="body-modes">
                {mode(BodyAs::Text, "Text", "as-text")}
                {mode(BodyAs::Json, "JSON", "as-json")}
                {mode(BodyAs::Hex, "Hex", "as-hex")}
            </div>
            <pre class="body">{move || render(&shown, as_.get())}</pre>
        </div>
    }
}

/// A table of messages; a click on one shows it whole below.
#[allow(unreachable_pub, reason = "#[component] declares its props struct `pub`")]
#[component]
pub(crate) fn MessageList(messages: Vec<MessageView>) -> impl IntoView {
    let (open, set_open) = signal(None::<usize>);
    let all = messages.clone();
    view! {
        <table class="message-list">
            <tr><th>"Queue"</th><th>"Offset"</th><th>"Id"</th><th>"Keys"</th><th>"Stored"</th><th>"Body"</th></tr>
            {messages.into_iter().enumerate().map(|(i, m)| view! {
                <tr class="message" class:active=move || open.get() == Some(i) on:click=move |_| set_open.set(Some(i))>
                    <td>{m.queue_id}</td><td>{m.queue_offset}</td><td>{m.unique_id.unwrap_or_default()}</td><td>{m.keys.join(", ")}</td>
                    <td>{api::time(m.store_ms)}</td><td class="preview">{api::body_text(&m.body_base64)}</td>
                </tr>
            }).collect_view()}
        </table>
        {move || open.get().and_then(|i| all.get(i).cloned()).map(|m| view! { <MessageBody m /> })}
    }
}

#[allow(unreachable_pub, reason = "#[component] declares its props struct `pub`")]
#[component]
pub(crate) fn Messages() -> impl IntoView {
    let (id, set_id) = signal(String::new());
    let (topic, set_topic) = signal(String::new());
    let (key, set_key) = signal(String::new());
    let (found, set_found) = signal(None::<Result<Vec<MessageView>, String>>);
    let by_id = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let i = id.get_untracked();
        spawn_local(async move {
            set_found.set(Some(api::get::<MessageView>(&format!("/messages/{}", api::encode(i.trim()))).await.map(|m| vec![m])));
        });
    };
    let by_key = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let (t, k) = (topic.get_untracked(), key.get_untracked());
        spawn_local(async move {
            set_found
                .set(Some(api::get::<Vec<MessageView>>(&format!("/topics/{}/messages?key={}", api::encode(&t), api::encode(&k))).await));
        });
    };
    view! {
        <section id="messages">
            <h2>"Find messages"</h2>
            <form id="find-by-id" on:submit=by_id>
                <input id="find-id" placeholder="message id" size="36" on:input=move |ev| set_id.set(event_target_value(&ev)) />
                <button type="submit">"Find by id"</button>
            </form>
            <form id="find-by-key" on:submit=by_key>
                <input id="find-topic" placeholder="topic" on:input=move |ev| set_topic.set(event_target_value(&ev)) />
                <input id="find-key" placeholder="key" on:input=move |ev| set_key.set(event_target_value(&ev)) />
                <button type="submit">"Find by key"</button>
            </form>
            <p class="hint">"Browse a queue by offset or time from its topic's page."</p>
            {move || found.get().map(|r| match r {
                Ok(list) if list.is_empty() => view! { <p>"No message found."</p> }.into_any(),
                Ok(messages) => view! { <MessageList messages /> }.into_any(),
                Err(e) => error_view(e),
            })}
        </section>
    }
}
