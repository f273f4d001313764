//! What TLS costs on the caller hop: the same `ExecuteTask` calls to a
//! grymd in front of a zero-latency `grym-worker sim`, over plain HTTP/2
//! and over TLS (rustls, ring, TLS 1.3), side by side in one run; and the
//! time to open a connection and make its first call, both ways.
//!
//! `cargo run --release -p grym-e2e --example tls_cost [CALLS] [CONCURRENCY]`
//! (defaults 20000 and 16). Loopback only; prints a Markdown table.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark script: a panic is its failure report"
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use grym_e2e::{Grymd, task_request, text, worker};
use prost::Message as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

const TASK_TYPE: &str = "text_generation";

/// How the bench reaches grymd.
#[derive(Clone)]
enum Dial {
    Plain,
    Tls(tokio_rustls::TlsConnector),
}

impl Dial {
    async fn connect(&self, address: SocketAddr) -> h2::client::SendRequest<Bytes> {
        let tcp = TcpStream::connect(address).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        match self {
            Dial::Plain => handshake(tcp).await,
            Dial::Tls(connector) => {
                let name = ServerName::try_from("localhost").unwrap();
                handshake(connector.connect(name, tcp).await.unwrap()).await
            }
        }
    }
}

async fn handshake<T>(io: T) -> h2::client::SendRequest<Bytes>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = h2::client::handshake(io).await.unwrap();
    tokio::spawn(connection);
    sender
}

/// One `ExecuteTask` call; panics unless it succeeds.
async fn call(sender: &h2::client::SendRequest<Bytes>, body: &Bytes) {
    let mut sender = sender.clone().ready().await.unwrap();
    let request = http::Request::builder()
        .method("POST")
        .uri("http://localhost/grym.orchestrator.v1.Orchestrator/ExecuteTask")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (response, mut stream) = sender.send_request(request, false).unwrap();
    stream.send_data(body.clone(), true).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    let mut answer = response.into_body();
    while let Some(data) = answer.data().await {
        let data = data.unwrap();
        answer.flow_control().release_capacity(data.len()).unwrap();
    }
    let trailers = answer.trailers().await.unwrap().unwrap();
    assert_eq!(trailers["grpc-status"], "0", "{trailers:?}");
}

/// The gRPC frame of one `ExecuteTask` request.
fn request_body() -> Bytes {
    let message = task_request(TASK_TYPE, text("what is in this clip?")).encode_to_vec();
    let mut body = vec![0_u8];
    body.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    body.extend_from_slice(&message);
    Bytes::from(body)
}

/// Percentile `p` of sorted latencies, in microseconds.
fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1e6
}

struct Figures {
    p50: f64,
    p99: f64,
    rate: f64,
    connect_p50: f64,
}

async fn measure(dial: &Dial, address: SocketAddr, calls: usize, concurrency: usize) -> Figures {
    let body = request_body();
    let sender = dial.connect(address).await;
    for _ in 0..500 {
        call(&sender, &body).await;
    }
    let started = Instant::now();
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let sender = sender.clone();
        let body = body.clone();
        let count = calls / concurrency;
        callers.spawn(async move {
            let mut latencies = Vec::with_capacity(count);
            for _ in 0..count {
                let at = Instant::now();
                call(&sender, &body).await;
                latencies.push(at.elapsed());
            }
            latencies
        });
    }
    let mut latencies = Vec::with_capacity(calls);
    while let Some(part) = callers.join_next().await {
        latencies.extend(part.unwrap());
    }
    let elapsed = started.elapsed();
    latencies.sort();

    let mut connects = Vec::new();
    for _ in 0..200 {
        let at = Instant::now();
        let fresh = dial.connect(address).await;
        call(&fresh, &body).await;
        connects.push(at.elapsed());
    }
    connects.sort();
    Figures {
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        rate: latencies.len() as f64 / elapsed.as_secs_f64(),
        connect_p50: percentile(&connects, 0.50),
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let calls: usize = args.next().map_or(20_000, |a| a.parse().unwrap());
    let concurrency: usize = args.next().map_or(16, |a| a.parse().unwrap());

    let dir = tempfile::tempdir().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &ca).unwrap();
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();

    let sim_args = [
        "sim",
        "--model-id",
        "sim",
        "--kind",
        "simulated",
        "--capability",
        TASK_TYPE,
        "--latency-ms",
        "0",
    ];
    let config_for = |endpoint: String| {
        format!(
            "builtin_workers = false\n[selection]\nroutes = []\n[[workers]]\nid = \"sim\"\nendpoint = \"{endpoint}\"\n"
        )
    };
    let sim = worker(&sim_args).await;
    let base = config_for(sim.endpoint());
    let tls_config = format!(
        "{base}[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        cert_file.display(),
        key_file.display()
    );

    // The same simulator behind TLS, for TLS on both hops.
    let certs = grym_e2e::certs::Certs::new();
    let tls_sim = grym_e2e::certs::tls_worker(&certs, &sim_args).await;
    let both_config = format!(
        "{}[worker_tls]\nca = \"{}\"\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        config_for(grym_e2e::certs::https_endpoint(&tls_sim)),
        certs.ca().display(),
        cert_file.display(),
        key_file.display()
    );

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"h2".to_vec()];
    let tls = Dial::Tls(tokio_rustls::TlsConnector::from(Arc::new(client)));

    println!("| hops | p50 (µs) | p99 (µs) | calls/s | new connection + first call, p50 (µs) |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    // Each grymd alone, so the two runs do not share the cores.
    for (label, config, dial) in [
        ("plain HTTP/2", &base, Dial::Plain),
        ("TLS 1.3", &tls_config, tls.clone()),
        ("TLS 1.3 on both hops", &both_config, tls),
    ] {
        let grymd = Grymd::start_listening(config).await;
        let figures = measure(&dial, grymd.process().address(), calls, concurrency).await;
        println!(
            "| {label} | {:.0} | {:.0} | {:.0} | {:.0} |",
            figures.p50, figures.p99, figures.rate, figures.connect_p50
        );
    }
    println!(
        "\n{calls} calls at concurrency {concurrency} on one connection, after 500 warm-up calls."
    );
}
