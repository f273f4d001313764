//! Callers' connections are bounded: in number, in idle time, in the time
//! a request body may take, and to what is gRPC; with a raw HTTP/2 client
//! (the `h2` crate) that can misbehave as a hostile caller would.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is the failure report"
)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use grym_e2e::Grymd;
use h2::client::SendRequest;
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// The longest any one step of these tests may take.
const STEP: Duration = Duration::from_secs(10);

/// An HTTP/2 connection: requests go through the sender; the task drives
/// the connection until it ends, or until told to stop, and then reports
/// the peer's `SETTINGS_MAX_CONCURRENT_STREAMS`.
struct Raw {
    sender: SendRequest<Bytes>,
    stop: Option<oneshot::Sender<()>>,
    driver: JoinHandle<(bool, usize)>,
}

impl Raw {
    async fn connect(address: SocketAddr) -> Self {
        let tcp = TcpStream::connect(address).await.unwrap();
        let (sender, mut connection) = h2::client::handshake(tcp).await.unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let driver = tokio::spawn(async move {
            let ended = tokio::select! {
                _ = &mut connection => true,
                _ = stopped => false,
            };
            (ended, connection.max_concurrent_send_streams())
        });
        Self {
            sender,
            stop: Some(stop),
            driver,
        }
    }

    /// A request to grymd's orchestrator service.
    fn request(method: &str, content_type: Option<&str>, rpc: &str) -> http::Request<()> {
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!(
                "http://grymd/grym.orchestrator.v1.Orchestrator/{rpc}"
            ))
            .header("te", "trailers");
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        request.body(()).unwrap()
    }

    /// Sends a whole request, returns its response status.
    async fn status_of(&mut self, request: http::Request<()>) -> u16 {
        let sender = self.sender.clone().ready();
        let mut sender = tokio::time::timeout(STEP, sender).await.unwrap().unwrap();
        let (response, mut body) = sender.send_request(request, false).unwrap();
        body.send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), true)
            .unwrap();
        let response = tokio::time::timeout(STEP, response).await.unwrap().unwrap();
        response.status().as_u16()
    }

    /// Whether the server ends the connection within `within`.
    async fn ended_within(mut self, within: Duration) -> bool {
        let ended = tokio::time::timeout(within, &mut self.driver).await;
        if let Ok(joined) = ended {
            return joined.unwrap().0;
        }
        self.stop.take().map(|stop| stop.send(()));
        false
    }

    /// The `SETTINGS_MAX_CONCURRENT_STREAMS` the server advertised.
    async fn max_concurrent_streams(mut self) -> usize {
        self.stop.take().map(|stop| stop.send(()));
        tokio::time::timeout(STEP, self.driver)
            .await
            .unwrap()
            .unwrap()
            .1
    }
}

async fn serving(grymd: &Grymd) -> bool {
    let channel = tonic::transport::Channel::from_shared(grymd.process().endpoint())
        .unwrap()
        .connect_timeout(STEP);
    let Ok(channel) = channel.connect().await else {
        return false;
    };
    let mut client = HealthClient::new(channel);
    let check = client.check(HealthCheckRequest {
        service: String::new(),
    });
    matches!(tokio::time::timeout(STEP, check).await, Ok(Ok(_)))
}

/// Whether the server closes a fresh connection at once (rather than
/// sending its HTTP/2 SETTINGS, as for one it keeps).
async fn refused(stream: &mut TcpStream) -> bool {
    let mut buffer = [0_u8; 64];
    match tokio::time::timeout(STEP, stream.read(&mut buffer)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) => false,
        Err(_) => panic!("grymd neither served nor closed a connection"),
    }
}

