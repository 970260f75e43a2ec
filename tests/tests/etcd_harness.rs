//! Groundwork for `[cluster]`: a 3-member etcd on loopback, a
//! compare-and-swap on a key's revision, and a write acknowledged before
//! the leader is killed surviving it.

use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, Txn, TxnOp};
use switchyard_tests::etcd::EtcdCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cas_write_survives_the_leader_being_killed() {
    let mut cluster = EtcdCluster::start(3);
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(5))
        .with_require_leader(true);
    let mut client = Client::connect(cluster.endpoints(), Some(options.clone()))
        .await
        .unwrap();
    let key = "/switchyard/test/routes/app";
    let put = client.put(key, "active=blue", None).await.unwrap();
    let revision = put.header().unwrap().revision();
    // A write on the revision seen wins; a second one on the same revision loses.
    let cas = |rev: i64, value: &'static str| {
        Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, rev)])
            .and_then([TxnOp::put(key, value, None)])
    };
    assert!(client
        .txn(cas(revision, "active=green"))
        .await
        .unwrap()
        .succeeded());
    assert!(!client
        .txn(cas(revision, "active=red"))
        .await
        .unwrap()
        .succeeded());

    // Find the leader and kill it.
    let mut leader = None;
    for (i, endpoint) in cluster.endpoints().iter().enumerate() {
        let mut one = Client::connect([endpoint], Some(options.clone()))
            .await
            .unwrap();
        let status = one.status().await.unwrap();
        if status.leader() == status.header().unwrap().member_id() {
            leader = Some(i);
        }
    }
    let leader = leader.expect("one member leads");
    cluster.kill(leader);
    let survivor = cluster.endpoints()[(leader + 1) % 3].clone();
    let mut after = Client::connect([survivor], Some(options)).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match after.get(key, None).await {
            Ok(got) => {
                assert_eq!(got.kvs()[0].value_str().unwrap(), "active=green");
                break;
            }
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "no new leader: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The store two nodes share: one's write is the other's read and watch
/// event; two writes on the same revision, one wins and the other is told
/// what won.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_see_each_others_writes_and_never_overwrite_silently() {
    use switchyard_control::cluster::store::{Change, Store, Written};

    let cluster = EtcdCluster::start(3);
    let config = cluster_config(&cluster, "/switchyard/test");
    let mut a = Store::connect(&config, 0).await.unwrap();
    let mut b = Store::connect(&config, 0).await.unwrap();
    let (empty, read_at) = b.decisions().await.unwrap();
    assert!(empty.is_empty());
    let mut watch = b.watch(read_at + 1).await.unwrap();

    let Written::Done { revision } = a
        .write("app", &state("blue"), None, None, &[])
        .await
        .unwrap()
    else {
        panic!("the first write of a route creates it");
    };
    // Creating again loses: the route has a decision already.
    assert!(matches!(
        a.write("app", &state("red"), None, None, &[])
            .await
            .unwrap(),
        Written::Lost { .. }
    ));
    let seen = watch.next().await.unwrap().unwrap();
    assert!(
        matches!(&seen[..], [Change::Decided { route, decision }] if route == "app" && decision.state.active == "blue" && decision.revision == revision)
    );

    // Both act on the same revision: one wins, the other learns the winner.
    let won = b
        .write("app", &state("green"), Some(revision), None, &[])
        .await
        .unwrap();
    assert!(matches!(won, Written::Done { .. }));
    match a
        .write("app", &state("red"), Some(revision), None, &[])
        .await
        .unwrap()
    {
        Written::Lost {
            current: Some(current),
        } => assert_eq!(current.state.active, "green"),
        other => panic!("a stale write must lose: {other:?}"),
    }
    let (all, _) = a.decisions().await.unwrap();
    assert_eq!(all["app"].state.active, "green");
}

