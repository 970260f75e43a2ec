//! Parsing and validation on plain text: every error a person can make,
//! reported all at once with its place.

use std::path::Path;
use std::time::Duration;

use crate::*;

fn parse_ok(text: &str) -> Config {
    parse("test.toml", text, Path::new("/etc/switchyard")).unwrap_or_else(|e| panic!("{e}"))
}

fn errors(text: &str) -> Vec<String> {
    parse("test.toml", text, Path::new("/etc/switchyard"))
        .expect_err("the config must be rejected")
        .0
        .iter()
        .map(|e| e.to_string())
        .collect()
}

fn one_error(text: &str) -> String {
    let all = errors(text);
    assert_eq!(all.len(), 1, "{all:#?}");
    all.into_iter().next().unwrap()
}

const ROUTE: &str = "[[route]]\nname = \"app\"\nactive = \"blue\"\n[route.slots]\nblue = [\"127.0.0.1:3000\"]\ngreen = [\"127.0.0.1:3001\"]\n";

#[test]
fn the_design_example_parses_with_every_section() {
    let config = parse_ok(include_str!("../tests/design-example.toml"));
    assert_eq!(config.server.listen, vec!["0.0.0.0:80".parse().unwrap()]);
    assert_eq!(config.server.threads, Some(2));
    assert_eq!(config.server.admin_uids, vec![1001]);
    assert_eq!(config.server.drain_timeout, Duration::from_secs(30));
    let tls = config.tls.as_ref().unwrap();
    assert_eq!(
        tls.certificates[0].key,
        Path::new("/etc/switchyard/app.key")
    );
    let route = &config.routes[0];
    assert_eq!(
        route.hosts,
        vec![HostPattern::Exact("app.example.com".into())]
    );
    assert_eq!(route.slots["green"].len(), 2);
    let health = route.health.as_ref().unwrap();
    assert_eq!(
        (health.rise, health.fall, health.expect_status),
        (2, 3, (200, 399))
    );
    let canary = route.canary.as_ref().unwrap();
    assert_eq!((canary.slot.as_str(), canary.weight), ("green", 10));
    assert_eq!(canary.sticky_key, StickyKey::ClientIp);
    assert_eq!(canary.sticky_max_age, DEFAULT_STICKY_MAX_AGE);
    let preview = route.preview.as_ref().unwrap();
    assert_eq!(preview.override_cidrs[0].to_string(), "10.0.0.0/8");
    let rollout = route.rollout.as_ref().unwrap();
    assert_eq!(rollout.steps.len(), 3);
    assert_eq!(rollout.steps[2].hold, None);
    assert_eq!(rollout.window, DEFAULT_ROLLOUT_WINDOW);
    assert_eq!(health.host.as_deref(), Some("app.example.com"));
    assert_eq!(tls.listen, vec!["0.0.0.0:443".parse().unwrap()]);
    assert_eq!(
        summary(&config),
        "ok: 1 route, 2 slots, 3 backends; listening on 0.0.0.0:80"
    );
}

#[test]
fn defaults_fill_what_the_file_leaves_out() {
    let config = parse_ok(ROUTE);
    assert_eq!(config.server.listen, vec!["0.0.0.0:80".parse().unwrap()]);
    assert_eq!(
        config.server.admin_socket,
        Path::new("/run/switchyard/admin.sock")
    );
    assert_eq!(config.server.state_dir, Path::new("/var/lib/switchyard"));
    assert_eq!(config.server.connect_timeout, Duration::from_secs(3));
    assert_eq!(config.server.header_timeout, Duration::from_secs(10));
    assert_eq!(config.server.send_timeout, Duration::from_secs(60));
    assert_eq!(config.server.max_connections, None);
    let route = &config.routes[0];
    assert_eq!((route.path_prefix.as_str(), route.retries), ("/", 2));
    assert!(route.hosts.is_empty() && route.canary.is_none());
}

#[test]
fn relative_paths_resolve_against_the_config_directory() {
    let config = parse_ok(&format!(
        "[server]\nadmin_socket = \"run/admin.sock\"\nstate_dir = \"/abs/state\"\n{ROUTE}"
    ));
    assert_eq!(
        config.server.admin_socket,
        Path::new("/etc/switchyard/run/admin.sock")
    );
    assert_eq!(config.server.state_dir, Path::new("/abs/state"));
}

