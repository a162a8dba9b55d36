//! One room's ordering: the heart of "exactly once, in order".
//!
//! A room has a cursor (epoch, last seq handed on). Lines of the room go through
//! [`RoomOrder::on_message`] whatever their source (live fan-out, a SYNC replay, a replay of
//! the same message twice) and come out in seq order, each seq once. While a SYNC is under
//! way the room holds every line in a buffer keyed by seq, because live lines with higher
//! seqs arrive before the replay of lower ones (protocol.md, "Resuming after a drop").

use std::collections::BTreeMap;

use crate::event::{Event, Message};

/// A line held back until the room's SYNC finishes.
#[derive(Debug)]
enum Held {
    Message(Message),
    /// `GAP from..=to`, keyed by `from`.
    Gap {
        to: u64,
    },
}

#[derive(Debug)]
pub(crate) struct RoomOrder {
    /// The room's epoch as last confirmed; empty until the server has told one (a room first
    /// seen through a live line).
    pub epoch: String,
    /// The highest seq handed on (delivered to the event queue, or skipped by a GAP).
    pub seq: u64,
    /// Whether a SYNC is in progress: lines are held until its last page.
    pub syncing: bool,
    /// The highest seq the current SYNC's replay brought: the next page starts after it.
    replayed: u64,
    held: BTreeMap<u64, Held>,
}

impl RoomOrder {
    pub fn new(epoch: &str, seq: u64) -> RoomOrder {
        RoomOrder {
            epoch: epoch.to_owned(),
            seq,
            syncing: false,
            replayed: seq,
            held: BTreeMap::new(),
        }
    }

    /// Starts holding lines; returns the seq the SYNC starts after.
    pub fn begin_sync(&mut self) -> u64 {
        self.syncing = true;
        self.replayed = self.seq;
        self.seq
    }

    /// A MSG line for this room. `replayed` says it answers this room's SYNC. Returns whether
    /// a hole in the live stream needs a SYNC to fill it.
    #[must_use]
    pub fn on_message(&mut self, msg: Message, replayed: bool, out: &mut Vec<Event>) -> bool {
        if replayed {
            self.replayed = self.replayed.max(msg.seq);
        }
        if msg.seq <= self.seq {
            return false; // seen already: a replay of a delivered message
        }
        if !self.syncing && msg.seq == self.seq + 1 && self.held.is_empty() {
            self.seq = msg.seq;
            out.push(Event::Message(msg));
            return false;
        }
        self.held.entry(msg.seq).or_insert(Held::Message(msg));
        // Live lines never skip a seq (protocol.md, Order); one that does is filled by SYNC.
        !self.syncing
    }

    /// `GAP from to` in this room's SYNC replay.
    pub fn on_gap(&mut self, from: u64, to: u64) {
        self.replayed = self.replayed.max(to);
        if to > self.seq {
            self.held.insert(from, Held::Gap { to });
        }
    }

    /// `EPOCH <room> <epoch>`: the old cursor does not apply; the replay restarts from seq 0.
    /// Lines held so far came after the login, in the new epoch, so they stay.
    pub fn on_epoch(&mut self, room: &str, epoch: &str, out: &mut Vec<Event>) {
        self.epoch = epoch.to_owned();
        self.seq = 0;
        self.replayed = 0;
        out.push(Event::EpochReset {
            room: room.to_owned(),
            epoch: epoch.to_owned(),
        });
    }

    /// `OK SYNC`: with `more`, returns the seq to ask the next page after; otherwise hands on
    /// everything held, in seq order, and returns `None`.
    pub fn sync_page_done(&mut self, more: bool, room: &str, out: &mut Vec<Event>) -> Option<u64> {
        if more {
            return Some(self.replayed.max(self.seq));
        }
        self.syncing = false;
        self.release(room, out);
        None
    }

    /// Gives up on the SYNC (the room cannot be read): hands on what is held, in order.
    pub fn abandon_sync(&mut self, room: &str, out: &mut Vec<Event>) {
        self.syncing = false;
        self.release(room, out);
    }

