//! wasmq's admin console: a client-side leptos app that talks only to the broker's documented
//! admin API (`/api/v1`, bearer token kept in the browser's local storage).

mod api;
mod detail;
mod held;
mod message;
mod plugins;

use leptos::prelude::*;
use leptos::task::spawn_local;
use wasmq_admin_types::{
    BrokerInfo, ClusterView, ControllerView, GroupDetail, GroupSummary, ReplicaStatus, TopicMessageType, TopicSummary,
};

/// How often the pages refresh their figures.
const REFRESH_MS: u64 = 3_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Page {
    Overview,
    Topics,
    Groups,
    Messages,
    Plugins,
    Held,
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

/// `GET /api/v1{path}`, loaded again at every `tick` and, if given, every change of `changed`.
fn polled<T: serde::de::DeserializeOwned + 'static>(
    tick: ReadSignal<u64>,
    changed: Option<ReadSignal<u32>>,
    path: String,
) -> LocalResource<Result<T, String>> {
    LocalResource::new(move || {
        tick.get();
        if let Some(c) = changed {
            c.get();
        }
        let path = path.clone();
        async move { api::get::<T>(&path).await }
    })
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
                    {tab(Page::Held, "Held")}
                </nav>
                <button id="dark" on:click=move |_| set_dark.update(|d| *d = !*d)>{move || if dark.get() { "Light" } else { "Dark" }}</button>
                <button id="logout" on:click=move |_| { api::set_token(None); set_token.set(None); }>"Log out"</button>
            </header>
            <main>
                {move || match page.get() {
                    Page::Overview => view! { <Overview /> }.into_any(),
                    Page::Topics => view! { <Topics /> }.into_any(),
                    Page::Groups => view! { <Groups /> }.into_any(),
                    Page::Messages => view! { <message::Messages /> }.into_any(),
                    Page::Plugins => view! { <plugins::Plugins /> }.into_any(),
                    Page::Held => view! { <held::Held /> }.into_any(),
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
    let info = polled::<BrokerInfo>(tick, None, "/broker".into());
    let cluster = polled::<ClusterView>(tick, None, "/cluster".into());
    let replicas = polled::<ReplicaStatus>(tick, None, "/replicas".into());
    let controller = polled::<ControllerView>(tick, None, "/controller".into());
    let dash = || "-".to_owned();
    view! {
        <section id="overview">
            <h2>"This broker"</h2>
            {move || info.get().map(|r| match r {
                Ok(b) => view! {
                    <dl>
                        <dt>"Name"</dt><dd id="broker-name">{format!("{} ({} {}, cluster {})", b.broker_name, b.role, b.broker_id, b.cluster)}</dd>
                        <dt>"Version"</dt><dd>{b.version}</dd>
                        <dt>"Address"</dt><dd>{format!("{} (admin {})", b.listen, b.admin_listen)}</dd>
                        <dt>"Up for"</dt><dd id="uptime">{api::duration(b.uptime_ms)}</dd>
                        <dt>"Flush"</dt><dd>{b.flush}</dd>
                        <dt>"Log"</dt><dd>{format!("{} … {} (durable {}), {} on disk", b.log_min_offset, b.log_end_offset, b.log_durable_offset, api::bytes(b.log_bytes))}</dd>
                        <dt>"Disk"</dt><dd id="disk">{format!("{} of {} used ({:.0} %)", api::bytes(b.disk_used_bytes), api::bytes(b.disk_total_bytes), b.disk_used_bytes as f64 * 100.0 / b.disk_total_bytes.max(1) as f64)}</dd>
                        <dt>"Topics"</dt><dd>{b.topics}</dd>
                        {b.store_failure.map(|f| view! { <dt>"Store"</dt><dd class="error">{f}</dd> })}
                    </dl>
                }.into_any(),
                Err(e) => error_view(e),
            })}
            <h2>"Cluster"</h2>
            {move || cluster.get().map(|r| match r {
                Ok(c) => view! {
                    <p id="cluster-source">{match c.source.as_str() {
                        "namesrv" => format!("Cluster {} as the name servers {} know it.", c.cluster, c.name_servers.join(", ")),
                        _ => format!("Cluster {}: this broker set as its replication links show it (no name server answered).", c.cluster),
                    }}</p>
                    {c.error.map(error_view)}
                    <table id="cluster">
                        <tr><th>"Broker set"</th><th>"Id"</th><th>"Role"</th><th>"Status"</th><th>"Address"</th><th>"Admin"</th><th>"Version"</th><th>"Up for"</th>
                            <th>"Log end"</th><th>"Lag"</th><th>"Log on disk"</th><th>"Disk used"</th><th>"Topics"</th><th>"Last seen"</th></tr>
                        {c.broker_sets.into_iter().flat_map(|set| {
                            let name = set.broker_name;
                            set.brokers.into_iter().map(move |b| view! {
                                <tr class="cluster-broker"><td>{name.clone()}</td><td>{b.broker_id}</td><td class="role">{b.role}</td>
                                    <td class="status">{match b.down_since_ms {
                                        Some(at) => format!("down since {}", api::time(at)),
                                        None if b.status.is_empty() => dash(),
                                        None => b.status.clone(),
                                    }}</td>
                                    <td>{b.addr.unwrap_or_else(dash)}</td>
                                    <td>{b.admin_addr}</td><td>{b.version.unwrap_or_else(dash)}</td><td>{b.uptime_ms.map_or_else(dash, api::duration)}</td>
                                    <td>{b.log_end_offset}</td><td class="lag">{b.lag_bytes.map_or_else(dash, api::bytes)}</td><td>{b.log_bytes.map_or_else(dash, api::bytes)}</td>
                                    <td>{match (b.disk_used_bytes, b.disk_total_bytes) {
                                        (Some(u), Some(t)) if t > 0 => format!("{:.0} % of {}", u as f64 * 100.0 / t as f64, api::bytes(t)),
                                        _ => dash(),
                                    }}</td>
                                    <td>{b.topics.map_or_else(dash, |t| t.to_string())}</td>
                                    <td>{b.last_seen_ms_ago.map_or_else(dash, |ms| format!("{} ago", api::duration(ms)))}</td></tr>
                            })
                        }).collect_view()}
                    </table>
                }.into_any(),
                Err(e) => error_view(e),
            })}
            <h2>"Failover controller"</h2>
            {move || controller.get().map(|r| match r {
                Ok(c) if c.nodes.is_empty() => view! {
                    <p id="controller-none">"Not under a failover controller: roles come from each broker's settings."</p>
                }.into_any(),
                Ok(c) => view! {
                    <p id="controller-leader">{match (c.leader, c.term) {
                        (Some(l), Some(t)) => format!("Leader: node {l} (term {t})."),
                        _ => "No controller leader answered.".to_owned(),
                    }}</p>
                    {c.error.map(error_view)}
                    <table id="controller-nodes">
                        <tr><th>"Node"</th><th>"Address"</th><th>"Role"</th></tr>
                        {c.nodes.into_iter().map(|n| view! {
                            <tr class="controller-node"><td>{n.id.map_or_else(dash, |i| i.to_string())}</td><td>{n.addr}</td><td class="role">{n.role}</td></tr>
                        }).collect_view()}
                    </table>
                    <table id="controller-sets">
                        <tr><th>"Broker set"</th><th>"Epoch"</th><th>"Id"</th><th>"Role"</th><th>"Address"</th><th>"In sync"</th><th>"Log end"</th><th>"Lag"</th><th>"Heard"</th></tr>
                        {c.sets.into_iter().flat_map(|set| {
                            let (name, epoch) = (set.broker_name, set.epoch);
                            set.members.into_iter().map(move |m| view! {
                                <tr class="controller-member"><td>{name.clone()}</td><td class="epoch">{epoch}</td><td>{m.broker_id}</td><td class="role">{m.role}</td>
                                    <td>{m.addr}</td><td class="in-sync">{if m.in_sync { "yes" } else { "no" }}</td>
                                    <td>{m.log_end_offset.map_or_else(dash, |e| e.to_string())}</td><td class="lag">{m.lag_bytes.map_or_else(dash, api::bytes)}</td>
                                    <td>{m.heard_ms_ago.map_or_else(|| "never".to_owned(), |ms| format!("{} ago", api::duration(ms)))}</td></tr>
                            })
                        }).collect_view()}
                    </table>
                }.into_any(),
                Err(e) => error_view(e),
            })}
            <h2>"Replication"</h2>
            {move || replicas.get().map(|r| match r {
                Ok(r) => view! {
                    <table id="replicas">
                        <tr><th>"Broker"</th><th>"Id"</th><th>"Role"</th><th>"Log end"</th><th>"Lag (bytes)"</th><th>"Lag (s)"</th><th>"Link"</th></tr>
                        <tr><td>{r.broker_name.clone()}</td><td>{r.broker_id}</td><td>{r.role.clone()}</td><td>{r.log_end_offset}</td>
                            <td>{r.master.as_ref().map_or("-".to_owned(), |m| m.lag_bytes.to_string())}</td><td>"-"</td>
                            <td>{r.master.as_ref().map_or(r.replication.clone(), |m| if m.connected { "connected".to_owned() } else { "down".to_owned() })}</td></tr>
                        {r.slaves.into_iter().map(|s| view! {
                            <tr class="slave"><td>{r.broker_name.clone()}</td><td>{s.broker_id}</td><td>"slave"</td><td>{s.acked_offset}</td>
                                <td>{s.lag_bytes}</td><td>{format!("{:.1}", s.lag_ms as f64 / 1000.0)}</td>
                                <td class="link">{if s.connected { "connected" } else { "down" }}</td></tr>
                        }).collect_view()}
                    </table>
                }.into_any(),
                Err(e) => error_view(e),
            })}
        </section>
    }
}

#[component]
fn Topics() -> impl IntoView {
    let tick = refresh_tick();
    let (changed, set_changed) = signal(0u32);
    let topics = polled::<Vec<TopicSummary>>(tick, Some(changed), "/topics".into());
    let (name, set_name) = signal(String::new());
    let (queues, set_queues) = signal("8".to_owned());
    let (retention_h, set_retention_h) = signal(String::new());
    let (message_type, set_message_type) = signal("MIXED".to_owned());
    let (open, set_open) = signal(None::<String>);
    let (failure, set_failure) = signal(None::<String>);
    let create = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        // Hours, empty for the log's retention.
        let retention_ms = match retention_h.get_untracked().trim() {
            "" => None,
            h => match h.parse::<f64>() {
                Ok(h) if h > 0.0 => Some((h * 3_600_000.0) as u64),
                _ => return set_failure.set(Some(format!("retention: {h} is not a number of hours"))),
            },
        };
        let body = serde_json::json!({
            "name": name.get_untracked(),
            "queues": queues.get_untracked().parse::<u32>().unwrap_or(0),
            "retention_ms": retention_ms,
            "message_type": message_type.get_untracked(),
        })
        .to_string();
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
                " queues " <input id="topic-queues" type="number" min="1" prop:value=queues on:input=move |ev| set_queues.set(event_target_value(&ev)) />
                " retention (hours, empty: the log's) " <input id="topic-retention-hours" size="6" on:input=move |ev| set_retention_h.set(event_target_value(&ev)) />
                " takes " <select id="topic-message-type" on:change=move |ev| set_message_type.set(event_target_value(&ev))>
                    {TopicMessageType::ALL.map(|t| view! { <option value=t.as_str() selected=t == TopicMessageType::Mixed>{t.as_str()}</option> }).collect_view()}
                </select> " messages "
                <button type="submit">"Create"</button>
            </form>
            {move || failure.get().map(error_view)}
            {move || topics.get().map(|r| match r {
                Ok(list) => view! {
                    <table>
                        <tr><th>"Topic"</th><th>"Queues"</th><th>"Message type"</th><th>"Retention"</th><th>"Created"</th><th></th></tr>
                        {list.into_iter().map(|t| {
                            let (n, o) = (t.name.clone(), t.name.clone());
                            view! { <tr class="topic"><td><a href="#" class="open-topic" on:click=move |ev| { ev.prevent_default(); set_open.set(Some(o.clone())); }>{t.name}</a></td><td>{t.queues}</td><td class="message-type">{t.message_type.as_str()}</td>
                                <td>{t.retention_ms.map_or_else(|| "log's".to_owned(), api::duration)}</td><td>{api::time(t.created_ms)}</td>
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
                        <p class="group-summary">{format!("{}{} · generation {} · {} members · lag ", g.mode, if g.fifo { " · FIFO" } else { "" }, g.generation, g.members.len())}
                            <span class="total-lag">{g.queues.iter().map(|q| q.lag).sum::<u64>()}</span></p>
                        {(!g.members.is_empty()).then(|| view! {
                            <table class="members">
                                <tr><th>"Member"</th><th>"Protocol"</th><th>"Client"</th><th>"Assigned queues"</th></tr>
                                {g.members.iter().map(|m| view! { <tr class="member"><td>{m.client_id.clone()}</td>
                                    <td class="protocol">{if m.protocol.is_empty() { "native".to_owned() } else { m.protocol.clone() }}</td>
                                    <td class="client">{format!("{} {}", m.language, m.version).trim().to_owned()}</td>
                                    <td>{if m.queues.is_empty() { "every queue, message by message".to_owned() } else { m.queues.join(", ") }}</td></tr> }).collect_view()}
                            </table>
                        })}
                        <table>
                            <tr><th>"Topic"</th><th>"Queue"</th><th>"Committed"</th><th>"Max"</th><th>"Lag"</th><th>"Behind"</th><th>"Owner"</th></tr>
                            {g.queues.into_iter().map(|q| view! {
                                <tr><td>{q.topic}</td><td>{q.queue_id}</td><td>{q.committed.map_or("-".to_owned(), |c| c.to_string())}</td><td>{q.max_offset}</td><td class="lag">{q.lag}</td>
                                    <td>{api::duration(q.lag_ms)}</td><td>{q.owner.unwrap_or_default()}</td></tr>
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
