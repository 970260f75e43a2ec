//! Limits and trust at the edge: sizes (`max_body_size` in `[server]` and
//! per route, `max_header_size`) and whose word on the client's address is
//! taken (`trusted_proxies`).

use std::time::Duration;

use ipnet::IpNet;
use toml_edit::TableLike;

use crate::model::{AccessConfig, RateKey, RateLimitConfig};
use crate::reader::{Reader, Span};

const LIMITS_KEYS: &[&str] = &["rate", "burst", "key"];
const ACCESS_KEYS: &[&str] = &["allow", "deny", "paths", "basic_auth"];
const USER_KEYS: &[&str] = &["user", "hash"];

/// `[route.access]`: `allow` and `deny` CIDR lists, for the whole route or
/// only the path prefixes in `paths`.
pub(crate) fn read_access(reader: &mut Reader, t: &dyn TableLike, route_cx: &str) -> AccessConfig {
    let cx = format!("[route.access] of {route_cx}");
    reader.check_keys(t, ACCESS_KEYS, &cx);
    let paths = reader
        .string_list(t, "paths", &cx)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| {
            if p.value.starts_with('/') {
                Some(p.value)
            } else {
                reader.error(
                    &p.span,
                    format!("{:?} in `paths` of {cx} must start with '/'", p.value),
                );
                None
            }
        })
        .collect();
    AccessConfig {
        allow: read_cidrs(reader, t, "allow", &cx),
        deny: read_cidrs(reader, t, "deny", &cx),
        paths,
        basic_auth: read_users(reader, t, &cx),
    }
}

/// `basic_auth = [{ user = "…", hash = "…" }]`: argon2 (PHC string, as
/// `switchyard hash-password` prints) or bcrypt (`$2b$…`, as `htpasswd -B`
/// writes) hashes, never passwords.
fn read_users(reader: &mut Reader, t: &dyn TableLike, cx: &str) -> Vec<(String, String)> {
    let Some(item) = t.get("basic_auth") else {
        return Vec::new();
    };
    let span = Reader::span_of(t, "basic_auth", &(0..0));
    let Some(array) = item.as_array() else {
        reader.error(
            &span,
            format!("`basic_auth` in {cx} must be a list of {{ user = \"…\", hash = \"…\" }}"),
        );
        return Vec::new();
    };
    let mut users: Vec<(String, String)> = Vec::new();
    for value in array.iter() {
        let vspan = value.span().unwrap_or(span.clone());
        let Some(entry) = value.as_inline_table() else {
            reader.error(
                &vspan,
                format!("each of `basic_auth` in {cx} must be {{ user = \"…\", hash = \"…\" }}"),
            );
            continue;
        };
        let ecx = format!("a `basic_auth` entry of {cx}");
        reader.check_keys(entry, USER_KEYS, &ecx);
        let user = reader.required_string(entry, "user", &ecx, &vspan);
        let hash = reader.required_string(entry, "hash", &ecx, &vspan);
        let (Some(user), Some(hash)) = (user, hash) else {
            continue;
        };
        if user.value.is_empty() || user.value.contains(':') {
            reader.error(
                &user.span,
                format!("`user` in {ecx} must be non-empty, without ':'"),
            );
        } else if users.iter().any(|(u, _)| *u == user.value) {
            reader.error(
                &user.span,
                format!("user {:?} appears twice in {cx}", user.value),
            );
        } else if !password_hash(&hash.value) {
            reader.error(
                &hash.span,
                format!(
                    "`hash` of user {:?} in {cx} is not an argon2 or bcrypt hash; make one with `switchyard hash-password`",
                    user.value
                ),
            );
        } else {
            users.push((user.value, hash.value));
        }
    }
    users
}

/// The shape of an argon2 PHC string or a bcrypt hash (a password pasted
/// here by mistake is refused, not compared against).
fn password_hash(hash: &str) -> bool {
    let argon2 = ["$argon2id$", "$argon2i$", "$argon2d$"]
        .iter()
        .any(|p| hash.starts_with(p))
        && hash.split('$').count() == 6;
    let bcrypt = ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p))
        && hash.len() == 60
        && hash[4..6].bytes().all(|b| b.is_ascii_digit())
        && hash.as_bytes()[6] == b'$';
    argon2 || bcrypt
}

/// `[route.limits]`: `rate = "100/s"` (required; `/s`, `/m` or `/h`),
/// `burst` (default: one period's requests), `key = "client_ip"` (default)
/// or `"header:NAME"`.
pub(crate) fn read_rate_limit(
    reader: &mut Reader,
    t: &dyn TableLike,
    span: &Span,
    route_cx: &str,
) -> Option<RateLimitConfig> {
    let cx = format!("[route.limits] of {route_cx}");
    reader.check_keys(t, LIMITS_KEYS, &cx);
    let rate = reader.required_string(t, "rate", &cx, span)?;
    let Some((requests, per)) = parse_rate(&rate.value) else {
        reader.error(
            &rate.span,
            format!(
                "`rate` in {cx}: {:?} is not a rate; expected e.g. \"100/s\", \"600/m\" or \"1000/h\"",
                rate.value
            ),
        );
        return None;
    };
    let burst = reader
        .integer(t, "burst", &cx, 0..1_000_001)
        .map_or(requests, |n| n as u32);
    let key = match reader.string(t, "key", &cx) {
        None => RateKey::ClientIp,
        Some(k) if k.value == "client_ip" => RateKey::ClientIp,
        Some(k) => match k.value.strip_prefix("header:").map(str::trim) {
            Some(name) if http_token(name) => RateKey::Header(name.to_ascii_lowercase()),
            _ => {
                reader.error(
                    &k.span,
                    format!(
                        "`key` in {cx} must be \"client_ip\" or \"header:NAME\", not {:?}",
                        k.value
                    ),
                );
                return None;
            }
        },
    };
    Some(RateLimitConfig {
        requests,
        per,
        burst,
        key,
    })
}

