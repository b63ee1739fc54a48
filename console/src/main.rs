//! wasmq's admin console: a client-side leptos app that talks only to the broker's documented
//! admin API (`/api/v1`, bearer token kept in the browser's local storage).

mod api;
mod detail;

use leptos::prelude::*;
use leptos::task::spawn_local;
use wasmq_admin_types::{BrokerInfo, GroupDetail, GroupSummary, ReplicaStatus, Scheduled, TopicSummary, Transactions};

/// How often the pages refresh their figures.
const REFRESH_MS: u64 = 3_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Page {
    Overview,
    Topics,
    Groups,
    Messages,
    Plugins,
}

fn main() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(App);
}

/// A signal that ticks every [`REFRESH_MS`]: resources reading it load again.
fn refresh_tick() -> ReadSignal<u64> {
    let (tick, set_tick) = signal(0u64);
    if let Ok(handle) = set_interval_with_handle(move || set_tick.update(|t| *t += 1), std::time::Duration::from_millis(REFRESH_MS)) {
        on_cleanup(move || handle.clear());
    }
    tick
}

/// An error from the API, shown where it happened.
fn error_view(e: String) -> AnyView {
    view! { <p class="error" role="alert">{e}</p> }.into_any()
}

#[component]
fn App() -> impl IntoView {
    let (token, set_token) = signal(api::token());
    let (page, set_page) = signal(Page::Overview);
    let (dark, set_dark) = signal(api::dark_mode());
    Effect::new(move |_| api::set_dark_mode(dark.get()));
    let tab = move |p: Page, label: &'static str| {
        view! {
            <button class:active=move || page.get() == p on:click=move |_| set_page.set(p)>{label}</button>
        }
    };
    view! {
        <Show when=move || token.get().is_some() fallback=move || view! { <Login set_token /> }>
            <header>
                <h1>"wasmq"</h1>
                <nav>
                    {tab(Page::Overview, "Overview")}
                    {tab(Page::Topics, "Topics")}
                    {tab(Page::Groups, "Groups")}
                    {tab(Page::Messages, "Messages")}
                    {tab(Page::Plugins, "Plugins")}
                </nav>
                <button id="dark" on:click=move |_| set_dark.update(|d| *d = !*d)>{move || if dark.get() { "Light" } else { "Dark" }}</button>
                <button id="logout" on:click=move |_| { api::set_token(None); set_token.set(None); }>"Log out"</button>
            </header>
            <main>
                {move || match page.get() {
                    Page::Overview => view! { <Overview /> }.into_any(),
                    Page::Topics => view! { <Topics /> }.into_any(),
                    Page::Groups => view! { <Groups /> }.into_any(),
                    Page::Messages => view! { <Messages /> }.into_any(),
                    Page::Plugins => view! { <detail::Plugins /> }.into_any(),
                }}
            </main>
        </Show>
    }
}

#[component]
fn Login(set_token: WriteSignal<Option<String>>) -> impl IntoView {
    let (input, set_input) = signal(String::new());
    let (failure, set_failure) = signal(None::<String>);
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let t = input.get_untracked();
        spawn_local(async move {
            api::set_token(Some(&t));
            // The token is checked by reading something with it.
            match api::get::<BrokerInfo>("/broker").await {
                Ok(_) => set_token.set(Some(t)),
                Err(e) => {
                    api::set_token(None);
                    set_failure.set(Some(e));
                }
            }
        });
    };
    view! {
        <form id="login" on:submit=submit>
            <h1>"wasmq console"</h1>
            <label>"Admin or read-only token " <input id="token" type="password" on:input=move |ev| set_input.set(event_target_value(&ev)) /></label>
            <button type="submit">"Log in"</button>
            {move || failure.get().map(error_view)}
        </form>
    }
}

