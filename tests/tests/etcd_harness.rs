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
