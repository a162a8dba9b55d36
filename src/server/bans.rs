//! Bans and the operator role: who is refused at the door, and how a running server learns
//! of changes made with `chatd admin` on its store.
//!
//! The rule (also in docs/deploy.md, "Administration"):
//! - **At connect**, an address is checked against the ban list in memory. That list is
//!   loaded at start-up, changed at once by the protocol's `BAN`/`UNBAN`, and re-read from the
//!   store by the 5 s sweep, so `chatd admin ban address ...` applies to new connections
//!   within 5 seconds.
//! - **At LOGIN**, the user's account row is read from the store (one indexed read, next to
//!   the argon2 check it precedes): a user ban, a new password (`reset-password`), a new
//!   account (`user add`) and the operator role apply from the very next login.
//! - Sessions already open are not touched by `chatd admin`; the protocol's `BAN` and
//!   `KICK <user>` close them at once (in cluster mode on every node: `cluster::control`;
//!   there a ban another node made also closes the sessions it covers here when the sweep
//!   first sees it, which is how address bans cross nodes).
//!
//! If the store cannot be read at LOGIN, the server goes by what it has in memory (and logs
//! the error): a store hiccup must not lock every user out.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use super::ChatServer;
use crate::delivery::outbox::banned;
use crate::delivery::CloseReason;
use crate::protocol::ClientError;
use crate::stats::Stats;
use crate::store::{BanTarget, Ticket, Write};

impl ChatServer {
    /// Whether connections from `ip` are refused at the door.
    pub fn address_banned(&self, ip: IpAddr) -> bool {
        let bans = self.bans.read();
        !bans.is_empty() && bans.contains(&BanTarget::Address(ip))
    }

    /// The LOGIN-time check: refuses a banned user or address with the uniform `ERR banned`,
    /// and brings the user's account up to date from the store.
    pub fn admit_login(&self, name: &str, peer: Option<IpAddr>) -> Result<(), ClientError> {
        let refuse = || {
            Stats::add(&self.stats.login_failures, 1);
            log::warn!(user = name, peer:% = crate::logging::OrDash(peer); "login refused: banned");
            Err(banned())
        };
        if peer.is_some_and(|ip| self.address_banned(ip)) {
            return refuse();
        }
        match self.store.account(name) {
            Ok(Some(account)) => {
                if account.banned {
                    return refuse();
                }
                let user = match self.user(name) {
                    Some(user) => Some(user),
                    // Added by `chatd admin user add` while the server ran.
                    None if account.password_hash.is_some() => Some(self.user_or_create(name)),
                    None => None,
                };
                if let Some(user) = user {
                    user.adopt_stored_account(account.password_hash.as_deref(), account.operator);
                }
            }
            Ok(None) => {}
            Err(e) => {
                log::error!(user = name, error:% = e; "store error reading an account at login")
            }
        }
        if self.bans.read().contains(&BanTarget::User(Arc::from(name))) {
            return refuse();
        }
        Ok(())
    }

    /// Bans `target`: refused from now on, and its open sessions closed with `BYE banned`.
    /// Returns the store write's ticket.
    pub fn ban(&self, target: BanTarget, reason: &str) -> Ticket {
        self.bans.write().insert(target.clone());
        let ticket = Ticket::default();
        let write = Write::Ban {
            target: target.clone(),
            reason: Arc::from(reason),
        };
        self.store.write(write, Some(ticket.clone()));
        match &target {
            BanTarget::User(name) => {
                self.end_sessions_everywhere(name, CloseReason::Banned);
            }
            BanTarget::Address(ip) => {
                for user in self.all_users() {
                    user.close_sessions_from(*ip, CloseReason::Banned);
                }
            }
        }
        ticket
    }

    /// Closes every session of `name` with `reason`'s `BYE`, here and (cluster mode) on
    /// every other node (`cluster::control`). Returns how many were closed here.
    pub(crate) fn end_sessions_everywhere(&self, name: &str, reason: CloseReason) -> usize {
        if let Some(cluster) = &self.cluster {
            cluster.end_sessions_elsewhere(name, reason);
        }
        self.user(name)
            .map_or(0, |user| user.close_sessions(reason))
    }

    /// Lifts a ban; returns the store write's ticket.
    pub fn unban(&self, target: BanTarget) -> Ticket {
        self.bans.write().remove(&target);
        let ticket = Ticket::default();
        self.store
            .write(Write::Unban { target }, Some(ticket.clone()));
        ticket
    }

    /// Cluster mode: bans made on other nodes, first seen by this node's sweep, close its
    /// sessions they cover. An address ban reaches the other nodes only this way (within the
    /// 5 s sweep); a user ban also comes at once through the control channel, and this is
    /// the backstop for a node whose subscriber was cut when it was announced.
    fn close_banned_sessions(&self, new: &[BanTarget]) {
        for target in new {
            match target {
                BanTarget::User(name) => {
                    if let Some(user) = self.user(name) {
                        user.close_sessions(CloseReason::Banned);
                    }
                }
                BanTarget::Address(ip) => {
                    for user in self.all_users() {
                        user.close_sessions_from(*ip, CloseReason::Banned);
                    }
                }
            }
        }
    }

    /// Replaces the ban list with the store's (the sweep calls it), so bans and unbans made
    /// with `chatd admin` reach a running server. A store that keeps no bans leaves the list
    /// in memory as it is.
    pub(crate) fn reload_bans(&self) {
        match self.store.bans() {
            Ok(Some(stored)) => {
                let stored: HashSet<BanTarget> = stored.into_iter().collect();
                let new: Vec<BanTarget> = {
                    let mut bans = self.bans.write();
                    let new = stored.difference(&bans).cloned().collect();
                    if *bans != stored {
                        *bans = stored;
                    }
                    new
                };
                if self.cluster.is_some() {
                    self.close_banned_sessions(&new);
                }
            }
            Ok(None) => {}
            Err(e) => log::error!(error:% = e; "store error reloading bans"),
        }
    }
}
