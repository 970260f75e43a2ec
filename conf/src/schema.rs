//! The config file's schema: which keys each table has, their types and
//! defaults, read into the model by [`Reader`]. Checks that span several
//! routes live in `checks`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml_edit::{ImDocument, Item, TableLike};

use crate::checks::Listener;
use crate::reader::{At, Reader, Span};
use crate::*;

const TOP_KEYS: &[&str] = &["server", "tls", "route", "notify", "cluster"];
const SERVER_KEYS: &[&str] = &[
    "listen",
    "threads",
    "admin_socket",
    "admin_http",
    "admin_http_token",
    "admin_uids",
    "state_dir",
    "drain_timeout",
    "connect_timeout",
    "read_timeout",
    "keepalive_timeout",
    "upgrade_idle_timeout",
    "header_timeout",
    "send_timeout",
    "max_connections",
    "log_format",
    "access_log",
    "h2c",
    "error_pages",
    "max_body_size",
    "max_header_size",
    "trusted_proxies",
    "resolvers",
    "proxy_protocol",
];
/// The answers of switchyard's own that `error_pages` can replace: no route
/// (404), no backend answered (502), maintenance (503), a backend too slow
/// (504).
const ERROR_PAGE_STATUSES: &[u16] = &[404, 502, 503, 504];
const TLS_KEYS: &[&str] = &["listen", "certificates", "proxy_protocol", "acme"];
const CERT_KEYS: &[&str] = &["cert", "key"];
const ROUTE_KEYS: &[&str] = &[
    "name",
    "hosts",
    "path_prefix",
    "active",
    "retries",
    "redirect_https",
    "upgrades",
    "hsts_max_age",
    "slots",
    "health",
    "canary",
    "preview",
    "rollout",
    "guard",
    "failover",
    "maintenance",
    "error_pages",
    "max_body_size",
    "limits",
    "access",
];
const HEALTH_KEYS: &[&str] = &[
    "path",
    "host",
    "interval",
    "timeout",
    "rise",
    "fall",
    "expect_status",
    "expect_body",
];
const CANARY_KEYS: &[&str] = &[
    "slot",
    "weight",
    "sticky_cookie",
    "sticky_key",
    "sticky_max_age",
];
const PREVIEW_KEYS: &[&str] = &[
    "override_header",
    "override_token",
    "override_cidrs",
    "preview_hosts",
];
const ROLLOUT_KEYS: &[&str] = &[
    "steps",
    "max_error_rate",
    "max_latency_increase",
    "min_requests",
    "window",
];
const STEP_KEYS: &[&str] = &["weight", "hold"];

/// A route as read, with the spans the cross-route checks point at.
pub struct ReadRoute {
    pub config: RouteConfig,
    pub name_span: Span,
}

/// What the document holds, with the places the cross-table checks point at.
pub struct Read {
    pub config: Config,
    pub routes: Vec<ReadRoute>,
    pub listeners: Vec<Listener>,
}

/// Reads the whole document; every problem lands in `reader.errors`.
pub fn read(reader: &mut Reader, doc: &ImDocument<String>, base_dir: &Path) -> Read {
    let root = doc.as_table();
    reader.check_keys(root, TOP_KEYS, "the top level");
    let mut listeners = Vec::new();
    let server = match sub_table(reader, root, "server", "the top level") {
        Some((table, span)) => read_server(reader, table, &span, base_dir, &mut listeners),
        None => read_server(
            reader,
            &toml_edit::Table::new(),
            &(0..0),
            base_dir,
            &mut listeners,
        ),
    };
    let mut tls = sub_table(reader, root, "tls", "the top level")
        .map(|(t, s)| read_tls(reader, t, &s, base_dir, &mut listeners));
    let routes: Vec<ReadRoute> = route_tables(reader, root)
        .into_iter()
        .filter_map(|(table, span)| read_route(reader, table, &span, base_dir))
        .collect();
    if let Some(acme) = tls.as_mut().and_then(|tls| tls.acme.as_mut()) {
        crate::acme::default_hosts(reader, acme, root, &routes);
    }
    for route in routes.iter().filter(|r| r.config.redirect_https) {
        if tls.is_none() {
            reader.error(
                &route.name_span,
                format!(
                    "route {:?} sets `redirect_https` but there is no [tls] section: clients would be sent to an HTTPS port nothing listens on",
                    route.config.name
                ),
            );
        }
    }
    let config = Config {
        source: String::new(),
        server,
        tls,
        routes: routes.iter().map(|r| r.config.clone()).collect(),
        notify: crate::notify::read_notify(reader, root, base_dir),
        cluster: sub_table(reader, root, "cluster", "the top level")
            .and_then(|(t, s)| crate::cluster::read_cluster(reader, t, &s, host_name)),
    };
    Read {
        config,
        routes,
        listeners,
    }
}

