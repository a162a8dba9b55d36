//! The server's log: the `log` facade's macros everywhere, and this small logger behind them.
//!
//! Every event is one line on stderr with a time, a level, a target (the module path, such as
//! `chatd::transport::listener`), a short fixed message and key-value fields:
//!
//! ```text
//! 2026-11-30T04:20:01.123Z INFO  chatd::cmd::account login user=ana device=phone conn=7
//! {"ts":"2026-11-30T04:20:01.123Z","level":"info","target":"chatd::cmd::account","msg":"login","user":"ana","device":"phone","conn":7}
//! ```
//!
//! The message is a fixed word ("connect", "login", "refused", ...) and everything variable is
//! a field, so the JSON form can be queried without parsing prose. What is never logged: a
//! password, ever, and a message body at info or above (bodies are the users', not the
//! operator's).
//!
//! Why a logger of our own rather than env_logger: env_logger has no JSON output, and what is
//! needed here (a `RUST_LOG`-style filter, two formats, one `write` per line so lines from
//! different threads never interleave) is ~150 lines with no dependency beyond `log`.

use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::str::FromStr;

use log::kv::{self, VisitSource};
use log::{Level, LevelFilter, Log, Metadata, Record};

/// How each line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `time LEVEL target msg key=value ...`, for people.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl FromStr for Format {
    type Err = String;
    fn from_str(text: &str) -> Result<Format, String> {
        match text {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            _ => Err(format!("{text}: the log format is `text` or `json`")),
        }
    }
}

/// Which events are written: a default level and per-target levels, in `RUST_LOG` syntax:
/// `info`, `chatd=debug,chatd::store=trace`, `warn,chatd::transport=debug`. The most
/// specific target (the longest matching module prefix) wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    default: LevelFilter,
    /// `(target prefix, level)`, longest prefix first.
    targets: Vec<(String, LevelFilter)>,
}

impl Filter {
    pub fn enabled(&self, target: &str, level: Level) -> bool {
        level <= self.level_for(target)
    }

    fn level_for(&self, target: &str) -> LevelFilter {
        for (prefix, level) in &self.targets {
            let under = target.strip_prefix(prefix.as_str());
            if matches!(under, Some(rest) if rest.is_empty() || rest.starts_with("::")) {
                return *level;
            }
        }
        self.default
    }

    /// The most verbose level anything may log at, for `log::set_max_level` (so a disabled
    /// `debug!` costs one comparison).
    pub fn max_level(&self) -> LevelFilter {
        self.targets
            .iter()
            .map(|(_, level)| *level)
            .fold(self.default, std::cmp::max)
    }
}

impl FromStr for Filter {
    type Err = String;
    fn from_str(text: &str) -> Result<Filter, String> {
        let level = |word: &str| {
            word.trim().parse::<LevelFilter>().map_err(|_| {
                format!("{word}: a log level is off, error, warn, info, debug or trace")
            })
        };
        let mut filter = Filter {
            default: LevelFilter::Info,
            targets: Vec::new(),
        };
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.split_once('=') {
                Some((target, lvl)) => filter.targets.push((target.trim().to_owned(), level(lvl)?)),
                None => filter.default = level(part)?,
            }
        }
        filter
            .targets
            .sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        Ok(filter)
    }
}

struct Logger {
    filter: Filter,
    format: Format,
}

/// Installs the logger for the whole process. Fails if one is installed already (a second
/// call, or a test harness that installed its own).
pub fn init(filter: Filter, format: Format) -> Result<(), log::SetLoggerError> {
    let max = filter.max_level();
    log::set_boxed_logger(Box::new(Logger { filter, format }))?;
    log::set_max_level(max);
    Ok(())
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.filter.enabled(metadata.target(), metadata.level())
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format_line(record, self.format, chrono::Utc::now());
        // One write per line: stderr is unbuffered, and a line written in pieces could be
        // interleaved with another thread's.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// One event as one line, ending in `\n`.
pub fn format_line(
    record: &Record<'_>,
    format: Format,
    now: chrono::DateTime<chrono::Utc>,
) -> String {
    let ts = now.format("%Y-%m-%dT%H:%M:%S%.3fZ");
    let mut line = String::with_capacity(128);
    match format {
        Format::Text => {
            let _ = write!(
                line,
                "{ts} {:<5} {} {}",
                record.level(),
                record.target(),
                record.args()
            );
            let _ = record.key_values().visit(&mut TextFields(&mut line));
        }
        Format::Json => {
            let _ = write!(
                line,
                "{{\"ts\":\"{ts}\",\"level\":\"{}\",\"target\":",
                record.level().as_str().to_ascii_lowercase()
            );
            json_string(&mut line, record.target());
            line.push_str(",\"msg\":");
            json_string(&mut line, &record.args().to_string());
            let _ = record.key_values().visit(&mut JsonFields(&mut line));
            line.push('}');
        }
    }
    line.push('\n');
    line
}

struct TextFields<'a>(&'a mut String);

