//! `wasmq plugin`: upload, list, describe, attach, detach, stats.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use wasmq_client::admin_types::{AttachPlugin, AttachmentView};

use crate::Cli;

#[derive(Debug, Subcommand)]
pub(crate) enum PluginCommand {
    /// Upload a plugin (`.wasm`); prints its name and version number.
    Upload { file: PathBuf },
    /// Every plugin with its versions.
    List,
    /// A plugin's versions and where they are attached.
    Describe { name: String },
    /// Attach a pinned version (`name@version`): `--topic T --role router|ordering-key`, or
    /// `--group G --topic T` for a filter. Attaching over an existing one swaps it.
    Attach {
        /// `name@version`, e.g. `tenant-router@2`.
        plugin: String,
        #[command(flatten)]
        target: Target,
        /// Configuration passed to the plugin's init, `key=value` (repeatable).
        #[arg(long = "config", value_name = "KEY=VALUE")]
        config: Vec<String>,
        /// `fail-open` (default) or `fail-closed`.
        #[arg(long, default_value = "fail-open")]
        on_error: String,
    },
    /// Remove an attachment: `--topic T --role R`, or `--group G --topic T`.
    Detach {
        #[command(flatten)]
        target: Target,
    },
    /// Calls, messages, errors, traps and time per message of every attachment (of one plugin).
    Stats { name: Option<String> },
}

/// Where a plugin is attached: a topic's router or ordering-key selector, or a group's filter.
#[derive(Debug, clap::Args)]
pub(crate) struct Target {
    #[arg(long)]
    topic: String,
    /// `router` or `ordering-key` (topic plugins); omit with --group.
    #[arg(long)]
    role: Option<String>,
    /// A filter of this consumer group's subscription to --topic.
    #[arg(long)]
    group: Option<String>,
}

/// The attachment's place: `Ok(Some(group))` for a filter, `Ok(None)` with a topic role.
fn place(t: &Target) -> Result<Option<&str>> {
    match (t.group.as_deref(), t.role.as_deref()) {
        (Some(g), None | Some("filter")) => Ok(Some(g)),
        (None, Some(_)) => Ok(None),
        (Some(_), Some(r)) => bail!("--group places a filter; --role {r} is for topic plugins"),
        (None, None) => bail!("give --role router|ordering-key (a topic plugin) or --group G (a filter)"),
    }
}

fn parse_pinned(s: &str) -> Result<(String, u32)> {
    let (name, v) = s.split_once('@').context("give the plugin as name@version (versions are pinned), e.g. tenant-router@1")?;
    Ok((name.to_owned(), v.parse().with_context(|| format!("version {v:?} is not a number"))?))
}

fn print_attachment(a: &AttachmentView) {
    let target = match &a.group {
        Some(g) => format!("group {g} on topic {}", a.topic),
        None => format!("topic {}", a.topic),
    };
    println!(
        "{} {}@{} on {target} ({}){}",
        a.role,
        a.plugin,
        a.version,
        a.on_error,
        a.error.as_ref().map(|e| format!(" NOT RUNNING: {e}")).unwrap_or_default()
    );
}

pub(crate) async fn run(cli: &Cli, command: &PluginCommand) -> Result<()> {
    let admin = cli.admin().await?;
    match command {
        PluginCommand::Upload { file } => {
            let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
            let v = admin.upload_plugin(bytes).await?;
            let what = if v.created { "uploaded" } else { "already uploaded as" };
            println!("{what} {}@{} ({} {}, {} bytes, sha256 {})", v.name, v.version, v.roles.join(", "), v.label, v.size, v.sha256);
            println!("reads: {}", if v.needs.is_empty() { "timestamps only".to_owned() } else { v.needs.join(", ") });
        }
        PluginCommand::List => {
            println!("name\tversion\tlabel\troles\tsha256");
            for p in admin.list_plugins().await? {
                for v in &p.versions {
                    println!("{}\t{}\t{}\t{}\t{}", v.name, v.version, v.label, v.roles.join(","), &v.sha256[..16]);
                }
            }
        }
        PluginCommand::Describe { name } => {
            let p = admin.describe_plugin(name).await?;
            for v in &p.versions {
                println!(
                    "{}@{}: {} ({}), reads {}, {} bytes, sha256 {}",
                    v.name,
                    v.version,
                    v.label,
                    v.roles.join(", "),
                    v.needs.join(", "),
                    v.size,
                    v.sha256
                );
            }
            for a in &p.attachments {
                print_attachment(a);
            }
        }
        PluginCommand::Attach { plugin, target, config, on_error } => {
            let (name, version) = parse_pinned(plugin)?;
            let config = config.iter().map(|kv| crate::key_value(kv, "--config")).collect::<Result<BTreeMap<_, _>>>()?;
            let req = AttachPlugin { plugin: name, version, config, on_error: Some(on_error.clone()) };
            let a = match place(target)? {
                Some(g) => admin.attach_filter(g, &target.topic, &req).await?,
                None => admin.attach_topic_plugin(&target.topic, target.role.as_deref().unwrap_or_default(), &req).await?,
            };
            print!("attached ");
            print_attachment(&a);
        }
        PluginCommand::Detach { target } => {
            match place(target)? {
                Some(g) => admin.detach_filter(g, &target.topic).await?,
                None => admin.detach_topic_plugin(&target.topic, target.role.as_deref().unwrap_or_default()).await?,
            }
            println!("detached");
        }
        PluginCommand::Stats { name } => {
            println!("attachment\tcalls\tmessages\terrors\ttraps\ttimeouts\tbreaker\tns/msg\tcounters");
            for a in admin.attachments().await? {
                if name.as_ref().is_some_and(|n| *n != a.plugin) {
                    continue;
                }
                let s = &a.stats;
                let target = a.group.as_ref().map_or_else(|| a.topic.clone(), |g| format!("{g}/{}", a.topic));
                let counters: Vec<String> = s.counters.iter().map(|(k, v)| format!("{k}={v}")).collect();
                println!(
                    "{}@{} {} {target}\t{}\t{}\t{}\t{}\t{}\t{}\t{:.0}\t{}",
                    a.plugin,
                    a.version,
                    a.role,
                    s.calls,
                    s.messages,
                    s.errors,
                    s.traps,
                    s.timeouts,
                    if s.breaker_open { "open" } else { "closed" },
                    s.ns_per_message,
                    counters.join(" ")
                );
            }
        }
    }
    Ok(())
}