/// A sub-table (`[name]` or `name = { ... }`) with its span.
pub(crate) fn sub_table<'d>(
    reader: &mut Reader,
    parent: &'d dyn TableLike,
    key: &str,
    context: &str,
) -> Option<(&'d dyn TableLike, Span)> {
    let item = parent.get(key)?;
    let span = Reader::span_of(parent, key, &(0..0));
    match item.as_table_like() {
        Some(table) => Some((table, span)),
        None => {
            reader.error(
                &span,
                format!(
                    "`{key}` in {context} must be a table, not {}",
                    item.type_name()
                ),
            );
            None
        }
    }
}

/// `[[route]]` tables, or `route = [{...}, ...]`.
fn route_tables<'d>(
    reader: &mut Reader,
    root: &'d dyn TableLike,
) -> Vec<(&'d dyn TableLike, Span)> {
    let Some(item) = root.get("route") else {
        return Vec::new();
    };
    if let Some(array) = item.as_array_of_tables() {
        return array
            .iter()
            .map(|t| (t as &dyn TableLike, t.span().unwrap_or(0..0)))
            .collect();
    }
    if let Some(array) = item.as_array() {
        let mut tables = Vec::new();
        for value in array.iter() {
            let span = value.span().unwrap_or(0..0);
            match value.as_inline_table() {
                Some(t) => tables.push((t as &dyn TableLike, span)),
                None => reader.error(&span, "each `route` must be a table ([[route]])"),
            }
        }
        return tables;
    }
    let span = Reader::span_of(root, "route", &(0..0));
    reader.error(
        &span,
        "`route` must be a list of tables: write each one as [[route]]",
    );
    Vec::new()
}

pub(crate) fn resolve(base_dir: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base_dir.join(path)
    }
}

/// A `listen` list, or `default` when the key is absent, each address
/// also recorded in `listeners`.
fn read_listen(
    reader: &mut Reader,
    t: &dyn TableLike,
    span: &Span,
    cx: &str,
    what: &'static str,
    default: SocketAddr,
    listeners: &mut Vec<Listener>,
) -> Vec<SocketAddr> {
    let listed = t.get("listen").and_then(Item::as_array).map(|a| a.len());
    match reader.spanned_addr_list(t, "listen", cx) {
        Some(list) => {
            if listed == Some(0) {
                reader.error(
                    &Reader::span_of(t, "listen", span),
                    format!("`listen` in {cx} needs at least one address"),
                );
            }
            list.into_iter()
                .map(|a| {
                    listeners.push(Listener {
                        what,
                        addr: a.value,
                        span: Some(a.span),
                    });
                    a.value
                })
                .collect()
        }
        None => {
            listeners.push(Listener {
                what,
                addr: default,
                span: None,
            });
            vec![default]
        }
    }
}

