//! `configtest` and `serve` refuse bad configurations with one specific line per problem,
//! exit 64, and start nothing.

use crate::support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use support::{Pki, run, write_config};

struct Case {
    dir: tempfile::TempDir,
    pki: Pki,
}

impl Case {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(dir.path());
        Self { dir, pki }
    }

    fn config(&self, server: &str, extra: &str) -> std::path::PathBuf {
        write_config(self.dir.path(), &self.pki, server, extra)
    }

    /// Overwrites the server certificate with a PEM block that does not parse.
    fn garble_server_certificate(&self) {
        std::fs::write(
            &self.pki.server_cert,
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
    }

    fn rewrite(&self, path: &Path, from: &str, to: &str) {
        let text = std::fs::read_to_string(path).unwrap();
        assert!(text.contains(from), "{from} not in config");
        std::fs::write(path, text.replacen(from, to, 1)).unwrap();
    }

    /// Runs `configtest` and `serve`; both must refuse with exit 64 and the same message,
    /// and `serve` must not have created the state directory.
    fn refuses(&self, path: &Path, expected: &str) {
        for command in ["configtest", "serve"] {
            let (code, _, stderr) = run(path, &[command], &[]);
            assert_eq!(code, 64, "{command}: {stderr}");
            assert!(
                stderr.contains(expected),
                "{command}: expected {expected:?} in:\n{stderr}"
            );
            for line in stderr.lines() {
                assert!(
                    line.starts_with("configuration error: "),
                    "{command}: unexpected line {line:?}"
                );
            }
        }
        assert!(
            !self.dir.path().join("state").exists(),
            "serve created its state before refusing"
        );
    }
}

#[test]
fn valid_configuration_passes_and_says_what_it_checked() {
    let case = Case::new();
    let path = case.config("", "");
    let (code, stdout, stderr) = run(&path, &["configtest"], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("configuration OK:"), "{stdout}");
    assert!(stdout.contains("2 desk(s)"), "{stdout}");
    assert!(
        !case.dir.path().join("state").exists(),
        "configtest must open nothing"
    );
}

#[test]
fn malformed_toml() {
    let case = Case::new();
    let path = case.config("", "");
    case.rewrite(&path, "name = \"SAMU de test\"", "name = \"SAMU de test");
    case.refuses(&path, "TOML syntax error at line 3");
}

#[test]
fn unknown_key() {
    let case = Case::new();
    let path = case.config("listen_backlog = 5", "");
    case.refuses(&path, "unknown field `listen_backlog`");
}

#[test]
fn missing_configuration_file() {
    let case = Case::new();
    case.refuses(
        &case.dir.path().join("absent.toml"),
        "cannot read configuration file",
    );
}

#[test]
fn missing_certificate_file() {
    let case = Case::new();
    let path = case.config("", "");
    std::fs::remove_file(&case.pki.workstation_ca).unwrap();
    case.refuses(&path, "tls.workstation_ca: file ");
}

#[test]
fn world_readable_key() {
    let case = Case::new();
    let path = case.config("", "");
    std::fs::set_permissions(&case.pki.server_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let expected = format!(
        "tls.server_key: file {} is world-readable (mode 0644); expected 0600 or 0640",
        case.pki.server_key.display()
    );
    case.refuses(&path, &expected);
}

#[test]
fn key_that_is_not_a_key() {
    let case = Case::new();
    let path = case.config("", "");
    std::fs::write(&case.pki.server_key, "not a key").unwrap();
    case.refuses(&path, "tls.server_key:");
}

#[test]
fn key_of_another_certificate() {
    let case = Case::new();
    let path = case.config("", "");
    std::fs::copy(&case.pki.clients[support::DESK_A].key, &case.pki.server_key).unwrap();
    case.refuses(&path, "tls.server_key: does not fit tls.server_cert");
}

#[test]
fn certificate_file_with_garbage() {
    let case = Case::new();
    let path = case.config("", "");
    case.garble_server_certificate();
    case.refuses(&path, "tls.server_cert:");
}

/// Files that only loading finds wrong (a certificate that does not parse, a signing key
/// that is no key) are all reported in one run: before, the first stage to fail hid the
/// others until the next run.
#[test]
fn every_file_problem_is_reported_at_once() {
    let case = Case::new();
    let path = case.config("", "");
    case.garble_server_certificate();
    std::fs::write(&case.pki.audit_key, "not a key").unwrap();
    let (code, _, stderr) = run(&path, &["configtest"], &[]);
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("tls.server_cert:"), "{stderr}");
    assert!(stderr.contains("audit.signing_key:"), "{stderr}");
}

