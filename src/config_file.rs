//! `--config chatd.toml`: a file that mirrors the command line.
//!
//! Each top-level key is a flag's long name and its value the flag's value, so
//! `max-sessions = 5000` means `--max-sessions 5000`. The binary turns the file into command
//! line arguments ([`to_args`]) and puts them *before* the real ones, so clap parses both and a
//! flag given on the command line overrides the file (for a single-valued flag the last
//! occurrence wins). The design choice: no second list of settings to keep in step with the
//! flags, so a flag added later is mirrored by the file without a line of code here.
//!
//! Values: a string or number is the flag's value; `true` is the bare flag and `false` leaves
//! it out; an array repeats the flag once per element. Tables (`[section]`) are refused: the
//! flags are flat, and a section would only invite guessing what it means.

use std::fmt;
use std::path::{Path, PathBuf};

/// A config file that cannot be used; `Display` names the file and, where there is one, the
/// offending key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFileError {
    pub path: PathBuf,
    /// The key at fault, if the fault is one key's.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "{}: key `{key}`: {}", self.path.display(), self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

impl std::error::Error for ConfigFileError {}

/// Reads `path` and turns it into arguments, accepting only keys in `known_flags` (long flag
/// names without the dashes).
pub fn read_args(path: &Path, known_flags: &[&str]) -> Result<Vec<String>, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigFileError {
        path: path.to_owned(),
        key: None,
        message: format!("cannot read it: {e}"),
    })?;
    to_args(&text, path, known_flags)
}

/// Turns the text of a config file into command-line arguments (`--key value ...`), sorted by
/// key (each key appears once in a file, so the order cannot matter).
pub fn to_args(
    text: &str,
    path: &Path,
    known_flags: &[&str],
) -> Result<Vec<String>, ConfigFileError> {
    let error = |key: Option<&str>, message: String| ConfigFileError {
        path: path.to_owned(),
        key: key.map(str::to_owned),
        message,
    };
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| error(None, format!("not valid TOML: {}", e.message())))?;
    let mut args = Vec::new();
    for (key, value) in &table {
        if !known_flags.contains(&key.as_str()) {
            return Err(error(
                Some(key),
                format!(
                    "no such setting (settings are the long flags of `chatd --help`, \
                     without the dashes{})",
                    suggestion(key, known_flags)
                ),
            ));
        }
        let values: Vec<&toml::Value> = match value {
            toml::Value::Array(items) => items.iter().collect(),
            other => vec![other],
        };
        for value in values {
            match value {
                toml::Value::Boolean(true) => args.push(format!("--{key}")),
                toml::Value::Boolean(false) => {}
                toml::Value::String(s) => args.extend([format!("--{key}"), s.clone()]),
                toml::Value::Integer(n) => args.extend([format!("--{key}"), n.to_string()]),
                toml::Value::Float(x) => args.extend([format!("--{key}"), x.to_string()]),
                toml::Value::Datetime(_) | toml::Value::Table(_) | toml::Value::Array(_) => {
                    return Err(error(
                        Some(key),
                        "must be a string, a number or true/false".into(),
                    ))
                }
            }
        }
    }
    Ok(args)
}

/// ", did you mean `max-sessions`?" for a key written with underscores or a near miss.
fn suggestion(key: &str, known_flags: &[&str]) -> String {
    let dashed = key.replace('_', "-");
    if known_flags.contains(&dashed.as_str()) {
        return format!("; did you mean `{dashed}`?");
    }
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: &[&str] = &[
        "listen",
        "max-sessions",
        "require-account",
        "sync",
        "rate-per-second",
    ];

    fn args(text: &str) -> Result<Vec<String>, ConfigFileError> {
        to_args(text, Path::new("chatd.toml"), KNOWN)
    }

    #[test]
    fn each_kind_of_value_becomes_its_flag() {
        let text = r#"
            listen = "127.0.0.1:9000"
            max-sessions = 10
            require-account = true
            rate-per-second = 2.5
        "#;
        assert_eq!(
            args(text).unwrap(),
            [
                "--listen",
                "127.0.0.1:9000",
                "--max-sessions",
                "10",
                "--rate-per-second",
                "2.5",
                "--require-account",
            ]
        );
    }

    #[test]
    fn false_leaves_the_flag_out() {
        assert!(args("require-account = false").unwrap().is_empty());
    }

    #[test]
    fn an_unknown_key_is_named_with_the_file() {
        let error = args("max_sessions = 3").unwrap_err();
        assert_eq!(error.key.as_deref(), Some("max_sessions"));
        let text = error.to_string();
        assert!(text.starts_with("chatd.toml: key `max_sessions`"), "{text}");
        assert!(text.contains("did you mean `max-sessions`"), "{text}");
    }

    #[test]
    fn a_section_is_refused() {
        let error = args("[server]\nlisten = \"x\"").unwrap_err();
        assert_eq!(error.key.as_deref(), Some("server"));
    }

    #[test]
    fn broken_toml_says_so() {
        let error = args("listen = ").unwrap_err();
        assert!(error.to_string().contains("not valid TOML"), "{error}");
    }
}