fn read_server(
    reader: &mut Reader,
    t: &dyn TableLike,
    span: &Span,
    base_dir: &Path,
    listeners: &mut Vec<Listener>,
) -> ServerConfig {
    const CX: &str = "[server]";
    reader.check_keys(t, SERVER_KEYS, CX);
    let default_listen = SocketAddr::from(([0, 0, 0, 0], 80));
    let listen = read_listen(
        reader,
        t,
        span,
        CX,
        "[server] `listen`",
        default_listen,
        listeners,
    );
    let admin_http = reader.string(t, "admin_http", CX).and_then(|s| {
        let addr = reader.parse_addr(&s, "`admin_http` in [server]")?;
        listeners.push(Listener {
            what: "[server] `admin_http`",
            addr,
            span: Some(s.span),
        });
        Some(addr)
    });
    let admin_uids = match t.get("admin_uids").map(|i| (i, i.as_array())) {
        None => Vec::new(),
        Some((_, Some(array))) => array
            .iter()
            .filter_map(
                |v| match v.as_integer().and_then(|n| u32::try_from(n).ok()) {
                    Some(uid) => Some(uid),
                    None => {
                        reader.error(
                            &v.span().unwrap_or(0..0),
                            "`admin_uids` in [server] must list numeric uids (0–4294967295)",
                        );
                        None
                    }
                },
            )
            .collect(),
        Some((item, None)) => {
            reader.error(
                &Reader::span_of(t, "admin_uids", span),
                format!(
                    "`admin_uids` in [server] must be a list of uids, not {}",
                    item.type_name()
                ),
            );
            Vec::new()
        }
    };
    ServerConfig {
        listen,
        threads: reader
            .integer(t, "threads", CX, 1..1025)
            .map(|n| n as usize),
        admin_socket: reader.string(t, "admin_socket", CX).map_or_else(
            || PathBuf::from("/run/switchyard/admin.sock"),
            |s| resolve(base_dir, &s.value),
        ),
        admin_http,
        admin_http_token: read_admin_http_token(reader, t, admin_http.is_some()),
        admin_uids,
        state_dir: reader.string(t, "state_dir", CX).map_or_else(
            || PathBuf::from("/var/lib/switchyard"),
            |s| resolve(base_dir, &s.value),
        ),
        drain_timeout: reader
            .duration(t, "drain_timeout", CX)
            .unwrap_or(Duration::from_secs(30)),
        connect_timeout: reader
            .duration(t, "connect_timeout", CX)
            .unwrap_or(Duration::from_secs(3)),
        read_timeout: reader
            .duration(t, "read_timeout", CX)
            .unwrap_or(Duration::from_secs(60)),
        keepalive_timeout: reader
            .duration(t, "keepalive_timeout", CX)
            .unwrap_or(Duration::from_secs(60)),
        upgrade_idle_timeout: reader
            .duration(t, "upgrade_idle_timeout", CX)
            .unwrap_or(Duration::from_secs(3600)),
        header_timeout: reader
            .duration(t, "header_timeout", CX)
            .unwrap_or(Duration::from_secs(10)),
        send_timeout: reader
            .duration(t, "send_timeout", CX)
            .unwrap_or(Duration::from_secs(60)),
        max_connections: reader
            .integer(t, "max_connections", CX, 1..10_000_001)
            .map(|n| n as usize),
        log_format: match reader.string(t, "log_format", CX) {
            None => LogFormat::default(),
            Some(f) if f.value == "logfmt" => LogFormat::Logfmt,
            Some(f) if f.value == "json" => LogFormat::Json,
            Some(f) => {
                reader.error(
                    &f.span,
                    format!(
                        "`log_format` in [server] must be \"logfmt\" or \"json\", not {:?}",
                        f.value
                    ),
                );
                LogFormat::default()
            }
        },
        access_log: reader.boolean(t, "access_log", CX).unwrap_or(false),
        h2c: reader.boolean(t, "h2c", CX).unwrap_or(false),
        error_pages: crate::pages::read_error_pages(reader, t, CX, base_dir, ERROR_PAGE_STATUSES),
        max_body_size: crate::limits::read_max_body_size(reader, t, CX),
        max_header_size: crate::limits::read_max_header_size(reader, t, CX),
        trusted_proxies: crate::limits::read_trusted_proxies(reader, t, CX),
        resolvers: read_resolvers(reader, t),
        proxy_protocol: reader.boolean(t, "proxy_protocol", CX).unwrap_or(false),
    }
}

