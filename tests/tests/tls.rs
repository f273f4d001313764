//! TLS and mTLS for callers, with the real grpcurl and certificates made
//! here with rcgen: a CA, grymd's certificate, callers' certificates.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests: a panic is the failure report"
)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use grym_e2e::{Grymd, grpcurl, sine_wav};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// The longest grymd may take to serve over TLS, or to take new
/// certificates after SIGHUP.
const WAIT: Duration = Duration::from_secs(20);

/// A certificate authority of one test, writing its files into `dir`.
struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
    name: String,
}

impl Authority {
    fn new(dir: &Path, name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let authority = Self {
            issuer,
            dir: dir.to_path_buf(),
            name: name.to_owned(),
        };
        std::fs::write(authority.ca(), authority.issuer.pem()).unwrap();
        authority
    }

    /// The CA certificate's file.
    fn ca(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.pem", self.name))
    }

    /// Writes a certificate for `names` (DNS names or IP addresses) and its
    /// key as `FILE.pem` and `FILE-key.pem`; returns both paths.
    fn issue(&self, file: &str, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Pair {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|&name| name.to_owned()).collect();
        let mut params = CertificateParams::new(names.clone()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, &names[0]);
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let pair = Pair {
            cert: self.dir.join(format!("{file}.pem")),
            key: self.dir.join(format!("{file}-key.pem")),
        };
        std::fs::write(&pair.cert, cert.pem()).unwrap();
        std::fs::write(&pair.key, key.serialize_pem()).unwrap();
        pair
    }

    /// grymd's certificate, valid for the loopback address.
    fn server(&self, file: &str) -> Pair {
        self.issue(
            file,
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A caller's certificate naming `identity`.
    fn client(&self, file: &str, identity: &str) -> Pair {
        self.issue(file, &[identity], ExtendedKeyUsagePurpose::ClientAuth)
    }
}

/// A certificate file and its key's file.
struct Pair {
    cert: PathBuf,
    key: PathBuf,
}

fn tls_table(server: &Pair, extra: &str) -> String {
    format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n{extra}",
        server.cert.display(),
        server.key.display()
    )
}

/// Runs the real grpcurl with these arguments.
async fn grpcurl_run(args: &[String]) -> Output {
    let run = tokio::process::Command::new(grpcurl())
        .args(["-max-time", "10"])
        .args(args)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(WAIT, run).await.unwrap().unwrap()
}

/// The TLS arguments of grpcurl: the CA to trust, and a client
/// certificate when given.
fn tls_args(ca: &Path, client: Option<&Pair>) -> Vec<String> {
    let mut args = vec!["-cacert".to_owned(), ca.display().to_string()];
    if let Some(client) = client {
        args.extend([
            "-cert".to_owned(),
            client.cert.display().to_string(),
            "-key".to_owned(),
            client.key.display().to_string(),
        ]);
    }
    args
}

/// grpcurl's health check of grymd with these TLS arguments.
async fn health(grymd: &Grymd, tls: &[String]) -> Output {
    let mut args = tls.to_vec();
    args.extend([grymd.address(), "grpc.health.v1.Health/Check".to_owned()]);
    grpcurl_run(&args).await
}

fn ok(output: &Output) -> bool {
    output.status.success() && String::from_utf8_lossy(&output.stdout).contains("SERVING")
}

/// Waits until grymd answers a health check over TLS with these arguments.
async fn wait_tls(grymd: &Grymd, tls: &[String]) {
    let poll = async {
        loop {
            if ok(&health(grymd, tls).await) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(WAIT, poll)
        .await
        .unwrap_or_else(|_| panic!("grymd did not serve over TLS:\n{}", grymd.process().log()));
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn grpcurl_reaches_grymd_over_tls_with_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let authority = Authority::new(dir.path(), "main");
    let server = authority.server("server");
    let grymd = Grymd::start_listening(&tls_table(&server, "")).await;
    let tls = tls_args(&authority.ca(), None);
    wait_tls(&grymd, &tls).await;

    // Reflection works over TLS as over plain HTTP/2.
    let mut list = tls.clone();
    list.extend([grymd.address(), "list".to_owned()]);
    let listing = grpcurl_run(&list).await;
    assert!(
        String::from_utf8_lossy(&listing.stdout).contains("grym.orchestrator.v1.Orchestrator"),
        "{}",
        stderr(&listing)
    );

    let plaintext = health(&grymd, &["-plaintext".to_owned()]).await;
    assert!(!ok(&plaintext), "plain HTTP/2 is not served beside TLS");
    let stranger = Authority::new(dir.path(), "stranger");
    let untrusted = health(&grymd, &tls_args(&stranger.ca(), None)).await;
    assert!(
        !ok(&untrusted),
        "a caller that trusts another CA refuses grymd"
    );
}

#[tokio::test]
async fn mtls_requires_a_client_certificate_signed_by_the_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    let authority = Authority::new(dir.path(), "main");
    let server = authority.server("server");
    let agent = authority.client("agent", "agent.callers");
    let extra = format!("client_ca = \"{}\"\n", authority.ca().display());
    let grymd = Grymd::start_listening(&tls_table(&server, &extra)).await;
    wait_tls(&grymd, &tls_args(&authority.ca(), Some(&agent))).await;

    let anonymous = health(&grymd, &tls_args(&authority.ca(), None)).await;
    assert!(!ok(&anonymous), "a caller without a certificate is refused");
    let stranger = Authority::new(dir.path(), "stranger");
    let impostor = stranger.client("impostor", "agent.callers");
    let forged = health(&grymd, &tls_args(&authority.ca(), Some(&impostor))).await;
    assert!(
        !ok(&forged),
        "a certificate of another CA is refused: {}",
        stderr(&forged)
    );
}

#[tokio::test]
async fn the_client_certificate_names_the_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let authority = Authority::new(dir.path(), "main");
    let server = authority.server("server");
    let alice = authority.client("alice", "alice.callers");
    let bob = authority.client("bob", "bob.callers");
    let extra = format!(
        "client_ca = \"{}\"\ntenant_from_certificate = true\n",
        authority.ca().display()
    );
    let grymd = Grymd::start_listening(&tls_table(&server, &extra)).await;
    let as_alice = tls_args(&authority.ca(), Some(&alice));
    let as_bob = tls_args(&authority.ca(), Some(&bob));
    wait_tls(&grymd, &as_alice).await;

    let wav = dir.path().join("tone.wav");
    std::fs::write(&wav, sine_wav(440.0, 16_000, 0.5)).unwrap();
    let submit = format!(
        "{} -max-time 10 {} -d @ {} grym.orchestrator.v1.Orchestrator/SubmitTask <<EOF\n\
         {{\"task\":{{\"id\":\"alice-1\",\"type\":\"audio_features\",\"input\":{{\"audio\":{{\"data\":\"$(base64 -w0 < {})\"}}}}}}}}\nEOF",
        grpcurl().display(),
        as_alice.join(" "),
        grymd.address(),
        wav.display()
    );
    let submitted = tokio::process::Command::new("bash")
        .args(["-c", &submit])
        .output()
        .await
        .unwrap();
    assert!(submitted.status.success(), "{}", stderr(&submitted));

    let get = |tls: &[String], metadata: Option<&str>| {
        let mut args = tls.to_vec();
        if let Some(metadata) = metadata {
            args.extend(["-H".to_owned(), metadata.to_owned()]);
        }
        args.extend([
            "-d".to_owned(),
            r#"{"task_id":"alice-1"}"#.to_owned(),
            grymd.address(),
            "grym.orchestrator.v1.Orchestrator/GetTask".to_owned(),
        ]);
        args
    };
    let own = grpcurl_run(&get(&as_alice, None)).await;
    assert!(own.status.success(), "{}", stderr(&own));
    assert!(String::from_utf8_lossy(&own.stdout).contains("alice-1"));

    let other = grpcurl_run(&get(&as_bob, None)).await;
    assert!(
        stderr(&other).contains("NotFound"),
        "another certificate's tenant does not see it: {}",
        stderr(&other)
    );
    // What a caller declares does not override its certificate.
    let claimed = grpcurl_run(&get(&as_bob, Some("grym-tenant: alice.callers"))).await;
    assert!(
        stderr(&claimed).contains("NotFound"),
        "{}",
        stderr(&claimed)
    );
}

#[tokio::test]
async fn certificates_replaced_on_disk_are_served_after_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let first = Authority::new(dir.path(), "first");
    let server = first.server("server");
    let config = tls_table(&server, "");
    let grymd = Grymd::start_listening(&config).await;
    wait_tls(&grymd, &tls_args(&first.ca(), None)).await;

