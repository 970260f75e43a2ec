//! `[[notify]]`: who is told when switchyard acts by itself.

use std::path::Path;

use toml_edit::TableLike;

use crate::model::{NotifyConfig, NOTIFY_EVENTS};
use crate::reader::{Reader, Span};

const NOTIFY_KEYS: &[&str] = &["url", "secret", "ca", "exec", "events"];

/// Every `[[notify]]` table.
pub(crate) fn read_notify(
    reader: &mut Reader,
    root: &dyn TableLike,
    base_dir: &Path,
) -> Vec<NotifyConfig> {
    let Some(item) = root.get("notify") else {
        return Vec::new();
    };
    let Some(tables) = item.as_array_of_tables() else {
        let span = Reader::span_of(root, "notify", &(0..0));
        reader.error(
            &span,
            "`notify` must be a list of tables: write each one as [[notify]]",
        );
        return Vec::new();
    };
    tables
        .iter()
        .enumerate()
        .filter_map(|(i, table)| {
            let span = table.span().unwrap_or(0..0);
            let cx = format!("[[notify]] #{}", i + 1);
            read_target(reader, table, &span, &cx, base_dir)
        })
        .collect()
}

fn read_target(
    reader: &mut Reader,
    t: &dyn TableLike,
    span: &Span,
    cx: &str,
    base_dir: &Path,
) -> Option<NotifyConfig> {
    reader.check_keys(t, NOTIFY_KEYS, cx);
    let url = reader.string(t, "url", cx).and_then(|url| {
        let usable = url.value.parse::<http::Uri>().is_ok_and(|uri| {
            matches!(uri.scheme_str(), Some("http" | "https"))
                && uri.host().is_some_and(|h| !h.is_empty())
        });
        if usable {
            Some(url.value)
        } else {
            reader.error(&url.span, format!("`url` of {cx} must be an http:// or https:// URL, like \"https://hooks.example.com/switchyard\", not {:?}", url.value));
            None
        }
    });
    let ca = reader.string(t, "ca", cx).and_then(|ca| {
        if !url.as_deref().is_some_and(|u| u.starts_with("https://")) {
            reader.error(
                &ca.span,
                format!("`ca` of {cx} is for an https:// `url`: it names the certificates that webhook's server is checked against"),
            );
            return None;
        }
        match crate::pem::read_certificates(&crate::schema::resolve(base_dir, &ca.value)) {
            Ok(pem) => Some(pem),
            Err(problem) => {
                reader.error(&ca.span, format!("`ca` of {cx}: {problem}"));
                None
            }
        }
    });
    let secret = reader.string(t, "secret", cx).map(|s| s.value);
    let exec = reader.string_list(t, "exec", cx).and_then(|list| {
        if list.is_empty() {
            reader.error(
                span,
                format!(
                    "`exec` of {cx} must name a program, like [\"/usr/local/bin/page-oncall\"]"
                ),
            );
            return None;
        }
        Some(list.into_iter().map(|a| a.value).collect::<Vec<_>>())
    });
    let events = reader
        .string_list(t, "events", cx)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|event| {
            if NOTIFY_EVENTS.contains(&event.value.as_str()) {
                Some(event.value)
            } else {
                reader.error(
                    &event.span,
                    format!(
                        "`events` of {cx} lists {:?}; events are {}",
                        event.value,
                        NOTIFY_EVENTS.join(", ")
                    ),
                );
                None
            }
        })
        .collect();
    if url.is_none() && exec.is_none() {
        if t.get("url").is_none() && t.get("exec").is_none() {
            reader.error(
                span,
                format!("{cx} needs `url` (a webhook) or `exec` (a command), or both"),
            );
        }
        return None;
    }
    Some(NotifyConfig {
        url,
        secret,
        ca,
        exec,
        events,
    })
}