fn read_tls(
    reader: &mut Reader,
    t: &dyn TableLike,
    span: &Span,
    base_dir: &Path,
    listeners: &mut Vec<Listener>,
) -> TlsConfig {
    const CX: &str = "[tls]";
    reader.check_keys(t, TLS_KEYS, CX);
    let default_listen = SocketAddr::from(([0, 0, 0, 0], 443));
    let listen = read_listen(
        reader,
        t,
        span,
        CX,
        "[tls] `listen`",
        default_listen,
        listeners,
    );
    let mut certificates = Vec::new();
    let acme = sub_table(reader, t, "acme", CX)
        .map(|(acme, acme_span)| crate::acme::read_acme(reader, acme, &acme_span, base_dir));
    match t.get("certificates") {
        None if acme.is_some() => {}
        None => reader.error(
            span,
            "[tls] needs `certificates = [{ cert = \"...\", key = \"...\" }]`, or [tls.acme] to order them",
        ),
        Some(item) => match item.as_array() {
            Some(array) if array.is_empty() && acme.is_some() => {}
            Some(array) if array.is_empty() => reader.error(
                &Reader::span_of(t, "certificates", span),
                "[tls] `certificates` needs at least one { cert = \"...\", key = \"...\" }",
            ),
            Some(array) => {
                for value in array.iter() {
                    let vspan = value.span().unwrap_or(0..0);
                    let Some(cert) = value.as_inline_table() else {
                        reader.error(&vspan, "each of [tls] `certificates` must be { cert = \"...\", key = \"...\" }");
                        continue;
                    };
                    const CCX: &str = "a [tls] certificate";
                    reader.check_keys(cert, CERT_KEYS, CCX);
                    let c = reader.required_string(cert, "cert", CCX, &vspan);
                    let k = reader.required_string(cert, "key", CCX, &vspan);
                    if let (Some(c), Some(k)) = (c, k) {
                        certificates.push(CertificateConfig {
                            cert: resolve(base_dir, &c.value),
                            key: resolve(base_dir, &k.value),
                        });
                    }
                }
            }
            None => reader.error(
                &Reader::span_of(t, "certificates", span),
                "[tls] `certificates` must be a list",
            ),
        },
    }
    TlsConfig {
        listen,
        certificates,
        proxy_protocol: reader.boolean(t, "proxy_protocol", CX).unwrap_or(false),
        acme,
    }
}

/// `resolvers = ["10.0.0.2", "127.0.0.11:53"]`: DNS servers, port 53
/// unless given.
fn read_resolvers(reader: &mut Reader, t: &dyn TableLike) -> Vec<SocketAddr> {
    let list = reader
        .string_list(t, "resolvers", "[server]")
        .unwrap_or_default();
    list.iter()
        .filter_map(|entry| {
            let text = entry.value.as_str();
            let parsed = text.parse::<SocketAddr>().ok().or_else(|| {
                let ip = text.parse::<std::net::IpAddr>().ok()?;
                Some(SocketAddr::new(ip, 53))
            });
            if parsed.is_none() {
                reader.error(
                    &entry.span,
                    format!("`resolvers` in [server] lists {text:?}; a DNS server is an IP address, with a port if not 53, like \"127.0.0.11\" or \"10.0.0.2:5353\""),
                );
            }
            parsed
        })
        .collect()
}

/// A slot name: letters, digits, `_` and `-` (it appears in metrics
/// labels, cookies and headers).
pub(crate) fn is_slot_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// An HTTP token (RFC 9110 §5.6.2): what header and cookie names are made of.
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A Host header value: a name or IP literal, optionally with a port.
fn is_host_header(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b))
}

/// A host pattern: a DNS name, optionally `*.` in front. Lower-cased.
pub fn host_pattern(reader: &mut Reader, text: &At<String>, context: &str) -> Option<HostPattern> {
    let lower = text.value.to_ascii_lowercase();
    let (name, wildcard) = match lower.strip_prefix("*.") {
        Some(rest) => (rest, true),
        None => (lower.as_str(), false),
    };
    let valid_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(valid_label) {
        reader.error(
            &text.span,
            format!(
                "{context}: {:?} is not a host name; expected a name like \"app.example.com\" or \"*.example.com\" (no scheme, port or path)",
                text.value
            ),
        );
        return None;
    }
    Some(if wildcard {
        HostPattern::Suffix(format!(".{name}"))
    } else {
        HostPattern::Exact(name.to_string())
    })
}