#[tokio::test]
async fn connections_beyond_the_maximum_are_closed_and_logged_while_others_work() {
    let grymd = Grymd::start("[connections]\nmax_connections = 3\n").await;
    let address = grymd.process().address();
    let channel = tonic::transport::Channel::from_shared(grymd.process().endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let request = || HealthCheckRequest {
        service: String::new(),
    };
    health.check(request()).await.unwrap();

    // Open connections until one is refused: the fixture's own health
    // check may still hold a slot for a moment.
    let mut held = Vec::new();
    let mut refusal = None;
    for _ in 0..6 {
        let mut stream = TcpStream::connect(address).await.unwrap();
        if refused(&mut stream).await {
            refusal = Some(stream);
            break;
        }
        held.push(stream);
    }
    assert!(refusal.is_some(), "a connection beyond 3 is refused");
    assert!(
        held.len() <= 2,
        "at most 3 connections are held: {}",
        held.len()
    );
    // The line may follow the close by a moment.
    let logged = async {
        let line = "connection refused: connections.max_connections are open";
        while !grymd.process().log().contains(line) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(STEP, logged)
        .await
        .expect("the refusal is logged");
    // The connection already open is served as before.
    health.check(request()).await.unwrap();

    // Connections closed give their slot back.
    drop(held);
    let retry = async {
        loop {
            let mut stream = TcpStream::connect(address).await.unwrap();
            if !refused(&mut stream).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(STEP, retry)
        .await
        .expect("a freed slot takes a new connection");
}

#[tokio::test]
async fn idle_connections_are_closed_but_not_those_with_a_call_in_flight() {
    let grymd = Grymd::start("[connections]\nidle_timeout = \"1s\"\n").await;
    let address = grymd.process().address();

    let idle = Raw::connect(address).await;
    assert!(
        idle.ended_within(STEP).await,
        "an idle connection is closed after idle_timeout"
    );

    // A Watch of health is a call that stays open: its connection is not
    // idle, however long it lasts.
    let busy = Raw::connect(address).await;
    let mut sender = busy.sender.clone().ready().await.unwrap();
    let watch = http::Request::builder()
        .method("POST")
        .uri("http://grymd/grpc.health.v1.Health/Watch")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (response, mut body) = sender.send_request(watch, false).unwrap();
    body.send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), true)
        .unwrap();
    let response = tokio::time::timeout(STEP, response).await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    let mut answers = response.into_body();
    let first = tokio::time::timeout(STEP, answers.data()).await.unwrap();
    assert!(first.is_some(), "Watch answers at once");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !busy.driver.is_finished(),
        "a connection with a call in flight stays open past idle_timeout"
    );
    // Ending the call (every handle of its stream dropped: h2 resets it)
    // makes the connection idle.
    drop(answers);
    drop(body);
    drop(sender);
    assert!(busy.ended_within(STEP).await, "then it is closed");
    assert!(serving(&grymd).await);
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_handshake_timeout() {
    let grymd = Grymd::start("[connections]\nhandshake_timeout = \"1s\"\n").await;
    let mut silent = TcpStream::connect(grymd.process().address()).await.unwrap();
    let mut buffer = vec![0_u8; 1024];
    let closed = async {
        // The server's SETTINGS first, then the end of the connection.
        while silent.read(&mut buffer).await.is_ok_and(|read| read > 0) {}
    };
    tokio::time::timeout(STEP, closed)
        .await
        .expect("a connection with no call is closed after handshake_timeout");
    assert!(serving(&grymd).await);
}

#[tokio::test]
async fn a_request_body_that_stalls_is_ended_and_grymd_stays_healthy() {
    let grymd = Grymd::start("[connections]\nbody_timeout = \"1s\"\n").await;
    let mut raw = Raw::connect(grymd.process().address()).await;
    let sender = raw.sender.clone().ready();
    let mut sender = tokio::time::timeout(STEP, sender).await.unwrap().unwrap();
    let request = Raw::request("POST", Some("application/grpc"), "ExecuteTask");
    let (response, mut body) = sender.send_request(request, false).unwrap();
    // A message announced as 1 MB, of which half is sent; then nothing.
    let length: u32 = 1_000_000;
    let mut head = vec![0_u8];
    head.extend_from_slice(&length.to_be_bytes());
    body.send_data(Bytes::from(head), false).unwrap();
    body.send_data(Bytes::from(vec![0_u8; 500_000]), false)
        .unwrap();

    let response = tokio::time::timeout(STEP, response)
        .await
        .expect("grymd answers a stalled request within its body timeout")
        .unwrap();
    let status = match response.headers().get("grpc-status") {
        Some(status) => status.clone(),
        None => {
            let mut answer = response.into_body();
            while tokio::time::timeout(STEP, answer.data())
                .await
                .unwrap()
                .is_some()
            {}
            let trailers = tokio::time::timeout(STEP, answer.trailers()).await;
            trailers.unwrap().unwrap().unwrap()["grpc-status"].clone()
        }
    };
    assert_eq!(status, "4", "DEADLINE_EXCEEDED");
    drop(body);
    assert!(serving(&grymd).await, "grymd serves on");
    let next = Raw::request("POST", Some("application/grpc"), "ListModels");
    assert_eq!(raw.status_of(next).await, 200, "and so does the connection");
}

#[tokio::test]
async fn what_is_not_grpc_is_refused_with_http_statuses() {
    let grymd = Grymd::start_default().await;
    let mut raw = Raw::connect(grymd.process().address()).await;
    for (method, content_type, expected) in [
        ("POST", Some("text/plain"), 415),
        ("POST", Some("application/json"), 415),
        ("POST", None, 415),
        ("GET", Some("application/grpc"), 405),
        ("PUT", Some("application/grpc"), 405),
        ("POST", Some("application/grpc"), 200),
    ] {
        let request = Raw::request(method, content_type, "ListModels");
        assert_eq!(
            raw.status_of(request).await,
            expected,
            "{method} {content_type:?}"
        );
    }
    assert!(serving(&grymd).await);
}

#[tokio::test]
async fn max_concurrent_streams_is_advertised() {
    let grymd = Grymd::start("[connections]\nmax_concurrent_streams = 7\n").await;
    let mut raw = Raw::connect(grymd.process().address()).await;
    // One exchange, so the server's SETTINGS have been read.
    let request = Raw::request("POST", Some("application/grpc"), "ListModels");
    assert_eq!(raw.status_of(request).await, 200);
    assert_eq!(raw.max_concurrent_streams().await, 7);
}
