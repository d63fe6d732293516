//! Test-support Kafka broker: librdkafka's mock cluster served on loopback.
//!
//! Usage: `mock-broker [--brokers N] [TOPIC:PARTITIONS ...]`. Prints the bootstrap address on its
//! first line, then reads commands on stdin and answers each with one line (`ok ...` or `err ...`):
//!   down | up                      take every broker down / bring them back
//!   errors <ApiKey> <err> <count>  the next <count> requests of <ApiKey> fail with <err> (numbers)
//!   create <topic> <partitions>    create a topic
//! Exits when stdin closes, so no broker outlives its test.
#![allow(unsafe_code)]

use rdkafka::client::Client;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka_sys as sys;
use rdkafka_sys::rd_kafka_resp_err_t as E;
use std::ffi::{CStr, CString};
use std::io::{BufRead, Write};

fn main() {
    if let Err(e) = run() {
        eprintln!("mock-broker: {e}");
        std::process::exit(1);
    }
}

fn parse_topic(spec: &str) -> Result<(String, i32), String> {
    match spec.rsplit_once(':') {
        Some((name, n)) => Ok((
            name.to_owned(),
            n.parse()
                .map_err(|_| format!("bad partition count in {spec:?}"))?,
        )),
        None => Ok((spec.to_owned(), 4)),
    }
}

/// librdkafka's mock cluster, owned by the client that created it (it lives as long as `_owner`).
struct Mock {
    _owner: BaseProducer,
    cluster: *mut sys::rd_kafka_mock_cluster_t,
    brokers: i32,
}

impl Mock {
    fn start(brokers: i32) -> Result<Mock, String> {
        let owner: BaseProducer = ClientConfig::new()
            .set("test.mock.num.brokers", brokers.to_string())
            .set("log_level", "3")
            .create()
            .map_err(|e| format!("cannot start the mock cluster: {e}"))?;
        let client: &Client<_> = owner.client();
        // SAFETY: the handle is valid while `owner` lives; the cluster belongs to it.
        let cluster = unsafe { sys::rd_kafka_handle_mock_cluster(client.native_ptr()) };
        if cluster.is_null() {
            return Err("the client has no mock cluster".into());
        }
        Ok(Mock {
            _owner: owner,
            cluster,
            brokers,
        })
    }

    fn bootstrap(&self) -> String {
        // SAFETY: returns a NUL-terminated string owned by the cluster.
        unsafe { CStr::from_ptr(sys::rd_kafka_mock_cluster_bootstraps(self.cluster)) }
            .to_string_lossy()
            .into_owned()
    }

    fn initial_rebalance_delay_ms(&self, ms: i32) {
        // SAFETY: valid cluster pointer.
        unsafe { sys::rd_kafka_mock_group_initial_rebalance_delay_ms(self.cluster, ms) }
    }

    fn create_topic(&self, name: &str, partitions: i32) -> Result<(), String> {
        let c = CString::new(name).map_err(|_| "topic name contains NUL")?;
        // SAFETY: valid cluster pointer and C string.
        check(unsafe { sys::rd_kafka_mock_topic_create(self.cluster, c.as_ptr(), partitions, 1) })
    }

    fn set_all(&self, up: bool) -> Result<(), String> {
        for id in 1..=self.brokers {
            // SAFETY: valid cluster pointer.
            check(unsafe {
                if up {
                    sys::rd_kafka_mock_broker_set_up(self.cluster, id)
                } else {
                    sys::rd_kafka_mock_broker_set_down(self.cluster, id)
                }
            })?;
        }
        Ok(())
    }

    fn push_errors(&self, api_key: i16, err: E, count: usize) {
        let errs = vec![err; count];
        // SAFETY: valid cluster pointer; librdkafka copies the array.
        unsafe {
            sys::rd_kafka_mock_push_request_errors_array(
                self.cluster,
                api_key,
                errs.len(),
                errs.as_ptr(),
            )
        }
    }
}

fn check(err: E) -> Result<(), String> {
    if err == E::RD_KAFKA_RESP_ERR_NO_ERROR {
        Ok(())
    } else {
        Err(format!("{err:?}"))
    }
}

/// The broker error codes that can be injected with `errors`.
const INJECTABLE: &[E] = &[
    E::RD_KAFKA_RESP_ERR_UNKNOWN,
    E::RD_KAFKA_RESP_ERR_OFFSET_OUT_OF_RANGE,
    E::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART,
    E::RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
    E::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
    E::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
    E::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE,
    E::RD_KAFKA_RESP_ERR_NETWORK_EXCEPTION,
    E::RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
    E::RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
    E::RD_KAFKA_RESP_ERR_NOT_COORDINATOR,
    E::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
    E::RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION,
    E::RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID,
    E::RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS,
];

fn run() -> Result<(), String> {
    let mut brokers = 1;
    let mut topics = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--brokers" {
            brokers = args
                .next()
                .and_then(|n| n.parse().ok())
                .ok_or("--brokers needs a number")?;
        } else {
            topics.push(parse_topic(&a)?);
        }
    }
    let mock = Mock::start(brokers)?;
    mock.initial_rebalance_delay_ms(0);
    for (name, partitions) in &topics {
        mock.create_topic(name, *partitions)
            .map_err(|e| format!("create {name}: {e}"))?;
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", mock.bootstrap())
        .and_then(|_| out.flush())
        .map_err(|e| e.to_string())?;

    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        let reply = match words.as_slice() {
            [] => continue,
            ["down"] => mock.set_all(false).map(|_| "ok down".to_owned()),
            ["up"] => mock.set_all(true).map(|_| "ok up".to_owned()),
            ["create", name, n] => n
                .parse::<i32>()
                .map_err(|_| "bad partition count".to_owned())
                .and_then(|n| mock.create_topic(name, n))
                .map(|_| format!("ok create {name}")),
            ["errors", key, err, count] => inject(&mock, key, err, count),
            _ => Err(format!("unknown command {line:?}")),
        };
        match reply {
            Ok(r) => writeln!(out, "{r}"),
            Err(e) => writeln!(out, "err {e}"),
        }
        .and_then(|_| out.flush())
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn inject(mock: &Mock, key: &str, err: &str, count: &str) -> Result<String, String> {
    let key: i16 = key.parse().map_err(|_| "ApiKey must be a number")?;
    let code: i32 = err.parse().map_err(|_| "error must be a number")?;
    let count: usize = count.parse().map_err(|_| "count must be a number")?;
    let e = INJECTABLE
        .iter()
        .copied()
        .find(|e| *e as i32 == code)
        .ok_or_else(|| format!("error {code} is not injectable here"))?;
    mock.push_errors(key, e, count);
    Ok(format!("ok errors {key} {code} {count}"))
}
