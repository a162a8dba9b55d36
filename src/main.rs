//! The `chatd` binary: flags, start-up, and shutdown on Ctrl-C or SIGTERM.

mod admin;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use chatd::cluster::ClusterOptions;
use chatd::config::RateLimit;
use chatd::config_file::{read_args, ConfigFileError};
use chatd::quota::Rate;
use chatd::store::postgres::PostgresOptions;
use chatd::store::sqlite::{SqliteOptions, SyncMode};
use chatd::store::{Retention, StoreConfig};
use chatd::Config;
use clap::{CommandFactory, Parser, ValueEnum};

/// The library's defaults, which every flag's default is read from (so `--help` shows them
/// and a change in `config.rs` reaches the binary).
fn defaults() -> Config {
    Config::default()
}

/// A chat server: rooms, direct messages, presence, several devices per user.
/// Talk to it with `nc 127.0.0.1 7878` and type HELP.
#[derive(Parser, Debug)]
// args_override_self: the --config file's settings come first on the command line, and a flag
// given again later (by the operator) replaces them.
#[command(version, about, args_override_self = true)]
struct Flags {
    /// Read settings from this TOML file first: each key is a long flag without its dashes
    /// (`max-sessions = 5000`), and flags on the command line override it. See
    /// chatd.example.toml.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Check the flags and the --config file, say what is wrong (naming the key), and exit:
    /// 0 if they are good, 1 if not. Starts nothing.
    #[arg(long)]
    check_config: bool,
    /// Which events are logged: a level (error, warn, info, debug, trace) and per-module
    /// levels, as in RUST_LOG: `info,chatd::store=debug`.
    #[arg(long, env = "RUST_LOG", default_value = "info", value_parser = parse_log_filter)]
    log_level: chatd::logging::Filter,
    /// How log lines are written on stderr: `text` or `json` (one object per line).
    #[arg(long, default_value = "text", value_parser = parse_log_format)]
    log_format: chatd::logging::Format,
    /// Without a subcommand, chatd serves.
    #[command(subcommand)]
    command: Option<Subcommand>,
    /// Address and port to listen on. Use 0.0.0.0:7878 to accept connections from other hosts.
    #[arg(long, default_value_t = defaults().listen)]
    listen: SocketAddr,
    /// Run as one node of a cluster sharing rooms through this Redis (`redis://HOST:PORT`), or
    /// this Redis Cluster (`redis-cluster://HOST:PORT,HOST:PORT,...`, some or all masters as
    /// seeds), which then keeps everything (--store is not used). See docs/cluster.md.
    #[arg(long, env = "CHATD_CLUSTER")]
    cluster: Option<String>,
    /// This node's name in the cluster (default: from the listening host and port).
    #[arg(long, requires = "cluster")]
    node_id: Option<String>,
    /// Seconds a node's presence lease lasts without a heartbeat: a dead node's users are
    /// shown offline this long plus --presence-grace after it died.
    #[arg(long, default_value_t = 15)]
    cluster_lease: u64,

