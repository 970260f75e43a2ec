//! Checks that compare tables with each other: routes with unique names
//! that never claim the same requests (a shared host, or both any-host,
//! with the same path prefix), and listeners that can all be bound at once.

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::reader::{Reader, Span};
use crate::schema::ReadRoute;
use crate::HostPattern;

pub fn check_routes(reader: &mut Reader, routes: &[ReadRoute]) {
    let mut names: HashMap<&str, usize> = HashMap::new();
    for (i, route) in routes.iter().enumerate() {
        let name = route.config.name.as_str();
        if let Some(&first) = names.get(name) {
            let (line, _) = reader.line_of(&routes[first].name_span);
            reader.error(&route.name_span, format!("route name {name:?} is used twice (first at line {line}); names must be unique"));
        } else {
            names.insert(name, i);
        }
    }
    for (i, later) in routes.iter().enumerate() {
        for earlier in &routes[..i] {
            if earlier.config.name == later.config.name
                || earlier.config.path_prefix != later.config.path_prefix
            {
                continue;
            }
            if let Some(shared) = shared_host(&earlier.config.hosts, &later.config.hosts) {
                reader.error(
                    &later.name_span,
                    format!(
                        "route {:?} claims the same requests as route {:?}: {shared} with path_prefix {:?}; change the hosts or the prefix",
                        later.config.name, earlier.config.name, later.config.path_prefix
                    ),
                );
            }
        }
    }
}

/// What two host lists have in common, as words for the error.
fn shared_host(a: &[HostPattern], b: &[HostPattern]) -> Option<String> {
    if a.is_empty() && b.is_empty() {
        return Some("both match any host".to_string());
    }
    a.iter().find(|h| b.contains(h)).map(|h| match h {
        HostPattern::Exact(name) => format!("host {name:?}"),
        HostPattern::Suffix(suffix) => format!("host \"*{suffix}\""),
    })
}

/// An address the server binds, for [`check_listeners`].
pub struct Listener {
    /// Where it is set, for messages: "[tls] `listen`".
    pub what: &'static str,
    pub addr: SocketAddr,
    /// `None` for a default the file left out.
    pub span: Option<Span>,
}

/// Reports addresses that cannot all be bound: the same one twice, or a
/// port taken on every address (`0.0.0.0:80`) and on one (`127.0.0.1:80`).
/// Found here rather than at startup so `switchyard check` catches it.
pub fn check_listeners(reader: &mut Reader, listeners: &[Listener]) {
    for (i, later) in listeners.iter().enumerate() {
        let Some(earlier) = listeners[..i].iter().find(|e| collide(e.addr, later.addr)) else {
            continue;
        };
        // Point at the one the file wrote; a default has no place.
        let (here, other) = match (&later.span, &earlier.span) {
            (Some(span), _) => ((later, span), earlier),
            (None, Some(span)) => ((earlier, span), later),
            (None, None) => continue,
        };
        let (this, span) = here;
        let other_place = match &other.span {
            Some(s) => format!(" (line {})", reader.line_of(s).0),
            None => " (its default)".to_string(),
        };
        reader.error(
            span,
            format!(
                "{} in {} and {} in {}{other_place} cannot both be bound; give each listener its own address or port",
                this.addr, this.what, other.addr, other.what,
            ),
        );
    }
}

/// Port 0 asks the kernel for a free port, so it never collides.
fn collide(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip()
            || (a.is_ipv4() == b.is_ipv4() && (a.ip().is_unspecified() || b.ip().is_unspecified())))
}
