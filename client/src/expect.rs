//! Waits with deadlines for scripted tests: each returns what it waited for or
//! [`Error::Timeout`], never hangs.

use std::time::{Duration, Instant};

use crate::event::{Event, Message};
use crate::{Client, Error};

impl Client {
    /// The first event `wanted` accepts within `timeout`; the events before it are dropped.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use chatd_client::{Client, Config, Event};
    /// # let mut client = Client::connect(Config::new("127.0.0.1:7878", "alice"))?;
    /// client.expect_event(Duration::from_secs(5), |e| matches!(e, Event::Joined { .. }))?;
    /// # Ok::<(), chatd_client::Error>(())
    /// ```
    pub fn expect_event(
        &mut self,
        timeout: Duration,
        mut wanted: impl FnMut(&Event) -> bool,
    ) -> Result<Event, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(left)? {
                Some(event) if wanted(&event) => return Ok(event),
                Some(_) => {}
                None => {
                    return Err(Error::Timeout {
                        what: "an expected event".into(),
                    })
                }
            }
        }
    }

    /// The next `count` messages of `room`, in order, within `timeout`; other events are
    /// dropped.
    pub fn expect_messages(
        &mut self,
        room: &str,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<Message>, Error> {
        let deadline = Instant::now() + timeout;
        let mut messages = Vec::with_capacity(count);
        while messages.len() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(left)? {
                Some(Event::Message(msg)) if msg.room == room => messages.push(msg),
                Some(_) => {}
                None => {
                    return Err(Error::Timeout {
                        what: format!("{count} messages of {room} (got {})", messages.len()),
                    })
                }
            }
        }
        Ok(messages)
    }

    /// Proves no event is waiting: nothing arrives within `quiet`.
    pub fn expect_no_event(&mut self, quiet: Duration) -> Result<(), Error> {
        match self.next_event(quiet)? {
            None => Ok(()),
            Some(event) => {
                // Put it back: the caller may want to see what broke the silence.
                self.queued_events().push_front(event.clone());
                Err(Error::InvalidArgument(format!(
                    "unexpected event {event:?}"
                )))
            }
        }
    }
}
