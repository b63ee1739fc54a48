//! A topic's queues, retention, rate, plugins and messages, with a test send; a group's lag
//! chart, offset reset and dead letters.

use leptos::prelude::*;
use leptos::task::spawn_local;
use wasmq_admin_types::{AttachmentView, DeadLetter, QueuePage, SentMessage, TopicDetail};

use crate::{api, error_view, polled, refresh_tick};

/// An SVG sparkline of `values` (no scripts, no inline styles: the page's CSP allows neither).
fn sparkline(values: Vec<f64>) -> impl IntoView {
    let max = values.iter().copied().fold(0.0_f64, f64::max).max(1.0);
    let n = values.len().max(2) - 1;
    let points: String =
        values.iter().enumerate().map(|(i, v)| format!("{:.1},{:.1} ", i as f64 * 100.0 / n as f64, 20.0 - v / max * 19.0)).collect();
    view! {
        <svg class="spark" viewBox="0 0 100 20" preserveAspectRatio="none" role="img">
            <polyline points=points fill="none" stroke="currentColor" stroke-width="0.8" />
        </svg>
    }
}

#[allow(unreachable_pub, reason = "#[component] declares its props struct `pub`")]
#[component]
pub(crate) fn TopicDetail(topic: String) -> impl IntoView {
    let tick = refresh_tick();
    let detail = polled::<TopicDetail>(tick, None, format!("/topics/{topic}"));
    let rate = polled::<Vec<(u64, f64)>>(tick, None, format!("/topics/{topic}/rate"));
    let t5 = topic.clone();
    let plugins = LocalResource::new(move || {
        tick.get();
        let t = t5.clone();
        async move {
            api::get::<Vec<AttachmentView>>("/attachments").await.map(|all| all.into_iter().filter(|a| a.topic == t).collect::<Vec<_>>())
        }
    });
    // Browsing a queue from an offset or a time.
    let (queue, set_queue) = signal("0".to_owned());
    let (from, set_from) = signal("0".to_owned());
    let (since, set_since) = signal(String::new());
    let (page, set_page) = signal(None::<Result<QueuePage, String>>);
    let t3 = topic.clone();
    let browse = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let (t, q) = (t3.clone(), queue.get_untracked());
        let at = match since.get_untracked() {
            s if s.is_empty() => format!("offset={}", from.get_untracked()),
            s => match api::parse_local_time(&s) {
                Some(ms) => format!("time={ms}"),
                None => return set_page.set(Some(Err(format!("not a time: {s}")))),
            },
        };
        spawn_local(async move {
            set_page.set(Some(api::get::<QueuePage>(&format!("/topics/{t}/queues/{q}/messages?{at}&count=50")).await));
        });
    };
    // A test message.
    let (body, set_body) = signal(String::new());
    let (key, set_key) = signal(String::new());
    let (sent, set_sent) = signal(None::<Result<SentMessage, String>>);
    let t4 = topic.clone();
    let send = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let k = key.get_untracked();
        let msg = serde_json::json!({ "body": body.get_untracked(), "key": if k.is_empty() { None } else { Some(k) } }).to_string();
        let t = t4.clone();
        spawn_local(async move { set_sent.set(Some(api::send::<SentMessage>("POST", &format!("/topics/{t}/messages"), Some(msg)).await)) });
    };
    view! {
        <article id="topic-detail">
            <h3>{topic.clone()}</h3>
            <p>"Messages per second, last ten minutes: "
                {move || rate.get().map(|r| match r {
                    Ok(points) => sparkline(points.into_iter().map(|(_, v)| v).collect()).into_any(),
                    Err(e) => error_view(e),
                })}
            </p>
            {move || detail.get().map(|r| match r {
                Ok(d) => view! {
                    <p id="topic-retention">{match d.retention_ms {
                        Some(ms) => format!("Messages stay readable for {} (then the topic drops them).", api::duration(ms)),
                        None => "Messages stay as long as the log keeps them.".to_owned(),
                    }}</p>
                    <table id="topic-queues">
                        <tr><th>"Queue"</th><th>"Min offset"</th><th>"Max offset"</th></tr>
                        {d.queues.into_iter().map(|q| view! { <tr><td>{q.queue_id}</td><td>{q.min_offset}</td><td>{q.max_offset}</td></tr> }).collect_view()}
                    </table>
                }.into_any(),
                Err(e) => error_view(e),
            })}
            {move || plugins.get().map(|r| match r {
                Ok(list) if list.is_empty() => view! { <p>"No plugin attached."</p> }.into_any(),
                Ok(list) => view! {
                    <p id="topic-plugins">"Plugins: " {list.into_iter().map(|a| format!(
                        "{}@{} as {}{} ({} messages, {} errors)", a.plugin, a.version, a.role, a.group.map(|g| format!(" for {g}")).unwrap_or_default(), a.stats.messages, a.stats.errors
                    )).collect::<Vec<_>>().join("; ")}</p>
                }.into_any(),
                Err(e) => error_view(e),
            })}
            <form id="send-message" on:submit=send>
                <input id="send-body" placeholder="body" on:input=move |ev| set_body.set(event_target_value(&ev)) />
                <input id="send-key" placeholder="key (optional)" on:input=move |ev| set_key.set(event_target_value(&ev)) />
                <button type="submit">"Send a test message"</button>
            </form>
            {move || sent.get().map(|r| match r {
                Ok(s) => view! { <p id="sent">{format!("sent {} to queue {} at offset {}", s.message_id, s.queue_id, s.queue_offset)}</p> }.into_any(),
                Err(e) => error_view(e),
            })}
            <form id="browse" on:submit=browse>
                "Queue " <input id="browse-queue" type="number" min="0" prop:value=queue on:input=move |ev| set_queue.set(event_target_value(&ev)) />
                " from offset " <input id="browse-offset" type="number" min="0" prop:value=from on:input=move |ev| set_from.set(event_target_value(&ev)) />
                " or from time " <input id="browse-time" type="datetime-local" step="1" on:input=move |ev| set_since.set(event_target_value(&ev)) />
                <button type="submit">"Browse"</button>
            </form>
            {move || page.get().map(|r| match r {
                Ok(p) => view! {
                    <div id="browsed"><crate::message::MessageList messages=p.messages /></div>
                    <p>{format!("next offset {} (the queue holds {}..{})", p.next_offset, p.min_offset, p.max_offset)}</p>
                }.into_any(),
                Err(e) => error_view(e),
            })}
        </article>
    }
}

