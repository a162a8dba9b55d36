//! `chatd admin ...`: the subcommands, carried out on a store opened with
//! `chatd::store::admin::open`. A module of the binary (`main.rs`), not of the library: it
//! parses flags and reports with `anyhow`, as the binary does. Each prints one line per changed or listed thing on stdout, and
//! returns an error (exit status 1) for a name that does not exist or is not valid.
//!
//! Passwords are read from stdin (one line), never from the command line, where any user of
//! the machine could read them in the process list.

use std::io::BufRead;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Subcommand;

use chatd::accounts::hash_password;
use chatd::protocol::name::{parse_name, parse_room};
use chatd::store::admin::Admin;
use chatd::store::BanTarget;

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Rooms.
    #[command(subcommand)]
    Room(RoomCommand),
    /// Refuse a user (at LOGIN) or an address (at connect) with `ERR banned`.
    Ban {
        #[command(subcommand)]
        target: Target,
    },
    /// Lift a ban.
    Unban {
        #[command(subcommand)]
        target: Target,
    },
    /// List the bans in force.
    Bans,
    /// Copy the SQLite database to PATH while the server runs (a consistent snapshot).
    Backup { path: PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an account (its password read from stdin with --password-stdin).
    Add {
        name: String,
        #[arg(long)]
        password_stdin: bool,
        /// May use the server-wide BAN and KICK.
        #[arg(long)]
        operator: bool,
    },
    /// Delete an account, its memberships and read positions (its messages stay).
    Remove { name: String },
    /// Set a new password, read from stdin.
    ResetPassword { name: String },
    /// Grant (`on`) or take away (`off`) the operator role.
    Operator {
        name: String,
        #[arg(value_parser = ["on", "off"])]
        role: String,
    },
    /// List the accounts.
    List,
}

#[derive(Debug, Subcommand)]
pub enum RoomCommand {
    /// List the rooms.
    List,
    /// Delete a room with its members and its whole history.
    Delete { name: String },
}

#[derive(Debug, Clone, Subcommand)]
pub enum Target {
    /// A user name.
    User {
        name: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// An IP address (v4 or v6).
    Address {
        address: IpAddr,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

impl Target {
    fn resolve(&self) -> anyhow::Result<(BanTarget, &str)> {
        Ok(match self {
            Target::User { name, reason } => (
                BanTarget::User(Arc::from(user_name(name)?)),
                reason.as_str(),
            ),
            Target::Address { address, reason } => (BanTarget::Address(*address), reason.as_str()),
        })
    }
}

fn user_name(raw: &str) -> anyhow::Result<String> {
    parse_name(raw, "user").map_err(|e| anyhow::anyhow!("{}", e.text))
}

/// What a change on a live server needs to take effect (see `server::bans`).
const NEEDS_RESTART: &str = "note: a server running on this store keeps the old state in \
     memory until it restarts";

/// Carries out one admin command; the lines to print come back in `out`.
pub fn run(admin: &mut dyn Admin, command: AdminCommand) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    match command {
        AdminCommand::User(UserCommand::Add {
            name,
            password_stdin,
            operator,
        }) => {
            let name = user_name(&name)?;
            let hash = if password_stdin {
                Some(hash_password(&read_password()?).map_err(anyhow::Error::msg)?)
            } else {
                None
            };
            if !admin.add_user(&name, hash.as_deref(), operator)? {
                anyhow::bail!("user {name} exists already");
            }
            out.push(format!("added user {name}"));
        }
        AdminCommand::User(UserCommand::Remove { name }) => {
            let name = user_name(&name)?;
            if !admin.remove_user(&name)? {
                anyhow::bail!("no such user: {name}");
            }
            out.push(format!("removed user {name}"));
            out.push(NEEDS_RESTART.into());
        }
        AdminCommand::User(UserCommand::ResetPassword { name }) => {
            let name = user_name(&name)?;
            let hash = hash_password(&read_password()?).map_err(anyhow::Error::msg)?;
            if !admin.set_password(&name, &hash)? {
                anyhow::bail!("no such user: {name}");
            }
            out.push(format!("set a new password for {name}"));
        }
        AdminCommand::User(UserCommand::Operator { name, role }) => {
            let name = user_name(&name)?;
            if !admin.set_operator(&name, role == "on")? {
                anyhow::bail!("no such user: {name}");
            }
            out.push(format!("operator {name} {role}"));
        }
        AdminCommand::User(UserCommand::List) => {
            out.extend(admin.users()?.iter().map(ToString::to_string));
        }
        AdminCommand::Room(RoomCommand::List) => {
            out.extend(admin.rooms()?.iter().map(ToString::to_string));
        }
        AdminCommand::Room(RoomCommand::Delete { name }) => {
            let name = parse_room(&name).map_err(|e| anyhow::anyhow!("{}", e.text))?;
            if !admin.delete_room(&name)? {
                anyhow::bail!("no such room: {name}");
            }
            out.push(format!("deleted room {name}"));
            out.push(NEEDS_RESTART.into());
        }
        AdminCommand::Ban { target } => {
            let (target, reason) = target.resolve()?;
            admin.ban(&target, reason)?;
            out.push(format!("banned {target}"));
        }
        AdminCommand::Unban { target } => {
            let (target, _) = target.resolve()?;
            if !admin.unban(&target)? {
                anyhow::bail!("{target} was not banned");
            }
            out.push(format!("unbanned {target}"));
        }
        AdminCommand::Bans => {
            for ban in admin.bans()? {
                out.push(format!(
                    "{} at={} reason={:?}",
                    ban.target,
                    ban.at.to_rfc3339(),
                    ban.reason
                ));
            }
        }
        AdminCommand::Backup { path } => {
            if path.exists() {
                anyhow::bail!("{} exists; back up into a new file", path.display());
            }
            admin.backup(&path)?;
            out.push(format!("backed up into {}", path.display()));
        }
    }
    Ok(out)
}

/// One line from stdin, without its line ending.
fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let password = line.trim_end_matches(['\n', '\r']).to_owned();
    if password.is_empty() {
        anyhow::bail!("no password on stdin");
    }
    Ok(password)
}