    // A new CA's certificate and key, written over the configured files.
    let second = Authority::new(dir.path(), "second");
    let renewed = second.server("renewed");
    std::fs::copy(&renewed.cert, &server.cert).unwrap();
    std::fs::copy(&renewed.key, &server.key).unwrap();
    grymd.reconfigure(&config).await;
    wait_tls(&grymd, &tls_args(&second.ca(), None)).await;
    assert!(
        !ok(&health(&grymd, &tls_args(&first.ca(), None)).await),
        "the old certificate is no longer served"
    );
    assert!(grymd.process().log().contains("TLS certificates reloaded"));

    // A reload that fails keeps what is served.
    std::fs::write(&server.key, "not a key").unwrap();
    grymd.reconfigure(&config).await;
    let logged = async {
        while !grymd
            .process()
            .log()
            .contains("TLS certificates do not load")
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(WAIT, logged).await.unwrap();
    assert!(ok(&health(&grymd, &tls_args(&second.ca(), None)).await));
}

#[tokio::test]
async fn unusable_certificate_files_stop_grymd_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let authority = Authority::new(dir.path(), "main");
    let server = authority.server("server");
    let other = authority.server("other");

    let missing = Pair {
        cert: dir.path().join("absent.pem"),
        key: server.key.clone(),
    };
    let (status, stderr) = grym_e2e::grymd_refusing(&tls_table(&missing, "")).await;
    assert!(!status.success());
    assert!(stderr.contains("tls.cert"), "{stderr}");

    let mismatched = Pair {
        cert: server.cert.clone(),
        key: other.key.clone(),
    };
    let (status, stderr) = grym_e2e::grymd_refusing(&tls_table(&mismatched, "")).await;
    assert!(!status.success());
    assert!(stderr.contains("tls.key"), "{stderr}");
}