#[allow(unreachable_pub, reason = "#[component] declares its props struct `pub`")]
#[component]
pub(crate) fn GroupTools(group: String) -> impl IntoView {
    let tick = refresh_tick();
    let (changed, set_changed) = signal(0u32);
    let lag = polled::<Vec<(u64, u64)>>(tick, None, format!("/groups/{group}/lag-history"));
    let dlq = polled::<Vec<DeadLetter>>(tick, Some(changed), format!("/groups/{group}/dlq"));
    let (topic, set_topic) = signal(String::new());
    let (to, set_to) = signal("earliest".to_owned());
    let (at, set_at) = signal(String::new());
    let (outcome, set_outcome) = signal(None::<Result<String, String>>);
    let g3 = group.clone();
    let reset = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let to = match to.get_untracked().as_str() {
            "time" => match api::parse_local_time(&at.get_untracked()) {
                Some(ms) => ms.to_string(),
                None => return set_outcome.set(Some(Err("choose the time to reset to".into()))),
            },
            other => other.to_owned(),
        };
        let body = serde_json::json!({ "topic": topic.get_untracked(), "to": to }).to_string();
        let g = g3.clone();
        spawn_local(async move {
            let r = api::send::<serde_json::Value>("POST", &format!("/groups/{g}/reset-offset"), Some(body)).await;
            set_outcome.set(Some(r.map(|_| "offsets reset".to_owned())));
        });
    };
    let g4 = group.clone();
    let resend = move |offset: Option<u64>| {
        let g = g4.clone();
        spawn_local(async move {
            let r = match offset {
                Some(o) => {
                    api::send::<serde_json::Value>("POST", &format!("/groups/{g}/dlq/resend"), Some(format!("{{\"queue_offset\":{o}}}")))
                        .await
                        .map(|_| format!("dead letter {o} resent"))
                }
                None => api::send::<serde_json::Value>("POST", &format!("/groups/{g}/dlq/resend-all"), None)
                    .await
                    .map(|v| format!("{} dead letters resent", v["resent"])),
            };
            set_outcome.set(Some(r));
            set_changed.update(|c| *c += 1);
        });
    };
    let resend_all = resend.clone();
    view! {
        <div class="group-tools">
            <p>"Lag, last ten minutes: "
                {move || lag.get().map(|r| match r {
                    Ok(points) => sparkline(points.into_iter().map(|(_, v)| v as f64).collect()).into_any(),
                    Err(e) => error_view(e),
                })}
            </p>
            <form class="reset-offset" on:submit=reset>
                "Reset offsets of topic " <input class="reset-topic" placeholder="topic" on:input=move |ev| set_topic.set(event_target_value(&ev)) />
                " to " <select class="reset-to" on:change=move |ev| set_to.set(event_target_value(&ev))>
                    <option value="earliest">"earliest"</option>
                    <option value="latest">"latest"</option>
                    <option value="time">"a time"</option>
                </select>
                <Show when=move || to.get() == "time">
                    " " <input class="reset-time" type="datetime-local" step="1" on:input=move |ev| set_at.set(event_target_value(&ev)) />
                </Show>
                <button type="submit">"Reset"</button>
            </form>
            {move || outcome.get().map(|r| match r {
                Ok(t) => view! { <p class="done">{t}</p> }.into_any(),
                Err(e) => error_view(e),
            })}
            {move || dlq.get().map(|r| match r {
                Ok(list) if list.is_empty() => view! { <p>"No dead letters."</p> }.into_any(),
                Ok(list) => {
                    let resend = resend.clone();
                    let resend_all = resend_all.clone();
                    view! {
                        <h4>"Dead letters " <button class="resend-all" on:click=move |_| resend_all(None)>"Resend all"</button></h4>
                        <table class="dlq">
                            <tr><th>"Offset"</th><th>"Id"</th><th>"From"</th><th>"Tries"</th><th>"Body"</th><th></th></tr>
                            {list.into_iter().map(|d| {
                                let resend = resend.clone();
                                let o = d.queue_offset;
                                view! { <tr class="dead-letter"><td>{d.queue_offset}</td><td>{d.message_id}</td><td>{d.origin_topic}</td><td>{d.reconsume_times}</td>
                                    <td>{d.body_preview}</td><td><button on:click=move |_| resend(Some(o))>"Resend"</button></td></tr> }
                            }).collect_view()}
                        </table>
                    }.into_any()
                }
                Err(e) => error_view(e),
            })}
        </div>
    }
}