#[component]
fn Overview() -> impl IntoView {
    let tick = refresh_tick();
    let info = LocalResource::new(move || {
        tick.get();
        api::get::<BrokerInfo>("/broker")
    });
    let replicas = LocalResource::new(move || {
        tick.get();
        api::get::<ReplicaStatus>("/replicas")
    });
    let tx = LocalResource::new(move || {
        tick.get();
        api::get::<Transactions>("/transactions")
    });
    let scheduled = LocalResource::new(move || {
        tick.get();
        api::get::<Scheduled>("/scheduled")
    });
    view! {
        <section id="overview">
            <h2>"Broker"</h2>
            {move || info.get().map(|r| match r {
                Ok(b) => view! {
                    <dl>
                        <dt>"Name"</dt><dd id="broker-name">{b.broker_name}</dd>
                        <dt>"Version"</dt><dd>{b.version}</dd>
                        <dt>"Address"</dt><dd>{b.listen}</dd>
                        <dt>"Flush"</dt><dd>{b.flush}</dd>
                        <dt>"Log"</dt><dd>{format!("{} … {} (durable {})", b.log_min_offset, b.log_end_offset, b.log_durable_offset)}</dd>
                        <dt>"Topics"</dt><dd>{b.topics}</dd>
                    </dl>
                }.into_any(),
                Err(e) => error_view(e),
            })}
            <h2>"Replicas"</h2>
            {move || replicas.get().map(|r| match r {
                Ok(r) => view! {
                    <table id="replicas">
                        <tr><th>"Broker"</th><th>"Id"</th><th>"Role"</th><th>"Log end"</th><th>"Lag (bytes)"</th><th>"Lag (s)"</th><th>"Link"</th></tr>
                        <tr><td>{r.broker_name.clone()}</td><td>{r.broker_id}</td><td>{r.role.clone()}</td><td>{r.log_end_offset}</td>
                            <td>{r.master.as_ref().map_or("-".to_owned(), |m| m.lag_bytes.to_string())}</td><td>"-"</td>
                            <td>{r.master.as_ref().map_or(r.replication.clone(), |m| if m.connected { "connected".to_owned() } else { "down".to_owned() })}</td></tr>
                        {r.slaves.into_iter().map(|s| view! {
                            <tr><td>{r.broker_name.clone()}</td><td>{s.broker_id}</td><td>"slave"</td><td>{s.acked_offset}</td>
                                <td>{s.lag_bytes}</td><td>{format!("{:.1}", s.lag_ms as f64 / 1000.0)}</td>
                                <td>{if s.connected { "connected" } else { "down" }}</td></tr>
                        }).collect_view()}
                    </table>
                }.into_any(),
                Err(e) => error_view(e),
            })}
            <h2>"Held messages"</h2>
            {move || tx.get().map(|r| match r {
                Ok(t) => view! {
                    <p id="transactions">{format!(
                        "{} undecided transactions; since start {} committed, {} rolled back, {} discarded, {} checks sent",
                        t.pending.iter().map(|p| p.pending).sum::<u64>(), t.committed, t.rolled_back, t.discarded, t.checks_sent
                    )}</p>
                }.into_any(),
                Err(e) => error_view(e),
            })}
            {move || scheduled.get().map(|r| match r {
                Ok(s) => view! { <p id="scheduled">{format!("{} scheduled messages waiting; {} delivered since start", s.pending, s.released)}</p> }.into_any(),
                Err(e) => error_view(e),
            })}
        </section>
    }
}

#[component]
fn Topics() -> impl IntoView {
    let tick = refresh_tick();
    let (changed, set_changed) = signal(0u32);
    let topics = LocalResource::new(move || {
        tick.get();
        changed.get();
        api::get::<Vec<TopicSummary>>("/topics")
    });
    let (name, set_name) = signal(String::new());
    let (queues, set_queues) = signal("8".to_owned());
    let (open, set_open) = signal(None::<String>);
    let (failure, set_failure) = signal(None::<String>);
    let create = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let body =
            serde_json::json!({ "name": name.get_untracked(), "queues": queues.get_untracked().parse::<u32>().unwrap_or(0) }).to_string();
        spawn_local(async move {
            match api::send::<TopicSummary>("POST", "/topics", Some(body)).await {
                Ok(_) => set_failure.set(None),
                Err(e) => set_failure.set(Some(e)),
            }
            set_changed.update(|c| *c += 1);
        });
    };
    let delete = move |topic: String| {
        spawn_local(async move {
            if let Err(e) = api::send::<serde_json::Value>("DELETE", &format!("/topics/{topic}"), None).await {
                set_failure.set(Some(e));
            }
            set_changed.update(|c| *c += 1);
        });
    };
    view! {
        <section id="topics">
            <h2>"Topics"</h2>
            <form id="create-topic" on:submit=create>
                <input id="topic-name" placeholder="name" on:input=move |ev| set_name.set(event_target_value(&ev)) />
                <input id="topic-queues" type="number" min="1" prop:value=queues on:input=move |ev| set_queues.set(event_target_value(&ev)) />
                <button type="submit">"Create"</button>
            </form>
            {move || failure.get().map(error_view)}
            {move || topics.get().map(|r| match r {
                Ok(list) => view! {
                    <table>
                        <tr><th>"Topic"</th><th>"Queues"</th><th></th></tr>
                        {list.into_iter().map(|t| {
                            let (n, o) = (t.name.clone(), t.name.clone());
                            view! { <tr class="topic"><td><a href="#" class="open-topic" on:click=move |ev| { ev.prevent_default(); set_open.set(Some(o.clone())); }>{t.name}</a></td><td>{t.queues}</td>
                                <td><button on:click=move |_| delete(n.clone())>"Delete"</button></td></tr> }
                        }).collect_view()}
                    </table>
                }.into_any(),
                Err(e) => error_view(e),
            })}
            {move || open.get().map(|t| view! { <detail::TopicDetail topic=t /> })}
        </section>
    }
}

