//! The `chatd` binary: flags, start-up, and shutdown on Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

/// A chat server: rooms, direct messages, presence, several devices per user.
/// Talk to it with `nc 127.0.0.1 7878` and type HELP.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Flags {
    /// Address and port to listen on. Use 0.0.0.0:7878 to accept connections from other hosts.
    #[arg(long, default_value = "127.0.0.1:7878")]
    listen: SocketAddr,
    /// Most sessions held at once; further connections get `ERR server-full`. Defaults to the
    /// ceiling computed from the OS limits (threads, memory mappings, open files), which is
    /// also the maximum.
    #[arg(long)]
    max_sessions: Option<usize>,
    /// Lines each session may have queued; a session that falls this far behind is
    /// disconnected as a slow consumer.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(2..=1_000_000))]
    channel_capacity: u64,
    /// Messages each room keeps for HISTORY.
    #[arg(long, default_value_t = 1000)]
    recent: usize,
    /// Longest accepted line, in bytes.
    #[arg(long, default_value_t = 8192, value_parser = clap::value_parser!(u64).range(64..=1_048_576))]
    max_line: u64,
    /// Longest accepted message body, in bytes.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    max_body: u64,
    /// Seconds a connection may stay without logging in.
    #[arg(long, default_value_t = 30)]
    login_timeout: u64,
    /// Seconds a write to a client may block before the client is considered gone.
    #[arg(long, default_value_t = 10)]
    write_timeout: u64,
    /// Seconds within which a peer that vanished without closing (cable pulled, laptop
    /// asleep) is detected and dropped, by TCP keepalive probes; idle but connected clients
    /// answer them and are never dropped.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(6..=3600))]
    dead_peer_timeout: u64,
    /// Seconds a user whose last device disconnected still shows as online, so a quick
    /// reconnect does not flap their presence. 0 announces offline at once.
    #[arg(long, default_value_t = 5)]
    presence_grace: u64,
    /// Client message ids (cid=) remembered per user for idempotent retries.
    #[arg(long, default_value_t = 10_000)]
    client_id_window: usize,
    /// Hours a client message id is remembered.
    #[arg(long, default_value_t = 24)]
    client_id_hours: u64,
    /// Seconds a TYPING indicator lasts unless the typist refreshes it.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u64).range(1..=600))]
    typing_ttl: u64,
    /// Most messages one SYNC replays before saying `more`.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    sync_limit: u64,
}

fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    let config = chatd::Config {
        listen: flags.listen,
        max_sessions: flags.max_sessions,
        channel_capacity: flags.channel_capacity as usize,
        recent_per_room: flags.recent,
        max_line: flags.max_line as usize,
        max_body: flags.max_body as usize,
        login_timeout: Duration::from_secs(flags.login_timeout),
        write_timeout: Duration::from_secs(flags.write_timeout.max(1)),
        dead_peer_timeout: Duration::from_secs(flags.dead_peer_timeout),
        presence_grace: Duration::from_secs(flags.presence_grace),
        client_id_window: flags.client_id_window,
        client_id_ttl: Duration::from_secs(flags.client_id_hours * 3600),
        sync_limit: flags.sync_limit as usize,
        typing_ttl: Duration::from_secs(flags.typing_ttl),
    };
    let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
    ctrlc::set_handler(move || {
        let _ = stop_tx.try_send(());
    })
    .context("installing the Ctrl-C/SIGTERM handler")?;
    let server = chatd::start(config).with_context(|| format!("listening on {}", flags.listen))?;
    eprintln!(
        "chatd: listening on {} (Ctrl-C to stop)",
        server.local_addr()
    );
    let _ = stop_rx.recv();
    eprintln!("chatd: shutting down");
    if !server.shutdown() {
        eprintln!("chatd: some connections did not close in time");
    }
    Ok(())
}