/// `"100/s"` → 100 per second; at least 1, at most a million.
fn parse_rate(text: &str) -> Option<(u32, Duration)> {
    let (count, unit) = text.trim().split_once('/')?;
    let count: u32 = count
        .trim()
        .parse()
        .ok()
        .filter(|n| (1..=1_000_000).contains(n))?;
    let per = match unit.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        _ => return None,
    };
    Some((count, per))
}

/// A header name (RFC 9110 token).
fn http_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// `trusted_proxies`: CIDRs, or single addresses (a /32 or /128).
pub(crate) fn read_trusted_proxies(reader: &mut Reader, t: &dyn TableLike, cx: &str) -> Vec<IpNet> {
    read_cidrs(reader, t, "trusted_proxies", cx)
}

/// A list of CIDRs or single addresses (a /32 or /128).
fn read_cidrs(reader: &mut Reader, t: &dyn TableLike, key: &str, cx: &str) -> Vec<IpNet> {
    reader
        .string_list(t, key, cx)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|entry| {
            let text = entry.value.trim();
            let net = text
                .parse::<IpNet>()
                .ok()
                .or_else(|| text.parse::<std::net::IpAddr>().ok().map(IpNet::from));
            if net.is_none() {
                reader.error(
                    &entry.span,
                    format!(
                        "{:?} in `{key}` of {cx} is not an address or a CIDR like \"10.0.0.0/8\"",
                        entry.value
                    ),
                );
            }
            net
        })
        .collect()
}

/// The default and the bounds of `max_header_size`: nginx takes up to
/// 32 KiB, HAProxy 16 KiB; below 1 KiB ordinary browsers' heads (cookies)
/// would be refused, above 1 MiB one request could hold that much memory.
pub const DEFAULT_MAX_HEADER_SIZE: u64 = 64 * 1024;
const HEADER_SIZE_RANGE: (u64, u64) = (1024, 1024 * 1024);

/// `max_body_size`: `None` when absent (no limit, as HAProxy, Caddy and
/// Traefik default to).
pub(crate) fn read_max_body_size(reader: &mut Reader, t: &dyn TableLike, cx: &str) -> Option<u64> {
    read_size(reader, t, "max_body_size", cx, (1, u64::MAX))
}

/// `max_header_size`, [`DEFAULT_MAX_HEADER_SIZE`] when absent.
pub(crate) fn read_max_header_size(reader: &mut Reader, t: &dyn TableLike, cx: &str) -> u64 {
    read_size(reader, t, "max_header_size", cx, HEADER_SIZE_RANGE)
        .unwrap_or(DEFAULT_MAX_HEADER_SIZE)
}

/// A size: a whole number of bytes, or a string with a unit (`"512K"`,
/// `"10MiB"`, `"1G"`). K, M and G are powers of 1024 as in nginx, with or
/// without `iB`; `B` or no unit is bytes.
fn read_size(
    reader: &mut Reader,
    t: &dyn TableLike,
    key: &str,
    cx: &str,
    (min, max): (u64, u64),
) -> Option<u64> {
    let item = t.get(key)?;
    let span = Reader::span_of(t, key, &(0..0));
    let parsed = match (item.as_integer(), item.as_str()) {
        (Some(n), _) => u64::try_from(n).map_err(|_| "a size cannot be negative".to_string()),
        (None, Some(text)) => parse_size(text),
        (None, None) => Err(format!("expected a size, not {}", item.type_name())),
    };
    match parsed {
        Ok(n) if (min..=max).contains(&n) => Some(n),
        Ok(n) => {
            reader.error(
                &span,
                format!(
                    "`{key}` in {cx} must be from {} to {}, not {}",
                    show_size(min),
                    show_size(max),
                    show_size(n)
                ),
            );
            None
        }
        Err(why) => {
            reader.error(
                &span,
                format!("`{key}` in {cx}: {why}; expected e.g. 1048576, \"512K\" or \"10MiB\""),
            );
            None
        }
    }
}

/// `"10MiB"` → 10 × 2²⁰.
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(format!("{text:?} is not a size"));
    }
    let number: u64 = text[..digits]
        .parse()
        .map_err(|_| format!("{text:?} is too large"))?;
    let shift = match text[digits..].trim_start().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        "t" | "tib" => 40,
        unit => {
            return Err(format!(
                "{text:?} has an unknown unit {unit:?} (use K, M or G, powers of 1024)"
            ))
        }
    };
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// A size as the error messages show it.
fn show_size(n: u64) -> String {
    match n {
        u64::MAX => "unlimited".to_string(),
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_units_with_or_without_ib() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("512 KiB"), Ok(512 << 10));
        assert_eq!(parse_size("10MiB"), Ok(10 << 20));
        assert_eq!(parse_size("10m"), Ok(10 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("7B"), Ok(7));
        assert!(parse_size("10MB").unwrap_err().contains("unknown unit"));
        assert!(parse_size("ten").unwrap_err().contains("not a size"));
        assert!(parse_size("-1").unwrap_err().contains("not a size"));
        assert!(parse_size("99999999999T")
            .unwrap_err()
            .contains("too large"));
        assert!(parse_size("99999999999999999999")
            .unwrap_err()
            .contains("too large"));
    }
}
