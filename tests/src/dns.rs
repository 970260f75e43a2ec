//! A DNS server for the tests, on 127.0.0.1 over UDP: it answers A and
//! AAAA questions from a table the test changes while it runs (with the
//! TTL the test gives), answers SERVFAIL for names told to fail, NXDOMAIN
//! for names it does not know, and counts the questions.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::net::UdpSocket;

#[derive(Clone)]
enum Entry {
    Addresses { ips: Vec<IpAddr>, ttl: u32 },
    Fail,
}

pub struct DnsServer {
    pub addr: SocketAddr,
    zone: Arc<Mutex<HashMap<String, Entry>>>,
    questions: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DnsServer {
    pub async fn start() -> DnsServer {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let zone: Arc<Mutex<HashMap<String, Entry>>> = Arc::default();
        let questions = Arc::new(AtomicU64::new(0));
        let (table, counted) = (zone.clone(), questions.clone());
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                counted.fetch_add(1, Ordering::SeqCst);
                let entries = table.lock().unwrap().clone();
                if let Ok(bytes) = answer(&query, &entries).to_vec() {
                    let _ = socket.send_to(&bytes, from).await;
                }
            }
        });
        DnsServer {
            addr,
            zone,
            questions,
            task,
        }
    }

    /// `name` answers with `ips` (v4 to A, v6 to AAAA questions), kept
    /// for `ttl` seconds.
    pub fn set(&self, name: &str, ips: &[&str], ttl: u32) {
        let ips = ips.iter().map(|ip| ip.parse().unwrap()).collect();
        self.zone
            .lock()
            .unwrap()
            .insert(name.to_ascii_lowercase(), Entry::Addresses { ips, ttl });
    }

    /// Questions about `name` get SERVFAIL.
    pub fn fail(&self, name: &str) {
        self.zone
            .lock()
            .unwrap()
            .insert(name.to_ascii_lowercase(), Entry::Fail);
    }

    /// Questions answered so far.
    pub fn questions(&self) -> u64 {
        self.questions.load(Ordering::SeqCst)
    }
}

fn answer(query: &Message, zone: &HashMap<String, Entry>) -> Message {
    let mut reply = Message::new();
    reply
        .set_id(query.id())
        .set_message_type(MessageType::Response)
        .set_op_code(query.op_code())
        .set_recursion_desired(query.recursion_desired())
        .set_recursion_available(true)
        .set_authoritative(true);
    reply.add_queries(query.queries().to_vec());
    let Some(question) = query.queries().first() else {
        reply.set_response_code(ResponseCode::FormErr);
        return reply;
    };
    let name = question.name().to_ascii().to_ascii_lowercase();
    let name = name.trim_end_matches('.');
    match zone.get(name) {
        None => {
            reply.set_response_code(ResponseCode::NXDomain);
        }
        Some(Entry::Fail) => {
            reply.set_response_code(ResponseCode::ServFail);
        }
        Some(Entry::Addresses { ips, ttl }) => {
            for ip in ips {
                let rdata = match (ip, question.query_type()) {
                    (IpAddr::V4(v4), RecordType::A) => RData::A(A(*v4)),
                    (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(AAAA(*v6)),
                    _ => continue,
                };
                reply.add_answer(Record::from_rdata(question.name().clone(), *ttl, rdata));
            }
        }
    }
    reply
}
