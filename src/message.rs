//! A message posted to a room: the unit of history, ordering and delivery.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct Message {
    /// Server-assigned, time-ordered (UUIDv7): clients dedupe redeliveries by it.
    pub id: Uuid,
    pub room: Arc<str>,
    /// Position in the room: 1, 2, 3, ... assigned under the room's lock, so seqs increase in
    /// the order messages become visible, and clients resume from the last seq they saw. A
    /// seq whose write failed is never used again: SYNC reports it as a `GAP`.
    pub seq: u64,
    pub sender: Arc<str>,
    pub body: Box<str>,
    pub sent_at: DateTime<Utc>,
}
