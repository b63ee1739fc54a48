//! `wasmq user`, `wasmq acl` and `wasmq token`: users, policies and API tokens through the admin
//! API (docs/security.md).

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use wasmq_client::admin_types::{PolicyView, UpdateUser};

use crate::{Cli, printed_json};

#[derive(Debug, Subcommand)]
pub(crate) enum UserCommand {
    /// Users, their roles, whether they have an access key, their certificate names.
    List,
    /// Create a user. The password comes from --new-password, WASMQ_NEW_PASSWORD, or the first
    /// line of standard input.
    Create {
        name: String,
        /// A role: viewer, operator, admin, or any name policies use (repeatable).
        #[arg(long = "role")]
        roles: Vec<String>,
        #[arg(long, env = "WASMQ_NEW_PASSWORD", hide_env_values = true)]
        new_password: Option<String>,
    },
    /// Set a user's password (yours — logged in with --user and --password, which is taken as
    /// the current one — or anyone's as an admin); the new one as for `create`.
    Passwd {
        name: String,
        #[arg(long, env = "WASMQ_NEW_PASSWORD", hide_env_values = true)]
        new_password: Option<String>,
    },
    /// Replace a user's roles.
    Roles {
        name: String,
        roles: Vec<String>,
    },
    /// Replace the client certificate names (subject CN, DNS or email SAN) that log in as the user.
    Certificates {
        name: String,
        names: Vec<String>,
    },
    /// A new access secret for RocketMQ 5 clients (access key: the user's name), printed once.
    AccessKey {
        name: String,
    },
    Delete {
        name: String,
    },
    /// Who this command's credentials name.
    Whoami,
}