    /// Also accept IRC clients (irssi, WeeChat, HexChat, bots) on this address, e.g.
    /// 127.0.0.1:6667. They are sessions of the same server: same rooms (#general is room
    /// general), DMs, accounts and limits. Off unless given; see docs/irc.md.
    #[arg(long, value_name = "ADDR")]
    irc_listen: Option<SocketAddr>,
    /// Where rooms, members and messages are kept: `sqlite` (the --data file; survives
    /// restarts and crashes), `postgres` (the --database-url database) or `memory` (lost on
    /// restart).
    #[arg(long, value_enum, default_value_t = StoreKind::Sqlite)]
    store: StoreKind,
    /// The SQLite database file, created if missing.
    #[arg(long, default_value = "chatd.db")]
    data: PathBuf,
    /// The PostgreSQL database for `--store postgres`: `postgres://user:pass@host:port/db`
    /// or a libpq key=value string (`host=/run/postgresql dbname=chatd`). The database must
    /// exist; chatd creates its tables.
    #[arg(long, env = "CHATD_DATABASE_URL", required_if_eq("store", "postgres"))]
    database_url: Option<String>,
    /// When an acknowledged message is safe: `full` fsyncs every group commit (survives power
    /// loss); `normal` fsyncs only at WAL checkpoints (survives a process crash, not a power
    /// loss; faster).
    #[arg(long, value_enum, default_value_t = SyncKind::Full)]
    sync: SyncKind,
    /// Refuse names that have no account. A name gets one with its first
    /// `LOGIN <name> password=<password>` (or REGISTER once logged in).
    #[arg(long)]
    require_account: bool,
    /// Rooms one user may be in (direct conversations not counted).
    #[arg(long, default_value_t = defaults().max_rooms_per_user)]
    max_rooms_per_user: usize,
    /// Rooms one user may create in an hour (JOIN of a free name).
    #[arg(long, default_value_t = defaults().new_rooms_per_user.burst)]
    rooms_per_user_per_hour: u32,
    /// Rooms the whole server may get in a minute.
    #[arg(long, default_value_t = defaults().new_rooms_overall.burst)]
    rooms_per_minute: u32,
    /// New user names (a first LOGIN) the whole server may get in a minute.
    #[arg(long, default_value_t = defaults().new_names_overall.burst)]
    names_per_minute: u32,
    /// Members one room may have.
    #[arg(long, default_value_t = defaults().max_members_per_room)]
    max_members_per_room: usize,
    /// Delete stored messages older than this many days (default: keep forever).
    #[arg(long)]
    retention_days: Option<u64>,
    /// Keep at most this many stored messages per room (default: all).
    #[arg(long)]
    retention_per_room: Option<u64>,
    /// Most sessions held at once; further connections get `ERR server-full`. Defaults to the
    /// ceiling computed from the OS limits (threads, memory mappings, open files), which is
    /// also the maximum.
    #[arg(long)]
    max_sessions: Option<usize>,
    /// Lines each session may have queued; a session that falls this far behind is
    /// disconnected as a slow consumer.
    #[arg(long, default_value_t = defaults().channel_capacity as u64, value_parser = clap::value_parser!(u64).range(2..=1_000_000))]
    channel_capacity: u64,
    /// Messages each room keeps in memory for SYNC and HISTORY (older ones are read from the
    /// store).
    #[arg(long, default_value_t = defaults().recent_per_room)]
    recent: usize,
    /// Bytes of messages each room keeps in memory, at most.
    #[arg(long, default_value_t = defaults().recent_bytes_per_room)]
    recent_bytes: usize,
    /// Bytes of messages all rooms together keep in memory; over it, the least recently
    /// active rooms' logs are dropped (they stay in the store).
    #[arg(long, default_value_t = defaults().recent_memory)]
    recent_memory: usize,
    /// Seconds after which an idle room's in-memory log is dropped (it stays in the store;
    /// not with --store memory, where the log is all the history there is).
    #[arg(long, default_value_t = defaults().recent_idle.as_secs())]
    recent_idle: u64,
    /// Bytes of its own replies (SYNC, HISTORY, ...) a session may have queued unread before
    /// it is disconnected as a slow consumer.
    #[arg(long, default_value_t = defaults().max_reply_bytes)]
    max_reply_bytes: usize,
    /// Longest accepted line, in bytes.
    #[arg(long, default_value_t = defaults().max_line as u64, value_parser = clap::value_parser!(u64).range(64..=1_048_576))]
    max_line: u64,
    /// Longest accepted message body, in bytes.
    #[arg(long, default_value_t = defaults().max_body as u64, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    max_body: u64,
    /// Seconds a connection may stay without logging in.
    #[arg(long, default_value_t = defaults().login_timeout.as_secs())]
    login_timeout: u64,
    /// Seconds a write to a client may block before the client is considered gone.
    #[arg(long, default_value_t = defaults().write_timeout.as_secs())]
    write_timeout: u64,
    /// Seconds within which a peer that vanished without closing (cable pulled, laptop
    /// asleep) is detected and dropped, by TCP keepalive probes; idle but connected clients
    /// answer them and are never dropped.
    #[arg(long, default_value_t = defaults().dead_peer_timeout.as_secs(), value_parser = clap::value_parser!(u64).range(6..=3600))]
    dead_peer_timeout: u64,
    /// Seconds a user whose last device disconnected still shows as online, so a quick
    /// reconnect does not flap their presence. 0 announces offline at once.
    #[arg(long, default_value_t = defaults().presence_grace.as_secs())]
    presence_grace: u64,
    /// Client message ids (cid=) remembered per user for idempotent retries.
    #[arg(long, default_value_t = defaults().client_id_window)]
    client_id_window: usize,
    /// Hours a client message id is remembered.
    #[arg(long, default_value_t = defaults().client_id_ttl.as_secs() / 3600)]
    client_id_hours: u64,
    /// Seconds a TYPING indicator lasts unless the typist refreshes it.
    #[arg(long, default_value_t = defaults().typing_ttl.as_secs(), value_parser = clap::value_parser!(u64).range(1..=600))]
    typing_ttl: u64,
    /// Most messages one SYNC replays before saying `more`.
    #[arg(long, default_value_t = defaults().sync_limit as u64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    sync_limit: u64,
    /// Most connections at once from one IP address (IPv6: one /64); further ones get
    /// `ERR too-many-connections`. 0: no cap. Loopback clients are not counted unless
    /// --per-ip-loopback is given, because behind a TLS proxy on this host every client
    /// comes from 127.0.0.1: limit per address in the proxy then.
    #[arg(long, default_value_t = defaults().max_per_ip.unwrap_or(0))]
    max_per_ip: usize,
    /// Count loopback clients (127.0.0.0/8, ::1) toward --max-per-ip too.
    #[arg(long)]
    per_ip_loopback: bool,
    /// Commands a session may send in one burst before the rate limit applies.
    #[arg(long, default_value_t = RateLimit::default().burst, value_parser = clap::value_parser!(u32).range(1..))]
    rate_burst: u32,
    /// Commands per second a session may send, sustained; more get `ERR rate-limited`.
    #[arg(long, default_value_t = RateLimit::default().per_second, value_parser = positive_number)]
    rate_per_second: f64,
    /// Refused (rate-limited) commands a session may send before it is disconnected with
    /// `BYE flooding`; one is forgiven per second.
    #[arg(long, default_value_t = RateLimit::default().flood_refusals, value_parser = clap::value_parser!(u32).range(1..))]
    flood_refusals: u32,
    /// Turn the per-session command rate limit off (benchmarks, trusted clients).
    #[arg(long)]
    no_rate_limit: bool,
    /// Seconds a line may take to arrive once its first byte has; a client that trickles
    /// bytes slower is closed with `BYE line-timeout` (the slow-loris guard).
    #[arg(long, default_value_t = defaults().line_timeout.as_secs(), value_parser = clap::value_parser!(u64).range(1..=3600))]
    line_timeout: u64,
    /// Address and port of the web client and WebSocket sessions (open
    /// http://127.0.0.1:7879 in a browser); `none` turns it off.
    #[arg(long, default_value = "127.0.0.1:7879", value_parser = http_address)]
    http_listen: HttpListen,
    /// An origin (`https://chat.example.org`) whose pages may open WebSocket sessions; may be
    /// given several times. Default: only the page's own origin, so another site cannot
    /// drive a visitor's browser. Set it when a proxy serves chatd under another name.
    #[arg(long)]
    http_origin: Vec<String>,
    /// Seconds an HTTP request's headers may take to arrive (the slow-loris guard for HTTP).
    #[arg(long, default_value_t = defaults().http_header_timeout.as_secs(), value_parser = clap::value_parser!(u64).range(1..=600))]
    http_header_timeout: u64,
}