#[test]
fn every_error_in_a_file_is_reported_with_its_line_and_column() {
    let text = "\
[server]
listen = [\"127.0.0.1:99999\"]
drain_timeout = \"soon\"

[[route]]
name = \"app\"
activ = \"blue\"
active = \"purple\"
[route.slots]
blue = [\"127.0.0.1:3000\"]
[route.canary]
slot = \"blue\"
weight = 150
";
    let all = errors(text);
    assert_eq!(all.len(), 5, "{all:#?}");
    assert!(
        all[0].starts_with(
            "test.toml:2:11: `listen` entry in [server] \"127.0.0.1:99999\" is not an address"
        ),
        "{}",
        all[0]
    );
    assert!(
        all[1].starts_with("test.toml:3:17:") && all[1].contains("expected e.g. \"500ms\""),
        "{}",
        all[1]
    );
    assert!(
        all[2].starts_with("test.toml:7:1: unknown key `activ`")
            && all[2].contains("did you mean `active`?"),
        "{}",
        all[2]
    );
    assert!(
        all[3].starts_with("test.toml:8:10:")
            && all[3].contains("\"purple\"")
            && all[3].contains("known slots: blue"),
        "{}",
        all[3]
    );
    assert!(
        all[4].starts_with("test.toml:13:10:") && all[4].contains("from 0 to 100, not 150"),
        "{}",
        all[4]
    );
}

#[test]
fn syntax_errors_have_a_place() {
    let e = one_error("[server\nlisten = 1\n");
    assert!(e.starts_with("test.toml:1:8: TOML syntax"), "{e}");
}

#[test]
fn unknown_keys_everywhere_suggest_the_nearest() {
    assert!(one_error(&format!("severs = 1\n{ROUTE}")).contains("did you mean `server`?"));
    assert!(one_error(&format!("[server]\nlisen = []\n{ROUTE}")).contains("did you mean `listen`?"));
    let tls = errors(&format!("[tls]\nlisten = []\ncertificate = []\n{ROUTE}"));
    assert!(
        tls.iter()
            .any(|e| e.contains("did you mean `certificates`?")),
        "{tls:#?}"
    );
    let route_sections = [
        (
            "[route.health]\nintervall = \"1s\"\n",
            "did you mean `interval`?",
        ),
        (
            "[route.canary]\nslot = \"green\"\nwieght = 5\n",
            "did you mean `weight`?",
        ),
        (
            "[route.preview]\noverride_tokn = \"x\"\n",
            "did you mean `override_token`?",
        ),
        (
            "[route.rollout]\nsteps = [{ weight = 100 }]\nmin_request = 5\n",
            "did you mean `min_requests`?",
        ),
    ];
    for (section, hint) in route_sections {
        let e = one_error(&format!("{ROUTE}{section}"));
        assert!(e.contains(hint), "{section}: {e}");
    }
    assert!(
        one_error(&ROUTE.replace("active", "path_prefix = \"/\"\nretires = 1\nactive"))
            .contains("did you mean `retries`?")
    );
}

#[test]
fn wrong_types_are_named() {
    let e = one_error(&format!("[server]\nthreads = \"two\"\n{ROUTE}"));
    assert!(
        e.contains("`threads` in [server] must be an integer, not string"),
        "{e}"
    );
    let e = one_error(&ROUTE.replace("name = \"app\"", "name = \"app\"\nredirect_https = \"yes\""));
    assert!(e.contains("must be true or false"), "{e}");
    let e = one_error(&ROUTE.replace("blue = [\"127.0.0.1:3000\"]", "blue = \"127.0.0.1:3000\""));
    assert!(e.contains("must be a list of strings"), "{e}");
}

#[test]
fn backends_are_ip_and_port_literals_or_host_and_port_names() {
    for bad in [
        "127.0.0.1",
        "http://127.0.0.1:3000",
        "::1:80",
        "localhost",
        "app:0",
        "app:65536",
        "-app:80",
        "a..b:80",
        "1.2.3.4.5:80",
        "app green:80",
    ] {
        let e = one_error(&ROUTE.replace("127.0.0.1:3000", bad));
        assert!(
            e.contains("is neither IP:port (\"127.0.0.1:3000\", \"[::1]:3000\") nor host:port (\"app-green:3000\")"),
            "{bad}: {e}"
        );
    }
    let v6 = parse_ok(&ROUTE.replace("127.0.0.1:3000", "[::1]:3000"));
    assert_eq!(
        v6.routes[0].slots["blue"],
        vec!["[::1]:3000".parse().unwrap()]
    );

    let named = parse_ok(&ROUTE.replace(
        "blue = [\"127.0.0.1:3000\"]",
        "blue = [\"App-Blue.:3000\", \"127.0.0.1:3009\", \"my_app.internal:80\"]",
    ));
    let route = &named.routes[0];
    assert_eq!(
        route.slots["blue"],
        vec!["127.0.0.1:3009".parse().unwrap()],
        "names are resolved later; the literals are addresses already"
    );
    let names: Vec<String> = route
        .names()
        .map(|(slot, n)| format!("{slot} {n} {}:{}", n.line, n.column))
        .collect();
    assert_eq!(
        names,
        ["blue app-blue:3000 5:9", "blue my_app.internal:80 5:45"]
    );
    let resolved = route.backends_with(|name| {
        (name.host == "app-blue").then(|| {
            vec![
                "10.0.0.1:3000".parse().unwrap(),
                "127.0.0.1:3009".parse().unwrap(),
            ]
        })
    });
    assert_eq!(
        resolved["blue"],
        vec![
            "10.0.0.1:3000".parse().unwrap(),
            "127.0.0.1:3009".parse().unwrap()
        ],
        "file order, each address once; a name without an answer adds nothing"
    );
    assert_eq!(named.backend_names().len(), 2);
}

#[test]
fn resolvers_are_dns_servers_with_port_53_by_default() {
    let config = parse_ok(&format!(
        "[server]\nresolvers = [\"127.0.0.11\", \"[::1]:5353\"]\n{ROUTE}"
    ));
    assert_eq!(
        config.server.resolvers,
        vec![
            "127.0.0.11:53".parse().unwrap(),
            "[::1]:5353".parse().unwrap()
        ]
    );
    assert!(parse_ok(ROUTE).server.resolvers.is_empty());
    let e = one_error(&format!("[server]\nresolvers = [\"dns.google\"]\n{ROUTE}"));
    assert!(
        e.starts_with("test.toml:2:14:") && e.contains("a DNS server is an IP address"),
        "{e}"
    );
}

#[test]
fn slot_problems() {
    assert!(
        one_error(&ROUTE.replace("blue = [\"127.0.0.1:3000\"]", "blue = []"))
            .contains("has no backends")
    );
    let no_slots = "[[route]]\nname = \"app\"\nactive = \"blue\"\n[route.slots]\n";
    assert!(one_error(no_slots).contains("has no slots"));
    let missing = "[[route]]\nname = \"app\"\nactive = \"blue\"\n";
    assert!(one_error(missing).contains("needs [route.slots]"));
    assert!(one_error(&ROUTE.replace("green =", "\"gr een\" =")).contains("may use only letters"));
}

#[test]
fn canary_problems() {
    let e = one_error(&format!(
        "{ROUTE}[route.canary]\nslot = \"blue\"\nweight = 5\n"
    ));
    assert!(e.contains("the active slot"), "{e}");
    let e = one_error(&format!(
        "{ROUTE}[route.canary]\nslot = \"teal\"\nweight = 5\n"
    ));
    assert!(
        e.contains("\"teal\"") && e.contains("known slots: blue, green"),
        "{e}"
    );
    let e = one_error(&format!(
        "{ROUTE}[route.canary]\nslot = \"green\"\nweight = -1\n"
    ));
    assert!(e.contains("from 0 to 100"), "{e}");
    let e = one_error(&format!(
        "{ROUTE}[route.canary]\nslot = \"green\"\nsticky_key = \"cookie\"\n"
    ));
    assert!(e.contains("\"client_ip\" or \"header:NAME\""), "{e}");
    let ok = parse_ok(&format!(
        "{ROUTE}[route.canary]\nslot = \"green\"\nweight = 5\nsticky_key = \"header:X-User\"\n"
    ));
    assert_eq!(
        ok.routes[0].canary.as_ref().unwrap().sticky_key,
        StickyKey::Header("x-user".into())
    );
}

#[test]
fn route_names_must_be_unique_and_routes_must_not_overlap() {
    let e = one_error(&format!(
        "{ROUTE}\n{}",
        ROUTE.replace("active", "hosts = [\"x.test\"]\nactive")
    ));
    assert!(
        e.contains("route name \"app\" is used twice (first at line 2)"),
        "{e}"
    );
    let e = one_error(&format!(
        "{ROUTE}\n{}",
        ROUTE.replace("\"app\"", "\"app2\"")
    ));
    assert!(
        e.contains("claims the same requests as route \"app\": both match any host"),
        "{e}"
    );
    let with_host = |name: &str, host: &str, prefix: &str| {
        ROUTE.replace(
            "\"app\"",
            &format!("\"{name}\"\nhosts = [\"{host}\"]\npath_prefix = \"{prefix}\""),
        )
    };
    let e = one_error(&format!(
        "{}\n{}",
        with_host("a", "A.test", "/"),
        with_host("b", "a.test", "/")
    ));
    assert!(e.contains("host \"a.test\""), "{e}");
    parse_ok(&format!(
        "{}\n{}",
        with_host("a", "a.test", "/"),
        with_host("b", "a.test", "/api")
    ));
    parse_ok(&format!(
        "{}\n{}",
        with_host("a", "a.test", "/"),
        with_host("b", "*.a.test", "/")
    ));
}

#[test]
fn host_patterns_and_prefixes() {
    let config = parse_ok(&ROUTE.replace(
        "active",
        "hosts = [\"App.Example.COM\", \"*.Example.com\"]\nactive",
    ));
    assert_eq!(
        config.routes[0].hosts,
        vec![
            HostPattern::Exact("app.example.com".into()),
            HostPattern::Suffix(".example.com".into())
        ]
    );
    for bad in ["app.example.com:80", "https://x", "a/b", "", "*."] {
        let e = one_error(&ROUTE.replace("active", &format!("hosts = [\"{bad}\"]\nactive")));
        assert!(e.contains("is not a host name"), "{bad}: {e}");
    }
    assert!(
        one_error(&ROUTE.replace("active", "path_prefix = \"api\"\nactive"))
            .contains("must start with '/'")
    );
}

#[test]
fn missing_required_keys() {
    let e = one_error("[[route]]\nactive = \"blue\"\n[route.slots]\nblue = [\"127.0.0.1:1\"]\n");
    assert!(e.contains("[[route]] needs `name`"), "{e}");
    let e = one_error("[[route]]\nname = \"a\"\n[route.slots]\nblue = [\"127.0.0.1:1\"]\n");
    assert!(e.contains("needs `active`"), "{e}");
}

#[test]
fn server_value_ranges() {
    assert!(one_error(&format!("[server]\nadmin_uids = [-1]\n{ROUTE}")).contains("numeric uids"));
    assert!(one_error(&format!("[server]\nthreads = 0\n{ROUTE}")).contains("from 1 to 1024"));
    assert!(one_error(&format!("[server]\nmax_connections = 0\n{ROUTE}")).contains("from 1"));
    assert!(
        one_error(&format!("[server]\nheader_timeout = \"0s\"\n{ROUTE}"))
            .contains("longer than zero")
    );
    let limits = parse_ok(&format!(
        "[server]\nmax_connections = 500\nheader_timeout = \"2s\"\nsend_timeout = \"30s\"\n{ROUTE}"
    ));
    assert_eq!(limits.server.max_connections, Some(500));
    assert_eq!(limits.server.header_timeout, Duration::from_secs(2));
    assert_eq!(limits.server.send_timeout, Duration::from_secs(30));
    assert!(one_error(&format!("[server]\nlisten = []\n{ROUTE}")).contains("at least one address"));
    assert!(
        one_error(&format!("[server]\ndrain_timeout = \"0s\"\n{ROUTE}"))
            .contains("longer than zero")
    );
}

#[test]
fn body_and_header_sizes() {
    let defaults = parse_ok(ROUTE);
    assert_eq!(
        defaults.server.max_body_size, None,
        "no body limit by default"
    );
    assert_eq!(defaults.server.max_header_size, 64 * 1024);
    assert_eq!(defaults.routes[0].max_body_size, None);

    let set = parse_ok(&format!(
        "[server]\nmax_body_size = \"10MiB\"\nmax_header_size = \"16K\"\n{}",
        ROUTE.replace("[route.slots]", "max_body_size = 1000\n[route.slots]")
    ));
    assert_eq!(set.server.max_body_size, Some(10 << 20));
    assert_eq!(set.server.max_header_size, 16 << 10);
    assert_eq!(set.routes[0].max_body_size, Some(1000));

    let e = one_error(&format!("[server]\nmax_body_size = \"10MB\"\n{ROUTE}"));
    assert!(e.contains("test.toml:2:"), "{e}");
    assert!(
        e.contains("unknown unit") && e.contains("powers of 1024"),
        "{e}"
    );
    let e = one_error(&format!("[server]\nmax_body_size = 0\n{ROUTE}"));
    assert!(e.contains("must be from 1 bytes"), "{e}");
    let e = one_error(&format!("[server]\nmax_header_size = 100\n{ROUTE}"));
    assert!(e.contains("from 1 KiB to 1 MiB, not 100 bytes"), "{e}");
    let e = one_error(&format!("[server]\nmax_header_size = true\n{ROUTE}"));
    assert!(e.contains("expected a size, not boolean"), "{e}");
    let e = one_error(&ROUTE.replace("[route.slots]", "max_body_size = -5\n[route.slots]"));
    assert!(
        e.contains("cannot be negative") && e.contains("route \"app\""),
        "{e}"
    );
}

#[test]
fn trusted_proxies_and_proxy_protocol() {
    let defaults = parse_ok(ROUTE);
    assert!(defaults.server.trusted_proxies.is_empty());
    assert!(!defaults.server.proxy_protocol);
    let set = parse_ok(&format!(
        "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"192.0.2.7\", \"2001:db8::/32\"]\nproxy_protocol = true\n{ROUTE}"
    ));
    let nets: Vec<String> = set
        .server
        .trusted_proxies
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(nets, ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"]);
    assert!(set.server.proxy_protocol);

    let e = one_error(&format!(
        "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"lb.internal\"]\n{ROUTE}"
    ));
    assert!(
        e.contains("test.toml:2:") && e.contains("\"lb.internal\" in `trusted_proxies`"),
        "{e}"
    );
    let e = one_error(&format!("[server]\nproxy_protocol = \"yes\"\n{ROUTE}"));
    assert!(
        e.contains("`proxy_protocol` in [server] must be true or false"),
        "{e}"
    );
}

#[test]
fn route_limits() {
    let with = |limits: &str| {
        ROUTE.replace(
            "[route.slots]",
            &format!("[route.limits]\n{limits}\n[route.slots]"),
        )
    };
    let config = parse_ok(&with("rate = \"100/s\""));
    let limit = config.routes[0].rate_limit.clone().unwrap();
    assert_eq!(
        (limit.requests, limit.per, limit.burst),
        (100, Duration::from_secs(1), 100)
    );
    assert_eq!(limit.key, RateKey::ClientIp);
    let config = parse_ok(&with(
        "rate = \"600/m\"\nburst = 0\nkey = \"header:X-Api-Key\"",
    ));
    let limit = config.routes[0].rate_limit.clone().unwrap();
    assert_eq!(
        (limit.requests, limit.per, limit.burst),
        (600, Duration::from_secs(60), 0)
    );
    assert_eq!(limit.key, RateKey::Header("x-api-key".into()));
    assert!(parse_ok(ROUTE).routes[0].rate_limit.is_none());

    let e = one_error(&with("rate = \"100/d\""));
    assert!(
        e.contains("is not a rate") && e.contains("\"100/s\""),
        "{e}"
    );
    let e = one_error(&with("rate = \"0/s\""));
    assert!(e.contains("is not a rate"), "{e}");
    let e = one_error(&with("rate = \"5/s\"\nkey = \"cookie:session\""));
    assert!(
        e.contains("must be \"client_ip\" or \"header:NAME\""),
        "{e}"
    );
    let e = one_error(&with("burst = 5"));
    assert!(e.contains("needs `rate`"), "{e}");
    let e = one_error(&with("rate = \"5/s\"\nburst = -1"));
    assert!(e.contains("`burst`"), "{e}");
}

#[test]
fn route_access() {
    let with = |access: &str| {
        ROUTE.replace(
            "[route.slots]",
            &format!("[route.access]\n{access}\n[route.slots]"),
        )
    };
    let config = parse_ok(&with(
        "allow = [\"10.0.0.0/8\", \"192.0.2.7\"]\ndeny = [\"10.9.0.0/16\"]\npaths = [\"/admin\"]",
    ));
    let access = config.routes[0].access.clone().unwrap();
    assert_eq!(access.allow.len(), 2);
    assert_eq!(access.deny[0].to_string(), "10.9.0.0/16");
    assert_eq!(access.paths, ["/admin"]);
    let e = one_error(&with("allow = [\"office\"]"));
    assert!(e.contains("\"office\" in `allow` of [route.access]"), "{e}");
    let e = one_error(&with("paths = [\"admin\"]"));
    assert!(e.contains("must start with '/'"), "{e}");
    let e = one_error(&with("allw = []"));
    assert!(e.contains("allw"), "{e}");

    let bcrypt = "$2b$04$abcdefghijklmnopqrstuuJ0gUi0sC6LHs2a3Ytwf0Qd/g2W2fN6W";
    let argon = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";
    let config = parse_ok(&with(&format!(
        "basic_auth = [{{ user = \"ops\", hash = \"{bcrypt}\" }}, {{ user = \"dev\", hash = \"{argon}\" }}]"
    )));
    let users = &config.routes[0].access.as_ref().unwrap().basic_auth;
    assert_eq!(users.len(), 2);
    assert_eq!(users[1], ("dev".to_string(), argon.to_string()));
    let e = one_error(&with(
        "basic_auth = [{ user = \"ops\", hash = \"hunter2\" }]",
    ));
    assert!(
        e.contains("not an argon2 or bcrypt hash") && e.contains("hash-password"),
        "{e}"
    );
    let e = one_error(&with(&format!(
        "basic_auth = [{{ user = \"ops\", hash = \"{bcrypt}\" }}, {{ user = \"ops\", hash = \"{argon}\" }}]"
    )));
    assert!(e.contains("appears twice"), "{e}");
    let e = one_error(&with(&format!(
        "basic_auth = [{{ user = \"a:b\", hash = \"{bcrypt}\" }}]"
    )));
    assert!(e.contains("without ':'"), "{e}");
}

#[test]
fn health_preview_and_rollout_problems() {
    let health = |body: &str| format!("{ROUTE}[route.health]\n{body}\n");
    assert!(one_error(&health("expect_status = \"2xx\"")).contains("like \"200-399\""));
    assert!(one_error(&health("rise = 0")).contains("from 1 to 100"));
    assert!(one_error(&health("path = \"health\"")).contains("must start with '/'"));
    assert_eq!(
        parse_ok(&health("expect_status = 204")).routes[0]
            .health
            .as_ref()
            .unwrap()
            .expect_status,
        (204, 204)
    );
    let preview = format!("{ROUTE}[route.preview]\noverride_cidrs = [\"10.0.0.0/33\"]\n");
    assert!(one_error(&preview).contains("is not a CIDR"));
    let rollout = |steps: &str| format!("{ROUTE}[route.rollout]\nsteps = {steps}\n");
    assert!(one_error(&rollout("[]")).contains("non-empty"));
    assert!(one_error(&rollout(
        "[{ weight = 50, hold = \"1m\" }, { weight = 10, hold = \"1m\" }, { weight = 100 }]"
    ))
    .contains("must not decrease"));
    assert!(one_error(&rollout("[{ weight = 10 }, { weight = 100 }]"))
        .contains("only the last step may omit it"));
    assert!(one_error(&rollout("[{ weight = 101 }]")).contains("from 0 to 100"));
}

#[test]
fn an_unreadable_file_is_one_error_without_a_place() {
    let e = load(Path::new("/nonexistent/switchyard.toml")).unwrap_err();
    assert_eq!(e.0.len(), 1);
    assert_eq!((e.0[0].line, e.0[0].column), (0, 0));
    assert!(e
        .to_string()
        .starts_with("/nonexistent/switchyard.toml: cannot read"));
}

#[test]
fn the_summary_counts_routes_slots_and_backends() {
    let two = format!(
        "[server]\nlisten = [\"0.0.0.0:8080\", \"[::]:8080\"]\n{}\n{}",
        ROUTE.replace("active", "hosts = [\"a.test\"]\nactive"),
        ROUTE
            .replace("\"app\"", "\"b\"\nhosts = [\"b.test\"]")
            .replace(
                "green = [\"127.0.0.1:3001\"]",
                "green = [\"127.0.0.1:3001\", \"127.0.0.1:3002\"]\nv3 = [\"127.0.0.1:3003\"]"
            )
    );
    assert_eq!(
        summary(&parse_ok(&two)),
        "ok: 2 routes, 5 slots, 6 backends; listening on 0.0.0.0:8080, [::]:8080"
    );
}

#[test]
fn durations_take_humantime_words_and_say_what_is_expected() {
    let drain = |value: &str| format!("[server]\ndrain_timeout = \"{value}\"\n{ROUTE}");
    // humantime reads units in words too; nothing to refuse there.
    assert_eq!(
        parse_ok(&drain("5 minutes")).server.drain_timeout,
        Duration::from_secs(300)
    );
    assert_eq!(
        parse_ok(&drain("1m 30s")).server.drain_timeout,
        Duration::from_secs(90)
    );
    for bad in ["five minutes", "30", "5 mintues", "-1s"] {
        let e = one_error(&drain(bad));
        assert!(
            e.starts_with("test.toml:2:17:")
                && e.contains("expected e.g. \"500ms\", \"30s\", \"5m\""),
            "{bad}: {e}"
        );
    }
    assert!(one_error(&drain("400days")).contains("at most a year"));
    let hold = format!("{ROUTE}[route.rollout]\nsteps = [{{ weight = 10, hold = \"5 fortnights\" }}, {{ weight = 100 }}]\n");
    assert!(one_error(&hold).contains("`hold` in step 1 of [route.rollout]"));
}

#[test]
fn unknown_keys_in_list_entries_suggest_the_nearest() {
    let e = errors(&format!(
        "[tls]\ncertificates = [{{ cert = \"a.pem\", kye = \"a.key\" }}]\n{ROUTE}"
    ));
    assert!(
        e.iter()
            .any(|e| e.starts_with("test.toml:2:35: unknown key `kye`")
                && e.contains("did you mean `key`?")),
        "{e:#?}"
    );
    let e = one_error(&format!(
        "{ROUTE}[route.rollout]\nsteps = [{{ weight = 100, hodl = \"1m\" }}]\n"
    ));
    assert!(e.contains("did you mean `hold`?"), "{e}");
}

#[test]
fn a_name_is_no_listen_address() {
    let e = one_error(&format!(
        "[server]\nadmin_http = \"localhost:9901\"\n{ROUTE}"
    ));
    assert!(e.contains("`admin_http` in [server]"), "{e}");
}

#[test]
fn the_probe_host_defaults_to_the_routes_first_exact_host() {
    let with = |hosts: &str, health: &str| {
        parse_ok(&format!(
            "{}[route.health]\n{health}\n",
            ROUTE.replace("active", &format!("hosts = {hosts}\nactive"))
        ))
        .routes[0]
            .health
            .clone()
            .unwrap()
            .host
    };
    assert_eq!(
        with("[\"*.a.test\", \"App.test\"]", ""),
        Some("app.test".into())
    );
    assert_eq!(with("[\"*.a.test\"]", ""), None);
    assert_eq!(
        with("[\"a.test\"]", "host = \"probe.test:8080\""),
        Some("probe.test:8080".into())
    );
    let e = one_error(&format!(
        "{ROUTE}[route.health]\nhost = \"http://a.test/\"\n"
    ));
    assert!(e.contains("is not a Host header"), "{e}");
}

#[test]
fn sticky_max_age_and_the_analysis_window_are_durations() {
    let canary = format!("{ROUTE}[route.canary]\nslot = \"green\"\nsticky_max_age = \"2h\"\n");
    let config = parse_ok(&canary);
    let max_age = config.routes[0].canary.as_ref().unwrap().sticky_max_age;
    assert_eq!(max_age, std::time::Duration::from_secs(7200));
    let rollout = |window: &str| {
        format!("{ROUTE}[route.rollout]\nsteps = [{{ weight = 100 }}]\nwindow = \"{window}\"\n")
    };
    let window = parse_ok(&rollout("500ms")).routes[0]
        .rollout
        .as_ref()
        .unwrap()
        .window;
    assert_eq!(window, std::time::Duration::from_millis(500));
    assert!(one_error(&rollout("0s")).contains("longer than zero"));
    let bad_age = format!("{ROUTE}[route.canary]\nslot = \"green\"\nsticky_max_age = \"soon\"\n");
    assert!(one_error(&bad_age).contains("sticky_max_age"));
}

#[test]
fn header_and_cookie_names_must_be_tokens() {
    let canary = |body: &str| format!("{ROUTE}[route.canary]\nslot = \"green\"\n{body}\n");
    assert!(one_error(&canary("sticky_cookie = \"a;b\"")).contains("is not a cookie name"));
    assert!(one_error(&canary("sticky_key = \"header:\"")).contains("\"header:NAME\""));
    assert!(one_error(&canary("sticky_key = \"header:x user\"")).contains("\"header:NAME\""));
    let preview = |body: &str| format!("{ROUTE}[route.preview]\n{body}\n");
    assert!(one_error(&preview("override_header = \"x slot\"")).contains("is not a header name"));
    assert!(one_error(&preview("override_token = \"two words\"")).contains("printable ASCII"));
    assert_eq!(
        parse_ok(&preview("override_header = \"X-Slot\"")).routes[0]
            .preview
            .as_ref()
            .unwrap()
            .override_header,
        "x-slot"
    );
}

#[test]
fn tls_defaults_and_shape() {
    let config = parse_ok(&format!(
        "[tls]\ncertificates = [{{ cert = \"certs/a.pem\", key = \"/k/a.key\" }}]\n{ROUTE}"
    ));
    let tls = config.tls.unwrap();
    assert_eq!(tls.listen, vec!["0.0.0.0:443".parse().unwrap()]);
    assert_eq!(
        tls.certificates[0].cert,
        Path::new("/etc/switchyard/certs/a.pem")
    );
    assert_eq!(tls.certificates[0].key, Path::new("/k/a.key"));
    assert!(one_error(&format!("[tls]\ncertificates = []\n{ROUTE}")).contains("at least one"));
    assert!(
        one_error(&format!("[tls]\nlisten = [\"0.0.0.0:443\"]\n{ROUTE}"))
            .contains("[tls] needs `certificates")
    );
    let e = one_error(&format!(
        "[tls]\ncertificates = [{{ cert = \"a.pem\" }}]\n{ROUTE}"
    ));
    assert!(e.contains("needs `key`"), "{e}");
}

#[test]
fn listeners_that_cannot_all_be_bound_are_refused() {
    let e = one_error(&format!(
        "[server]\nlisten = [\"0.0.0.0:8080\"]\nadmin_http = \"127.0.0.1:8080\"\n{ROUTE}"
    ));
    assert!(
        e.starts_with("test.toml:3:14: 127.0.0.1:8080 in [server] `admin_http` and 0.0.0.0:8080 in [server] `listen` (line 2) cannot both be bound"),
        "{e}"
    );
    let e = one_error(&format!(
        "[tls]\nlisten = [\"0.0.0.0:80\"]\ncertificates = [{{ cert = \"a\", key = \"b\" }}]\n{ROUTE}"
    ));
    assert!(
        e.starts_with("test.toml:2:11:") && e.contains("(its default)"),
        "{e}"
    );
    let e = one_error(&format!(
        "[server]\nlisten = [\"127.0.0.1:80\", \"127.0.0.1:80\"]\n{ROUTE}"
    ));
    assert!(e.starts_with("test.toml:2:27:"), "{e}");
    parse_ok(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\", \"0.0.0.0:0\"]\nadmin_http = \"127.0.0.1:0\"\n{ROUTE}"
    ));
    parse_ok(&format!(
        "[server]\nlisten = [\"127.0.0.1:80\", \"127.0.0.2:80\", \"[::1]:80\"]\nadmin_http = \"127.0.0.1:9901\"\n{ROUTE}"
    ));
}

/// Whatever the bytes, `parse` answers with a config or with located
/// errors; it never panics.
#[test]
fn damaged_files_give_errors_never_panics() {
    let example = include_str!("../tests/design-example.toml");
    let check = |text: &str| {
        if let Err(errors) = parse("test.toml", text, Path::new("/etc")) {
            assert!(!errors.0.is_empty());
            for e in &errors.0 {
                assert!(e.line >= 1 && e.column >= 1, "{e} in\n{text}");
            }
        }
    };
    let mut cut = 0;
    while cut < example.len() {
        check(&example[..cut]);
        cut += 1;
        while !example.is_char_boundary(cut) {
            cut += 1;
        }
    }
    let replacements = [
        "",
        "\"",
        "]",
        "[",
        "=",
        "-1",
        "99999999999999999999",
        "1.5",
        "{}",
        "[]",
        "é",
        "\n",
    ];
    for (i, _) in example.match_indices(['=', '"', '[', ',', '1']) {
        for r in replacements {
            check(&format!("{}{r}{}", &example[..i], &example[i + 1..]));
        }
    }
}

#[test]
fn log_format_and_access_log_default_to_logfmt_and_off() {
    let defaults = parse_ok(ROUTE);
    assert_eq!(defaults.server.log_format, LogFormat::Logfmt);
    assert!(!defaults.server.access_log);
    let set = parse_ok(&format!(
        "[server]\nlog_format = \"json\"\naccess_log = true\n{ROUTE}"
    ));
    assert_eq!(set.server.log_format, LogFormat::Json);
    assert!(set.server.access_log);
    let bad = one_error(&format!("[server]\nlog_format = \"xml\"\n{ROUTE}"));
    assert!(bad.contains("test.toml:2:"), "{bad}");
    assert!(
        bad.contains("`log_format` in [server] must be \"logfmt\" or \"json\", not \"xml\""),
        "{bad}"
    );
}

#[test]
fn redirect_https_needs_tls_and_hsts_takes_a_duration() {
    let e = one_error(&ROUTE.replace(
        "active = \"blue\"",
        "active = \"blue\"\nredirect_https = true",
    ));
    assert!(
        e.contains("route \"app\" sets `redirect_https` but there is no [tls] section"),
        "{e}"
    );
    let with_tls = format!(
        "[tls]\ncertificates = [{{ cert = \"a.pem\", key = \"a.key\" }}]\n{}",
        ROUTE.replace(
            "active = \"blue\"",
            "active = \"blue\"\nredirect_https = true\nhsts_max_age = \"365d\""
        )
    );
    let route = &parse_ok(&with_tls).routes[0];
    assert!(route.redirect_https);
    assert_eq!(route.hsts_max_age, Some(Duration::from_secs(365 * 86_400)));
}

#[test]
fn a_slot_may_be_a_table_with_backends_and_protocol() {
    let config = parse_ok(
        "[server]\nh2c = true\n[[route]]\nname = \"app\"\nactive = \"blue\"\n[route.slots]\nblue = [\"127.0.0.1:3000\"]\ngreen = { backends = [\"127.0.0.1:3001\"], protocol = \"h2c\" }\n[route.slots.v3]\nbackends = [\"127.0.0.1:3002\"]\nprotocol = \"http1\"\n",
    );
    assert!(config.server.h2c);
    let route = &config.routes[0];
    assert_eq!(
        route.slots["green"],
        vec!["127.0.0.1:3001".parse().unwrap()]
    );
    assert_eq!(route.slots["v3"], vec!["127.0.0.1:3002".parse().unwrap()]);
    assert_eq!(
        route.h2c_slots.iter().collect::<Vec<_>>(),
        vec!["green"],
        "only the h2c slot"
    );
    assert!(!parse_ok(&format!("[server]\n{ROUTE}")).server.h2c);

    let missing = one_error(
        "[[route]]\nname = \"app\"\nactive = \"blue\"\n[route.slots]\nblue = { protocol = \"h2c\" }\n",
    );
    assert!(missing.contains("needs `backends"), "{missing}");
    let unknown = one_error(
        "[[route]]\nname = \"app\"\nactive = \"blue\"\n[route.slots]\nblue = { backends = [\"127.0.0.1:1\"], weight = 3 }\n",
    );
    assert!(unknown.contains("weight"), "{unknown}");
    let empty = one_error(
        "[[route]]\nname = \"app\"\nactive = \"blue\"\n[route.slots]\nblue = { backends = [] }\n",
    );
    assert!(empty.contains("has no backends"), "{empty}");
}

#[test]
fn upgrades_default_to_websocket_and_never_take_h2c() {
    assert_eq!(parse_ok(ROUTE).routes[0].upgrades, ["websocket"]);
    let with = |list: &str| {
        ROUTE.replacen(
            "[route.slots]",
            &format!("upgrades = {list}\n[route.slots]"),
            1,
        )
    };
    assert_eq!(
        parse_ok(&with("[]")).routes[0].upgrades,
        Vec::<String>::new()
    );
    assert_eq!(
        parse_ok(&with("[\"WebSocket\", \"my-proto\"]")).routes[0].upgrades,
        ["websocket", "my-proto"]
    );
    assert!(one_error(&with("[\"h2c\"]")).contains("cannot name \"h2c\""));
    assert!(one_error(&with("[\"a b\"]")).contains("not a protocol name"));
}

#[test]
fn the_guard_is_on_with_defaults_and_each_value_can_be_set() {
    let config = parse_ok(ROUTE);
    assert_eq!(config.routes[0].guard, GuardConfig::default());
    assert!(config.routes[0].guard.enabled);
    assert_eq!(config.routes[0].guard.window, Duration::from_secs(300));

    let text = format!(
        "{ROUTE}[route.guard]\nwindow = \"30s\"\nmax_error_rate = 0.1\nmax_latency_increase = 1\nmin_requests = 20\n"
    );
    let guard = parse_ok(&text).routes[0].guard.clone();
    assert_eq!(
        guard,
        GuardConfig {
            enabled: true,
            window: Duration::from_secs(30),
            max_error_rate: 0.1,
            max_latency_increase: 1.0,
            min_requests: 20,
        }
    );
    let off = parse_ok(&format!("{ROUTE}[route.guard]\nenabled = false\n"));
    assert!(!off.routes[0].guard.enabled);

    let bad = one_error(&format!("{ROUTE}[route.guard]\nmax_error_rate = 2\n"));
    assert!(
        bad.contains("`max_error_rate` in [route.guard] of route \"app\""),
        "{bad}"
    );
    let unknown = one_error(&format!("{ROUTE}[route.guard]\nwindo = \"1m\"\n"));
    assert!(unknown.contains("window"), "{unknown}");
}

#[test]
fn failover_is_on_unless_none() {
    assert!(parse_ok(ROUTE).routes[0].failover);
    let none = ROUTE.replace(
        "active = \"blue\"\n",
        "active = \"blue\"\nfailover = \"none\"\n",
    );
    assert!(!parse_ok(&none).routes[0].failover);
    let bad = ROUTE.replace(
        "active = \"blue\"\n",
        "active = \"blue\"\nfailover = \"any\"\n",
    );
    let error = one_error(&bad);
    assert!(
        error.contains("`failover` of route \"app\" is \"any\""),
        "{error}"
    );
}

#[test]
fn expect_body_is_a_text_or_one_json_field() {
    let health =
        |body: &str| format!("{ROUTE}[route.health]\npath = \"/health\"\nexpect_body = {body}\n");
    let parsed = |body: &str| {
        parse_ok(&health(body)).routes[0]
            .health
            .clone()
            .unwrap()
            .expect_body
    };
    assert_eq!(
        parsed("\"ok\""),
        Some(BodyExpectation::Contains("ok".into()))
    );
    assert_eq!(
        parsed("{ status = \"healthy\" }"),
        Some(BodyExpectation::JsonField {
            field: "status".into(),
            value: "healthy".into()
        })
    );
    assert_eq!(
        parsed("{ ready = true }"),
        Some(BodyExpectation::JsonField {
            field: "ready".into(),
            value: "true".into()
        })
    );
    assert_eq!(parse_ok(ROUTE).routes.len(), 1);
    for bad in ["\"\"", "{ a = \"1\", b = \"2\" }", "{}", "3"] {
        let error = one_error(&health(bad));
        assert!(
            error.contains("`expect_body` of [route.health]"),
            "{bad}: {error}"
        );
    }
}

#[test]
fn notify_targets_are_webhooks_or_commands_with_known_events() {
    let text = format!(
        "{ROUTE}[[notify]]\nurl = \"http://127.0.0.1:9000/hook\"\nsecret = \"k\"\n\n[[notify]]\nexec = [\"/bin/page\", \"--now\"]\nevents = [\"failback\", \"route_critical\"]\n"
    );
    let notify = parse_ok(&text).notify;
    assert_eq!(notify.len(), 2);
    assert_eq!(notify[0].url.as_deref(), Some("http://127.0.0.1:9000/hook"));
    assert_eq!(notify[0].secret.as_deref(), Some("k"));
    assert!(notify[0].events.is_empty(), "all events");
    assert_eq!(
        notify[1].exec.as_deref(),
        Some(&["/bin/page".to_string(), "--now".to_string()][..])
    );
    assert!(parse_ok(ROUTE).notify.is_empty());

    let https = parse_ok(&format!(
        "{ROUTE}[[notify]]\nurl = \"https://hooks.example.com/x\"\n"
    ));
    assert_eq!(https.notify[0].ca, None, "the system's roots");
    for bad in [
        "ftp://hooks.example.com/x",
        "hooks.example.com/x",
        "http://",
    ] {
        let error = one_error(&format!("{ROUTE}[[notify]]\nurl = \"{bad}\"\n"));
        assert!(
            error.contains("must be an http:// or https:// URL"),
            "{bad}: {error}"
        );
    }
    let neither = one_error(&format!("{ROUTE}[[notify]]\nsecret = \"k\"\n"));
    assert!(
        neither.contains("needs `url` (a webhook) or `exec`"),
        "{neither}"
    );
    let event = one_error(&format!(
        "{ROUTE}[[notify]]\nexec = [\"x\"]\nevents = [\"reboot\"]\n"
    ));
    assert!(
        event.contains("lists \"reboot\"; events are failback"),
        "{event}"
    );
}

#[test]
fn error_pages_are_read_with_the_config_and_a_missing_one_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("502.html"), "<h1>be right back</h1>").unwrap();
    let text = "[[route]]\nname = \"app\"\nactive = \"blue\"\nerror_pages = { 502 = \"502.html\" }\n[route.slots]\nblue = [\"127.0.0.1:3000\"]\n";
    let parsed = parse("test.toml", text, dir.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        &*parsed.routes[0].error_pages[&502],
        b"<h1>be right back</h1>"
    );

    let missing = text.replace("502.html", "gone.html");
    let errors = parse("test.toml", &missing, dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        errors.contains("`error_pages.502` of route \"app\": cannot read"),
        "{errors}"
    );
    let other = text.replace("502 = ", "418 = ");
    let errors = parse("test.toml", &other, dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        errors.contains("the pages switchyard answers with here are 404, 502, 503, 504"),
        "{errors}"
    );
}