#[derive(Debug, Subcommand)]
pub(crate) enum AclCommand {
    /// Every policy.
    List,
    /// Allow (or, with --deny, refuse) a user or role actions on resources.
    Add {
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Remove the policy with exactly these terms.
    Remove {
        #[command(flatten)]
        policy: PolicyArgs,
    },
}

#[derive(Debug, clap::Args)]
pub(crate) struct PolicyArgs {
    /// `user:NAME` or `role:NAME`.
    #[arg(long)]
    subject: String,
    /// `topic:NAME`, `group:NAME` (NAME may end with `*`) or `cluster`.
    #[arg(long)]
    resource: String,
    /// produce, consume, create, delete, alter, describe, admin (comma-separated).
    #[arg(long = "action", value_delimiter = ',', required = true)]
    actions: Vec<String>,
    #[arg(long)]
    deny: bool,
}

impl PolicyArgs {
    fn view(&self) -> PolicyView {
        PolicyView {
            subject: self.subject.clone(),
            resource: self.resource.clone(),
            actions: self.actions.clone(),
            effect: if self.deny { "deny" } else { "allow" }.into(),
        }
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Your API tokens (an admin: everyone's).
    List,
    /// Make an API token (printed once) for you, or as an admin for --user-name.
    Create {
        name: String,
        #[arg(long)]
        for_user: Option<String>,
        /// Lifetime in ms (default: until deleted).
        #[arg(long)]
        ttl_ms: Option<u64>,
    },
    Delete {
        id: String,
    },
}

/// The new password: given, or the first line of standard input.
fn new_password(given: Option<&String>) -> Result<String> {
    if let Some(p) = given {
        return Ok(p.clone());
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).context("reading the new password from standard input")?;
    let line = line.trim_end_matches(['\r', '\n']).to_owned();
    if line.is_empty() {
        bail!("no password: pass --new-password, set WASMQ_NEW_PASSWORD, or write it on standard input");
    }
    Ok(line)
}

pub(crate) async fn user(cli: &Cli, command: &UserCommand) -> Result<()> {
    let admin = cli.admin().await?;
    match command {
        UserCommand::List => {
            let users = admin.users().await?;
            if printed_json(cli, &users)? {
                return Ok(());
            }
            println!("{:<24} {:<24} {:<10} certificates", "user", "roles", "access key");
            for u in users {
                let key = if u.access_key { "yes" } else { "-" };
                println!("{:<24} {:<24} {key:<10} {}", u.name, u.roles.join(","), u.certificates.join(","));
            }
        }
        UserCommand::Create { name, roles, new_password: p } => {
            let roles: Vec<&str> = roles.iter().map(String::as_str).collect();
            let u = admin.create_user(name, &new_password(p.as_ref())?, &roles).await?;
            println!("created user {} (roles: {})", u.name, if u.roles.is_empty() { "none".into() } else { u.roles.join(", ") });
        }
        UserCommand::Passwd { name, new_password: p } => {
            // Your own password needs your current one: the --password you logged in with.
            let current = (cli.user.as_deref() == Some(name.as_str())).then(|| cli.password.clone()).flatten();
            let update = UpdateUser { password: Some(new_password(p.as_ref())?), current_password: current, ..UpdateUser::default() };
            admin.update_user(name, &update).await?;
            println!("password of {name} changed");
        }
        UserCommand::Roles { name, roles } => {
            let u = admin.update_user(name, &UpdateUser { roles: Some(roles.clone()), ..UpdateUser::default() }).await?;
            println!("roles of {}: {}", u.name, u.roles.join(", "));
        }
        UserCommand::Certificates { name, names } => {
            let u = admin.update_user(name, &UpdateUser { certificates: Some(names.clone()), ..UpdateUser::default() }).await?;
            println!("certificate names of {}: {}", u.name, u.certificates.join(", "));
        }
        UserCommand::AccessKey { name } => {
            let k = admin.new_access_key(name).await?;
            if printed_json(cli, &k)? {
                return Ok(());
            }
            println!(
                "access key: {}\nsecret key: {}\n(shown this once; RocketMQ 5 clients: Credentials(access key, secret key))",
                k.access_key, k.secret_key
            );
        }
        UserCommand::Delete { name } => {
            admin.delete_user(name).await?;
            println!("deleted user {name}");
        }
        UserCommand::Whoami => {
            let me = admin.me().await?;
            if printed_json(cli, &me)? {
                return Ok(());
            }
            println!("{} (roles: {})", me.user, if me.roles.is_empty() { "none".to_owned() } else { me.roles.join(", ") });
        }
    }
    Ok(())
}

pub(crate) async fn acl(cli: &Cli, command: &AclCommand) -> Result<()> {
    let admin = cli.admin().await?;
    match command {
        AclCommand::List => {
            let policies = admin.policies().await?;
            if printed_json(cli, &policies)? {
                return Ok(());
            }
            println!("{:<6} {:<24} {:<32} actions", "effect", "subject", "resource");
            for p in policies {
                println!("{:<6} {:<24} {:<32} {}", p.effect, p.subject, p.resource, p.actions.join(","));
            }
        }
        AclCommand::Add { policy } => {
            let p = admin.add_policy(&policy.view()).await?;
            println!("{} {} {} on {}", p.effect, p.subject, p.actions.join(","), p.resource);
        }
        AclCommand::Remove { policy } => {
            admin.remove_policy(&policy.view()).await?;
            println!("removed");
        }
    }
    Ok(())
}

pub(crate) async fn token(cli: &Cli, command: &TokenCommand) -> Result<()> {
    let admin = cli.admin().await?;
    match command {
        TokenCommand::List => {
            let tokens = admin.tokens().await?;
            if printed_json(cli, &tokens)? {
                return Ok(());
            }
            for t in tokens {
                let expires = t.expires_ms.map_or("never".to_owned(), |e| e.to_string());
                println!("{}\t{}\t{}\texpires {expires}", t.id, t.user, t.name);
            }
        }
        TokenCommand::Create { name, for_user, ttl_ms } => {
            let t = admin.create_token(name, for_user.as_deref(), *ttl_ms).await?;
            println!(
                "token {} for {}: {}\n(shown this once: send it as --token or Authorization: Bearer)",
                t.view.id, t.view.user, t.token
            );
        }
        TokenCommand::Delete { id } => {
            admin.delete_token(id).await?;
            println!("deleted token {id}");
        }
    }
    Ok(())
}

pub(crate) async fn audit(cli: &Cli, limit: usize) -> Result<()> {
    let entries = cli.admin().await?.audit(limit).await?;
    if printed_json(cli, &entries)? {
        return Ok(());
    }
    for e in entries {
        println!("{}\t{}\t{}\t{}\t{}\t{}\t{}", e.at_ms, e.via, e.user, e.from.as_deref().unwrap_or("-"), e.what, e.resource, e.result);
    }
    Ok(())
}