fn read_route(
    reader: &mut Reader,
    t: &dyn TableLike,
    span: &Span,
    base_dir: &Path,
) -> Option<ReadRoute> {
    let name = reader.required_string(t, "name", "[[route]]", span);
    let cx = match &name {
        Some(n) => format!("route {:?}", n.value),
        None => "[[route]]".to_string(),
    };
    reader.check_keys(t, ROUTE_KEYS, &cx);
    let hosts: Vec<HostPattern> = reader
        .string_list(t, "hosts", &cx)
        .unwrap_or_default()
        .iter()
        .filter_map(|h| host_pattern(reader, h, &format!("`hosts` of {cx}")))
        .collect();
    let path_prefix = match reader.string(t, "path_prefix", &cx) {
        Some(p) if !p.value.starts_with('/') => {
            reader.error(
                &p.span,
                format!("`path_prefix` of {cx} must start with '/', like \"/api\""),
            );
            "/".to_string()
        }
        Some(p) => p.value,
        None => "/".to_string(),
    };
    let active = reader.required_string(t, "active", &cx, span);
    let retries = reader.integer(t, "retries", &cx, 0..11).unwrap_or(2) as u32;
    let redirect_https = reader.boolean(t, "redirect_https", &cx).unwrap_or(false);
    let hsts_max_age = reader.duration(t, "hsts_max_age", &cx);
    let upgrades = read_upgrades(reader, t, &cx);
    let crate::slots::Slots {
        slots,
        declared,
        h2c_slots,
        https_slots,
        backends,
    } = crate::slots::read_slots(reader, t, span, &cx, base_dir);

    // Checked against every slot the file declares, valid or not, so one
    // bad backend address does not also report the slot as unknown.
    let known_slot = |reader: &mut Reader, slot: &At<String>, what: &str| -> bool {
        if declared.contains(&slot.value) || declared.is_empty() {
            return true;
        }
        let known: Vec<&str> = declared.iter().map(String::as_str).collect();
        reader.error(
            &slot.span,
            format!(
                "{what} of {cx} names slot {:?}, which is not in [route.slots]; known slots: {}",
                slot.value,
                known.join(", ")
            ),
        );
        false
    };
    let active_ok = active
        .as_ref()
        .is_some_and(|a| known_slot(reader, a, "`active`"));

    let canary = sub_table(reader, t, "canary", &cx).and_then(|(ct, cspan)| {
        let ccx = format!("[route.canary] of {cx}");
        reader.check_keys(ct, CANARY_KEYS, &ccx);
        let slot = reader.required_string(ct, "slot", &ccx, &cspan)?;
        let weight = reader.integer(ct, "weight", &ccx, 0..101);
        let sticky_cookie = match reader.string(ct, "sticky_cookie", &ccx) {
            None => "switchyard-slot".to_string(),
            Some(c) if is_token(&c.value) => c.value,
            Some(c) => {
                reader.error(&c.span, format!("`sticky_cookie` of {ccx}: {:?} is not a cookie name; use letters, digits and !#$%&'*+-.^_`|~", c.value));
                "switchyard-slot".to_string()
            }
        };
        let sticky_key = match reader.string(ct, "sticky_key", &ccx) {
            None => StickyKey::ClientIp,
            Some(k) if k.value == "client_ip" => StickyKey::ClientIp,
            Some(k) => match k.value.strip_prefix("header:").filter(|h| is_token(h)) {
                Some(header) => StickyKey::Header(header.to_ascii_lowercase()),
                None => {
                    reader.error(&k.span, format!("`sticky_key` of {ccx} must be \"client_ip\" or \"header:NAME\", not {:?}", k.value));
                    StickyKey::ClientIp
                }
            },
        };
        let sticky_max_age = reader
            .duration(ct, "sticky_max_age", &ccx)
            .unwrap_or(DEFAULT_STICKY_MAX_AGE);
        if !known_slot(reader, &slot, "[route.canary] `slot`") {
            return None;
        }
        if active.as_ref().is_some_and(|a| a.value == slot.value) {
            reader.error(&slot.span, format!("[route.canary] `slot` of {cx} is {:?}, the active slot; a canary must be another slot", slot.value));
            return None;
        }
        let weight_given = ct.get("weight").is_some();
        if weight.is_none() && weight_given {
            return None;
        }
        Some(CanaryConfig {
            slot: slot.value,
            weight: weight.unwrap_or(0) as u8,
            sticky_cookie,
            sticky_key,
            sticky_max_age,
        })
    });

    // The probe's Host header defaults to the route's own name, so a
    // backend that routes by Host answers the probe as it answers users.
    let default_probe_host = hosts.iter().find_map(|h: &HostPattern| match h {
        HostPattern::Exact(name) => Some(name.clone()),
        HostPattern::Suffix(_) => None,
    });
    let health = sub_table(reader, t, "health", &cx)
        .map(|(ht, hspan)| read_health(reader, ht, &hspan, &cx, default_probe_host));
    let preview = sub_table(reader, t, "preview", &cx).map(|(pt, _)| read_preview(reader, pt, &cx));
    let rollout = sub_table(reader, t, "rollout", &cx)
        .and_then(|(rt, rspan)| read_rollout(reader, rt, &rspan, &cx));
    let failover = crate::guard::read_failover(reader, t, &cx);
    let maintenance = reader.boolean(t, "maintenance", &cx).unwrap_or(false);
    let error_pages = crate::pages::read_error_pages(reader, t, &cx, base_dir, ERROR_PAGE_STATUSES);
    let max_body_size = crate::limits::read_max_body_size(reader, t, &cx);
    let access = sub_table(reader, t, "access", &cx)
        .map(|(at, _)| crate::limits::read_access(reader, at, &cx));
    let rate_limit = sub_table(reader, t, "limits", &cx)
        .and_then(|(lt, lspan)| crate::limits::read_rate_limit(reader, lt, &lspan, &cx));
    let guard = sub_table(reader, t, "guard", &cx)
        .map(|(gt, _)| crate::guard::read_guard(reader, gt, &cx))
        .unwrap_or_default();

    let (name, active) = (name?, active?);
    if !active_ok || slots.is_empty() || slots.len() != declared.len() {
        return None;
    }
    Some(ReadRoute {
        name_span: name.span.clone(),
        config: RouteConfig {
            name: name.value,
            hosts,
            path_prefix,
            active: active.value,
            retries,
            redirect_https,
            hsts_max_age,
            upgrades,
            slots,
            backends,
            h2c_slots,
            https_slots,
            health,
            canary,
            preview,
            rollout,
            guard,
            failover,
            maintenance,
            error_pages,
            max_body_size,
            rate_limit,
            access,
        },
    })
}

