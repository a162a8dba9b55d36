//! Metrics for Prometheus: `GET /metrics` on the HTTP listener (`--http-listen`), with
//! `GET /healthz` and `GET /readyz` beside it (`metrics::http`).
//!
//! Nothing here counts anything. The counters are the server's own (`crate::stats::Stats`,
//! the same ones `STATS` shows, plus the histograms in [`Histogram`]), the store reports its
//! queue and commit times (`Store::queue_len`, `Store::commit_latency`), and the process
//! figures are read from `/proc` at scrape time ([`process`]). A scrape reads them all and
//! writes the text exposition format ([`encode`]). So metrics cost the hot paths only the
//! relaxed atomic adds they already did, plus one histogram observation per `OK SEND` and per
//! writer batch.
//!
//! Why an encoder of our own rather than the `prometheus` or `prometheus-client` crates: the
//! text format is a few lines of rules (HELP, TYPE, samples, cumulative `le` buckets), the
//! counters already exist as atomics that a registry crate would want to own, and the
//! `prometheus` crate pulls in protobuf and a global registry for nothing used here.
//!
//! Conventions: names are `chatd_*` (and the standard `process_*`), counters end in
//! `_total`, times are in seconds and sizes in bytes, and labels have a few fixed values
//! (`transport`, `reason`): never a user or room name, which would make one series per user.

pub mod encode;
pub mod histogram;
pub mod http;
pub mod process;

pub use histogram::Histogram;

use crate::server::ChatServer;
use crate::stats::{Stats, Transport};
use encode::Encoder;

/// The whole exposition for one scrape.
pub fn render(server: &ChatServer) -> String {
    let stats = &server.stats;
    let get = Stats::get;
    let mut out = Encoder::default();

    out.gauge(
        "chatd_connections",
        "Open client connections, logged in or not.",
        get(&stats.connections),
    );
    out.family(
        "chatd_sessions",
        "gauge",
        "Logged-in sessions, by the transport they came in by.",
    );
    for transport in Transport::ALL {
        let value = get(stats.transport_sessions(transport));
        out.sample("chatd_sessions", &[("transport", transport.name())], value);
    }
    out.gauge(
        "chatd_users_online",
        "Users with at least one session.",
        get(&stats.users_online),
    );
    out.gauge("chatd_users", "Known users.", server.user_count() as u64);
    out.gauge(
        "chatd_rooms",
        "Rooms, direct conversations included.",
        server.room_count() as u64,
    );
    out.counter(
        "chatd_logins_total",
        "Successful logins.",
        get(&stats.logins),
    );
    out.counter(
        "chatd_login_failures_total",
        "Logins refused for a wrong or missing password.",
        get(&stats.login_failures),
    );
    out.counter(
        "chatd_messages_posted_total",
        "Messages posted (SEND and DM) and stored.",
        get(&stats.messages),
    );
    out.counter(
        "chatd_deliveries_total",
        "Messages queued to sessions by fan-out (one message to ten sessions counts ten).",
        get(&stats.deliveries),
    );
    out.counter(
        "chatd_lines_written_through_total",
        "Lines a publishing thread wrote straight into an idle session's socket, waking no \
         writer thread (the rest of the deliveries went through the session's queue).",
        get(&stats.written_through),
    );
    out.counter(
        "chatd_write_through_leftovers_total",
        "Direct writes the socket did not take whole, whose rest went to the writer thread.",
        get(&stats.write_through_leftovers),
    );
    out.counter(
        "chatd_written_bytes_total",
        "Bytes written to client connections.",
        stats.bytes_written.get(),
    );
    out.family(
        "chatd_disconnects_total",
        "counter",
        "Sessions disconnected by the server for their behaviour.",
    );
    let disconnects = [
        ("slow_consumer", get(&stats.slow_consumers)),
        ("flooding", get(&stats.flooding)),
    ];
    for (reason, value) in disconnects {
        out.sample("chatd_disconnects_total", &[("reason", reason)], value);
    }
    out.counter(
        "chatd_events_shed_total",
        "Ephemeral events (presence, typing) dropped for sessions that had fallen behind.",
        get(&stats.shed),
    );
    out.family(
        "chatd_connections_refused_total",
        "counter",
        "Connections turned away at the door.",
    );
    let refused = get(&stats.refused);
    let per_address = get(&stats.refused_per_address);
    let banned = get(&stats.refused_banned);
    let refusals = [
        // Every other refusal is the server being full (or a thread failing to start).
        ("server_full", refused.saturating_sub(per_address + banned)),
        ("too_many_connections", per_address),
        ("banned", banned),
    ];
    for (reason, value) in refusals {
        out.sample(
            "chatd_connections_refused_total",
            &[("reason", reason)],
            value,
        );
    }
    out.counter(
        "chatd_commands_rate_limited_total",
        "Commands refused with ERR rate-limited.",
        get(&stats.rate_limited),
    );
    out.histogram(
        "chatd_queue_depth",
        "Lines waiting in a connection's queue when its writer wakes.",
        &stats.queue_depth,
    );
    out.histogram(
        "chatd_send_latency_seconds",
        "From a SEND or DM being carried out to its OK being queued, store commit included.",
        &stats.send_latency,
    );
    let store = &server.store;
    out.gauge(
        "chatd_store_queue_length",
        "Writes queued for the store's writer thread.",
        store.queue_len() as u64,
    );
    if let Some(commits) = store.commit_latency() {
        out.histogram(
            "chatd_store_commit_seconds",
            "Time to commit one batch of writes (one transaction).",
            commits,
        );
    }
    process::render(&mut out);
    out.finish()
}
