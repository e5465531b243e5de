//! Real TLS on 127.0.0.1: a rustls 0.23 server that requires client certificates from the
//! clients CA (or the CA-renewal trust bundle) accepts our device certificates and refuses the
//! ones it must refuse. rustls checks validity against the real clock, so these tests issue
//! relative to `SystemTime::now()`.

mod pki_fixtures;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use operator::pki::{
    build_crl, issue_server_certificate, BundleMember, CaKind, CaProfile, CertificateAuthority,
    Credentials, KeyAlgorithm, RevokedSet, SeededRandomness, ServerCertRequest, TrustBundle,
};
use pki_fixtures::*;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName,
};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, ClientConfig, RootCertStore, ServerConfig};

const IO_TIMEOUT: Duration = Duration::from_secs(10);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn key_der(creds: &Credentials) -> PrivateKeyDer<'static> {
    let block = pem::parse(creds.key.to_pkcs8_pem()).expect("key pem");
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(block.into_contents()))
}

fn roots(cas: &[&[u8]]) -> Arc<RootCertStore> {
    let mut store = RootCertStore::empty();
    for der in cas {
        store
            .add(CertificateDer::from(der.to_vec()))
            .expect("add root");
    }
    Arc::new(store)
}

/// The broker side: server certificate from the cluster CA, client certificates required and
/// verified against `client_roots` (and `crl`, if any).
fn server_config(
    server: &Credentials,
    client_roots: &[&[u8]],
    crl: Option<&[u8]>,
) -> Arc<ServerConfig> {
    let mut verifier = WebPkiClientVerifier::builder_with_provider(roots(client_roots), provider());
    if let Some(crl) = crl {
        verifier = verifier
            .with_crls([CertificateRevocationListDer::from(crl.to_vec())])
            .only_check_end_entity_revocation();
    }
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier.build().expect("client verifier"))
        .with_single_cert(
            vec![CertificateDer::from(server.certificate.der().to_vec())],
            key_der(server),
        )
        .expect("server cert");
    Arc::new(config)
}

fn client_config(cluster_ca: &CertificateAuthority, device: &Credentials) -> Arc<ClientConfig> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(&[cluster_ca.cert_der()]))
        .with_client_auth_cert(
            vec![CertificateDer::from(device.certificate.der().to_vec())],
            key_der(device),
        )
        .expect("client cert");
    Arc::new(config)
}

/// One connection on a fresh loopback port. Returns the server's verdict: `Ok(peer cert)` after
/// a completed handshake (and the client got the greeting), or the rustls error the server hit.
fn connect(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> Result<Vec<u8>, rustls::Error> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1");
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let server_side = thread::spawn(move || -> Result<Vec<u8>, rustls::Error> {
        let deadline = Instant::now() + IO_TIMEOUT;
        let mut sock = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline =>
                {
                    thread::sleep(Duration::from_millis(5))
                }
                Err(e) => panic!("no client connected within {IO_TIMEOUT:?}: {e}"),
            }
        };
        sock.set_nonblocking(false).unwrap();
        sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        sock.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut conn = rustls::ServerConnection::new(server).unwrap();
        while conn.is_handshaking() {
            if let Err(e) = conn.complete_io(&mut sock) {
                let _ = conn.write_tls(&mut sock); // send the alert
                return Err(into_rustls(e));
            }
        }
        let peer = conn.peer_certificates().expect("client certificate")[0].to_vec();
        conn.writer().write_all(b"hello device").unwrap();
        conn.send_close_notify();
        while conn.wants_write() {
            conn.write_tls(&mut sock).unwrap();
        }
        Ok(peer)
    });

    let mut sock = TcpStream::connect(addr).expect("connect");
    sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    sock.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    let name = ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
    let mut conn = rustls::ClientConnection::new(client, name).unwrap();
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    let mut greeting = Vec::new();
    let client_result = tls.read_to_end(&mut greeting);

    let verdict = server_side.join().expect("server thread");
    if verdict.is_ok() {
        client_result.expect("client read after a good handshake");
        assert_eq!(greeting, b"hello device");
    } else {
        assert!(greeting.is_empty(), "a refused client must receive nothing");
    }
    verdict
}

fn into_rustls(e: std::io::Error) -> rustls::Error {
    match e
        .into_inner()
        .map(|inner| inner.downcast::<rustls::Error>())
    {
        Some(Ok(err)) => *err,
        other => panic!("server failed with a non-TLS error: {other:?}"),
    }
}

struct Bed {
    cluster_ca: CertificateAuthority,
    clients_ca: CertificateAuthority,
    server: Credentials,
    rng: SeededRandomness,
    now: SystemTime,
}

