//! switchyard's configuration: the TOML schema, parsing with `file:line:col`
//! errors, whole-file validation that reports every problem at once, what an
//! edit removes, and the watcher that notices edits.

mod acme;
mod checks;
mod cluster;
mod guard;
mod limits;
mod model;
mod notify;
mod pages;
mod pem;
mod reader;
mod schema;
pub mod shrink;
mod slots;
mod suggest;
pub mod watch;

pub use limits::DEFAULT_MAX_HEADER_SIZE;
pub use model::*;

use std::path::Path;

/// One problem in a config file, located for a person to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    /// 1-based; 0 when the problem has no place in the file (unreadable file).
    pub line: usize,
    /// 1-based; 0 as for `line`.
    pub column: usize,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            )
        }
    }
}

/// Every problem found in one file, in file order. Never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Parses and validates `text`. `source` names the file in messages; relative
/// paths in the file are resolved against `base_dir`.
pub fn parse(source: &str, text: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
    let mut reader = reader::Reader::new(source, text);
    let doc = match toml_edit::ImDocument::parse(text.to_string()) {
        Ok(doc) => doc,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            let message = e.message().trim().to_string();
            reader.error(&span, format!("TOML syntax: {message}"));
            return Err(ConfigErrors(reader.errors));
        }
    };
    let read = schema::read(&mut reader, &doc, base_dir);
    checks::check_routes(&mut reader, &read.routes);
    checks::check_listeners(&mut reader, &read.listeners);
    let mut config = read.config;
    if !reader.errors.is_empty() {
        let mut errors = reader.errors;
        errors.sort_by_key(|e| (e.line, e.column));
        return Err(ConfigErrors(errors));
    }
    config.source = source.to_string();
    Ok(config)
}

/// Reads, parses and validates the file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let source = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: source.clone(),
            line: 0,
            column: 0,
            message: format!("cannot read the config file: {e}"),
        }])
    })?;
    let base_dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    parse(&source, &text, base_dir)
}

/// One line for `switchyard check`: "ok: 2 routes, 5 slots, 7 backends; listening on 0.0.0.0:80".
pub fn summary(config: &Config) -> String {
    let slots: usize = config.routes.iter().map(|r| r.slots.len()).sum();
    let backends: usize = config
        .routes
        .iter()
        .flat_map(|r| r.backends.values())
        .map(Vec::len)
        .sum();
    let listen: Vec<String> = config.server.listen.iter().map(|a| a.to_string()).collect();
    let mut line = format!(
        "ok: {}, {}, {}; listening on {}",
        count(config.routes.len(), "route"),
        count(slots, "slot"),
        count(backends, "backend"),
        listen.join(", ")
    );
    if let Some(cluster) = &config.cluster {
        line.push_str(&format!(
            "; cluster node {} under {} on {}",
            cluster.node,
            cluster.prefix,
            count(cluster.etcd.len(), "etcd member")
        ));
    }
    line
}

fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests;
