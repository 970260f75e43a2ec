//! `[route.access]`: which clients may reach a route, or some of its
//! paths. A pure decision over the client's address (the one
//! `trusted_proxies` or a PROXY header found) and the request's path.

use std::net::IpAddr;

use ipnet::IpNet;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub allow: Vec<IpNet>,
    pub deny: Vec<IpNet>,
    /// Path prefixes it applies to; empty: every path of the route.
    pub paths: Vec<String>,
    /// `(user, password hash)`; empty: no credentials asked for.
    pub basic_auth: Vec<(String, String)>,
}

/// What [`Access::judge`] makes of a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict<'a> {
    Pass,
    /// Its address may not reach this path: `403`.
    Forbidden,
    /// It may, with the credentials of one of these `(user, hash)`: `401`
    /// without them.
    Login(&'a [(String, String)]),
}

impl Access {
    /// A request for `path` from `client`: outside `paths` it passes;
    /// inside, it must not be denied, must be allowed when there is an
    /// allow list (a client whose address is unknown passes only where no
    /// list would need it), and then log in when there are users. The
    /// path is read once.
    pub fn judge(&self, client: Option<IpAddr>, path: &str) -> Verdict<'_> {
        if !self.covers(path) {
            return Verdict::Pass;
        }
        if !self.address_passes(client) {
            return Verdict::Forbidden;
        }
        if self.basic_auth.is_empty() {
            Verdict::Pass
        } else {
            Verdict::Login(&self.basic_auth)
        }
    }

    fn address_passes(&self, client: Option<IpAddr>) -> bool {
        let Some(ip) = client else {
            return self.allow.is_empty() && self.deny.is_empty();
        };
        let ip = canonical(ip);
        if self.deny.iter().any(|net| net.contains(&ip)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|net| net.contains(&ip))
    }

    /// Whether `path` is one it applies to.
    fn covers(&self, path: &str) -> bool {
        self.paths.is_empty() || {
            // As a backend may read it: `/%61dmin`, `/x/../admin` and
            // `//admin` are all `/admin` to someone.
            let path = normalise(path);
            self.paths.iter().any(|prefix| under_prefix(&path, prefix))
        }
    }
}

/// `/admin` covers `/admin`, `/admin/...` and `/admin;...` (a path
/// parameter), not `/administrator`; a prefix that ends in `/` covers what
/// starts with it.
fn under_prefix(path: &[u8], prefix: &str) -> bool {
    match path.strip_prefix(prefix.as_bytes()) {
        Some(rest) => {
            prefix.ends_with('/') || rest.is_empty() || rest[0] == b'/' || rest[0] == b';'
        }
        None => false,
    }
}

/// The path percent-decoded, with runs of `/` made one and `.` and `..`
/// segments resolved (RFC 3986 §5.2.4): the most any backend might make of
/// it, so that no spelling of a covered path slips past.
fn normalise(path: &str) -> Vec<u8> {
    let decoded = crate::percent::percent_decode(path.as_bytes());
    let mut segments: Vec<&[u8]> = Vec::new();
    for segment in decoded.split(|&b| b == b'/') {
        match segment {
            b"" | b"." => {}
            b".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    let mut out = Vec::with_capacity(decoded.len() + 1);
    for segment in &segments {
        out.push(b'/');
        out.extend_from_slice(segment);
    }
    if out.is_empty() || decoded.ends_with(b"/") {
        out.push(b'/');
    }
    out
}

/// An IPv4 client on an IPv6 socket (`::ffff:192.0.2.7`) is judged as the
/// IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Access {
        /// Not refused for its address (these routes ask no login).
        fn permits(&self, client: Option<IpAddr>, path: &str) -> bool {
            self.judge(client, path) != Verdict::Forbidden
        }
    }

    fn access(allow: &[&str], deny: &[&str], paths: &[&str]) -> Access {
        let nets = |l: &[&str]| l.iter().map(|n| n.parse().unwrap()).collect();
        Access {
            allow: nets(allow),
            deny: nets(deny),
            paths: paths.iter().map(|p| p.to_string()).collect(),
            basic_auth: Vec::new(),
        }
    }

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn deny_wins_then_allow_decides() {
        let a = access(&["10.0.0.0/8"], &["10.9.0.0/16"], &[]);
        assert!(a.permits(ip("10.1.2.3"), "/"));
        assert!(
            !a.permits(ip("10.9.2.3"), "/"),
            "denied inside the allowed network"
        );
        assert!(!a.permits(ip("192.0.2.7"), "/"), "not on the allow list");
        assert!(!a.permits(None, "/"));
        let deny_only = access(&[], &["192.0.2.0/24"], &[]);
        assert!(deny_only.permits(ip("198.51.100.1"), "/"));
        assert!(!deny_only.permits(ip("192.0.2.9"), "/"));
        assert!(
            !deny_only.permits(ip("::ffff:192.0.2.9"), "/"),
            "a mapped address is its IPv4"
        );
    }

    #[test]
    fn paths_limit_where_it_applies() {
        let a = access(&["10.0.0.0/8"], &[], &["/admin", "/internal/"]);
        assert!(!a.permits(ip("192.0.2.7"), "/admin"));
        assert!(!a.permits(ip("192.0.2.7"), "/admin/users"));
        assert!(!a.permits(ip("192.0.2.7"), "/internal/x"));
        assert!(a.permits(ip("192.0.2.7"), "/administrator"));
        assert!(a.permits(ip("192.0.2.7"), "/"));
        assert!(a.permits(ip("10.0.0.1"), "/admin"));
    }

    #[test]
    fn no_spelling_of_a_covered_path_slips_past() {
        let a = access(&["10.0.0.0/8"], &[], &["/admin"]);
        for path in [
            "/%61dmin",
            "/%61%64%6D%69%6E/users",
            "//admin",
            "/x/../admin",
            "/./admin/",
            "/admin;jsessionid=1",
            "/public/%2e%2e/admin",
            "/../../admin",
        ] {
            assert!(!a.permits(ip("192.0.2.7"), path), "{path}");
        }
        // Not /admin by any reading.
        for path in ["/", "/adminx", "/public/admin", "/%zz/admin", "/admin%"] {
            assert!(a.permits(ip("192.0.2.7"), path), "{path}");
        }
    }
}
