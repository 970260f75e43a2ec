//! Which route a request goes to, by host and path, and which 404 page a
//! request no route takes gets: lookups on the built table, made on every
//! request without allocating.

use super::{Route, RouteRef, RoutingTable};

/// Hosts longer than this cannot be valid DNS names (253 bytes); they match
/// only any-host routes.
const MAX_HOST_LEN: usize = 255;

impl RoutingTable {
    /// The page for a request no route took: the 404 page of the first
    /// route the host leads to (in the order [`Self::route_ref_for`] tries
    /// them, whatever their path prefix), else the server's.
    pub fn not_found_page(&self, host: Option<&str>) -> Option<&bytes::Bytes> {
        self.first_in_host_order(host, |list| {
            list.iter()
                .find_map(|r| self.routes[r.index].error_pages.get(&404))
        })
        .or(self.not_found_page.as_ref())
    }

    /// The route for a request: the Host header (any case, port ignored) and
    /// the path. Exact hosts beat wildcards, wildcards beat any-host routes,
    /// and within each the longest matching path prefix wins.
    pub fn route_for(&self, host: Option<&str>, path: &str) -> Option<&Route> {
        self.route_ref_for(host, path)
            .map(|r| &self.routes[r.index])
    }

    /// [`Self::route_for`], as an index into `routes`, and whether the host
    /// is a preview host of the route.
    pub fn route_ref_for(&self, host: Option<&str>, path: &str) -> Option<RouteRef> {
        self.first_in_host_order(host, |list| self.first_prefix_match(list, path))
    }

    /// The first answer `found` gives for the route lists `host` leads to,
    /// most specific first: its exact host, the wildcards it matches
    /// (longest first), then the routes without hosts.
    fn first_in_host_order<'t, T>(
        &'t self,
        host: Option<&str>,
        mut found: impl FnMut(&'t [RouteRef]) -> Option<T>,
    ) -> Option<T> {
        let mut buf = [0u8; MAX_HOST_LEN];
        if let Some(host) = host.and_then(|h| lower_host_without_port(h, &mut buf)) {
            if let Some(hit) = self.exact.get(host).and_then(|list| found(list)) {
                return Some(hit);
            }
            for (suffix, list) in &self.suffixes {
                if host.len() > suffix.len() && host.ends_with(&**suffix) {
                    if let Some(hit) = found(list) {
                        return Some(hit);
                    }
                }
            }
        }
        found(&self.any_host)
    }

    fn first_prefix_match(&self, candidates: &[RouteRef], path: &str) -> Option<RouteRef> {
        candidates
            .iter()
            .copied()
            .find(|r| path_has_prefix(path, &self.routes[r.index].path_prefix))
    }
}

/// `/api` matches `/api`, `/api/x` and `/api?q`, not `/apiary`; a prefix
/// ending in `/` matches anything below it.
fn path_has_prefix(path: &str, prefix: &str) -> bool {
    if !path.starts_with(prefix) {
        return false;
    }
    if prefix.ends_with('/') || path.len() == prefix.len() {
        return true;
    }
    matches!(path.as_bytes()[prefix.len()], b'/' | b'?')
}

/// Lower-cases `host` into `buf` and drops a `:port` (and IPv6 brackets'
/// port), without allocating. `None` when it does not fit.
fn lower_host_without_port<'a>(host: &str, buf: &'a mut [u8; MAX_HOST_LEN]) -> Option<&'a str> {
    let name = if host.starts_with('[') {
        // [::1]:8080 → [::1]
        match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        }
    } else {
        match host.rfind(':') {
            Some(colon) => &host[..colon],
            None => host,
        }
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() > buf.len() {
        return None;
    }
    for (dst, src) in buf.iter_mut().zip(bytes) {
        *dst = src.to_ascii_lowercase();
    }
    // Lower-casing ASCII keeps UTF-8 valid.
    std::str::from_utf8(&buf[..bytes.len()]).ok()
}