impl<'kvs> VisitSource<'kvs> for TextFields<'_> {
    fn visit_pair(&mut self, key: kv::Key<'kvs>, value: kv::Value<'kvs>) -> Result<(), kv::Error> {
        let text = value.to_string();
        // Quoted only when needed, so `key=value` splits on spaces unambiguously.
        if text.is_empty() || text.contains([' ', '"', '=']) {
            let _ = write!(self.0, " {key}={text:?}");
        } else {
            let _ = write!(self.0, " {key}={text}");
        }
        Ok(())
    }
}

struct JsonFields<'a>(&'a mut String);

impl<'kvs> VisitSource<'kvs> for JsonFields<'_> {
    fn visit_pair(&mut self, key: kv::Key<'kvs>, value: kv::Value<'kvs>) -> Result<(), kv::Error> {
        self.0.push(',');
        json_string(self.0, key.as_str());
        self.0.push(':');
        if let Some(n) = value.to_u64() {
            let _ = write!(self.0, "{n}");
        } else if let Some(n) = value.to_i64() {
            let _ = write!(self.0, "{n}");
        } else if let Some(b) = value.to_bool() {
            let _ = write!(self.0, "{b}");
        } else {
            json_string(self.0, &value.to_string());
        }
        Ok(())
    }
}

/// Appends `text` as a JSON string literal.
fn json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Formats an `Option` field as its value or `-`, so a field is always present.
pub struct OrDash<T>(pub Option<T>);

impl<T: fmt::Display> fmt::Display for OrDash<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(value) => value.fmt(f),
            None => f.write_str("-"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(format: Format) -> String {
        let fields: &[(&str, kv::Value<'_>)] = &[
            ("user", kv::Value::from("a \"b\"")),
            ("conn", kv::Value::from(7u64)),
        ];
        let record = Record::builder()
            .level(Level::Info)
            .target("chatd::cmd::account")
            .args(format_args!("login"))
            .key_values(&fields)
            .build();
        let now = chrono::DateTime::from_timestamp(0, 0).unwrap();
        format_line(&record, format, now)
    }

    #[test]
    fn text_lines_carry_fields_quoted_when_needed() {
        assert_eq!(
            line(Format::Text),
            "1970-01-01T00:00:00.000Z INFO  chatd::cmd::account login user=\"a \\\"b\\\"\" conn=7\n"
        );
    }

    #[test]
    fn json_lines_are_one_object_with_typed_fields() {
        assert_eq!(
            line(Format::Json),
            "{\"ts\":\"1970-01-01T00:00:00.000Z\",\"level\":\"info\",\"target\":\"chatd::cmd::account\",\
             \"msg\":\"login\",\"user\":\"a \\\"b\\\"\",\"conn\":7}\n"
        );
    }

    #[test]
    fn the_longest_target_prefix_wins() {
        let filter: Filter = "warn,chatd=debug,chatd::store=trace".parse().unwrap();
        assert!(filter.enabled("chatd::store::sqlite", Level::Trace));
        assert!(filter.enabled("chatd::transport", Level::Debug));
        assert!(!filter.enabled("chatd::transport", Level::Trace));
        assert!(
            !filter.enabled("chatdx", Level::Info),
            "a prefix ends at ::"
        );
        assert!(!filter.enabled("rusqlite", Level::Info));
        assert_eq!(filter.max_level(), LevelFilter::Trace);
    }

    #[test]
    fn a_bad_level_is_refused_by_name() {
        let error = "chatd=loud".parse::<Filter>().unwrap_err();
        assert!(error.contains("loud"), "{error}");
    }
}