/// A revocation list cut short (a refresh job rewriting it in place) is a problem for
/// `configtest` (64), but for `serve` a failure systemd retries (1): the unit never
/// restarts on 64, and the list will be whole again in a moment.
#[test]
fn a_revocation_list_cut_short_is_retried_by_serve_not_a_configuration_error() {
    let case = Case::new();
    let path = case.config("", "");
    let crl = case.dir.path().join("workstations.crl");
    std::fs::write(&crl, "-----BEGIN X509 CRL-----\nMIIB\n").unwrap();
    let anchor = format!("workstation_ca = \"{}\"", case.pki.workstation_ca.display());
    case.rewrite(
        &path,
        &anchor,
        &format!("{anchor}\nworkstation_crls = [\"{}\"]", crl.display()),
    );
    let (code, _, stderr) = run(&path, &["configtest"], &[]);
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("tls.workstation_crls[0]"), "{stderr}");
    let (code, _, stderr) = run(&path, &["serve"], &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("a revocation list cannot be used")
            && stderr.contains("tls.workstation_crls[0]"),
        "{stderr}"
    );
    assert!(
        !case.dir.path().join("state").exists(),
        "serve created its state before refusing"
    );
    // A list that is not there at all is the configuration's mistake (a typo in its
    // path): restarting cannot fix it.
    std::fs::remove_file(&crl).unwrap();
    case.refuses(&path, "tls.workstation_crls[0]");
}

/// A workstation CRL past its next update is data, not configuration: configtest passes
/// but says that under `refuse` no desk can connect.
#[test]
fn a_stale_workstation_crl_is_a_warning_from_configtest() {
    let case = Case::new();
    let path = case.config("", "");
    let crl = case.dir.path().join("workstations.crl");
    std::fs::write(&crl, case.pki.workstations.crl(&[], 3, -1).unwrap()).unwrap();
    let anchor = format!("workstation_ca = \"{}\"", case.pki.workstation_ca.display());
    case.rewrite(
        &path,
        &anchor,
        &format!("{anchor}\nworkstation_crls = [\"{}\"]", crl.display()),
    );
    let (code, stdout, stderr) = run(&path, &["configtest"], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("WARNING: a workstation CRL is past its next update")
            && stdout.contains("every desk's connection is refused"),
        "{stdout}"
    );
}

#[test]
fn duplicate_desk_id() {
    let case = Case::new();
    let path = case.config("", "");
    case.rewrite(&path, "id = \"desk-b\"", "id = \"desk-a\"");
    case.refuses(
        &path,
        "desks[1].id: desk id 'desk-a' is already mapped to desks[0]",
    );
}

#[test]
fn duplicate_reader() {
    let case = Case::new();
    let path = case.config("", "");
    case.rewrite(&path, "Desk1 00 00", "Desk0 00 00");
    case.refuses(
        &path,
        "desks[1].reader: reader 'Desk0 00 00' is already mapped to desks[0]",
    );
}

#[test]
fn one_workstation_mapped_to_two_desks() {
    let case = Case::new();
    let path = case.config("", "");
    case.rewrite(
        &path,
        "workstation_cn = \"poste-b\"",
        "workstation_cn = \"poste-a\"",
    );
    case.refuses(
        &path,
        "desks[1].workstation_cn: workstation certificate 'poste-a' is already mapped to desks[0]",
    );
}