/// One leader at a time: the second node waits while the first holds the
/// key, takes it at once when the first resigns, and takes it once the
/// lease of a leader that stopped renewing runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_leads_and_another_takes_over_when_it_goes() {
    use switchyard_control::cluster::leader::Leadership;
    use switchyard_control::cluster::store::Store;

    let cluster = EtcdCluster::start(3);
    let config = switchyard_conf::ClusterConfig {
        etcd: cluster.endpoints(),
        prefix: "/switchyard/test".into(),
        node: "a".into(),
    };
    let store = Store::connect(&config, 0).await.unwrap();
    let node = |name: &'static str| {
        let (client, keys) = (store.client(), store.keys().clone());
        async move { Leadership::new(client, keys, name, 2).await.unwrap() }
    };
    let mut a = node("a").await;
    let mut b = node("b").await;
    assert!(a.try_lead().await.unwrap());
    assert!(a.try_lead().await.unwrap(), "still a's");
    assert!(!b.try_lead().await.unwrap());
    assert!(a.held_since().is_some() && b.held_since().is_none());

    a.resign().await.unwrap();
    assert!(b.try_lead().await.unwrap(), "a resigned: b leads at once");

    // b stops renewing (as a crashed node would); c takes over once b's
    // 2 s lease has run out, and not before.
    let mut c = node("c").await;
    assert!(!c.try_lead().await.unwrap());
    drop(b);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !c.try_lead().await.unwrap() {
        assert!(
            std::time::Instant::now() < deadline,
            "b's lease never ran out"
        );
        assert!(c.renew().await.unwrap());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A decision's history entries are written with it, read back in time
/// order across routes, and trimmed to the newest ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_goes_with_its_decision_and_stays_bounded() {
    use switchyard_control::cluster::store::{Store, Written};
    use switchyard_control::history::{Action, HistoryEntry, Trigger};

    let cluster = EtcdCluster::start(1);
    let config = cluster_config(&cluster, "/switchyard/history");
    let entry = |route: &str, n: usize| HistoryEntry {
        reason: Some(format!("change {n}")),
        node: Some("a".into()),
        ..HistoryEntry::new(
            "2026-12-02T12:00:00Z",
            Trigger::Admin,
            route,
            Action::Switch,
        )
    };
    let mut store = Store::connect(&config, 0).await.unwrap();
    let mut seen = [None, None];
    for n in 0..30 {
        let (i, route) = if n % 3 == 0 { (1, "api") } else { (0, "app") };
        let slot = if n % 2 == 0 { "green" } else { "blue" };
        let written = store
            .write(route, &state(slot), seen[i], None, &[entry(route, n)])
            .await
            .unwrap();
        let Written::Done { revision } = written else {
            panic!("{written:?}");
        };
        seen[i] = Some(revision);
    }
    // A lost write leaves no history.
    let lost = store
        .write("app", &state("red"), Some(1), None, &[entry("app", 99)])
        .await
        .unwrap();
    assert!(matches!(lost, Written::Lost { .. }));

    let reasons = |entries: Vec<HistoryEntry>| -> Vec<String> {
        entries.into_iter().map(|e| e.reason.unwrap()).collect()
    };
    let all = reasons(
        store
            .history(&["api".to_string(), "app".to_string()], 5)
            .await
            .unwrap(),
    );
    assert_eq!(
        all,
        [
            "change 25",
            "change 26",
            "change 27",
            "change 28",
            "change 29"
        ]
    );
    let api = reasons(store.history(&["api".to_string()], 3).await.unwrap());
    assert_eq!(api, ["change 21", "change 24", "change 27"]);

    // 20 entries of app: keeping 5 drops the 15 oldest.
    store.trim_history("app", 5).await.unwrap();
    let app = reasons(store.history(&["app".to_string()], 100).await.unwrap());
    assert_eq!(
        app,
        [
            "change 23",
            "change 25",
            "change 26",
            "change 28",
            "change 29"
        ]
    );
    assert_eq!(
        store
            .history(&["api".to_string()], 100)
            .await
            .unwrap()
            .len(),
        10,
        "other routes untouched"
    );
}

fn cluster_config(cluster: &EtcdCluster, prefix: &str) -> switchyard_conf::ClusterConfig {
    switchyard_conf::ClusterConfig {
        etcd: cluster.endpoints(),
        prefix: prefix.into(),
        node: "a".into(),
    }
}

/// A decision with `active`, as another node would write it.
fn state(active: &str) -> switchyard_control::state_file::RouteState {
    serde_json::from_value(serde_json::json!({
        "active": active, "previous": null, "canary": null, "source": "admin",
        "file_active": "blue", "file_canary": null, "changed_at": "2026-12-02T12:00:00Z"
    }))
    .unwrap()
}
