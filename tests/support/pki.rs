//! A throw-away certificate authority made with openssl for NTS tests: a CA
//! with its own subject (another `Pki` is then an unknown issuer, as a
//! real foreign CA is) and a P-256 server certificate for the names and
//! addresses given, signed by it. Files in a temp dir removed on Drop.

use std::path::PathBuf;
use std::process::Command;

use super::{check_ok, temp_dir, unique_name};

pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// A CA "timectl test CA LABEL" and a server certificate for
    /// `localhost` and 127.0.0.1.
    pub fn new(label: &str) -> Pki {
        Pki::for_names(label, &["DNS:localhost", "IP:127.0.0.1"])
    }

    /// A CA and a server certificate whose subjectAltName lists `sans`
    /// (`DNS:name`, `IP:address`).
    pub fn for_names(label: &str, sans: &[&str]) -> Pki {
        let dir = temp_dir(&format!("{}-{label}", unique_name()), 0o700);
        let pki = Pki { dir };
        let subject = format!("/CN=timectl test CA {label}");
        pki.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &subject,
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        std::fs::write(
            pki.path("ext.cnf"),
            format!("subjectAltName={}\n", sans.join(",")),
        )
        .expect("write ext.cnf");
        pki.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=timectl test server",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        pki.openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.pem",
        ]);
        pki
    }

    /// `ca.pem`, `server.pem`, `server.key`, ... in the temp dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A file's text (to copy it into a container).
    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name))
            .unwrap_or_else(|e| panic!("read {}: {e}", self.path(name).display()))
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("run openssl");
        check_ok(&format!("openssl {}", args.join(" ")), &out);
    }
}
