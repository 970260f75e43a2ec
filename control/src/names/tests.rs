use super::*;
use switchyard_conf::parse;

fn config(backends: &str) -> Config {
    let text = format!(
        "[[route]]\nname = \"app\"\nactive = \"blue\"\n[route.slots]\nblue = [{backends}]\n"
    );
    parse("test.toml", &text, std::path::Path::new("/etc/switchyard")).unwrap()
}

fn answer(ips: &[&str], ttl_secs: u64) -> Result<Answer, String> {
    Ok(Answer {
        ips: ips.iter().map(|ip| ip.parse().unwrap()).collect(),
        ttl: Duration::from_secs(ttl_secs),
    })
}

fn key(host: &str, port: u16) -> NameKey {
    (host.to_string(), port)
}

#[test]
fn a_slot_gets_its_literals_and_every_address_of_its_names() {
    let mut config = config("\"app:3000\", \"127.0.0.1:9\"");
    let (now, wall) = (Instant::now(), SystemTime::now());
    let mut names = Names::default();
    names.track(&config, now);
    assert_eq!(names.unresolved(&config).len(), 1);
    assert_eq!(names.take_due(now), vec![key("app", 3000)]);
    assert_eq!(
        names.next_due(),
        None,
        "asked: not due again until it answers"
    );
    assert!(names.record(
        &key("app", 3000),
        answer(&["10.0.0.2", "10.0.0.1", "::1"], 10),
        now,
        wall
    ));
    assert!(names.unresolved(&config).is_empty());
    names.fill(&mut config);
    let slot: Vec<String> = config.routes[0].slots["blue"]
        .iter()
        .map(|a| a.to_string())
        .collect();
    assert_eq!(
        slot,
        [
            "10.0.0.1:3000",
            "10.0.0.2:3000",
            "[::1]:3000",
            "127.0.0.1:9"
        ]
    );
    assert_eq!(
        names.next_due(),
        Some(now + Duration::from_secs(10)),
        "asked again when the TTL runs out"
    );
}

#[test]
fn the_ttl_is_kept_between_the_floor_and_the_ceiling() {
    let config = config("\"app:80\"");
    let (now, wall) = (Instant::now(), SystemTime::now());
    let mut names = Names::default();
    names.track(&config, now);
    for (ttl, wait) in [
        (0, REFRESH_FLOOR),
        (3600, REFRESH_CEILING),
        (7, Duration::from_secs(7)),
    ] {
        names.take_due(now + Duration::from_secs(10_000));
        names.record(&key("app", 80), answer(&["10.0.0.1"], ttl), now, wall);
        assert_eq!(names.next_due(), Some(now + wait), "ttl {ttl}");
    }
}

#[test]
fn a_failure_keeps_the_last_addresses_and_retries_sooner_backing_off() {
    let config = config("\"app:80\"");
    let (now, wall) = (
        Instant::now(),
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000),
    );
    let mut names = Names::default();
    names.track(&config, now);
    names.take_due(now);
    names.record(&key("app", 80), answer(&["10.0.0.1"], 30), now, wall);
    let mut waits = Vec::new();
    for n in 0..7u64 {
        let at = now + Duration::from_secs(100 * (n + 1));
        names.take_due(at);
        let failed = if n % 2 == 0 {
            Err("SERVFAIL".to_string())
        } else {
            answer(&[], 30)
        };
        assert!(!names.record(&key("app", 80), failed, at, wall + Duration::from_secs(n)));
        waits.push(names.next_due().unwrap() - at);
    }
    let secs: Vec<u64> = waits.iter().map(Duration::as_secs).collect();
    assert_eq!(secs, [1, 2, 4, 8, 10, 10, 10]);
    assert_eq!(
        names
            .addresses(&config.backend_names().into_iter().next().unwrap())
            .unwrap(),
        vec!["10.0.0.1:80".parse().unwrap()]
    );
    let status = &names.status()[&key("app", 80)];
    assert_eq!(
        status.addresses,
        vec!["10.0.0.1:80".parse::<SocketAddr>().unwrap()]
    );
    assert_eq!(
        status.error.as_deref(),
        Some("SERVFAIL"),
        "the last failure"
    );
    assert_eq!(
        status.failing_since,
        Some(1_000),
        "since the first failure in a row"
    );

    // A good answer again clears the error and the backoff.
    names.take_due(now + Duration::from_secs(10_000));
    assert!(names.record(&key("app", 80), answer(&["10.0.0.9"], 5), now, wall));
    assert_eq!(names.status()[&key("app", 80)].error, None);
    assert_eq!(names.next_due(), Some(now + Duration::from_secs(5)));
}

#[test]
fn names_leave_with_the_config_and_answers_for_them_are_ignored() {
    let (now, wall) = (Instant::now(), SystemTime::now());
    let mut names = Names::default();
    names.track(&config("\"old:80\""), now);
    names.take_due(now);
    names.track(&config("\"new:80\""), now);
    assert!(!names.record(&key("old", 80), answer(&["10.0.0.1"], 5), now, wall));
    assert_eq!(
        names.status().keys().cloned().collect::<Vec<_>>(),
        vec![key("new", 80)]
    );
}

#[test]
fn a_name_never_resolved_is_an_error_at_its_place() {
    let config = config("\"127.0.0.1:1\", \"gone.test:80\"");
    let names = Names::default();
    let unresolved = names.unresolved(&config);
    let why = BTreeMap::from([(key("gone.test", 80), "NXDOMAIN".to_string())]);
    let errors = never_resolved("test.toml", &unresolved, &why).to_string();
    assert_eq!(
        errors,
        "test.toml:5:24: backend gone.test:80 does not resolve: NXDOMAIN"
    );
}

#[test]
fn many_addresses_are_capped() {
    let config = config("\"big:80\"");
    let (now, wall) = (Instant::now(), SystemTime::now());
    let mut names = Names::default();
    names.track(&config, now);
    names.take_due(now);
    let ips: Vec<String> = (0..200)
        .map(|i| format!("10.0.{}.{}", i / 250, i % 250))
        .collect();
    let ips: Vec<&str> = ips.iter().map(String::as_str).collect();
    names.record(&key("big", 80), answer(&ips, 5), now, wall);
    assert_eq!(
        names.status()[&key("big", 80)].addresses.len(),
        MAX_ADDRESSES_PER_NAME
    );
}