fn bed(seed: &[u8]) -> Bed {
    let now = SystemTime::now();
    let mut rng = SeededRandomness::new(seed);
    // Both CAs were made a year ago so certificates can be back-dated into the past.
    let cluster_ca = ca(CaKind::Cluster, 1, &mut rng, now - days(365));
    let clients_ca = ca(CaKind::Clients, 1, &mut rng, now - days(365));
    let mut req = ServerCertRequest::new("iot", "edge", 3);
    req.include_loopback = true;
    let server = issue_server_certificate(&cluster_ca, &req, &mut rng, now).unwrap();
    Bed {
        cluster_ca,
        clients_ca,
        server,
        rng,
        now,
    }
}

#[test]
fn fresh_device_certificates_of_every_algorithm_connect() {
    let mut b = bed(b"tls-fresh");
    let server = server_config(&b.server, &[b.clients_ca.cert_der()], None);
    for alg in KeyAlgorithm::ALL {
        let dev = device_cert(&b.clients_ca, "press-17", alg, days(90), &mut b.rng, b.now);
        let peer = connect(server.clone(), client_config(&b.cluster_ca, &dev))
            .unwrap_or_else(|e| panic!("{alg}: fresh certificate refused: {e}"));
        assert_eq!(peer, dev.certificate.der(), "{alg}");
    }
}

#[test]
fn expired_not_yet_valid_other_ca_and_wrong_usage_are_refused() {
    let mut b = bed(b"tls-refused");
    let server = server_config(&b.server, &[b.clients_ca.cert_der()], None);
    let refused = |creds: &Credentials| {
        connect(server.clone(), client_config(&b.cluster_ca, creds)).unwrap_err()
    };

    let expired = device_cert(
        &b.clients_ca,
        "old",
        KeyAlgorithm::EcdsaP256,
        days(30),
        &mut b.rng,
        b.now - days(60),
    );
    let err = refused(&expired);
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. }
            )
        ),
        "expired: {err:?}"
    );

    let future = device_cert(
        &b.clients_ca,
        "early",
        KeyAlgorithm::EcdsaP256,
        days(30),
        &mut b.rng,
        b.now + days(10),
    );
    let err = refused(&future);
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. }
            )
        ),
        "not yet valid: {err:?}"
    );

    // A clients CA of another cluster: unknown issuer.
    let stranger_ca = CertificateAuthority::generate(
        &CaProfile::new(CaKind::Clients, "iot", "elsewhere"),
        &mut b.rng,
        b.now - days(1),
    )
    .unwrap();
    let stranger = device_cert(
        &stranger_ca,
        "press-17",
        KeyAlgorithm::EcdsaP256,
        days(30),
        &mut b.rng,
        b.now,
    );
    let err = refused(&stranger);
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
        ),
        "other CA: {err:?}"
    );

    // An impostor CA with exactly our CA's name but another key: the signature does not verify.
    let impostor_ca = ca(
        CaKind::Clients,
        1,
        &mut SeededRandomness::new(b"impostor"),
        b.now - days(1),
    );
    assert_eq!(
        impostor_ca.info().subject_raw,
        b.clients_ca.info().subject_raw
    );
    let impostor = device_cert(
        &impostor_ca,
        "press-17",
        KeyAlgorithm::EcdsaP256,
        days(30),
        &mut b.rng,
        b.now,
    );
    let err = refused(&impostor);
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(
                CertificateError::BadSignature | CertificateError::UnknownIssuer
            )
        ),
        "impostor CA: {err:?}"
    );

    // Signed by the right clients CA, but for serverAuth only.
    let wrong_usage = server_auth_only_cert(&b.clients_ca, &mut b.rng, b.now);
    let err = refused(&wrong_usage);
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(
                CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. }
            )
        ),
        "wrong usage: {err:?}"
    );

    // And a fresh one still connects on the same server config.
    let good = device_cert(
        &b.clients_ca,
        "press-17",
        KeyAlgorithm::EcdsaP256,
        days(30),
        &mut b.rng,
        b.now,
    );
    connect(server, client_config(&b.cluster_ca, &good)).expect("fresh certificate");
}

