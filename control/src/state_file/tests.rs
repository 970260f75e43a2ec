use super::*;

fn state(active: &str) -> RouteState {
    RouteState {
        cohort: 0,
        rollout: None,
        failed: None,
        pending: None,
        maintenance: None,
        file_maintenance: false,
        guard: None,
        recent: Vec::new(),
        active: active.into(),
        previous: Some("blue".into()),
        canary: Some(CanaryState {
            slot: "blue".into(),
            weight: 10,
        }),
        source: DecisionSource::Admin,
        file_active: "blue".into(),
        file_canary: None,
        changed_at: "2026-11-22T11:30:00Z".into(),
    }
}

fn two_routes() -> BTreeMap<String, RouteState> {
    BTreeMap::from([
        ("api".to_string(), state("green")),
        ("app".to_string(), state("v3")),
    ])
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn corrupt_files(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("state.json.corrupt-")
        })
        .collect()
}

#[test]
fn saved_routes_load_back_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let file = StateFile::new(dir.path());
    let routes = two_routes();
    file.save(&routes).unwrap();
    let loaded = file.load();
    assert_eq!(loaded.routes, routes);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn file_has_the_documented_shape() {
    let dir = tempfile::tempdir().unwrap();
    let file = StateFile::new(dir.path());
    file.save(&two_routes()).unwrap();
    let text = fs::read_to_string(file.path()).unwrap();
    let value: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["version"], 1);
    assert_eq!(value["routes"]["app"]["active"], "v3");
    assert_eq!(value["routes"]["app"]["source"], "admin");
    assert!(text.contains("\n  \"routes\""), "pretty-printed: {text}");
}

#[test]
fn a_second_save_replaces_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let file = StateFile::new(dir.path());
    file.save(&two_routes()).unwrap();
    let only_app = BTreeMap::from([("app".to_string(), state("green"))]);
    file.save(&only_app).unwrap();
    assert_eq!(file.load().routes, only_app);
}

#[test]
fn a_rollout_survives_a_save_and_a_broken_one_is_dropped_with_a_warning() {
    use crate::rollout::{Plan, Rollout, Step};
    let dir = tempfile::tempdir().unwrap();
    let file = StateFile::new(dir.path());
    let plan = Plan {
        steps: vec![
            Step {
                weight: 10,
                hold_ms: Some(60_000),
            },
            Step {
                weight: 100,
                hold_ms: None,
            },
        ],
        max_error_rate: 0.05,
        max_latency_increase: 0.5,
        min_requests: 100,
        window_ms: 60_000,
    };
    let mut routes = two_routes();
    let mut rollout = Rollout::start(plan, "green", "2026-11-22T11:30:00Z");
    rollout.hold_left_ms = 1234;
    routes.get_mut("app").unwrap().rollout = Some(rollout.clone());
    file.save(&routes).unwrap();
    assert_eq!(file.load().routes["app"].rollout, Some(rollout.clone()));

    rollout.step = 7;
    routes.get_mut("app").unwrap().rollout = Some(rollout);
    file.save(&routes).unwrap();
    let loaded = file.load();
    assert_eq!(loaded.routes["app"].rollout, None);
    assert_eq!(
        loaded.routes["app"].active, routes["app"].active,
        "the rest is kept"
    );
    assert!(
        loaded.warnings[0].contains("step 8 of a plan with 2 steps"),
        "{:?}",
        loaded.warnings
    );
}

#[test]
fn missing_file_is_a_first_start() {
    let dir = tempfile::tempdir().unwrap();
    let loaded = StateFile::new(&dir.path().join("not-yet")).load();
    assert_eq!(loaded, LoadedState::default());
}

#[test]
fn garbage_file_is_moved_aside_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let file = StateFile::new(dir.path());
    let garbage = b"\x00\xff{{not json at all";
    fs::write(file.path(), garbage).unwrap();

    let loaded = file.load();
    assert!(loaded.routes.is_empty());
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    let aside = corrupt_files(dir.path());
    assert_eq!(aside.len(), 1);
    let warning = &loaded.warnings[0];
    assert!(warning.contains("not valid JSON"), "{warning}");
    assert!(
        warning.contains(&aside[0].display().to_string()),
        "{warning}"
    );
    assert!(!file.path().exists());
    assert_eq!(fs::read(&aside[0]).unwrap(), garbage);
}

#[test]
fn a_second_corrupt_file_in_the_same_second_keeps_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let file = StateFile::new(dir.path());
    fs::write(file.path(), "first").unwrap();
    file.load();
    fs::write(file.path(), "second").unwrap();
    file.load();
    let mut kept: Vec<String> = corrupt_files(dir.path())
        .iter()
        .map(|p| fs::read_to_string(p).unwrap())
        .collect();
    kept.sort();
    assert_eq!(kept, ["first", "second"]);
}

#[test]
fn one_bad_route_does_not_lose_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let file = StateFile::new(dir.path());
    file.save(&two_routes()).unwrap();
    let mut value: Value = serde_json::from_slice(&fs::read(file.path()).unwrap()).unwrap();
    value["routes"]["broken"] = serde_json::json!({"active": 7});
    value["routes"]["weird"] = serde_json::json!("just a string");
    fs::write(file.path(), value.to_string()).unwrap();

    let loaded = file.load();
    assert_eq!(loaded.routes, two_routes());
    assert_eq!(loaded.warnings.len(), 2, "{:?}", loaded.warnings);
    assert!(
        loaded.warnings[0].contains("\"broken\""),
        "{:?}",
        loaded.warnings
    );
    assert!(
        loaded.warnings[1].contains("\"weird\""),
        "{:?}",
        loaded.warnings
    );
    // A partly usable file stays where it is: the next save rewrites it.
    assert!(corrupt_files(dir.path()).is_empty());
}