    fn release(&mut self, room: &str, out: &mut Vec<Event>) {
        for (from, held) in std::mem::take(&mut self.held) {
            match held {
                Held::Message(msg) if msg.seq > self.seq => {
                    self.seq = msg.seq;
                    out.push(Event::Message(msg));
                }
                Held::Gap { to } if to > self.seq => {
                    out.push(Event::Gap {
                        room: room.to_owned(),
                        from: from.max(self.seq + 1),
                        to,
                    });
                    self.seq = to;
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: u64) -> Message {
        Message {
            room: "general".into(),
            seq,
            id: format!("id{seq}"),
            sent_at: String::new(),
            sender: "bob".into(),
            body: format!("m{seq}"),
        }
    }

    fn seqs(events: &[Event]) -> Vec<u64> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Message(m) => Some(m.seq),
                _ => None,
            })
            .collect()
    }

    /// protocol.md's walkthrough: live 44 first, then the replay 42, 43, 44.
    #[test]
    fn live_lines_wait_for_the_replay_and_duplicates_are_dropped() {
        let mut room = RoomOrder::new("e", 41);
        let mut out = Vec::new();
        assert_eq!(room.begin_sync(), 41);
        assert!(!room.on_message(msg(44), false, &mut out));
        for seq in [42, 43, 44] {
            assert!(!room.on_message(msg(seq), true, &mut out));
        }
        assert!(out.is_empty(), "nothing is handed on before the SYNC ends");
        assert_eq!(room.sync_page_done(false, "general", &mut out), None);
        assert_eq!(seqs(&out), [42, 43, 44]);
        assert!(!room.on_message(msg(44), false, &mut out));
        assert!(!room.on_message(msg(45), false, &mut out));
        assert_eq!(seqs(&out), [42, 43, 44, 45]);
    }

    #[test]
    fn more_pages_continue_after_the_last_replayed_seq_not_the_live_ones() {
        let mut room = RoomOrder::new("e", 0);
        let mut out = Vec::new();
        room.begin_sync();
        assert!(!room.on_message(msg(9), false, &mut out));
        assert!(!room.on_message(msg(1), true, &mut out));
        assert!(!room.on_message(msg(2), true, &mut out));
        assert_eq!(room.sync_page_done(true, "general", &mut out), Some(2));
    }

    #[test]
    fn a_hole_in_the_live_stream_asks_for_a_sync() {
        let mut room = RoomOrder::new("e", 3);
        let mut out = Vec::new();
        assert!(room.on_message(msg(5), false, &mut out));
        room.begin_sync();
        assert!(!room.on_message(msg(4), true, &mut out));
        assert!(!room.on_message(msg(5), true, &mut out));
        room.sync_page_done(false, "general", &mut out);
        assert_eq!(seqs(&out), [4, 5]);
    }

    #[test]
    fn a_gap_is_delivered_in_order_and_moves_the_cursor() {
        let mut room = RoomOrder::new("e", 1);
        let mut out = Vec::new();
        room.begin_sync();
        room.on_gap(2, 3);
        assert!(!room.on_message(msg(4), true, &mut out));
        room.sync_page_done(false, "general", &mut out);
        assert_eq!(
            out[0],
            Event::Gap {
                room: "general".into(),
                from: 2,
                to: 3
            }
        );
        assert_eq!(seqs(&out), [4]);
        assert_eq!(room.seq, 4);
    }

    #[test]
    fn an_epoch_reset_replays_from_the_start() {
        let mut room = RoomOrder::new("old", 50);
        let mut out = Vec::new();
        room.begin_sync();
        room.on_epoch("general", "new", &mut out);
        assert!(!room.on_message(msg(1), true, &mut out));
        room.sync_page_done(false, "general", &mut out);
        assert_eq!(seqs(&out), [1]);
        assert_eq!((room.epoch.as_str(), room.seq), ("new", 1));
    }
}