fn read_health(
    reader: &mut Reader,
    t: &dyn TableLike,
    span: &Span,
    route_cx: &str,
    default_host: Option<String>,
) -> HealthConfig {
    let cx = format!("[route.health] of {route_cx}");
    reader.check_keys(t, HEALTH_KEYS, &cx);
    let path = match reader.string(t, "path", &cx) {
        Some(p) if !p.value.starts_with('/') => {
            reader.error(&p.span, format!("`path` of {cx} must start with '/'"));
            "/".to_string()
        }
        Some(p) => p.value,
        None => "/".to_string(),
    };
    let expect_status = match t.get("expect_status") {
        None => (200, 399),
        Some(item) => {
            let at = Reader::span_of(t, "expect_status", span);
            let text = item
                .as_str()
                .map(str::to_owned)
                .or_else(|| item.as_integer().map(|n| n.to_string()))
                .unwrap_or_default();
            match parse_status_range(&text) {
                Some(range) => range,
                None => {
                    reader.error(&at, format!("`expect_status` of {cx} must be a status or a range like \"200-399\", not {text:?}"));
                    (200, 399)
                }
            }
        }
    };
    HealthConfig {
        path,
        host: match reader.string(t, "host", &cx) {
            None => default_host,
            Some(h) if is_host_header(&h.value) => Some(h.value),
            Some(h) => {
                reader.error(&h.span, format!("`host` of {cx}: {:?} is not a Host header; expected a name like \"app.example.com\", optionally with :port (no scheme or path)", h.value));
                None
            }
        },
        interval: reader
            .duration(t, "interval", &cx)
            .unwrap_or(Duration::from_secs(1)),
        timeout: reader
            .duration(t, "timeout", &cx)
            .unwrap_or(Duration::from_secs(1)),
        rise: reader.integer(t, "rise", &cx, 1..101).unwrap_or(2) as u32,
        fall: reader.integer(t, "fall", &cx, 1..101).unwrap_or(3) as u32,
        expect_status,
        expect_body: crate::guard::read_expect_body(reader, t, span, &cx),
    }
}