#[test]
fn invalid_listen_address() {
    let case = Case::new();
    let path = case.config("", "");
    case.rewrite(
        &path,
        "listen = \"127.0.0.1:0\"",
        "listen = \"127.0.0.1:99999\"",
    );
    case.refuses(
        &path,
        "server.listen: invalid listen address '127.0.0.1:99999'",
    );
}

#[test]
fn a_management_listener_off_loopback_is_refused() {
    let case = Case::new();
    let path = case.config("", "");
    case.rewrite(
        &path,
        "management_listen = \"127.0.0.1:0\"",
        "management_listen = \"0.0.0.0:8444\"",
    );
    case.refuses(
        &path,
        "server.management_listen: 0.0.0.0:8444 is not a loopback address",
    );
}

#[test]
fn role_pins_must_be_sha256_fingerprints() {
    let case = Case::new();
    let path = case.config(
        "",
        "\n[compliance]\nofficer_cns = [\"conformite\"]\nofficer_sha256 = [\"not-a-pin\"]\n",
    );
    case.refuses(&path, "compliance.officer_sha256[0]:");
}

#[test]
fn invalid_environment_override() {
    let case = Case::new();
    let path = case.config("", "");
    for command in ["configtest", "serve"] {
        let (code, _, stderr) = run(
            &path,
            &[command],
            &[("SAMU_GATEWAY__SERVER__LISTEN", "nowhere")],
        );
        assert_eq!(code, 64, "{stderr}");
        assert!(
            stderr.contains("server.listen: invalid listen address 'nowhere'"),
            "{stderr}"
        );
    }
}

