//! Accounts and bans in Redis, so that every node refuses and admits alike.
//!
//! The server reads a user's account at each LOGIN (`server/bans.rs`) and re-reads the ban
//! list on its 5 s sweep. On one node that read goes to SQLite or PostgreSQL; in a cluster it
//! comes here, which is what makes a password set through node A required on node B, and a
//! ban made on one node hold on all of them.
//!
//! Keys: the user's hash `u:{user}` (fields `password`, `operator`) and one hash `bans`
//! (field `<kind> <target>` as `BanTarget`'s columns, value the reason).

use std::collections::HashMap;

use super::{keys, Cluster};
use crate::store::{BanTarget, StoreError, StoredAccount};

impl Cluster {
    /// `user`'s account as Redis has it now; `None` if no node ever stored the name.
    pub(super) fn stored_account(&self, user: &str) -> Result<Option<StoredAccount>, StoreError> {
        let (fields, banned): (HashMap<String, String>, bool) =
            self.with_connection("reading an account", |con| {
                con.query_pipeline(
                    redis::pipe()
                        .cmd("HGETALL")
                        .arg(keys::user(user))
                        .cmd("HEXISTS")
                        .arg(keys::BANS)
                        .arg(BanTarget::User(user.into()).to_string()),
                )
            })?;
        if fields.is_empty() {
            return Ok(None);
        }
        Ok(Some(StoredAccount {
            password_hash: fields.get("password").filter(|h| !h.is_empty()).cloned(),
            operator: fields.get("operator").is_some_and(|o| o == "1"),
            banned,
        }))
    }

    /// Every ban in force, cluster-wide.
    pub(super) fn stored_bans(&self) -> Result<Vec<BanTarget>, StoreError> {
        let fields: Vec<String> = self.with_connection("reading the ban list", |con| {
            redis::cmd("HKEYS").arg(keys::BANS).query(con)
        })?;
        Ok(fields
            .iter()
            .filter_map(|field| {
                let (kind, target) = field.split_once(' ')?;
                BanTarget::from_columns(kind, target)
            })
            .collect())
    }

    /// Redis answers (`GET /readyz`).
    pub(super) fn ping(&self) -> Result<(), StoreError> {
        self.with_connection("checking Redis", |con| {
            redis::cmd("PING").query::<String>(con)
        })
        .map(drop)
    }
}
