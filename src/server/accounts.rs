//! Accounts: checking a LOGIN's credentials, REGISTER and PASSWORD. Hashing and the
//! failed-login throttle live in `crate::accounts`; this is where they meet users.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use super::ChatServer;
use crate::accounts::{hash_password, retry_later, throttle_address, verify_password};
use crate::delivery::CloseReason;
use crate::protocol::{ClientError, ErrorCode, Password};
use crate::session::Session;
use crate::stats::Stats;
use crate::store::{Ticket, Write};
use crate::user::User;

impl ChatServer {
    /// Checks a LOGIN's credentials before any session exists. A registered name needs its
    /// password; an unregistered name with a password is registered with it; an unregistered
    /// name without one is refused under `--require-account`. Every LOGIN but that last kind
    /// is a check the throttle guards (see `accounts`): failures are logged (never the
    /// password) and slow the next check for that name and from that address; this
    /// connection's own reader thread waits out the delay, nobody else. Returns whether the
    /// login proved (or set) the name's password.
    /// Whether `name` has a password (an account).
    pub fn has_account(&self, name: &str) -> bool {
        self.user(name)
            .is_some_and(|user| user.password_hash().is_some())
    }

    pub fn authenticate(
        &self,
        name: &str,
        password: Option<&Password>,
        peer: Option<IpAddr>,
    ) -> Result<bool, ClientError> {
        let registered = self
            .user(name)
            .is_some_and(|user| user.password_hash().is_some());
        let address = throttle_address(peer, self.config.per_ip_loopback);
        let attempt = if registered || password.is_some() {
            let attempt = self
                .throttle
                .begin(name, address, Instant::now())
                .map_err(retry_later)?;
            thread::sleep(attempt.wait());
            Some(attempt)
        } else {
            None
        };
        let stored = self.user(name).and_then(|user| user.password_hash());
        match (stored, password, attempt) {
            (Some(hash), Some(password), Some(attempt)) if verify_password(&password.0, &hash) => {
                attempt.succeeded();
                Ok(true)
            }
            (Some(_), given, attempt) => {
                if let Some(attempt) = attempt {
                    attempt.failed(Instant::now());
                }
                let peer = peer.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
                let what = if given.is_some() {
                    "wrong password"
                } else {
                    "no password"
                };
                Stats::add(&self.stats.login_failures, 1);
                log::warn!(user = name, peer:% = peer, why = what; "login failed");
                Err(ClientError::new(
                    ErrorCode::BadPassword,
                    format!("{name} is registered: LOGIN {name} password=<password>"),
                ))
            }
            (None, Some(password), attempt) => {
                self.throttle
                    .admit_new_account(address, Instant::now())
                    .map_err(retry_later)?;
                let user = self.user_or_create(name);
                if self.set_password(&user, password, true, None)? {
                    Ok(true)
                } else {
                    // Someone registered the name a moment ago: check against theirs.
                    drop(attempt);
                    self.authenticate(name, Some(password), peer)
                }
            }
            (None, None, _) if self.config.require_account => Err(ClientError::new(
                ErrorCode::AccountRequired,
                format!(
                    "this server needs an account: LOGIN {name} password=<password> creates one"
                ),
            )),
            (None, None, _) => {
                if self.user(name).is_none() {
                    self.throttle
                        .admit_new_name(address, Instant::now())
                        .map_err(retry_later)?;
                }
                Ok(false)
            }
        }
    }