#[component]
fn Groups() -> impl IntoView {
    let tick = refresh_tick();
    let groups = LocalResource::new(move || {
        tick.get();
        async move {
            let list = api::get::<Vec<GroupSummary>>("/groups").await?;
            let mut details = Vec::new();
            for g in list {
                details.push(api::get::<GroupDetail>(&format!("/groups/{}", g.name)).await?);
            }
            Ok::<_, String>(details)
        }
    });
    view! {
        <section id="groups">
            <h2>"Consumer groups"</h2>
            {move || groups.get().map(|r| match r {
                Ok(list) => list.into_iter().map(|g| view! {
                    <article class="group">
                        <h3>{g.name.clone()}</h3>
                        <p>{format!("{} · generation {} · {} members · lag {}", g.mode, g.generation, g.members.len(), g.queues.iter().map(|q| q.lag).sum::<u64>())}</p>
                        <table>
                            <tr><th>"Topic"</th><th>"Queue"</th><th>"Committed"</th><th>"Max"</th><th>"Lag"</th></tr>
                            {g.queues.into_iter().map(|q| view! {
                                <tr><td>{q.topic}</td><td>{q.queue_id}</td><td>{q.committed.map_or("-".to_owned(), |c| c.to_string())}</td><td>{q.max_offset}</td><td class="lag">{q.lag}</td></tr>
                            }).collect_view()}
                        </table>
                        <detail::GroupTools group=g.name.clone() />
                    </article>
                }).collect_view().into_any(),
                Err(e) => error_view(e),
            })}
        </section>
    }
}

#[component]
fn Messages() -> impl IntoView {
    let (topic, set_topic) = signal(String::new());
    let (key, set_key) = signal(String::new());
    let (found, set_found) = signal(None::<Result<Vec<wasmq_admin_types::MessageView>, String>>);
    let search = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let (t, k) = (topic.get_untracked(), key.get_untracked());
        spawn_local(async move {
            set_found
                .set(Some(api::get::<Vec<wasmq_admin_types::MessageView>>(&format!("/topics/{t}/messages?key={}", api::encode(&k))).await));
        });
    };
    view! {
        <section id="messages">
            <h2>"Find messages by key"</h2>
            <form id="find-by-key" on:submit=search>
                <input id="find-topic" placeholder="topic" on:input=move |ev| set_topic.set(event_target_value(&ev)) />
                <input id="find-key" placeholder="key" on:input=move |ev| set_key.set(event_target_value(&ev)) />
                <button type="submit">"Find"</button>
            </form>
            {move || found.get().map(|r| match r {
                Ok(list) if list.is_empty() => view! { <p>"No message with this key."</p> }.into_any(),
                Ok(list) => view! {
                    <table>
                        <tr><th>"Queue"</th><th>"Offset"</th><th>"Id"</th><th>"Body"</th></tr>
                        {list.into_iter().map(|m| view! {
                            <tr class="message"><td>{m.queue_id}</td><td>{m.queue_offset}</td><td>{m.unique_id.unwrap_or_default()}</td><td>{api::body_text(&m.body_base64)}</td></tr>
                        }).collect_view()}
                    </table>
                }.into_any(),
                Err(e) => error_view(e),
            })}
        </section>
    }
}