/// `"200"` or `"200-399"`, within 100–599.
fn parse_status_range(text: &str) -> Option<(u16, u16)> {
    let (low, high) = match text.split_once('-') {
        Some((l, h)) => (l.trim().parse().ok()?, h.trim().parse().ok()?),
        None => {
            let s = text.trim().parse().ok()?;
            (s, s)
        }
    };
    ((100..=599).contains(&low) && (100..=599).contains(&high) && low <= high)
        .then_some((low, high))
}

fn read_preview(reader: &mut Reader, t: &dyn TableLike, route_cx: &str) -> PreviewConfig {
    let cx = format!("[route.preview] of {route_cx}");
    reader.check_keys(t, PREVIEW_KEYS, &cx);
    let override_cidrs = reader
        .string_list(t, "override_cidrs", &cx)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|c| match c.value.parse::<ipnet::IpNet>() {
            Ok(net) => Some(net),
            Err(_) => {
                reader.error(
                    &c.span,
                    format!(
                        "{:?} in `override_cidrs` of {cx} is not a CIDR like \"10.0.0.0/8\"",
                        c.value
                    ),
                );
                None
            }
        })
        .collect();
    let preview_hosts = reader
        .string_list(t, "preview_hosts", &cx)
        .unwrap_or_default()
        .iter()
        .filter_map(|h| host_pattern(reader, h, &format!("`preview_hosts` of {cx}")))
        .collect();
    let override_header = match reader.string(t, "override_header", &cx) {
        None => "x-switchyard-slot".to_string(),
        Some(h) if is_token(&h.value) => h.value.to_ascii_lowercase(),
        Some(h) => {
            reader.error(
                &h.span,
                format!(
                    "`override_header` of {cx}: {:?} is not a header name; use letters, digits and -",
                    h.value
                ),
            );
            "x-switchyard-slot".to_string()
        }
    };
    // The token arrives in a header value; one that no header can carry
    // would silently never match.
    let override_token = reader.string(t, "override_token", &cx).and_then(|s| {
        if !s.value.is_empty() && s.value.bytes().all(|b| b.is_ascii_graphic()) {
            return Some(s.value);
        }
        reader.error(
            &s.span,
            format!(
                "`override_token` of {cx} must be printable ASCII without spaces, and not empty"
            ),
        );
        None
    });
    PreviewConfig {
        override_header,
        override_token,
        override_cidrs,
        preview_hosts,
    }
}

