//! Plugins: upload a component, see its versions, attach a version to a topic (router,
//! ordering key) or a group's subscription (filter), detach, and each attachment's statistics.

use leptos::prelude::*;
use leptos::task::spawn_local;
use wasm_bindgen::JsCast;
use wasmq_admin_types::{AttachmentView, PluginDetail, PluginVersion};

use crate::{api, error_view, polled, refresh_tick};

/// Where an attachment lives in the API (for detaching).
fn attachment_path(a: &AttachmentView) -> String {
    match &a.group {
        Some(g) => format!("/groups/{}/filters/{}", api::encode(g), api::encode(&a.topic)),
        None => format!("/topics/{}/plugins/{}", api::encode(&a.topic), a.role),
    }
}

#[allow(unreachable_pub, reason = "#[component] declares its props struct `pub`")]
#[component]
pub(crate) fn Plugins() -> impl IntoView {
    let tick = refresh_tick();
    let (changed, set_changed) = signal(0u32);
    let plugins = polled::<Vec<PluginDetail>>(tick, Some(changed), "/plugins".into());
    let attachments = polled::<Vec<AttachmentView>>(tick, Some(changed), "/attachments".into());
    let (outcome, set_outcome) = signal(None::<Result<String, String>>);

    // Upload: the chosen file is the request body as it is.
    let file_input = NodeRef::<leptos::html::Input>::new();
    let upload = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let Some(file) = file_input.get_untracked().and_then(|i| i.files()).and_then(|f| f.get(0)) else {
            set_outcome.set(Some(Err("choose a .wasm file first".into())));
            return;
        };
        spawn_local(async move {
            let r = api::request::<PluginVersion>("POST", "/plugins", Some(file.unchecked_into()), "application/wasm").await;
            set_outcome.set(Some(r.map(|v| {
                format!(
                    "{} version {} {} ({}; roles {})",
                    v.name,
                    v.version,
                    if v.created { "uploaded" } else { "already known" },
                    api::bytes(v.size as u64),
                    v.roles.join(", ")
                )
            })));
            set_changed.update(|c| *c += 1);
        });
    };

    // Attach.
    let (plugin, set_plugin) = signal(String::new());
    let (version, set_version) = signal("1".to_owned());
    let (role, set_role) = signal("router".to_owned());
    let (topic, set_topic) = signal(String::new());
    let (group, set_group) = signal(String::new());
    let (on_error, set_on_error) = signal("fail-open".to_owned());
    let (config, set_config) = signal(String::new());
    let attach = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let config: std::collections::BTreeMap<String, String> = config
            .get_untracked()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let body = serde_json::json!({
            "plugin": plugin.get_untracked(),
            "version": version.get_untracked().parse::<u32>().unwrap_or(0),
            "config": config,
            "on_error": on_error.get_untracked(),
        })
        .to_string();
        let (r, t, g) = (role.get_untracked(), topic.get_untracked(), group.get_untracked());
        let path = if r == "filter" {
            format!("/groups/{}/filters/{}", api::encode(&g), api::encode(&t))
        } else {
            format!("/topics/{}/plugins/{r}", api::encode(&t))
        };
        spawn_local(async move {
            let r = api::send::<AttachmentView>("PUT", &path, Some(body)).await;
            set_outcome.set(Some(r.map(|a| format!("{}@{} attached as {} on {}", a.plugin, a.version, a.role, a.topic))));
            set_changed.update(|c| *c += 1);
        });
    };
    let detach = move |path: String| {
        spawn_local(async move {
            let r = api::send::<serde_json::Value>("DELETE", &path, None).await;
            set_outcome.set(Some(r.map(|_| "detached".to_owned())));
            set_changed.update(|c| *c += 1);
        });
    };

    view! {
        <section id="plugins">
            <h2>"Plugins"</h2>
            <form id="upload-plugin" on:submit=upload>
                "Upload a plugin " <input id="plugin-file" type="file" accept=".wasm,application/wasm" node_ref=file_input />
                <button type="submit">"Upload"</button>
            </form>
            <form id="attach-plugin" on:submit=attach>
                <input id="attach-plugin-name" placeholder="plugin" on:input=move |ev| set_plugin.set(event_target_value(&ev)) />
                " version " <input id="attach-version" type="number" min="1" size="4" prop:value=version on:input=move |ev| set_version.set(event_target_value(&ev)) />
                " as " <select id="attach-role" on:change=move |ev| set_role.set(event_target_value(&ev))>
                    <option value="router">"router"</option>
                    <option value="ordering-key">"ordering-key"</option>
                    <option value="filter">"filter"</option>
                </select>
                " on topic " <input id="attach-topic" placeholder="topic" on:input=move |ev| set_topic.set(event_target_value(&ev)) />
                <Show when=move || role.get() == "filter">
                    " for group " <input id="attach-group" placeholder="group" on:input=move |ev| set_group.set(event_target_value(&ev)) />
                </Show>
                " on error " <select id="attach-on-error" on:change=move |ev| set_on_error.set(event_target_value(&ev))>
                    <option value="fail-open">"fail-open"</option>
                    <option value="fail-closed">"fail-closed"</option>
                </select>
                <textarea id="attach-config" rows="2" placeholder="config: key=value per line" on:input=move |ev| set_config.set(event_target_value(&ev))></textarea>
                <button type="submit">"Attach"</button>
            </form>
            {move || outcome.get().map(|r| match r {
                Ok(t) => view! { <p class="done" id="plugin-outcome">{t}</p> }.into_any(),
                Err(e) => error_view(e),
            })}
            {move || plugins.get().map(|r| match r {
                Ok(list) if list.is_empty() => view! { <p>"No plugin uploaded."</p> }.into_any(),
                Ok(list) => view! {
                    <table id="plugin-list">
                        <tr><th>"Plugin"</th><th>"Version"</th><th>"Label"</th><th>"Size"</th><th>"Roles"</th><th>"Reads"</th><th>"Uploaded"</th><th>"SHA-256"</th></tr>
                        {list.into_iter().flat_map(|p| p.versions).map(|v| view! {
                            <tr class="plugin"><td>{v.name}</td><td>{v.version}</td><td>{v.label}</td><td>{api::bytes(v.size as u64)}</td>
                                <td>{v.roles.join(", ")}</td><td>{v.needs.join(", ")}</td><td>{api::time(v.uploaded_ms)}</td><td class="hash">{v.sha256.chars().take(12).collect::<String>()}</td></tr>
                        }).collect_view()}
                    </table>
                }.into_any(),
                Err(e) => error_view(e),
            })}
            <h3>"Attachments"</h3>
            {move || attachments.get().map(|r| match r {
                Ok(list) if list.is_empty() => view! { <p>"Nothing attached."</p> }.into_any(),
                Ok(list) => view! {
                    <table id="attachments">
                        <tr><th>"Plugin"</th><th>"Role"</th><th>"Topic"</th><th>"Group"</th><th>"On error"</th><th>"Messages"</th><th>"Errors"</th><th>"Traps"</th><th>"Timeouts"</th><th>"ns / message"</th><th>"Breaker"</th><th></th></tr>
                        {list.into_iter().map(|a| {
                            let path = attachment_path(&a);
                            view! {
                                <tr class="attachment"><td>{format!("{}@{}", a.plugin, a.version)}</td><td>{a.role}</td><td>{a.topic}</td>
                                    <td>{a.group.unwrap_or_default()}</td><td>{a.on_error}</td><td>{a.stats.messages}</td><td>{a.stats.errors}</td>
                                    <td>{a.stats.traps}</td><td>{a.stats.timeouts}</td>
                                    <td>{format!("{:.0}", a.stats.ns_per_message)}</td><td>{if a.stats.breaker_open { "open" } else { "closed" }}</td>
                                    <td><button class="detach" on:click=move |_| detach(path.clone())>"Detach"</button></td></tr>
                            }
                        }).collect_view()}
                    </table>
                }.into_any(),
                Err(e) => error_view(e),
            })}
        </section>
    }
}