#[test]
fn server_error_pages_are_read_and_checked_like_a_routes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("404.html"), "<h1>nothing here</h1>").unwrap();
    let text = "[server]\nerror_pages = { 404 = \"404.html\" }\n[[route]]\nname = \"app\"\nactive = \"blue\"\n[route.slots]\nblue = [\"127.0.0.1:3000\"]\n";
    let parsed = parse("test.toml", text, dir.path()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(&*parsed.server.error_pages[&404], b"<h1>nothing here</h1>");

    let missing = text.replace("404.html", "gone.html");
    let errors = parse("test.toml", &missing, dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        errors.contains("`error_pages.404` of [server]: cannot read"),
        "{errors}"
    );
}

#[test]
fn an_https_webhooks_ca_is_read_with_the_config_and_must_hold_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let pem = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUBmQ=\n-----END CERTIFICATE-----\n";
    std::fs::write(dir.path().join("ca.pem"), pem).unwrap();
    std::fs::write(dir.path().join("empty.pem"), "not a certificate\n").unwrap();
    let text = |url: &str, ca: &str| format!("{ROUTE}[[notify]]\nurl = \"{url}\"\nca = \"{ca}\"\n");
    let parsed = parse(
        "test.toml",
        &text("https://hooks.test/x", "ca.pem"),
        dir.path(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(parsed.notify[0].ca.as_deref(), Some(pem.as_bytes()));

    let error = |text: String| {
        parse("test.toml", &text, dir.path())
            .unwrap_err()
            .to_string()
    };
    let empty = error(text("https://hooks.test/x", "empty.pem"));
    assert!(empty.contains("holds no PEM certificate"), "{empty}");
    let missing = error(text("https://hooks.test/x", "gone.pem"));
    assert!(
        missing.contains("`ca` of [[notify]] #1: cannot read"),
        "{missing}"
    );
    let plain = error(text("http://hooks.test/x", "ca.pem"));
    assert!(
        plain.contains("`ca` of [[notify]] #1 is for an https:// `url`"),
        "{plain}"
    );
}

#[test]
fn an_https_slot_reads_its_ca_and_client_identity_with_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let ca = rcgen::KeyPair::generate().unwrap();
    let ca_cert = rcgen::CertificateParams::new(vec!["ca.test".to_string()])
        .unwrap()
        .self_signed(&ca)
        .unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.path().join("client.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.path().join("client.key"), ca.serialize_pem()).unwrap();
    let other = rcgen::KeyPair::generate().unwrap();
    std::fs::write(dir.path().join("other.key"), other.serialize_pem()).unwrap();
    std::fs::write(dir.path().join("junk.pem"), "not a certificate").unwrap();
    let slot = |settings: &str| {
        format!("[[route]]\nname = \"app\"\nactive = \"blue\"\n[route.slots]\nblue = {{ backends = [\"127.0.0.1:8443\"]{settings} }}\n")
    };
    let parse_in = |text: &str| parse("test.toml", text, dir.path());

    let plain = parse_in(&slot(", protocol = \"https\"")).unwrap();
    let tls = &plain.routes[0].https_slots["blue"];
    assert_eq!(
        tls.server_name, None,
        "the backend's own address by default"
    );
    assert_eq!(tls.ca, None, "the system's roots by default");
    assert_eq!(tls.client_identity, None);

    let full = parse_in(&slot(", protocol = \"https\", tls_server_name = \"app.internal\", ca = \"ca.pem\", client_cert = \"client.pem\", client_key = \"client.key\"")).unwrap();
    let tls = &full.routes[0].https_slots["blue"];
    assert_eq!(tls.server_name.as_deref(), Some("app.internal"));
    assert_eq!(tls.ca.as_deref(), Some(ca_cert.pem().as_bytes()));
    let identity = tls.client_identity.as_ref().unwrap();
    assert_eq!(&*identity.key, ca.serialize_pem().as_bytes());
    assert!(full.routes[0].h2c_slots.is_empty());

    let error = |settings: &str| {
        let errors: Vec<String> = parse_in(&slot(settings))
            .expect_err("the config must be rejected")
            .0
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(errors.len(), 1, "{errors:#?}");
        errors.into_iter().next().unwrap()
    };
    let not_https = error(", ca = \"ca.pem\"");
    assert!(not_https.contains("test.toml:5:"), "{not_https}");
    assert!(
        not_https.contains("`ca` of slot \"blue\" of route \"app\" needs `protocol = \"https\"`"),
        "{not_https}"
    );
    let junk = error(", protocol = \"https\", ca = \"junk.pem\"");
    assert!(junk.contains("holds no PEM certificate"), "{junk}");
    let missing = error(", protocol = \"https\", ca = \"gone.pem\"");
    assert!(
        missing.contains("`ca` of slot \"blue\" of route \"app\": cannot read"),
        "{missing}"
    );
    let lone_cert = error(", protocol = \"https\", client_cert = \"client.pem\"");
    assert!(lone_cert.contains("needs `client_key`"), "{lone_cert}");
    let lone_key = error(", protocol = \"https\", client_key = \"client.key\"");
    assert!(lone_key.contains("needs `client_cert`"), "{lone_key}");
    let not_a_key =
        error(", protocol = \"https\", client_cert = \"client.pem\", client_key = \"client.pem\"");
    assert!(
        not_a_key.contains("no usable PEM private key"),
        "{not_a_key}"
    );
    let mismatched =
        error(", protocol = \"https\", client_cert = \"client.pem\", client_key = \"other.key\"");
    assert!(
        mismatched.contains("cannot be used with `client_cert`"),
        "{mismatched}"
    );
    let bad_name = error(", protocol = \"https\", tls_server_name = \"not a name\"");
    assert!(
        bad_name.contains("must be a DNS name or an IP address"),
        "{bad_name}"
    );
    let bad_protocol = error(", protocol = \"tls\"");
    assert!(
        bad_protocol.contains("\"https\" (TLS; HTTP/2 or HTTP/1.1 by ALPN)"),
        "{bad_protocol}"
    );
}

#[test]
fn tls_acme_defaults_to_lets_encrypt_and_the_routes_exact_hosts() {
    let routes = "[[route]]\nname = \"app\"\nhosts = [\"App.Example.com\", \"*.example.com\"]\nactive = \"blue\"\n[route.slots]\nblue = [\"127.0.0.1:3000\"]\n\
                  [[route]]\nname = \"api\"\nhosts = [\"api.example.com\", \"app.example.com\"]\npath_prefix = \"/api\"\nactive = \"blue\"\n[route.slots]\nblue = [\"127.0.0.1:3001\"]\n";
    let config = parse_ok(&format!(
        "[tls]\n[tls.acme]\nemail = \"ops@example.com\"\n{routes}"
    ));
    let tls = config.tls.unwrap();
    assert!(tls.certificates.is_empty(), "certificates may be left out");
    let acme = tls.acme.unwrap();
    assert_eq!(acme.directory, crate::LETS_ENCRYPT);
    assert_eq!(acme.email.as_deref(), Some("ops@example.com"));
    assert_eq!(
        acme.hosts,
        ["app.example.com", "api.example.com"],
        "exact hosts once, no wildcard"
    );
    assert_eq!(acme.ca_roots, None);
    assert_eq!(
        acme.challenges,
        [
            crate::AcmeChallenge::Http01,
            crate::AcmeChallenge::TlsAlpn01
        ]
    );

    let listed = parse_ok(&format!(
        "[tls]\ncertificates = []\n[tls.acme]\ndirectory = \"https://ca.internal/acme/directory\"\nhosts = [\"www.example.com.\"]\nchallenges = [\"tls-alpn-01\"]\n{routes}"
    ));
    let acme = listed.tls.unwrap().acme.unwrap();
    assert_eq!(acme.hosts, ["www.example.com"]);
    assert_eq!(acme.challenges, [crate::AcmeChallenge::TlsAlpn01]);
    assert_eq!(acme.directory, "https://ca.internal/acme/directory");

    for (bad, expected) in [
        ("email = \"ops\"", "must be an address like"),
        (
            "directory = \"http://ca.internal/dir\"",
            "must be the CA's https:// directory URL",
        ),
        ("hosts = [\"*.example.com\"]", "wildcards need DNS-01"),
        (
            "ca_roots = \"missing.pem\"",
            "`ca_roots` of [tls.acme]: cannot read",
        ),
        ("contact = \"x\"", "contact"),
        (
            "challenges = [\"dns-01\"]",
            "switchyard answers \"http-01\" (port 80) and \"tls-alpn-01\" (port 443)",
        ),
        ("challenges = []", "needs at least one"),
    ] {
        let e = one_error(&format!("[tls]\n[tls.acme]\n{bad}\n{routes}"));
        assert!(e.starts_with("test.toml:3:"), "{bad}: {e}");
        assert!(e.contains(expected), "{bad}: {e}");
    }
    let nothing = one_error(&format!("[tls]\n[tls.acme]\n{ROUTE}"));
    assert!(
        nothing.contains("no host to order a certificate for"),
        "{nothing}"
    );
}

#[test]
fn the_admin_http_token_is_long_printable_and_guards_an_endpoint() {
    let with = |server: &str| format!("[server]\n{server}\n{ROUTE}");
    let ok = parse_ok(&with(
        "admin_http = \"127.0.0.1:9901\"\nadmin_http_token = \"0123456789abcdef\"",
    ));
    assert_eq!(
        ok.server.admin_http_token.as_deref(),
        Some("0123456789abcdef")
    );
    assert_eq!(parse_ok(ROUTE).server.admin_http_token, None);
    let short = one_error(&with(
        "admin_http = \"127.0.0.1:9901\"\nadmin_http_token = \"0123456789abcde\"",
    ));
    assert!(
        short.starts_with("test.toml:3:20: `admin_http_token` in [server] must be at least 16"),
        "{short}"
    );
    let spaced = one_error(&with(
        "admin_http = \"127.0.0.1:9901\"\nadmin_http_token = \"0123456789 abcdef\"",
    ));
    assert!(spaced.contains("no spaces"), "{spaced}");
    let alone = one_error(&with("admin_http_token = \"0123456789abcdef\""));
    assert!(
        alone.contains("has no endpoint to guard: set `admin_http` too"),
        "{alone}"
    );
}

#[test]
fn cluster_reads_its_members_prefix_and_node() {
    let ok = parse_ok(&format!(
        "[cluster]\netcd = [\"http://127.0.0.1:2379\", \"http://127.0.0.1:2479\"]\nprefix = \"/sy/prod\"\nnode = \"front-1\"\n{ROUTE}"
    ));
    assert!(
        crate::summary(&ok).ends_with("; cluster node front-1 under /sy/prod on 2 etcd members"),
        "{}",
        crate::summary(&ok)
    );
    let cluster = ok.cluster.unwrap();
    assert_eq!(
        cluster.etcd,
        ["http://127.0.0.1:2379", "http://127.0.0.1:2479"]
    );
    assert_eq!(
        (cluster.prefix.as_str(), cluster.node.as_str()),
        ("/sy/prod", "front-1")
    );
    assert_eq!(parse_ok(ROUTE).cluster, None);
    let defaults = parse_ok(&format!(
        "[cluster]\netcd = [\"http://127.0.0.1:2379\"]\n{ROUTE}"
    ));
    let defaults = defaults.cluster.unwrap();
    assert_eq!(defaults.prefix, "/switchyard");
    assert!(!defaults.node.is_empty(), "the host name");

    let bad_url = one_error(&format!("[cluster]\netcd = [\"127.0.0.1:2379\"]\n{ROUTE}"));
    assert!(
        bad_url
            .starts_with("test.toml:2:9: \"127.0.0.1:2379\" in [cluster] `etcd`: expected http://"),
        "{bad_url}"
    );
    let missing = one_error(&format!("[cluster]\nprefix = \"/x\"\n{ROUTE}"));
    assert!(missing.contains("[cluster] needs `etcd`"), "{missing}");
    let prefix = one_error(&format!(
        "[cluster]\netcd = [\"http://a:2379\"]\nprefix = \"x/\"\n{ROUTE}"
    ));
    assert!(
        prefix.starts_with("test.toml:3:10: [cluster] `prefix` must start with `/`"),
        "{prefix}"
    );
    let node = one_error(&format!(
        "[cluster]\netcd = [\"http://a:2379\"]\nnode = \"a b\"\n{ROUTE}"
    ));
    assert!(node.contains("`node` must be 1–64 letters"), "{node}");
    let unknown = one_error(&format!(
        "[cluster]\netcd = [\"http://a:2379\"]\nlease = 3\n{ROUTE}"
    ));
    assert!(unknown.contains("lease"), "{unknown}");
}