/// `--http-listen`: an address, or `none`.
#[derive(Debug, Clone, Copy)]
struct HttpListen(Option<SocketAddr>);

fn http_address(text: &str) -> Result<HttpListen, String> {
    if text.eq_ignore_ascii_case("none") {
        return Ok(HttpListen(None));
    }
    text.parse()
        .map(|addr| HttpListen(Some(addr)))
        .map_err(|e| format!("{text}: {e} (or `none`)"))
}

fn parse_log_filter(text: &str) -> Result<chatd::logging::Filter, String> {
    text.parse()
}

fn parse_log_format(text: &str) -> Result<chatd::logging::Format, String> {
    text.parse()
}

fn positive_number(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(n) if n > 0.0 && n.is_finite() => Ok(n),
        _ => Err(format!("{text} is not a positive number")),
    }
}

#[derive(Debug, clap::Subcommand)]
enum Subcommand {
    /// Manage the store without a client: users, rooms, bans, backups. Works with the server
    /// stopped or running (see docs/deploy.md, "Administration"). Give the same --store,
    /// --data or --database-url (or --config) as the server, before `admin`.
    #[command(subcommand)]
    Admin(admin::AdminCommand),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum StoreKind {
    Sqlite,
    Postgres,
    Memory,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SyncKind {
    Full,
    Normal,
}

/// The server's `Config` from the flags.
fn server_config(flags: &Flags) -> Config {
    let retention = Retention {
        max_age: flags
            .retention_days
            .map(|days| Duration::from_secs(days * 24 * 3600)),
        max_per_room: flags.retention_per_room,
        client_id_ttl: Duration::from_secs(flags.client_id_hours * 3600),
        ..Retention::default()
    };
    let store = match flags.store {
        StoreKind::Memory => StoreConfig::Memory,
        StoreKind::Sqlite => StoreConfig::Sqlite(SqliteOptions {
            path: flags.data.clone(),
            sync: match flags.sync {
                SyncKind::Full => SyncMode::Full,
                SyncKind::Normal => SyncMode::Normal,
            },
            retention,
            max_pages: None,
        }),
        StoreKind::Postgres => StoreConfig::Postgres(PostgresOptions {
            url: flags.database_url.clone().unwrap_or_default(),
            retention,
        }),
    };
    let cluster = flags.cluster.clone().map(|url| ClusterOptions {
        url,
        node_id: flags
            .node_id
            .clone()
            .unwrap_or_else(|| ClusterOptions::default_node_id(flags.listen)),
        retention,
        lease: Duration::from_secs(flags.cluster_lease.max(1)),
    });
    Config {
        listen: flags.listen,
        irc_listen: flags.irc_listen,
        store,
        cluster,
        require_account: flags.require_account,
        max_rooms_per_user: flags.max_rooms_per_user,
        max_members_per_room: flags.max_members_per_room,
        new_rooms_per_user: Rate {
            burst: flags.rooms_per_user_per_hour.max(1),
            per: Duration::from_secs(3600),
        },
        new_rooms_overall: Rate {
            burst: flags.rooms_per_minute.max(1),
            per: Duration::from_secs(60),
        },
        new_names_overall: Rate {
            burst: flags.names_per_minute.max(1),
            per: Duration::from_secs(60),
        },
        max_sessions: flags.max_sessions,
        channel_capacity: flags.channel_capacity as usize,
        max_reply_bytes: flags.max_reply_bytes,
        recent_per_room: flags.recent,
        recent_bytes_per_room: flags.recent_bytes,
        recent_memory: flags.recent_memory,
        recent_idle: Duration::from_secs(flags.recent_idle),
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
        max_per_ip: (flags.max_per_ip > 0).then_some(flags.max_per_ip),
        per_ip_loopback: flags.per_ip_loopback,
        rate_limit: (!flags.no_rate_limit).then_some(RateLimit {
            burst: flags.rate_burst,
            per_second: flags.rate_per_second,
            flood_refusals: flags.flood_refusals,
        }),
        line_timeout: Duration::from_secs(flags.line_timeout),
        http_listen: flags.http_listen.0,
        http_origins: flags.http_origin.clone(),
        http_header_timeout: Duration::from_secs(flags.http_header_timeout),
    }
}

fn main() -> anyhow::Result<()> {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let checking = argv.iter().any(|arg| arg == "--check-config");
    let flags = match parse_flags(&argv) {
        Ok(flags) => flags,
        // --check-config promises 0 or 1, and clap's usage errors exit with 2.
        Err(error) if checking => {
            eprintln!("chatd: configuration is not valid: {error}");
            std::process::exit(1);
        }
        Err(FlagsError::File(error)) => {
            eprintln!("chatd: {error}");
            std::process::exit(2);
        }
        Err(FlagsError::Flags(error)) => error.exit(),
    };
    let config = server_config(&flags);
    if flags.check_config {
        let source = flags
            .config
            .as_ref()
            .map_or("the flags".to_owned(), |path| path.display().to_string());
        println!("chatd: {source}: configuration is valid");
        return Ok(());
    }
    chatd::logging::init(flags.log_level.clone(), flags.log_format)
        .context("installing the logger")?;
    if let Some(Subcommand::Admin(command)) = flags.command {
        // One clear line and exit status 1, without anyhow's backtrace: an admin error is
        // the operator's (no such user), not a bug.
        let done = chatd::store::admin::open(&config.store)
            .map_err(anyhow::Error::from)
            .and_then(|mut store| admin::run(&mut *store, command));
        match done {
            Ok(lines) => lines.iter().for_each(|line| println!("{line}")),
            Err(e) => {
                eprintln!("chatd admin: {e:#}");
                std::process::exit(1);
            }
        }
        return Ok(());
    }
    tune_allocator();
    let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
    ctrlc::set_handler(move || {
        let _ = stop_tx.try_send(());
    })
    .context("installing the Ctrl-C/SIGTERM handler")?;
    let server = chatd::start(config).context("starting chatd")?;
    match flags.log_format {
        // These exact lines are what scripts (and the tests) wait for; they stay as they were.
        chatd::logging::Format::Text => {
            if let Some(http) = server.http_addr() {
                eprintln!("chatd: web client at http://{http}/ (WebSocket: ws://{http}/ws)");
            }
            eprintln!(
                "chatd: listening on {} (Ctrl-C to stop)",
                server.local_addr()
            );
            if let Some(irc) = server.irc_addr() {
                eprintln!("chatd: IRC clients on {irc}");
            }
        }
        chatd::logging::Format::Json => {
            if let Some(http) = server.http_addr() {
                log::info!(http:% = http; "http listening");
            }
            log::info!(listen:% = server.local_addr(), capacity = server.capacity(); "listening");
            if let Some(irc) = server.irc_addr() {
                log::info!(irc:% = irc; "irc listening");
            }
        }
    }
    let _ = stop_rx.recv();
    log::info!(step = "signal"; "shutdown");
    if !server.shutdown() {
        log::warn!(step = "connections"; "some connections did not close in time");
    }
    log::info!(step = "done"; "shutdown");
    Ok(())
}

/// Why the command line could not be read.
enum FlagsError {
    File(chatd::config_file::ConfigFileError),
    Flags(clap::Error),
}

impl std::fmt::Display for FlagsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FlagsError::File(error) => error.fmt(f),
            FlagsError::Flags(error) => error.fmt(f),
        }
    }
}