fn read_rollout(
    reader: &mut Reader,
    t: &dyn TableLike,
    span: &Span,
    route_cx: &str,
) -> Option<RolloutConfig> {
    let cx = format!("[route.rollout] of {route_cx}");
    reader.check_keys(t, ROLLOUT_KEYS, &cx);
    let max_error_rate = reader
        .float(t, "max_error_rate", &cx, 0.0, 1.0)
        .unwrap_or(0.05);
    let max_latency_increase = reader
        .float(t, "max_latency_increase", &cx, 0.0, 100.0)
        .unwrap_or(0.5);
    let min_requests = reader
        .integer(t, "min_requests", &cx, 1..i64::MAX)
        .unwrap_or(100) as u64;
    let window = reader
        .duration(t, "window", &cx)
        .unwrap_or(DEFAULT_ROLLOUT_WINDOW);
    let Some(item) = t.get("steps") else {
        reader.error(
            span,
            format!("{cx} needs `steps = [{{ weight = 10, hold = \"5m\" }}, ...]`"),
        );
        return None;
    };
    let steps_span = Reader::span_of(t, "steps", span);
    let Some(array) = item.as_array().filter(|a| !a.is_empty()) else {
        reader.error(
            &steps_span,
            format!("`steps` of {cx} must be a non-empty list of {{ weight, hold }}"),
        );
        return None;
    };
    let mut steps = Vec::new();
    let count = array.len();
    let mut last_weight = 0u8;
    for (i, value) in array.iter().enumerate() {
        let vspan = value.span().unwrap_or(steps_span.clone());
        let Some(step) = value.as_inline_table() else {
            reader.error(
                &vspan,
                format!(
                    "step {} of {cx} must be {{ weight = N, hold = \"5m\" }}",
                    i + 1
                ),
            );
            continue;
        };
        let scx = format!("step {} of {cx}", i + 1);
        reader.check_keys(step, STEP_KEYS, &scx);
        if step.get("weight").is_none() {
            reader.error(&vspan, format!("{scx} needs `weight`"));
            continue;
        }
        let Some(weight) = reader
            .integer(step, "weight", &scx, 0..101)
            .map(|w| w as u8)
        else {
            continue;
        };
        if weight < last_weight {
            reader.error(&vspan, format!("{scx} lowers the weight to {weight} from {last_weight}; steps must not decrease"));
        }
        last_weight = weight;
        let hold = reader.duration(step, "hold", &scx);
        if hold.is_none() && step.get("hold").is_none() && i + 1 < count {
            reader.error(
                &vspan,
                format!("{scx} needs `hold`; only the last step may omit it"),
            );
        }
        steps.push(RolloutStep { weight, hold });
    }
    Some(RolloutConfig {
        steps,
        max_error_rate,
        max_latency_increase,
        min_requests,
        window,
    })
}

/// `upgrades` of a route: the protocols a client may switch to through it
/// (`Upgrade` tokens, compared without case). Default `["websocket"]`; `[]`
/// turns upgrades off. `h2c` is refused: an HTTP/1.1 connection upgraded
/// to HTTP/2 cannot be carried to a backend as bytes.
fn read_upgrades(reader: &mut Reader, t: &dyn TableLike, cx: &str) -> Vec<String> {
    let Some(list) = reader.string_list(t, "upgrades", cx) else {
        return vec!["websocket".to_string()];
    };
    let mut upgrades = Vec::new();
    for protocol in list {
        let name = protocol.value.to_ascii_lowercase();
        if name == "h2c" {
            reader.error(
                &protocol.span,
                format!("`upgrades` of {cx} cannot name \"h2c\": an upgrade to HTTP/2 is not carried through a proxy; `[server] h2c = true` serves HTTP/2 clients, and `protocol = \"h2c\"` on a slot speaks it to backends"),
            );
        } else if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/".contains(&b))
        {
            reader.error(
                &protocol.span,
                format!("`upgrades` of {cx} lists {:?}, which is not a protocol name like \"websocket\"", protocol.value),
            );
        } else {
            upgrades.push(name);
        }
    }
    upgrades
}

/// `admin_http_token`: what the dashboard's actions must present. Long
/// enough not to be guessed, and only characters a header carries as is.
fn read_admin_http_token(
    reader: &mut Reader,
    t: &dyn TableLike,
    has_endpoint: bool,
) -> Option<String> {
    const MIN_LEN: usize = 16;
    let token = reader.string(t, "admin_http_token", "[server]")?;
    if !has_endpoint {
        reader.error(
            &token.span,
            "`admin_http_token` in [server] has no endpoint to guard: set `admin_http` too",
        );
        return None;
    }
    let printable = token.value.bytes().all(|b| b.is_ascii_graphic());
    if token.value.len() < MIN_LEN || !printable {
        reader.error(
            &token.span,
            format!(
                "`admin_http_token` in [server] must be at least {MIN_LEN} characters, \
                 letters, digits and punctuation only (no spaces); \
                 `openssl rand -hex 32` makes a good one"
            ),
        );
        return None;
    }
    Some(token.value)
}

/// This machine's host name (`/proc/sys/kernel/hostname`, as `hostname`
/// prints it), the default `[cluster] node`.
fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
}
