//! The memory store: persists nothing. Every ticket resolves inline, inside `write` (the
//! message is in the room's memory, the only place it will ever be), so posting never waits.

use super::{Snapshot, Store, StoreError, Ticket, Write};
use crate::client_ids::Published;
use crate::message::Message;

#[derive(Debug, Default)]
pub struct MemoryStore;

impl Store for MemoryStore {
    fn load(&self, _recent_per_room: usize) -> Result<Snapshot, StoreError> {
        Ok(Snapshot::default())
    }

    fn write(&self, _write: Write, ticket: Option<Ticket>) {
        if let Some(ticket) = ticket {
            ticket.resolve(Ok(()));
        }
    }

    fn messages(&self, _: &str, _: u64, _: u64, _: usize) -> Result<Vec<Message>, StoreError> {
        Ok(Vec::new())
    }

    /// Nothing is kept: a room's recent log is its whole history.
    fn holds_history(&self) -> bool {
        false
    }

    fn client_id(&self, _user: &str, _cid: &str) -> Result<Option<Published>, StoreError> {
        Ok(None)
    }
}
