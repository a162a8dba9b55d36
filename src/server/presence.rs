//! Sessions coming and going, and what a user's peers are told: online at once, offline only
//! after the grace period (so a phone reconnecting through a blip never flaps).
//!
//! Every change here runs under the user's presence lock (rank 1), held as a
//! [`PresenceGuard`], so a user's `online` and `offline` can never reach anyone in the wrong
//! order.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use std::time::Instant;

use super::ChatServer;
use crate::delivery::{CloseReason, Cursor, Line, Outbox};
use crate::event::Event;
use crate::protocol::{ClientError, ErrorCode};
use crate::session::Session;
use crate::stats::Stats;
use crate::store::Write;
use crate::timers::{Due, Task};
use crate::user::{Departure, PresenceGuard, User};

impl ChatServer {
    /// Logs a connection in as `name`. The user is created on first login. A session with
    /// the same device id is replaced (it gets `BYE replaced`). If the user was shown
    /// offline, everyone who shares a room with them learns they are online.
    /// `ok` is the reply to queue the moment the session is attached; `proven` says whether
    /// the login carried the name's password.
    pub fn login(
        &self,
        outbox: &Arc<Outbox>,
        name: &str,
        device: Option<&str>,
        proven: bool,
        ok: Arc<Line>,
    ) -> Result<Arc<Session>, ClientError> {
        let user = self.user_or_create(name);
        self.follow_rooms_of(&user);
        let session = Arc::new(Session::new(
            outbox.id,
            Arc::clone(&user),
            device,
            Arc::clone(outbox),
            proven,
        ));
        // Each room's seq *before* the session is attached: this session is owed nothing up
        // to there, so that is where its slow-consumer cursors start.
        let starts: Vec<Cursor> = self
            .rooms_of(&user)
            .into_iter()
            .map(|room| Cursor {
                room: room.name,
                seq: room.seq,
                start: true,
            })
            .collect();
        let presence = user.lock_presence();
        let Some(arrival) = user.add_session(&presence, Arc::clone(&session), &ok) else {
            // Registered between the credential check and now.
            return Err(ClientError::new(
                ErrorCode::BadPassword,
                format!("{name} is registered: LOGIN {name} password=<password>"),
            ));
        };
        if !starts.is_empty() {
            session.deliver(&Line::cursors(starts));
        }
        if let Some(cluster) = &self.cluster {
            cluster.session_arrived(name);
            if let Some(device) = device {
                cluster.announce_device(name, device);
            }
        }
        match arrival.replaced {
            Some(old) => {
                old.outbox.close(CloseReason::Replaced);
                // The new session takes the old one's place in the counts, maybe through
                // another transport.
                Stats::sub(self.stats.transport_sessions(old.outbox.transport()), 1);
            }
            None => Stats::add(&self.stats.sessions, 1),
        }
        Stats::add(self.stats.transport_sessions(outbox.transport()), 1);
        Stats::add(&self.stats.logins, 1);
        if arrival.first_session {
            Stats::add(&self.stats.users_online, 1);
        }
        if arrival.came_online {
            let online = Event::Online {
                user: Arc::clone(&user.name),
            };
            self.tell_peers(&user, &Line::ephemeral(online));
        }
        Ok(session)
    }

    /// Ends a session. If it was the user's last, their peers learn they went offline once
    /// the grace period has passed without a new session.
    pub fn logout(&self, session: &Session) {
        let user = &session.user;
        let presence = user.lock_presence();
        let generation = match user.remove_session(&presence, session.id) {
            Departure::NotFound => return,
            Departure::StillOnline => {
                Stats::sub(&self.stats.sessions, 1);
                Stats::sub(self.stats.transport_sessions(session.outbox.transport()), 1);
                return;
            }
            Departure::LastSession { generation, at } => {
                Stats::sub(&self.stats.users_online, 1);
                let name = Arc::clone(&user.name);
                self.store.write(Write::LastSeen { user: name, at }, None);
                generation
            }
        };
        Stats::sub(&self.stats.sessions, 1);
        Stats::sub(self.stats.transport_sessions(session.outbox.transport()), 1);
        // Nobody is typing on a user with no device.
        for room in user.rooms() {
            if let Some(room) = self.room(&room) {
                room.stop_typing(&user.name);
            }
        }
        let grace = self.config.presence_grace;
        if !grace.is_zero() {
            let due = Due {
                at: Instant::now() + grace,
                what: Task::Offline {
                    user: Arc::clone(user),
                    generation,
                },
            };
            if self.timers.schedule(due).is_ok() {
                return;
            }
        }
        self.announce_offline(&presence, user, generation);
    }

    /// Called on the timer thread when a scheduled item is due.
    pub fn run_task(&self, task: Task) {
        match task {
            Task::Offline { user, generation } => {
                let presence = user.lock_presence();
                self.announce_offline(&presence, &user, generation);
            }
            Task::Sweep => self.sweep(),
            Task::Typing { room, user } => {
                if let Some(room) = self.room(&room) {
                    let next = room.reconcile_typing(&user);
                    self.schedule_typing(&room.name, &user, next);
                }
            }
        }
    }

    /// Asks the timer thread to bring a typing indicator up to date at `at`.
    pub(crate) fn schedule_typing(&self, room: &Arc<str>, user: &str, at: Option<Instant>) {
        let Some(at) = at else { return };
        let what = Task::Typing {
            room: Arc::clone(room),
            user: Arc::from(user),
        };
        if self.timers.schedule(Due { at, what }).is_err() {
            // The schedule is full: stop the indicator now rather than leave it stuck on.
            if let Some(room) = self.room(room) {
                room.stop_typing(user);
            }
        }
    }

    fn announce_offline(&self, presence: &PresenceGuard<'_>, user: &User, generation: u64) {
        if let Some(cluster) = &self.cluster {
            // The cluster decides: offline only if no other node has a session of theirs,
            // announced to every node (this one included) by `cluster::presence`.
            if user.left_this_node(presence, generation) {
                cluster.sessions_left(&user.name, user.last_seen_at().unwrap_or_else(Utc::now));
            }
            return;
        }
        if let Some(last_seen) = user.mark_offline(presence, generation) {
            let offline = Event::Offline {
                user: Arc::clone(&user.name),
                last_seen,
            };
            self.tell_peers(user, &Line::ephemeral(offline));
        }
    }

    /// Cluster mode: shows `user` as the cluster says, telling their peers here if that
    /// changed what this node showed.
    pub(crate) fn show_presence(&self, user: &User, online: bool, at: Option<DateTime<Utc>>) {
        let presence = user.lock_presence();
        if !user.show_presence(&presence, online, at) {
            return;
        }
        let user_name = Arc::clone(&user.name);
        let event = if online {
            Event::Online { user: user_name }
        } else {
            Event::Offline {
                user: user_name,
                last_seen: at.unwrap_or_else(Utc::now),
            }
        };
        self.tell_peers(user, &Line::ephemeral(event));
    }

    /// Sends `line` once to every user (all their sessions) who shares a room with `user`.
    /// Presence is about a person, not a room, so this is the one fan-out that is not a
    /// room's `broadcast`: a peer in three shared rooms is told once.
    fn tell_peers(&self, user: &User, line: &Arc<Line>) {
        let mut peers: BTreeMap<Arc<str>, Arc<User>> = BTreeMap::new();
        for room_name in user.rooms() {
            if let Some(room) = self.room(&room_name) {
                for member in room.members() {
                    if member.name != user.name {
                        peers.insert(Arc::clone(&member.name), member);
                    }
                }
            }
        }
        for peer in peers.values() {
            peer.deliver(line);
        }
    }
}
