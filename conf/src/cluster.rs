//! `[cluster]`: several switchyard nodes share their runtime decisions
//! through etcd.
//!
//! ```toml
//! [cluster]
//! etcd = ["http://10.0.0.1:2379", "http://10.0.0.2:2379", "http://10.0.0.3:2379"]
//! prefix = "/switchyard/prod"   # default "/switchyard"
//! node = "front-1"              # default: the host name
//! ```

use toml_edit::TableLike;

use crate::model::ClusterConfig;
use crate::reader::{Reader, Span};

const CLUSTER_KEYS: &[&str] = &["etcd", "prefix", "node"];
const CX: &str = "[cluster]";
const DEFAULT_PREFIX: &str = "/switchyard";

pub(crate) fn read_cluster(
    reader: &mut Reader,
    t: &dyn TableLike,
    span: &Span,
    host_name: impl FnOnce() -> Option<String>,
) -> Option<ClusterConfig> {
    reader.check_keys(t, CLUSTER_KEYS, CX);
    let Some(endpoints) = reader.string_list(t, "etcd", CX) else {
        reader.error(
            span,
            "[cluster] needs `etcd`: the client URLs of the etcd members, e.g. [\"http://127.0.0.1:2379\"]",
        );
        return None;
    };
    if endpoints.is_empty() {
        reader.error(span, "[cluster] `etcd` lists no member");
    }
    let mut etcd = Vec::new();
    for endpoint in endpoints {
        match endpoint_problem(&endpoint.value) {
            None => etcd.push(endpoint.value),
            Some(problem) => reader.error(
                &endpoint.span,
                format!("{:?} in [cluster] `etcd`: {problem}", endpoint.value),
            ),
        }
    }
    let prefix = match reader.string(t, "prefix", CX) {
        None => DEFAULT_PREFIX.to_string(),
        Some(prefix) => match prefix_problem(&prefix.value) {
            None => prefix.value,
            Some(problem) => {
                reader.error(&prefix.span, format!("[cluster] `prefix` {problem}"));
                DEFAULT_PREFIX.to_string()
            }
        },
    };
    let node = match reader.string(t, "node", CX) {
        Some(node) if node_name_ok(&node.value) => node.value,
        Some(node) => {
            reader.error(
                &node.span,
                "[cluster] `node` must be 1–64 letters, digits, `-`, `_` or `.`",
            );
            String::new()
        }
        None => match host_name().filter(|h| node_name_ok(h)) {
            Some(host) => host,
            None => {
                reader.error(
                    span,
                    "[cluster] has no `node` and the host name is not usable as one: set `node = \"…\"`",
                );
                String::new()
            }
        },
    };
    Some(ClusterConfig { etcd, prefix, node })
}

/// Why `url` is not an etcd client URL we can use, or `None`.
fn endpoint_problem(url: &str) -> Option<&'static str> {
    let Some(rest) = url.strip_prefix("http://") else {
        return Some("expected http://host:port (TLS to etcd is not supported yet)");
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
        return Some("expected http://host:port, with nothing after the port");
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => None,
        _ => Some("the port is missing (etcd's client port is usually 2379)"),
    }
}

/// Why `prefix` cannot hold our keys, or `None`.
fn prefix_problem(prefix: &str) -> Option<&'static str> {
    if !prefix.starts_with('/') {
        Some("must start with `/`")
    } else if prefix.len() > 1 && prefix.ends_with('/') {
        Some("must not end with `/` (switchyard adds it)")
    } else if prefix.contains("//") || prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("must be a path like \"/switchyard/prod\": no empty segment, no spaces")
    } else {
        None
    }
}

fn node_name_ok(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_plain_http_with_a_port() {
        assert_eq!(endpoint_problem("http://127.0.0.1:2379"), None);
        assert_eq!(endpoint_problem("http://etcd-1.internal:2379/"), None);
        assert_eq!(endpoint_problem("http://[::1]:2379"), None);
        for bad in [
            "127.0.0.1:2379",
            "https://a:2379",
            "http://a",
            "http://a:0",
            "http://a:2379/v3",
            "http://:2379",
        ] {
            assert!(endpoint_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn prefixes_are_absolute_paths() {
        assert_eq!(prefix_problem("/switchyard/prod"), None);
        assert_eq!(prefix_problem("/"), None);
        for bad in ["switchyard", "/a/", "/a//b", "/a b"] {
            assert!(prefix_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn node_names_are_short_tokens() {
        assert!(node_name_ok("front-1.example"));
        assert!(!node_name_ok(""));
        assert!(!node_name_ok("a/b"));
        assert!(!node_name_ok(&"x".repeat(65)));
    }
}