#[test]
fn config_path_from_the_environment() {
    let case = Case::new();
    let path = case.config("", "");
    let out = std::process::Command::new(support::BIN)
        .arg("configtest")
        .env("SAMU_GATEWAY_CONFIG", &path)
        .env("SAMU_GATEWAY_SERVICE_USER", "")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_usage_exits_64_and_help_exits_0() {
    let case = Case::new();
    let path = case.config("", "");
    assert_eq!(run(&path, &["frobnicate"], &[]).0, 64);
    assert_eq!(run(&path, &["serve", "--no-such-flag"], &[]).0, 64);
    let (code, stdout, _) = run(&path, &["--help"], &[]);
    assert_eq!(code, 0);
    for command in ["serve", "demo", "configtest", "healthcheck", "version"] {
        assert!(
            stdout.contains(command),
            "{command} missing from --help:\n{stdout}"
        );
    }
    let (code, stdout, _) = run(&path, &["version"], &[]);
    assert_eq!(code, 0);
    assert!(
        stdout.starts_with(&format!("samu-gateway {}", env!("CARGO_PKG_VERSION"))),
        "{stdout}"
    );
}

/// An `[upstream]` section whose files all exist and fit.
fn upstream_section(dir: &Path) -> String {
    use samu_gateway::dev_pki::{Authority, write_file, write_pair};
    let ca = Authority::new("record CA").unwrap();
    write_file(&dir.join("record-ca.pem"), ca.cert_pem(), 0o644).unwrap();
    let structure = Authority::new("structure CA").unwrap();
    write_pair(dir, "structure", &structure.issue_client("SAMU").unwrap()).unwrap();
    write_pair(dir, "other", &structure.issue_client("other").unwrap()).unwrap();
    samu_gateway::audit::Signer::generate(&dir.join("assertion.key")).unwrap();
    format!(
        "\n[upstream]\nbase_url = \"https://dmp.example/fhir\"\nserver_ca = \"{0}/record-ca.pem\"\nclient_cert = \"{0}/structure.pem\"\nclient_key = \"{0}/structure.key\"\nassertion_key = \"{0}/assertion.key\"\n",
        dir.display()
    )
}

#[test]
fn upstream_section_is_checked_file_by_file() {
    let case = Case::new();
    let section = upstream_section(case.dir.path());
    let path = case.config("", &section);
    let (code, _, stderr) = run(&path, &["configtest"], &[]);
    assert_eq!(code, 0, "{stderr}");

    case.rewrite(&path, "https://dmp.example/fhir", "http://dmp.example/fhir");
    case.refuses(
        &path,
        "upstream.base_url: 'http://dmp.example/fhir' must be an https:// URL",
    );
    case.rewrite(&path, "http://dmp.example/fhir", "https://dmp.example/fhir");

    let key = case.dir.path().join("assertion.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    case.refuses(&path, "upstream.assertion_key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    case.rewrite(&path, "structure.key", "other.key");
    case.refuses(
        &path,
        "upstream.client_key: does not fit upstream.client_cert",
    );
    case.rewrite(&path, "other.key", "structure.key");

    case.rewrite(
        &path,
        "[upstream]\n",
        "[upstream]\ntotal_timeout_ms = 100\n",
    );
    case.refuses(&path, "upstream.total_timeout_ms: 100 is out of range");
}

/// `credential:NAME` keys, as the shipped configuration names them: from a shell,
/// `configtest` reads them in the credential store the unit loads (here one of the test's
/// own, named by `SAMU_GATEWAY_CREDENTIAL_STORE`), and says so; a missing one is named
/// with the file it should be. Under systemd, which loads the store's directory as
/// credentials named `gateway_FILE`, `serve` finds them there.
#[test]
fn credentials_are_read_where_the_unit_loads_them() {
    let case = Case::new();
    let config = case.config("", "");
    let pki = &case.pki;
    case.rewrite(
        &config,
        &format!("server_key = \"{}\"", pki.server_key.display()),
        "server_key = \"credential:server.key\"",
    );
    case.rewrite(
        &config,
        &format!("signing_key = \"{}\"", pki.audit_key.display()),
        "signing_key = \"credential:audit-signing.key\"",
    );
    let store = case.dir.path().join("credentials");
    std::fs::create_dir(&store).unwrap();
    let place = |from: &Path, to: &Path| {
        std::fs::copy(from, to).unwrap();
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    place(&pki.server_key, &store.join("server.key"));
    let env = [("SAMU_GATEWAY_CREDENTIAL_STORE", store.to_str().unwrap())];

    // One key missing: named, with the file the store should hold.
    let (code, _, stderr) = run(&config, &["configtest"], &env);
    assert_eq!(code, 64, "{stderr}");
    let expected = store.join("audit-signing.key");
    assert!(
        stderr.contains("credential:audit-signing.key")
            && stderr.contains(&expected.display().to_string()),
        "{stderr}"
    );

    place(&pki.audit_key, &expected);
    let (code, stdout, stderr) = run(&config, &["configtest"], &env);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!(
            "credentials: read from the credential store {}",
            store.display()
        )),
        "{stdout}"
    );

    // As systemd hands the store to the unit: one credential per file, gateway_FILE.
    let loaded = case.dir.path().join("loaded");
    std::fs::create_dir(&loaded).unwrap();
    place(&pki.server_key, &loaded.join("gateway_server.key"));
    place(&pki.audit_key, &loaded.join("gateway_audit-signing.key"));
    let (mut child, _, stderr) = support::spawn(
        &config,
        &["serve"],
        &[("CREDENTIALS_DIRECTORY", loaded.to_str().unwrap())],
    );
    assert!(stderr.has("listening"), "{}", stderr.all());
    support::signal(child.id(), "TERM");
    assert_eq!(
        support::wait_child(&mut child, std::time::Duration::from_secs(30)).code(),
        Some(0)
    );
}

/// Run as root, `configtest` also checks the files as the service user opens them: root
/// reads everything, so a key left `0600 root` or a certificate in a private directory
/// passed, and the service then stopped at its start. Here the user is `nobody`: first
/// every file is behind the private temporary directory; opened up, the keys (root's,
/// 0600) and the state directory (root's) remain, each named with its key.
#[test]
fn configtest_checks_files_as_the_service_user() {
    if !rustix::process::geteuid().is_root() {
        support::skipped("configtest: not root, the check as the service user is not run");
        return;
    }
    let case = Case::new();
    let path = case.config("", "");
    std::fs::set_permissions(case.dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let as_nobody = [("SAMU_GATEWAY_SERVICE_USER", "nobody")];
    let (code, _, stderr) = run(&path, &["configtest"], &as_nobody);
    assert_eq!(code, 64, "{stderr}");
    assert!(
        stderr.contains("configuration error: configuration file: the service runs as nobody, which cannot reach")
            && stderr.contains("configuration error: tls.server_cert: the service runs as nobody, which cannot reach"),
        "{stderr}"
    );

    // Opened up: the directories, the configuration and the certificates.
    for entry in walk(case.dir.path()) {
        let mode = if entry.is_dir() {
            0o755
        } else if entry.extension().is_some_and(|e| e == "key") {
            continue;
        } else {
            0o644
        };
        std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    std::fs::set_permissions(case.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(case.dir.path().join("state")).unwrap();
    let (code, _, stderr) = run(&path, &["configtest"], &as_nobody);
    assert_eq!(code, 64, "{stderr}");
    for key in ["tls.server_key", "audit.signing_key", "storage.state_dir"] {
        assert!(
            stderr.contains(&format!(
                "configuration error: {key}: the service runs as nobody, which cannot"
            )),
            "{key} not named in:\n{stderr}"
        );
    }
    assert!(
        !stderr.contains("tls.server_cert") && !stderr.contains("configuration file"),
        "{stderr}"
    );
    for line in stderr.lines() {
        assert!(line.starts_with("configuration error: "), "{line}");
    }
    // What depends on the unit as installed is a warning: files under /tmp (which the
    // unit's PrivateTmp= hides), a state directory other than the unit's.
    assert!(
        stdout_of(&path, &as_nobody).contains("WARNING: tls.server_cert: ")
            && stdout_of(&path, &as_nobody).contains("which the unit hides from the service"),
    );
    assert!(stdout_of(&path, &as_nobody).contains("WARNING: storage.state_dir: "));

    // A key the unit hands over as a credential is systemd's to read (as root): not
    // judged. The same file named by its path in the store (0700 root) is the service's
    // to open, and it cannot.
    let store = case.dir.path().join("store");
    std::fs::create_dir(&store).unwrap();
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::copy(&case.pki.server_key, store.join("server.key")).unwrap();
    std::fs::set_permissions(
        store.join("server.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let written = format!("server_key = \"{}\"", case.pki.server_key.display());
    case.rewrite(&path, &written, "server_key = \"credential:server.key\"");
    let with_store = [
        ("SAMU_GATEWAY_SERVICE_USER", "nobody"),
        ("SAMU_GATEWAY_CREDENTIAL_STORE", store.to_str().unwrap()),
    ];
    let (code, _, stderr) = run(&path, &["configtest"], &with_store);
    assert_eq!(code, 64, "{stderr}");
    assert!(!stderr.contains("tls.server_key"), "{stderr}");
    assert!(stderr.contains("audit.signing_key"), "{stderr}");
    case.rewrite(
        &path,
        "server_key = \"credential:server.key\"",
        &format!("server_key = \"{}\"", store.join("server.key").display()),
    );
    let (_, _, stderr) = run(&path, &["configtest"], &with_store);
    assert!(
        stderr.contains(
            "configuration error: tls.server_key: the service runs as nobody, which cannot reach"
        ),
        "{stderr}"
    );

    // The check is that of the service's user: without one, root's reading passes.
    let (code, stdout, stderr) = run(&path, &["configtest"], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stdout.contains("service user"), "{stdout}");
    let (code, stdout, _) = run(
        &path,
        &["configtest"],
        &[("SAMU_GATEWAY_SERVICE_USER", "no-such-user-here")],
    );
    assert_eq!(code, 0);
    assert!(
        stdout.contains("note: no user no-such-user-here on this system"),
        "{stdout}"
    );
}

/// What `configtest` prints on its standard output with `env`.
fn stdout_of(path: &Path, env: &[(&str, &str)]) -> String {
    run(path, &["configtest"], env).1
}

/// Every file and directory under `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}