    /// REGISTER: gives the session's name a password, if it has none. Every other session of
    /// the name that has not proven the password is closed (`BYE registered`).
    pub fn register(&self, session: &Session, password: &Password) -> Result<(), ClientError> {
        let already = || {
            ClientError::new(
                ErrorCode::NotPermitted,
                format!(
                    "{} is already registered; use PASSWORD to change it",
                    session.user.name
                ),
            )
        };
        // Refused before hashing and before spending the new-account quota: a hash costs
        // tens of milliseconds and one of the few hashing buffers.
        if session.user.password_hash().is_some() {
            return Err(already());
        }
        let address = throttle_address(session.outbox.peer_ip(), self.config.per_ip_loopback);
        self.throttle
            .admit_new_account(address, Instant::now())
            .map_err(retry_later)?;
        if self.set_password(&session.user, password, true, Some(session))? {
            if let Some(cluster) = &self.cluster {
                cluster.registered_here(&session.user.name);
            }
            Ok(())
        } else {
            Err(already())
        }
    }

    /// PASSWORD: checks the current password, sets a new one; optionally ends the user's
    /// other sessions. Asking for the current password means a session left open somewhere
    /// cannot lock the owner out of their account.
    pub fn change_password(
        &self,
        session: &Session,
        current: &Password,
        password: &Password,
        end_sessions: bool,
    ) -> Result<(), ClientError> {
        let name = &session.user.name;
        let Some(hash) = session.user.password_hash() else {
            return Err(ClientError::new(
                ErrorCode::NotPermitted,
                format!("{name} has no password yet; use REGISTER to set one"),
            ));
        };
        let peer = session.outbox.peer_ip();
        let address = throttle_address(peer, self.config.per_ip_loopback);
        let attempt = self
            .throttle
            .begin(name, address, Instant::now())
            .map_err(retry_later)?;
        thread::sleep(attempt.wait());
        if !verify_password(&current.0, &hash) {
            attempt.failed(Instant::now());
            let peer = peer.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            log::warn!(
                user = name, peer:% = peer, why = "wrong current password";
                "password change failed"
            );
            return Err(ClientError::new(
                ErrorCode::BadPassword,
                "the current password is wrong: PASSWORD <current> <new> [end-sessions]",
            ));
        }
        attempt.succeeded();
        self.set_password(&session.user, password, false, Some(session))?;
        if end_sessions {
            session
                .user
                .close_other_sessions(session.id, CloseReason::PasswordChanged);
            if let Some(cluster) = &self.cluster {
                cluster.end_sessions_elsewhere(&session.user.name, CloseReason::PasswordChanged);
            }
        }
        Ok(())
    }

    /// Cluster mode: `user`'s name was registered on another node. Its password, read from
    /// Redis, is set here too, which closes this node's sessions of the name that did not
    /// prove it (`BYE registered`), as `register` did there.
    pub(crate) fn adopt_registration(&self, user: &User) {
        match self.store.account(&user.name) {
            Ok(Some(account)) => {
                if let Some(hash) = account.password_hash {
                    user.set_password_hash(Arc::from(hash), false, None);
                }
            }
            Ok(None) => {}
            Err(e) => {
                log::error!(user:% = user.name, error:% = e; "store error reading a registration")
            }
        }
    }

    /// Hashes and sets a password (see `User::set_password_hash`), and returns once it is
    /// stored: an `OK` for a security change means it survives a crash, as for messages.
    fn set_password(
        &self,
        user: &User,
        password: &Password,
        only_if_none: bool,
        by: Option<&Session>,
    ) -> Result<bool, ClientError> {
        let hash: Arc<str> = hash_password(&password.0)
            .map_err(|e| ClientError::new(ErrorCode::StoreFailed, e))?
            .into();
        if !user.set_password_hash(Arc::clone(&hash), only_if_none, by) {
            return Ok(false);
        }
        let name = Arc::clone(&user.name);
        let ticket = Ticket::default();
        self.store
            .write(Write::Password { user: name, hash }, Some(ticket.clone()));
        ticket.wait().map_err(|e| {
            ClientError::new(
                ErrorCode::StoreFailed,
                format!("the password could not be stored ({e}); try again"),
            )
        })?;
        if only_if_none {
            let keep = by.and_then(|session| session.device.as_deref());
            self.withdraw_keys_of_new_account(user, keep);
        }
        Ok(true)
    }
}
