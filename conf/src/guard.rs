//! What judges a slot beyond the probe's status: `[route.guard]` (how a
//! switch is watched), `failover` (what a route does when its active slot
//! dies with no previous slot) and `[route.health] expect_body`.

use toml_edit::TableLike;

use crate::model::{BodyExpectation, GuardConfig};
use crate::reader::{Reader, Span};

const GUARD_KEYS: &[&str] = &[
    "enabled",
    "window",
    "max_error_rate",
    "max_latency_increase",
    "min_requests",
];

/// The section as given, with the defaults for what it leaves out.
pub(crate) fn read_guard(reader: &mut Reader, t: &dyn TableLike, route_cx: &str) -> GuardConfig {
    let cx = format!("[route.guard] of {route_cx}");
    reader.check_keys(t, GUARD_KEYS, &cx);
    let default = GuardConfig::default();
    GuardConfig {
        enabled: reader.boolean(t, "enabled", &cx).unwrap_or(default.enabled),
        window: reader.duration(t, "window", &cx).unwrap_or(default.window),
        max_error_rate: reader
            .float(t, "max_error_rate", &cx, 0.0, 1.0)
            .unwrap_or(default.max_error_rate),
        max_latency_increase: reader
            .float(t, "max_latency_increase", &cx, 0.0, 100.0)
            .unwrap_or(default.max_latency_increase),
        min_requests: reader
            .integer(t, "min_requests", &cx, 1..i64::MAX)
            .map_or(default.min_requests, |n| n as u64),
    }
}

/// `failover = "healthy" | "none"` of a route; `"healthy"` when absent.
pub(crate) fn read_failover(reader: &mut Reader, t: &dyn TableLike, cx: &str) -> bool {
    let Some(value) = reader.string(t, "failover", cx) else {
        return true;
    };
    match value.value.as_str() {
        "healthy" => true,
        "none" => false,
        other => {
            reader.error(
                &value.span,
                format!("`failover` of {cx} is {other:?}; expected \"healthy\" (the default: when there is no previous slot, the healthy slot active most recently takes over, else the first healthy one in config order) or \"none\""),
            );
            true
        }
    }
}

/// `expect_body = "text"` or `expect_body = { field = "value" }`.
pub(crate) fn read_expect_body(
    reader: &mut Reader,
    t: &dyn TableLike,
    span: &Span,
    cx: &str,
) -> Option<BodyExpectation> {
    let item = t.get("expect_body")?;
    let at = Reader::span_of(t, "expect_body", span);
    if let Some(text) = item.as_str() {
        if text.is_empty() {
            reader.error(
                &at,
                format!("`expect_body` of {cx} is empty; every body would pass"),
            );
            return None;
        }
        return Some(BodyExpectation::Contains(text.to_string()));
    }
    let fields: Vec<(String, String)> = item
        .as_inline_table()
        .map(|table| {
            table
                .iter()
                .filter_map(|(k, v)| {
                    let value = v
                        .as_str()
                        .map(str::to_owned)
                        .or_else(|| v.as_integer().map(|n| n.to_string()))
                        .or_else(|| v.as_bool().map(|b| b.to_string()))?;
                    Some((k.to_string(), value))
                })
                .collect()
        })
        .unwrap_or_default();
    match <[(String, String); 1]>::try_from(fields) {
        Ok([(field, value)]) => Some(BodyExpectation::JsonField { field, value }),
        Err(_) => {
            reader.error(
                &at,
                format!("`expect_body` of {cx} must be a text the body contains, like \"ok\", or one JSON field and its value, like {{ status = \"healthy\" }}"),
            );
            None
        }
    }
}