/// A certificate from the clients CA with EKU serverAuth instead of clientAuth, made directly
/// with rcgen (our issuance API cannot produce one).
fn server_auth_only_cert(
    clients_ca: &CertificateAuthority,
    rng: &mut SeededRandomness,
    now: SystemTime,
) -> Credentials {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair};
    let key = operator::pki::PrivateKey::generate(KeyAlgorithm::EcdsaP256, rng).unwrap();
    let ca_key = KeyPair::from_pem(&clients_ca.key_pem()).unwrap();
    let issuer = Issuer::from_ca_cert_pem(&clients_ca.cert_pem(), ca_key).unwrap();
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "press-17");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = time::OffsetDateTime::from(now - days(1));
    params.not_after = time::OffsetDateTime::from(now + days(30));
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x42; 16]));
    let cert = params.signed_by(&key, &issuer).unwrap();
    let pem = cert.pem();
    let key_pem = key.to_pkcs8_pem();
    // Reassemble as Credentials through the public parsers.
    let der = operator::pki::inspect::pem_certificates(&pem)
        .unwrap()
        .remove(0);
    Credentials {
        certificate: operator::pki::IssuedCertificate::from_der(der).unwrap(),
        key: operator::pki::PrivateKey::from_pem(&key_pem).unwrap(),
    }
}

#[test]
fn a_serial_in_our_crl_is_refused() {
    let mut b = bed(b"tls-crl");
    let revoked = device_cert(
        &b.clients_ca,
        "stolen",
        KeyAlgorithm::EcdsaP256,
        days(90),
        &mut b.rng,
        b.now,
    );
    let kept = device_cert(
        &b.clients_ca,
        "fine",
        KeyAlgorithm::EcdsaP256,
        days(90),
        &mut b.rng,
        b.now,
    );
    let mut set = RevokedSet::new();
    let info = revoked.certificate.info();
    set.revoke(info.serial, info.validity.not_after, b.now, Some("stolen"));
    let crl = build_crl(
        &b.clients_ca,
        &set,
        1,
        days(1),
        b.now - Duration::from_secs(60),
    )
    .unwrap();
    let server = server_config(&b.server, &[b.clients_ca.cert_der()], Some(crl.der()));
    let err = connect(server.clone(), client_config(&b.cluster_ca, &revoked)).unwrap_err();
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(CertificateError::Revoked)
        ),
        "{err:?}"
    );
    connect(server, client_config(&b.cluster_ca, &kept)).expect("unrevoked certificate");
}

#[test]
fn after_ca_renewal_both_generations_connect_while_the_bundle_holds_both() {
    let mut b = bed(b"tls-renewal");
    let old_ca = &b.clients_ca;
    let new_ca = ca(CaKind::Clients, 2, &mut b.rng, b.now - days(1));
    let old_leaf = device_cert(
        old_ca,
        "a",
        KeyAlgorithm::EcdsaP256,
        days(90),
        &mut b.rng,
        b.now,
    );
    let new_leaf = device_cert(
        &new_ca,
        "b",
        KeyAlgorithm::Ed25519,
        days(90),
        &mut b.rng,
        b.now,
    );

    let current = BundleMember::from_der(new_ca.cert_der().to_vec()).unwrap();
    let previous = vec![BundleMember::from_der(old_ca.cert_der().to_vec()).unwrap()];
    let leaves = [
        old_leaf.certificate.info().clone(),
        new_leaf.certificate.info().clone(),
    ];
    let bundle = TrustBundle::plan(&current, &previous, leaves.iter(), b.now);
    assert_eq!(bundle.members.len(), 2, "old CA kept while its leaf lives");
    let published = TrustBundle::parse_pem(&bundle.pem()).unwrap();
    let ders: Vec<&[u8]> = published.iter().map(|m| m.der.as_slice()).collect();
    let server = server_config(&b.server, &ders, None);
    for leaf in [&old_leaf, &new_leaf] {
        connect(server.clone(), client_config(&b.cluster_ca, leaf))
            .expect("both generations connect");
    }

    // Device "a" is re-issued by the new CA: the old CA leaves the bundle, its leaf stops working.
    let reissued = device_cert(
        &new_ca,
        "a",
        KeyAlgorithm::EcdsaP256,
        days(90),
        &mut b.rng,
        b.now,
    );
    let leaves = [
        reissued.certificate.info().clone(),
        new_leaf.certificate.info().clone(),
    ];
    let bundle = TrustBundle::plan(&current, &published, leaves.iter(), b.now);
    assert_eq!(bundle.members.len(), 1);
    assert_eq!(bundle.dropped.len(), 1);
    let server = server_config(&b.server, &[bundle.members[0].der.as_slice()], None);
    connect(server.clone(), client_config(&b.cluster_ca, &reissued))
        .expect("re-issued leaf connects");
    let err = connect(server, client_config(&b.cluster_ca, &old_leaf)).unwrap_err();
    assert!(
        matches!(
            err,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
        ),
        "{err:?}"
    );
}
