//! Certificates made for each test: a CA of the test's own in a temp dir,
//! and the server and client certificates it issues (good ones, or ones
//! wrong in exactly one way). Knows nothing of brokers or of pinpost.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

/// A certificate and its key on disk.
#[derive(Debug, Clone)]
pub struct Files {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A CA that issues certificates into a temp dir.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: Files,
    ca_cert: rcgen::Certificate,
    ca_key: KeyPair,
}

/// How a leaf certificate should differ from a good one.
#[derive(Debug, Clone, Default)]
pub struct Leaf {
    pub common_name: String,
    /// "127.0.0.1" becomes an IP SAN, anything else a DNS SAN.
    pub alt_names: Vec<String>,
    pub expired: bool,
    pub not_yet_valid: bool,
}

impl Leaf {
    /// A good server certificate for `names` (the first is also its CN).
    pub fn server(names: &[&str]) -> Leaf {
        Leaf {
            common_name: names.first().map_or("broker", |n| n).to_string(),
            alt_names: names.iter().map(|n| n.to_string()).collect(),
            ..Leaf::default()
        }
    }
    /// A good client certificate for `cn`.
    pub fn client(cn: &str) -> Leaf {
        Leaf {
            common_name: cn.to_string(),
            ..Leaf::default()
        }
    }
}

impl Pki {
    /// A new CA, "pinpost test CA `ca_name`", in a temp dir of its own.
    pub fn new(ca_name: &str) -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut params = CertificateParams::default();
        params.distinguished_name = name(&format!("pinpost test CA {ca_name}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().expect("CA key");
        let ca_cert = params.self_signed(&ca_key).expect("CA certificate");
        let ca = write(dir.path(), "ca", &ca_cert.pem(), &ca_key.serialize_pem());
        Pki {
            dir,
            ca,
            ca_cert,
            ca_key,
        }
    }

    /// The temp dir holding every file this CA issued.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Issues a server (with alt names) or client certificate named `file`.
    pub fn issue(&self, file: &str, leaf: &Leaf, server: bool) -> Files {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(&leaf.common_name);
        params.subject_alt_names = leaf
            .alt_names
            .iter()
            .map(|n| match n.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(n.clone().try_into().expect("DNS name")),
            })
            .collect();
        params.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        if leaf.expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        if leaf.not_yet_valid {
            params.not_before = rcgen::date_time_ymd(2099, 1, 1);
            params.not_after = rcgen::date_time_ymd(2100, 1, 1);
        }
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.ca_cert, &self.ca_key)
            .expect("leaf certificate");
        write(self.path(), file, &cert.pem(), &key.serialize_pem())
    }

    /// A good server certificate for `names`, as `server.crt`/`server.key`.
    pub fn server(&self, names: &[&str]) -> Files {
        self.issue("server", &Leaf::server(names), true)
    }

    /// A good client certificate for `cn`, as `<cn>.crt`/`<cn>.key`.
    pub fn client(&self, cn: &str) -> Files {
        self.issue(cn, &Leaf::client(cn), false)
    }
}

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

fn write(dir: &Path, stem: &str, cert: &str, key: &str) -> Files {
    let files = Files {
        cert: dir.join(format!("{stem}.crt")),
        key: dir.join(format!("{stem}.key")),
    };
    std::fs::write(&files.cert, cert).expect("write cert");
    std::fs::write(&files.key, key).expect("write key");
    // As a careful user keeps them (pinpost check fails world-readable keys).
    std::fs::set_permissions(
        &files.key,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod key");
    files
}
