//! A room's past: SYNC, the replay that meets the live stream without a gap, and HISTORY,
//! pages going back. Both read the room's recent log (under its lock) and the store (for what
//! is older, outside the lock where it can).

use std::sync::Arc;

use super::{Room, RoomState};
use crate::delivery::Reply;
use crate::event::{Event, HistoryPage, Replay, ReplayItem};
use crate::message::Message;
use crate::protocol::{ClientError, ErrorCode};
use crate::recent::footprint;
use crate::session::Session;

/// The most message bytes one SYNC or HISTORY reply carries (besides `--sync-limit` messages):
/// a reply is queued whole, so this bounds what one request can make the server hold for a
/// client that does not read. Clients page on (`more`, `before=`). A reply always carries at
/// least one message, so paging always moves.
pub const REPLY_BYTES: usize = 256 * 1024;

impl Room {
    /// Replays to the session every message after `after`, as one reply queued under the
    /// room's lock: every message settled before the replay is in it, every message settled
    /// after it is queued live behind it, so replay and live stream meet with no gap and in
    /// seq order. An `epoch` other than the room's restarts the replay from 0 (after an
    /// `EPOCH` line); messages that cannot be replayed are announced with `GAP`, never
    /// skipped silently. At most `limit` messages: then `OK SYNC` says `more`.
    ///
    /// Messages older than the recent log are read from the store first, outside the lock;
    /// if the log moved on meanwhile, the read is repeated (a few times, then under the lock).
    pub fn sync(
        &self,
        session: &Session,
        after: u64,
        epoch: Option<&str>,
        limit: usize,
        reply: &Reply,
    ) -> Result<(), ClientError> {
        self.touch();
        let reset = epoch.is_some_and(|epoch| epoch != &*self.epoch);
        let after = if reset { 0 } else { after };
        const ATTEMPTS_OUTSIDE_LOCK: usize = 3;
        for attempt in 0..=ATTEMPTS_OUTSIDE_LOCK {
            let (held_from, settled) = {
                let state = self.state.lock();
                (oldest_held(&state), state.settled)
            };
            let stored_until = held_from.min(settled + 1);
            // One more than a page: the replay can then tell "exactly a page" from "more
            // remain" when the store holds everything (an empty or dropped recent log).
            let read_stored = |bound: u64| {
                if after.saturating_add(1) < bound {
                    self.store
                        .messages(&self.name, after, bound, limit.saturating_add(1))
                        .map_err(store_error)
                } else {
                    Ok(Vec::new())
                }
            };
            let stored = if attempt < ATTEMPTS_OUTSIDE_LOCK {
                read_stored(stored_until)?
            } else {
                Vec::new()
            };
            let state = self.state.lock();
            let stored = if attempt == ATTEMPTS_OUTSIDE_LOCK {
                read_stored(oldest_held(&state).min(state.settled + 1))?
            } else if oldest_held(&state) != held_from && stored.len() <= limit {
                continue; // the recent log moved on while we read: what we read may end short
            } else {
                stored
            };
            let (replay, cursor) = self.replay(&state, after, reset, stored, limit);
            session.deliver(&reply.progress(Event::Replay(replay), &self.name, cursor));
            return Ok(());
        }
        unreachable!("the last attempt always replies")
    }

    /// Builds the SYNC reply from stored messages and the recent log, and the seq the
    /// session's cursor reaches once it is written; see [`Room::sync`].
    fn replay(
        &self,
        state: &RoomState,
        after: u64,
        reset: bool,
        stored: Vec<Message>,
        limit: usize,
    ) -> (Replay, u64) {
        let mut items = Vec::new();
        let stored: Vec<Arc<Message>> = stored.into_iter().map(Arc::new).collect();
        // Saturating: a client may claim any cursor, up to u64::MAX.
        let mut expected = after.saturating_add(1);
        let mut more = false;
        let held = state
            .recent
            .iter()
            .filter(|m| m.seq > stored.last().map_or(after, |s| s.seq));
        let replayable = stored.iter().chain(held).filter(|m| m.seq > after);
        let mut bytes = 0;
        for (count, message) in replayable.enumerate() {
            if message.seq > state.settled {
                break;
            }
            bytes += footprint(message);
            if count == limit || (count > 0 && bytes > REPLY_BYTES) {
                more = true;
                break;
            }
            if message.seq > expected {
                let (from, to) = (expected, message.seq - 1);
                items.push(ReplayItem::Gap { from, to });
            }
            items.push(ReplayItem::Message(Arc::clone(message)));
            expected = message.seq + 1;
        }
        if !more && expected <= state.settled {
            let (from, to) = (expected, state.settled);
            items.push(ReplayItem::Gap { from, to });
            expected = state.settled + 1;
        }
        let settled = state.settled;
        let cursor = if more { expected - 1 } else { settled };
        let replay = Replay {
            room: Arc::clone(&self.name),
            reset,
            items,
            seq: settled,
            epoch: Arc::clone(&self.epoch),
            more,
        };
        (replay, cursor)
    }

    /// Up to `limit` of the most recent messages with seq < `before`, oldest first: from the
    /// recent log, and from the store for what is older than the log.
    pub fn history(&self, limit: usize, before: Option<u64>) -> Result<HistoryPage, ClientError> {
        self.touch();
        let (mut page, seq, oldest_held) = {
            let state = self.state.lock();
            let before = before.unwrap_or(u64::MAX);
            let page: Vec<Arc<Message>> = state
                .recent
                .iter()
                .rev()
                .filter(|m| m.seq < before)
                .take(limit)
                .cloned()
                .collect();
            (page, state.settled, oldest_held(&state))
        };
        page.reverse();
        let wanted = limit - page.len();
        let bound = page
            .first()
            .map_or(before.unwrap_or(u64::MAX).min(oldest_held), |m| m.seq);
        if wanted > 0 && bound > 1 {
            // Everything below the recent log is settled and in the store: read the newest
            // `wanted` of them. The store returns oldest first from `after`, so start there.
            let after = bound.saturating_sub(wanted as u64 + 1);
            let older = self
                .store
                .messages(&self.name, after, bound, wanted)
                .map_err(store_error)?;
            let mut combined: Vec<Arc<Message>> = older.into_iter().map(Arc::new).collect();
            combined.extend(page);
            page = combined;
        }
        // The newest messages that fit in one reply; the client pages back with `before=`.
        let mut bytes: usize = page.iter().map(|m| footprint(m)).sum();
        let mut oldest = 0;
        while bytes > REPLY_BYTES && oldest + 1 < page.len() {
            bytes -= footprint(&page[oldest]);
            oldest += 1;
        }
        page.drain(..oldest);
        Ok(HistoryPage {
            room: Arc::clone(&self.name),
            messages: page,
            seq,
            epoch: Arc::clone(&self.epoch),
        })
    }
}

/// The seq of the oldest message in the recent log (one past the last settled if empty).
fn oldest_held(state: &RoomState) -> u64 {
    state.recent.front().map_or(state.settled + 1, |m| m.seq)
}

fn store_error(e: crate::store::StoreError) -> ClientError {
    ClientError::new(
        ErrorCode::StoreFailed,
        format!("reading history failed ({e})"),
    )
}