/// Parses the command line, with the `--config` file's settings put before the real
/// arguments so that the command line overrides the file (see `chatd::config_file`).
fn parse_flags(argv: &[OsString]) -> Result<Flags, FlagsError> {
    let Some(path) = config_path(argv) else {
        return Flags::try_parse_from(argv).map_err(FlagsError::Flags);
    };
    let command = Flags::command();
    let known: Vec<&str> = command
        .get_arguments()
        .filter_map(|arg| arg.get_long())
        .filter(|name| !matches!(*name, "config" | "check-config" | "help" | "version"))
        .collect();
    let from_file = read_args(&path, &known).map_err(FlagsError::File)?;
    // The file alone first, so a bad value in it is reported as the file's (clap's message
    // names the flag, which is the key). A missing required flag may come from the command
    // line, so that one waits for the full parse.
    let program = argv.first().cloned().unwrap_or_else(|| "chatd".into());
    let file_only = std::iter::once(program.clone()).chain(from_file.iter().map(OsString::from));
    if let Err(error) = Flags::try_parse_from(file_only) {
        if error.kind() != clap::error::ErrorKind::MissingRequiredArgument {
            return Err(FlagsError::File(ConfigFileError {
                path,
                key: None,
                message: clap_message(&error),
            }));
        }
    }
    let full = std::iter::once(program)
        .chain(from_file.into_iter().map(OsString::from))
        .chain(argv.iter().skip(1).cloned());
    Flags::try_parse_from(full).map_err(FlagsError::Flags)
}

/// clap's one-line message without its `error: ` prefix and usage hint.
fn clap_message(error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    let first = rendered.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_owned()
}

/// The value of `--config FILE` or `--config=FILE`, found before clap runs.
fn config_path(argv: &[OsString]) -> Option<PathBuf> {
    let mut args = argv.iter().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--" {
            break;
        }
        if arg == "--config" {
            return args.next().map(PathBuf::from);
        }
        if let Some(path) = arg.to_str().and_then(|a| a.strip_prefix("--config=")) {
            return Some(PathBuf::from(path));
        }
    }
    None
}

/// glibc's allocator, left alone, keeps what a burst freed: after the first large block is
/// freed it raises the size above which blocks are mapped on their own (up to 32 MiB), so
/// large SYNC replies and argon2's buffers then land in the per-thread arenas and stay
/// resident when freed. Fixing the threshold at 128 KiB keeps large blocks mapped, and so
/// unmapped when freed: measured with tests/memory.rs, resident memory after the attackers
/// leave fell from 55-75 MB to 38-41 MB. (Capping the arenas too was tried: no better for
/// memory, and fan-out lost throughput to contention on the shared arenas.)
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before any other thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}