#[test]
fn wrong_version_is_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let file = StateFile::new(dir.path());
    fs::write(file.path(), r#"{"version":2,"routes":{}}"#).unwrap();
    let loaded = file.load();
    assert!(loaded.routes.is_empty());
    assert_eq!(loaded.warnings.len(), 1);
    assert!(
        loaded.warnings[0].contains("version 2"),
        "{:?}",
        loaded.warnings
    );
    assert_eq!(corrupt_files(dir.path()).len(), 1);
}

#[test]
fn valid_json_of_the_wrong_shape_is_moved_aside() {
    for (text, expected) in [
        ("[1, 2]", "not a JSON object"),
        (r#"{"routes":{}}"#, "no numeric \"version\""),
        (r#"{"version":1,"routes":[]}"#, "no \"routes\" object"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path());
        fs::write(file.path(), text).unwrap();
        let loaded = file.load();
        assert!(loaded.routes.is_empty(), "{text}");
        assert!(
            loaded.warnings[0].contains(expected),
            "{:?}",
            loaded.warnings
        );
        assert_eq!(corrupt_files(dir.path()).len(), 1, "{text}");
    }
}

#[test]
fn save_creates_the_state_dir_private() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("var/lib/switchyard");
    let file = StateFile::new(&state_dir);
    file.save(&two_routes()).unwrap();
    let dir_mode = fs::metadata(&state_dir).unwrap().permissions().mode();
    assert_eq!(dir_mode & 0o777, 0o700);
    let file_mode = fs::metadata(file.path()).unwrap().permissions().mode();
    assert_eq!(file_mode & 0o777, 0o600);
    assert_eq!(file.load().routes, two_routes());
}

#[test]
fn temporaries_of_an_interrupted_save_are_removed_at_start_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let file = StateFile::new(dir.path());
    file.save(&two_routes()).unwrap();
    // What a crash between creating the temp file and the rename leaves,
    // made the way `save` makes it.
    let (_, crashed) = temp_file_builder()
        .tempfile_in(dir.path())
        .unwrap()
        .keep()
        .unwrap();
    fs::write(dir.path().join(".state.json.AbC123.tmp"), "{\"half").unwrap();
    let not_ours = [
        "history.jsonl",
        "state.json.corrupt-1700000000",
        ".state.json.abc.tmp",
        ".state.json.abc-12.tmp",
        ".state.json.abc123.tmp.bak",
        ".state.json..tmp",
        "state.json.abc123.tmp",
        ".history.jsonl.abc123.tmp",
        "notes.tmp",
    ];
    for name in not_ours {
        fs::write(dir.path().join(name), "keep me").unwrap();
    }
    // Named like ours, but a directory, a symlink, and a file below.
    fs::create_dir(dir.path().join(".state.json.dir123.tmp")).unwrap();
    fs::write(
        dir.path()
            .join(".state.json.dir123.tmp/.state.json.sub123.tmp"),
        "keep me",
    )
    .unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let target = elsewhere.path().join("target");
    fs::write(&target, "keep me").unwrap();
    std::os::unix::fs::symlink(&target, dir.path().join(".state.json.lnk123.tmp")).unwrap();

    let loaded = file.load();
    assert_eq!(loaded.routes, two_routes(), "the state itself is restored");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert!(!crashed.exists(), "{} is removed", crashed.display());
    let mut expected: Vec<String> = not_ours.iter().map(|n| n.to_string()).collect();
    expected.extend(
        [
            "state.json",
            ".state.json.dir123.tmp",
            ".state.json.lnk123.tmp",
        ]
        .map(String::from),
    );
    expected.sort();
    assert_eq!(dir_entries(dir.path()), expected);
    assert_eq!(
        dir_entries(&dir.path().join(".state.json.dir123.tmp")),
        [".state.json.sub123.tmp"]
    );
    assert_eq!(fs::read_to_string(&target).unwrap(), "keep me");
}

#[test]
fn the_temporary_name_pattern_is_what_a_save_creates() {
    assert!(is_our_temporary(".state.json.a1B2c3.tmp"));
    assert!(!is_our_temporary(".state.json.a1B2c3.tmp~"));
    assert!(!is_our_temporary(".state.json.a1B2c.tmp"));
    assert!(!is_our_temporary("state.json"));
    let dir = tempfile::tempdir().unwrap();
    let tmp = temp_file_builder().tempfile_in(dir.path()).unwrap();
    let name = tmp.path().file_name().unwrap().to_str().unwrap();
    assert!(is_our_temporary(name), "{name}");
}

#[test]
fn save_leaves_no_temp_files() {
    let dir = tempfile::tempdir().unwrap();
    let file = StateFile::new(dir.path());
    for _ in 0..3 {
        file.save(&two_routes()).unwrap();
    }
    assert_eq!(dir_entries(dir.path()), ["state.json"]);
}
