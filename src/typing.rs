//! Typing indicators for one room: who is shown typing, and when that must change.
//!
//! The server, not the client, decides when "typing" ends: a typist who stops refreshing
//! within the time-to-live is shown as stopped. Forwarding is rate-limited per typist so a
//! buggy client toggling start/stop cannot flood a room: at most one event per
//! [`FORWARD_INTERVAL`], with the latest state sent when the interval has passed.
//!
//! Pure logic with the time passed in, so it is tested without a clock.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The least time between two typing events forwarded for one typist in one room.
pub const FORWARD_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct Typing {
    typists: HashMap<Arc<str>, Typist>,
}

struct Typist {
    /// Typing until then, unless refreshed; `None` once they stopped.
    until: Option<Instant>,
    /// What the other members were last told.
    shown: bool,
    last_forwarded: Instant,
    /// When the check already scheduled for this typist is due. A refresh (every few seconds
    /// while someone types) would otherwise schedule one more timer entry each time; with
    /// this, a typist has at most one pending check that is not earlier than needed, and that
    /// check schedules the next.
    check_at: Option<Instant>,
}

/// What the room must do after a change.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Tell the other members now: `Some(true)` typing, `Some(false)` stopped.
    pub forward: Option<bool>,
    /// Schedule a check (`reconcile`) at this time: an expiry or a held-back event is due.
    /// `None` also when a check due no later is already scheduled.
    pub recheck_at: Option<Instant>,
}

impl Typing {
    /// The typist said they are typing (`typing`) or stopped.
    pub fn update(
        &mut self,
        user: &Arc<str>,
        typing: bool,
        now: Instant,
        ttl: Duration,
    ) -> Outcome {
        let until = typing.then(|| now + ttl);
        match self.typists.get_mut(user) {
            Some(typist) => typist.until = until,
            None if typing => {
                self.typists.insert(
                    Arc::clone(user),
                    Typist {
                        until,
                        shown: false,
                        last_forwarded: now - FORWARD_INTERVAL,
                        check_at: None,
                    },
                );
            }
            None => return Outcome::default(),
        }
        self.bring_up_to_date(user, now, false)
    }

    /// A scheduled check is due: brings what the others were told in line with the typist's
    /// state, as far as the rate limit allows. Idempotent: calling it early or twice does no
    /// harm.
    pub fn reconcile(&mut self, user: &str, now: Instant) -> Outcome {
        self.bring_up_to_date(user, now, true)
    }

    fn bring_up_to_date(&mut self, user: &str, now: Instant, check_due: bool) -> Outcome {
        let Some(typist) = self.typists.get_mut(user) else {
            return Outcome::default();
        };
        if check_due {
            typist.check_at = None;
        }
        if typist.until.is_some_and(|until| until <= now) {
            typist.until = None;
        }
        let typing = typist.until.is_some();
        let mut outcome = Outcome::default();
        if typing != typist.shown {
            let ready_at = typist.last_forwarded + FORWARD_INTERVAL;
            if now >= ready_at {
                typist.shown = typing;
                typist.last_forwarded = now;
                outcome.forward = Some(typing);
            } else {
                outcome.recheck_at = Some(ready_at);
            }
        }
        if typist.shown {
            // Shown typing: the expiry is the next thing that can change it.
            if let Some(until) = typist.until {
                outcome.recheck_at = Some(outcome.recheck_at.map_or(until, |at| at.min(until)));
            }
        }
        if let Some(at) = outcome.recheck_at {
            if typist.check_at.is_some_and(|pending| pending <= at) {
                outcome.recheck_at = None; // the pending check comes first and reschedules
            } else {
                typist.check_at = Some(at);
            }
        }
        if !typist.shown && !typing {
            self.typists.remove(user);
        }
        outcome
    }

    /// The typist sent a message, left, or lost their last session: stop at once, without
    /// waiting for the rate limit. Returns whether the others must be told.
    pub fn clear(&mut self, user: &str) -> bool {
        self.typists.remove(user).is_some_and(|typist| typist.shown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(6);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn start_is_forwarded_and_expires_after_the_ttl() {
        let (t0, alice) = (Instant::now(), Arc::from("alice"));
        let mut typing = Typing::default();
        let outcome = typing.update(&alice, true, t0, TTL);
        assert_eq!(outcome.forward, Some(true));
        assert_eq!(outcome.recheck_at, Some(t0 + TTL));
        assert_eq!(typing.reconcile("alice", t0 + TTL - ms(1)).forward, None);
        assert_eq!(typing.reconcile("alice", t0 + TTL).forward, Some(false));
        assert_eq!(
            typing.reconcile("alice", t0 + TTL + ms(1)),
            Outcome::default()
        );
    }

    #[test]
    fn refreshing_extends_without_forwarding() {
        let (t0, alice) = (Instant::now(), Arc::from("alice"));
        let mut typing = Typing::default();
        typing.update(&alice, true, t0, TTL);
        let outcome = typing.update(&alice, true, t0 + ms(3000), TTL);
        assert_eq!(outcome.forward, None);
        assert_eq!(
            outcome.recheck_at, None,
            "the check at the old expiry is pending"
        );
        let due = typing.reconcile("alice", t0 + TTL);
        assert_eq!(due.forward, None, "refreshed");
        assert_eq!(
            due.recheck_at,
            Some(t0 + ms(3000) + TTL),
            "the check moves on"
        );
    }

    #[test]
    fn toggling_is_rate_limited_and_the_last_state_wins() {
        let (t0, alice) = (Instant::now(), Arc::from("alice"));
        let mut typing = Typing::default();
        assert_eq!(typing.update(&alice, true, t0, TTL).forward, Some(true));
        let held = typing.update(&alice, false, t0 + ms(100), TTL);
        assert_eq!(held.forward, None);
        assert_eq!(held.recheck_at, Some(t0 + FORWARD_INTERVAL));
        assert_eq!(typing.update(&alice, true, t0 + ms(200), TTL).forward, None);
        assert_eq!(
            typing.update(&alice, false, t0 + ms(300), TTL).forward,
            None
        );
        assert_eq!(
            typing.reconcile("alice", t0 + FORWARD_INTERVAL).forward,
            Some(false)
        );
    }

    #[test]
    fn refreshes_keep_one_check_pending() {
        let (t0, alice) = (Instant::now(), Arc::from("alice"));
        let mut typing = Typing::default();
        let scheduled = (0..100)
            .filter(|i| {
                let now = t0 + ms(i * 50);
                typing.update(&alice, true, now, TTL).recheck_at.is_some()
            })
            .count();
        assert_eq!(scheduled, 1, "100 refreshes, one timer entry");
    }

    #[test]
    fn clear_stops_at_once_only_if_shown() {
        let (t0, alice) = (Instant::now(), Arc::from("alice"));
        let mut typing = Typing::default();
        assert!(!typing.clear("alice"));
        typing.update(&alice, true, t0, TTL);
        assert!(typing.clear("alice"));
        assert_eq!(typing.reconcile("alice", t0 + TTL), Outcome::default());
    }
}
