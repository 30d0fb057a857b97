use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::*;
use crate::encoding::parse_sha256;
use crate::telemetry::LogFormat;

/// A directory with a syntactically complete configuration whose files exist.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for (name, mode) in [
            ("server.pem", 0o644),
            ("server.key", 0o600),
            ("ca.pem", 0o644),
            ("audit.key", 0o600),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, "placeholder").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        Self { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn toml(&self, desks: &str) -> String {
        format!(
            r#"
[centre]
structure_id = "1750000000"
name = "SAMU 75"

[tls]
server_cert = "{}"
server_key = "{}"
workstation_ca = "{}"

[storage]
state_dir = "{}"

[audit]
signing_key = "{}"
{desks}
"#,
            self.path("server.pem"),
            self.path("server.key"),
            self.path("ca.pem"),
            self.path("state"),
            self.path("audit.key"),
        )
    }

    fn load(&self, text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let file = self.dir.path().join("gateway.toml");
        std::fs::write(&file, text).unwrap();
        let env = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
        Config::load_with_env(&file, env)
    }
}

const TWO_DESKS: &str = r#"
[[desks]]
id = "regul-1"
name = "Régulation 1"
reader = "Desk0 00 00"
workstation_cn = "poste-1"

[[desks]]
id = "regul-2"
name = "Régulation 2"
reader = "Desk1 00 00"
workstation_cn = "poste-2"
"#;

fn problem_lines(err: ConfigError) -> Vec<String> {
    err.lines()
}

#[test]
fn valid_file_gets_defaults_for_omitted_sections() {
    let f = Fixture::new();
    let config = f.load(&f.toml(TWO_DESKS), &[]).unwrap();
    assert_eq!(config.server.listen, "0.0.0.0:8443");
    assert_eq!(config.server.shutdown_grace_secs, 10);
    assert_eq!(config.log.format, LogFormat::Json);
    assert_eq!(config.desks.len(), 2);
}

#[test]
fn environment_overrides_file_values() {
    let f = Fixture::new();
    let env = [
        ("SAMU_GATEWAY__SERVER__LISTEN", "127.0.0.1:9443"),
        ("SAMU_GATEWAY__SERVER__SHUTDOWN_GRACE_SECS", "3"),
        ("SAMU_GATEWAY__LOG__FORMAT", "human"),
    ];
    let config = f.load(&f.toml(TWO_DESKS), &env).unwrap();
    assert_eq!(config.server.listen, "127.0.0.1:9443");
    assert_eq!(config.server.shutdown_grace_secs, 3);
    assert_eq!(config.log.format, LogFormat::Human);
}

/// A misspelt override (one underscore after the prefix) is refused, not passed over with
/// its setting silently unapplied; the gateway's own variables pass.
#[test]
fn a_misspelt_override_is_refused() {
    let f = Fixture::new();
    let err = f
        .load(
            &f.toml(TWO_DESKS),
            &[("SAMU_GATEWAY_SERVER__LISTEN", "127.0.0.1:9443")],
        )
        .unwrap_err();
    let lines = problem_lines(err);
    assert!(
        lines[0].starts_with("environment: SAMU_GATEWAY_SERVER__LISTEN is not an override"),
        "{lines:?}"
    );
    f.load(
        &f.toml(TWO_DESKS),
        &[
            ("SAMU_GATEWAY_CONFIG", "/etc/samu-gateway/gateway.toml"),
            ("SAMU_GATEWAY_CREDENTIAL_STORE", "/tmp/store"),
        ],
    )
    .unwrap();
}

#[test]
fn unknown_key_is_named() {
    let f = Fixture::new();
    let text = f
        .toml(TWO_DESKS)
        .replace("[storage]", "[storage]\nstate_directory = \"/x\"");
    let err = f.load(&text, &[]).unwrap_err();
    assert!(matches!(err, ConfigError::Schema(_)), "{err}");
    assert!(err.to_string().contains("state_directory"), "{err}");
}

#[test]
fn unknown_environment_key_is_refused() {
    let f = Fixture::new();
    let err = f
        .load(&f.toml(TWO_DESKS), &[("SAMU_GATEWAY__SERVER__LISTN", "x")])
        .unwrap_err();
    assert!(err.to_string().contains("listn"), "{err}");
}

#[test]
fn syntax_error_names_line_and_column_on_one_line() {
    let f = Fixture::new();
    let err = f
        .load("[centre]\nstructure_id = \"17\"\nname = \n", &[])
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("line 3"), "{text}");
    assert_eq!(text.lines().count(), 1, "{text}");
}

#[test]
fn missing_file_is_unreadable() {
    let err = Config::load_with_env(Path::new("/nonexistent/gateway.toml"), []).unwrap_err();
    assert!(matches!(err, ConfigError::Unreadable { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/gateway.toml"));
}

#[test]
fn world_readable_key_is_refused_with_mode_and_expectation() {
    let f = Fixture::new();
    let key = f.dir.path().join("server.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let lines = problem_lines(f.load(&f.toml(TWO_DESKS), &[]).unwrap_err());
    let expected = format!(
        "tls.server_key: file {} is world-readable (mode 0644); expected 0600 or 0640",
        key.display()
    );
    assert_eq!(lines, vec![expected]);
}

/// A cache master key file that is not a key is refused before anything binds (the
/// service would otherwise run without its cache, with a warning only); a missing file
/// still only disables the cache.
#[test]
fn a_cache_master_key_that_is_not_a_key_is_refused() {
    let f = Fixture::new();
    let key = f.dir.path().join("cache.key");
    let with_key = format!(
        "{}\n[cache]\nmaster_key = \"{}\"\n",
        f.toml(TWO_DESKS),
        key.display()
    );
    f.load(&with_key, &[]).unwrap();
    for (text, ok) in [
        ("zz\n", false),
        (&*"ab".repeat(31), false),
        (&*"ab".repeat(32), true),
    ] {
        std::fs::write(&key, text).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        match f.load(&with_key, &[]) {
            Ok(_) => assert!(ok, "{text} accepted"),
            Err(e) => {
                assert!(!ok, "{text} refused");
                let lines = problem_lines(e);
                assert_eq!(lines.len(), 1, "{lines:?}");
                assert!(
                    lines[0].starts_with("cache.master_key: ")
                        && lines[0].ends_with("expected 64 hex characters (32 bytes)"),
                    "{lines:?}"
                );
            }
        }
    }
}

#[test]
fn group_readable_key_is_accepted() {
    let f = Fixture::new();
    let key = f.dir.path().join("server.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    f.load(&f.toml(TWO_DESKS), &[]).unwrap();
}

#[test]
fn every_problem_is_reported_at_once() {
    let f = Fixture::new();
    let desks = TWO_DESKS
        .replace("regul-2", "regul-1")
        .replace("Desk1 00 00", "Desk0 00 00")
        .replace("poste-2", "poste-1");
    let text = f.toml(&desks).replace(
        "[storage]",
        "[server]\nlisten = \"localhost:8443\"\n\n[storage]",
    );
    std::fs::remove_file(f.dir.path().join("ca.pem")).unwrap();
    let lines = problem_lines(f.load(&text, &[]).unwrap_err());
    let keys: Vec<&str> = lines.iter().map(|l| l.split(':').next().unwrap()).collect();
    assert_eq!(
        keys,
        vec![
            "server.listen",
            "tls.workstation_ca",
            "desks[1].id",
            "desks[1].reader",
            "desks[1].workstation_cn"
        ],
        "{lines:#?}"
    );
    assert!(
        lines[4].contains("already mapped to desks[0]"),
        "{}",
        lines[4]
    );
}

/// Two desks on one PKCS#11 token would share its login.
#[test]
fn a_token_label_belongs_to_one_desk() {
    let f = Fixture::new();
    let desks = TWO_DESKS.replace(
        "workstation_cn = \"poste-1\"\n",
        "workstation_cn = \"poste-1\"\npkcs11_token = \"CPS3v3-X\"\n",
    );
    let desks = desks.replace(
        "workstation_cn = \"poste-2\"\n",
        "workstation_cn = \"poste-2\"\npkcs11_token = \"CPS3v3-X\"\n",
    );
    assert_eq!(desks.matches("pkcs11_token").count(), 2, "{desks}");
    let lines = problem_lines(f.load(&f.toml(&desks), &[]).unwrap_err());
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("desks[1].pkcs11_token:")
                && l.contains("already mapped to desks[0]")),
        "{lines:?}"
    );
}

#[test]
fn no_desk_is_a_problem() {
    let f = Fixture::new();
    let lines = problem_lines(f.load(&f.toml(""), &[]).unwrap_err());
    assert_eq!(
        lines,
        vec!["desks: no desk configured: add at least one [[desks]] table"]
    );
}

#[test]
fn bad_pin_and_bad_id_are_explained() {
    let f = Fixture::new();
    let desks = TWO_DESKS
        .replace("regul-1", "Regul 1")
        .replace("poste-2\"", "poste-2\"\nworkstation_sha256 = \"zz\"");
    let lines = problem_lines(f.load(&f.toml(&desks), &[]).unwrap_err());
    assert!(
        lines[0].starts_with("desks[0].id: 'Regul 1' is not a desk id"),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("desks[1].workstation_sha256: 'zz' is not a SHA-256"),
        "{lines:?}"
    );
}

#[test]
fn credential_names_are_checked_and_plain_paths_pass_through() {
    for bad in [
        "credential:",
        "credential:../x",
        "credential:a/b",
        "credential:.hidden",
    ] {
        assert!(
            matches!(
                SecretPath(bad.into()).resolve(),
                Err(crate::secret::SecretError::CredentialName(_))
            ),
            "{bad}"
        );
    }
    assert_eq!(SecretPath("/k".into()).resolve().unwrap(), Path::new("/k"));
}

/// Every file the configuration names is given by an absolute path: a relative one that
/// exists where `configtest` runs (here, the crate's directory) would be looked for from `/`
/// by the unit. Before, only keys and the state directory were checked.
#[test]
fn relative_file_paths_are_refused_wherever_the_check_runs() {
    let f = Fixture::new();
    assert!(
        Path::new("Cargo.toml").is_file(),
        "the tests run from the crate's directory"
    );
    let configured = format!("server_cert = \"{}\"", f.path("server.pem"));
    let text = f
        .toml(TWO_DESKS)
        .replace(&configured, "server_cert = \"Cargo.toml\"")
        + &format!(
            "\n[cards]\n\n[cards.trust]\nanchors = [\"{}\", \"Cargo.toml\"]\ncrls = [\"{}\"]\n",
            f.path("ca.pem"),
            f.path("ca.pem")
        );
    let lines = problem_lines(f.load(&text, &[]).unwrap_err());
    for key in ["tls.server_cert", "cards.trust.anchors[1]"] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("{key}: 'Cargo.toml' must be an absolute path"))),
            "{key}: {lines:?}"
        );
    }
    assert_eq!(lines.len(), 2, "{lines:?}");
}

/// A key pasted into the configuration instead of its file's path is refused, and its
/// value never repeated (the problem goes to the terminal and the journal); a relative
/// path too (the unit runs from `/`). Before, the value was taken as a path and echoed
/// whole in "file … cannot be read", and configtest said nothing of a master key.
#[test]
fn a_key_written_in_the_configuration_is_refused_unrepeated() {
    let f = Fixture::new();
    let hex = "3f9a".repeat(16);
    let pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n-----END PRIVATE KEY-----";
    for (key, value) in [
        ("cache.master_key", hex.as_str()),
        ("tls.server_key", pem),
        ("tls.server_key", "keys/server.key"),
    ] {
        let text = f.toml(TWO_DESKS);
        let text = if key == "cache.master_key" {
            text.replace(
                "[storage]",
                &format!("[cache]\nmaster_key = \"{value}\"\n\n[storage]"),
            )
        } else {
            let configured = format!("server_key = \"{}\"", f.path("server.key"));
            assert!(text.contains(&configured), "{text}");
            text.replace(&configured, &format!("server_key = '''{value}'''"))
        };
        let lines = problem_lines(f.load(&text, &[]).unwrap_err());
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("{key}: is neither an absolute file path"))),
            "{key}: {lines:?}"
        );
        for line in &lines {
            assert!(
                !line.contains("3f9a3f9a") && !line.contains("MC4CAQAw"),
                "{line}"
            );
        }
    }
}

#[test]
fn sha256_parser_never_panics_on_odd_input() {
    for text in [
        "",
        "é".repeat(32).as_str(),
        &"a".repeat(63),
        &"ab:".repeat(32),
        &"g".repeat(64),
    ] {
        let _ = parse_sha256(text);
    }
    assert!(parse_sha256(&"AB:".repeat(31).add("AB")).is_ok());
}

trait Add {
    fn add(self, s: &str) -> String;
}
impl Add for String {
    fn add(mut self, s: &str) -> String {
        self.push_str(s);
        self
    }
}

/// `config/gateway.toml` is the reference engineers copy: it must parse with the real
/// schema, and every default it states must be the code's default.
#[test]
fn shipped_sample_matches_the_schema_and_the_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/gateway.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let sample: Config = toml::from_str(&text).unwrap();
    let defaults_only: Config = toml::from_str(
        &text
            .split("\n[server]")
            .next()
            .map(|centre| format!("{centre}\n[tls]\nserver_cert = \"a\"\nserver_key = \"b\"\nworkstation_ca = \"c\"\n[audit]\nsigning_key = \"k\"\n"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        toml::to_string(&sample.server).unwrap(),
        toml::to_string(&defaults_only.server).unwrap()
    );
    assert_eq!(
        toml::to_string(&sample.storage).unwrap(),
        toml::to_string(&defaults_only.storage).unwrap()
    );
    let mut audit = sample.audit.clone();
    audit.signing_key = defaults_only.audit.signing_key.clone();
    assert_eq!(
        toml::to_string(&audit).unwrap(),
        toml::to_string(&defaults_only.audit).unwrap()
    );
    assert_eq!(
        toml::to_string(&sample.log).unwrap(),
        toml::to_string(&defaults_only.log).unwrap()
    );
    assert_eq!(
        toml::to_string(&sample.limits).unwrap(),
        toml::to_string(&defaults_only.limits).unwrap()
    );
    assert_eq!(
        toml::to_string(&sample.break_glass).unwrap(),
        toml::to_string(&defaults_only.break_glass).unwrap()
    );
    let mut cache = sample.cache.clone();
    cache.master_key = None;
    assert_eq!(
        toml::to_string(&cache).unwrap(),
        toml::to_string(&defaults_only.cache).unwrap()
    );
    assert!(sample.desks.len() >= 2);
}

/// The README's configuration table documents every key the reference file has.
#[test]
fn readme_documents_every_key() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let sample: toml::Table = std::fs::read_to_string(root.join("config/gateway.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let mut keys = Vec::new();
    for (section, value) in &sample {
        match value {
            toml::Value::Table(table) => {
                keys.extend(table.keys().map(|k| format!("{section}.{k}")))
            }
            toml::Value::Array(desks) => {
                for desk in desks.iter().filter_map(toml::Value::as_table) {
                    keys.extend(desk.keys().map(|k| format!("{section}[].{k}")));
                }
            }
            _ => keys.push(section.clone()),
        }
    }
    assert!(keys.len() > 10, "{keys:?}");
    for key in keys {
        assert!(
            readme.contains(&format!("| `{key}` |")),
            "README's configuration table lacks {key}"
        );
    }
}

#[test]
fn the_integration_needs_its_own_certificate_and_card_login() {
    let f = Fixture::new();
    let text =
        f.toml(TWO_DESKS) + "\n[integration]\ncn = \"poste-1\"\nsha256 = \"zz\"\n\n[roster]\n";
    let lines = problem_lines(f.load(&text, &[]).unwrap_err());
    for expected in [
        "integration.cn: 'poste-1' is desks[0]'s workstation",
        "integration.sha256: ",
        "integration: the regulation software's roster and cases are for desks' card sessions",
        "roster: a roster needs card login: add a [cards] section",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(expected)),
            "{expected}: {lines:?}"
        );
    }
}

/// A configuration written before `[integration]` existed is told where its keys went,
/// and a roster without the certificate that replaces it is refused.
#[test]
fn the_rosters_old_certificate_keys_say_where_they_moved() {
    let f = Fixture::new();
    let text = f.toml(TWO_DESKS)
        + "\n[roster]\nintegration_cn = \"logiciel\"\nintegration_sha256 = \"ab\"\ngrace_minutes = 15\n";
    let lines = problem_lines(f.load(&text, &[]).unwrap_err());
    for expected in [
        "roster.integration_cn: moved: write it as integration.cn",
        "roster.integration_sha256: moved: write it as integration.sha256",
        "roster: a roster needs the certificate that replaces it: add an [integration] section",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(expected)),
            "{expected}: {lines:?}"
        );
    }
}

/// The commented `[integration]` and `[roster]` examples parse into what they say.
#[test]
fn commented_integration_and_roster_examples_parse() {
    let integration: crate::config::IntegrationConfig =
        toml::from_str(&commented_example("# [integration]\n").replace("3f:a1:...", "")).unwrap();
    assert_eq!(integration.cn, "logiciel-regulation");
    let roster: crate::config::RosterConfig =
        toml::from_str(&commented_example("# [roster]\n")).unwrap();
    assert_eq!(roster.grace_minutes, 15);
}

/// The key lines of the shipped sample's commented section that starts with `header`,
/// uncommented.
fn commented_example(header: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/gateway.toml");
    let text = std::fs::read_to_string(path).unwrap();
    text.split(header)
        .nth(1)
        .unwrap()
        .lines()
        .take_while(|l| l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| l.contains(" = "))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The commented `[upstream]` example parses, and its defaults are the code's.
#[test]
fn commented_upstream_example_matches_the_defaults() {
    let block = commented_example("# [upstream]\n");
    let example: crate::upstream::UpstreamConfig = toml::from_str(&block).unwrap();
    let required: String = block.lines().take(5).map(|l| format!("{l}\n")).collect();
    let defaults: crate::upstream::UpstreamConfig = toml::from_str(&required).unwrap();
    assert_eq!(
        toml::to_string(&example).unwrap(),
        toml::to_string(&defaults).unwrap()
    );
}

/// The commented `[dmp]` example parses, and its defaults are the code's (the structure's
/// keys, used in the indirect modes only, aside).
#[test]
fn commented_dmp_example_matches_the_defaults() {
    let block = commented_example("# [dmp]\n");
    let example: crate::upstream::dmp::DmpConfig = toml::from_str(&block).unwrap();
    assert!(example.problems().is_empty(), "{:?}", example.problems());
    let required: String = block.lines().take(4).map(|l| format!("{l}\n")).collect();
    let mut defaults: crate::upstream::dmp::DmpConfig = toml::from_str(&required).unwrap();
    defaults.structure_cert = example.structure_cert.clone();
    defaults.structure_key = example.structure_key.clone();
    assert_eq!(
        toml::to_string(&example).unwrap(),
        toml::to_string(&defaults).unwrap()
    );
}

/// On the DMP path the card authenticates the TLS connection in `DIRECTE`: no structure
/// certificate is asked for; the indirect modes need one (it signs and authenticates).
#[test]
fn dmp_modes_ask_for_the_structure_certificate_only_when_it_is_used() {
    let f = Fixture::new();
    let dmp = |mode: &str| {
        format!(
            "\n[upstream]\nprotocol = \"dmp\"\n\n[dmp]\nbase_url = \"https://dmp.example\"\nserver_ca = \"{}\"\nspecialty = \"SM26\"\nhomologation_number = \"H-1\"\nauthentication_mode = \"{mode}\"\n",
            f.path("ca.pem")
        )
    };
    let structure = |lines: &[String]| lines.iter().any(|l| l.starts_with("dmp.structure_cert"));
    let directe = f.toml(TWO_DESKS) + &dmp("DIRECTE");
    let lines = problem_lines(f.load(&directe, &[]).unwrap_err());
    assert!(!structure(&lines), "{lines:?}");
    // DIRECTE still needs the cards that sign.
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("dmp.authentication_mode")),
        "{lines:?}"
    );
    let indirect = f.toml(TWO_DESKS) + &dmp("INDIRECTE_RENFORCEE");
    let lines = problem_lines(f.load(&indirect, &[]).unwrap_err());
    assert!(structure(&lines), "{lines:?}");
    assert!(!lines.iter().any(|l| l.starts_with("dmp: ")), "{lines:?}");
    // A [dmp] section nothing uses: no [upstream], so no record service at all.
    let unused = f.toml(TWO_DESKS)
        + &dmp("INDIRECTE_RENFORCEE").replace("\n[upstream]\nprotocol = \"dmp\"\n", "");
    let lines = problem_lines(f.load(&unused, &[]).unwrap_err());
    assert!(
        lines.iter().any(|l| l
            .starts_with("dmp: a [dmp] section is used only with [upstream] protocol = \"dmp\"")),
        "{lines:?}"
    );
    // A connection allowed longer than the whole exchange could never be waited for.
    let slow = f.toml(TWO_DESKS)
        + &dmp("DIRECTE")
        + "connect_timeout_ms = 5000\ntotal_timeout_ms = 2000\n";
    let lines = problem_lines(f.load(&slow, &[]).unwrap_err());
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("dmp.connect_timeout_ms: must not exceed")),
        "{lines:?}"
    );
}

/// A threshold of 0 patients per hour would page the compliance team at every access.
#[test]
fn the_many_patients_alert_needs_a_threshold() {
    let f = Fixture::new();
    let text = f.toml(TWO_DESKS) + "\n[compliance]\nmax_patients_per_hour = 0\n";
    let lines = problem_lines(f.load(&text, &[]).unwrap_err());
    assert_eq!(
        lines,
        ["compliance.max_patients_per_hour: 0 would raise an alert at every access: at least 1"]
    );
}

/// The CRL schedule is bounded: a refresh period whose reload arithmetic would overflow
/// (and panic the reload task) and a freshness of zero or of years are refused.
#[test]
fn the_crl_schedule_is_bounded() {
    let f = Fixture::new();
    let problems = |trust_extra: &str| {
        let text = f.toml(TWO_DESKS)
            + &format!(
                "\n[cards]\n\n[cards.trust]\nanchors = [\"{0}\"]\ncrls = [\"{0}\"]\n{trust_extra}",
                f.path("ca.pem")
            );
        match f.load(&text, &[]) {
            Ok(_) => Vec::new(),
            Err(e) => problem_lines(e)
                .into_iter()
                .filter(|l| l.starts_with("cards.trust."))
                .collect(),
        }
    };
    assert!(problems("").is_empty(), "{:?}", problems(""));
    let lines = problems("crl_refresh_minutes = 307445734561825861\ncrl_max_age_hours = 0\n");
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with("cards.trust.crl_refresh_minutes: 307445734561825861 is out of range")
    );
    assert!(lines[1].starts_with("cards.trust.crl_max_age_hours: 0 is out of range"));
}

/// An environment variable never switches on a section the file lacks: a fleet-wide
/// roster setting on a gateway without a roster would refuse every login.
#[test]
fn the_environment_never_brings_in_a_section() {
    let f = Fixture::new();
    let text = f.toml(TWO_DESKS);
    let err = f
        .load(&text, &[("SAMU_GATEWAY__ROSTER__GRACE_MINUTES", "15")])
        .unwrap_err();
    let lines = problem_lines(err);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("roster: SAMU_GATEWAY__ROSTER__GRACE_MINUTES sets a key of [roster], which the file does not have"),
        "{lines:?}"
    );
    // A section the file has is overridden as before.
    let text = f.toml(TWO_DESKS) + "\n[limits]\nper_desk_per_hour = 10\n";
    let config = f
        .load(&text, &[("SAMU_GATEWAY__LIMITS__PER_DESK_PER_HOUR", "20")])
        .unwrap();
    assert_eq!(config.limits.per_desk_per_hour, 20);
}

/// The card profile is checked before the service starts: a typo in an identifier, or a
/// PIN block a PIN-pad reader cannot fill, would fail every login at every insertion.
#[test]
fn the_card_profile_is_checked_before_the_service_starts() {
    let f = Fixture::new();
    let problems = |desk_extra: &str, profile: &str| {
        let text = f.toml(&format!("{TWO_DESKS}{desk_extra}"))
            + &format!(
                "\n[cards]\n\n[cards.trust]\nanchors = [\"{0}\"]\ncrls = [\"{0}\"]\n\n[cards.profile]\n{profile}",
                f.path("ca.pem")
            );
        match f.load(&text, &[]) {
            Ok(_) => Vec::new(),
            Err(e) => problem_lines(e)
                .into_iter()
                .filter(|l| l.starts_with("cards.profile."))
                .collect(),
        }
    };
    assert!(problems("", "").is_empty(), "{:?}", problems("", ""));
    let lines = problems(
        "",
        "aid = \"zz\"\ncertificate_file = \"D02\"\nsignature_certificate_file = \"D0030\"\n",
    );
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines[0].starts_with("cards.profile.aid: aid 'zz' is not 5 to 16 hex bytes"),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("cards.profile.certificate_file:"),
        "{lines:?}"
    );
    assert!(
        lines[2].starts_with("cards.profile.signature_certificate_file:"),
        "{lines:?}"
    );
    // No padding suits a keyboard desk, not a PIN-pad one.
    assert!(problems("", "pin_block_length = 0\n").is_empty());
    let lines = problems("pin_entry = \"pinpad\"\n", "pin_block_length = 0\n");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("does not suit a PIN-pad desk"),
        "{lines:?}"
    );
    assert!(problems("pin_entry = \"pinpad\"\n", "").is_empty());
}

/// `configtest` on the PKCS#11 backend: no module, a module file that is missing or does
/// not load, PKCS#11 settings without the backend; each named by its key.
#[test]
fn the_pkcs11_backend_needs_a_module_that_loads() {
    let f = Fixture::new();
    let trust = format!(
        "\n[cards.trust]\nanchors = [\"{0}\"]\ncrls = [\"{0}\"]\n",
        f.path("ca.pem")
    );
    let problems = |cards: &str, desk_extra: &str| {
        let desks = TWO_DESKS.replacen(
            "workstation_cn = \"poste-1\"\n",
            &format!("workstation_cn = \"poste-1\"\n{desk_extra}"),
            1,
        );
        let text = f.toml(&desks) + "\n[cards]\n" + cards + &trust;
        match f.load(&text, &[]) {
            Ok(_) => Vec::new(),
            Err(e) => problem_lines(e)
                .into_iter()
                .filter(|l| l.contains("pkcs11"))
                .collect(),
        }
    };
    let lines = problems("backend = \"pkcs11\"\n", "");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("cards.pkcs11_module: backend \"pkcs11\" needs")),
        "{lines:?}"
    );
    let lines = problems(
        "backend = \"pkcs11\"\npkcs11_module = \"/nonexistent/libcps3_pkcs11_lux.so\"\n",
        "",
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("cards.pkcs11_module: file /nonexistent")),
        "{lines:?}"
    );
    let lines = problems(
        &format!(
            "backend = \"pkcs11\"\npkcs11_module = \"{}\"\n",
            f.path("ca.pem")
        ),
        "",
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("cards.pkcs11_module: PKCS#11 module:")
                && l.contains("cannot load")),
        "{lines:?}"
    );
    // A module others may write is code they could run in the gateway: not even loaded.
    let writable = f.path("writable-module.so");
    std::fs::copy(f.path("ca.pem"), &writable).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&writable, std::fs::Permissions::from_mode(0o666)).unwrap();
    }
    let lines = problems(
        &format!("backend = \"pkcs11\"\npkcs11_module = \"{writable}\"\n"),
        "",
    );
    let refused = |lines: &[String]| {
        lines.iter().any(|l| {
            l.starts_with("cards.pkcs11_module: ")
                && l.contains("is owned by another user or writable by its group or by others")
        }) && !lines.iter().any(|l| l.contains("cannot load"))
    };
    assert!(refused(&lines), "{lines:?}");
    // A module another user owns is theirs to rewrite, whatever its mode. Giving a file
    // away takes root (CI runs as root); elsewhere this part says it skips.
    let owned = f.path("owned-module.so");
    std::fs::copy(f.path("ca.pem"), &owned).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&owned, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    if std::os::unix::fs::chown(&owned, Some(48_879), None).is_ok() {
        let lines = problems(
            &format!("backend = \"pkcs11\"\npkcs11_module = \"{owned}\"\n"),
            "",
        );
        assert!(refused(&lines), "{lines:?}");
    } else {
        eprintln!("SKIPPED: giving a module to another user takes root");
    }
    let lines = problems(
        &format!("pkcs11_module = \"{}\"\n", f.path("ca.pem")),
        "pkcs11_token = \"CPS3v3-X\"\n",
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("cards.pkcs11_module: only with backend")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("desks[0].pkcs11_token:")),
        "{lines:?}"
    );
}

#[test]
fn open_grants_per_session_is_bounded_both_ways() {
    let f = Fixture::new();
    for (value, problem) in [("0", true), ("1", false), ("100", false), ("101", true)] {
        let result = f.load(
            &f.toml(TWO_DESKS),
            &[("SAMU_GATEWAY__BREAK_GLASS__OPEN_GRANTS_PER_SESSION", value)],
        );
        match result {
            Ok(config) => {
                assert!(!problem, "{value} accepted");
                assert_eq!(
                    config.break_glass.open_grants_per_session.to_string(),
                    value
                );
            }
            Err(e) => {
                assert!(problem, "{value} refused: {e}");
                let lines = problem_lines(e);
                assert!(
                    lines[0].starts_with("break_glass.open_grants_per_session: ")
                        && lines[0].contains("expected 1 to 100"),
                    "{lines:?}"
                );
            }
        }
    }
}

/// The default node id is the host name as uname(2) gives it, which the unit's sandbox
/// does not hide (it hides `/proc/sys`, where it was read before).
#[test]
fn the_default_node_is_the_host_name_from_uname() {
    let output = std::process::Command::new("uname")
        .arg("-n")
        .output()
        .unwrap();
    let expected = String::from_utf8(output.stdout).unwrap();
    assert!(!expected.trim().is_empty());
    assert_eq!(super::host_name(), expected.trim());
}

/// The grace after SIGTERM stays within what the unit's TimeoutStopSec (45 s) leaves for
/// the stop's own audit records.
#[test]
fn the_shutdown_grace_fits_the_units_stop_timeout() {
    let f = Fixture::new();
    let text = f.toml(TWO_DESKS);
    assert!(
        f.load(
            &text,
            &[("SAMU_GATEWAY__SERVER__SHUTDOWN_GRACE_SECS", "20")]
        )
        .is_ok()
    );
    let lines = problem_lines(
        f.load(
            &text,
            &[("SAMU_GATEWAY__SERVER__SHUTDOWN_GRACE_SECS", "21")],
        )
        .unwrap_err(),
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("server.shutdown_grace_secs: 21 is out of range")),
        "{lines:?}"
    );
}

/// Environment values are taken as written: a string that looks like a number keeps its
/// digits (a leading zero, a ".0"), numbers still read as numbers, and the DMP's document
/// types are a comma-separated list.
#[test]
fn environment_strings_keep_their_text_and_lists_split_on_commas() {
    let f = Fixture::new();
    let text = format!(
        "{}\n[dmp]\nbase_url = \"https://dmp.example\"\nserver_ca = \"{}\"\nspecialty = \"SM26\"\nhomologation_number = \"H1\"\n",
        f.toml(TWO_DESKS),
        f.path("ca.pem")
    );
    let file = f.dir.path().join("gateway.toml");
    std::fs::write(&file, text).unwrap();
    let env = [
        ("SAMU_GATEWAY__CENTRE__STRUCTURE_ID", "0750000001"),
        ("SAMU_GATEWAY__DMP__VIHF_VERSION", "3.0"),
        (
            "SAMU_GATEWAY__DMP__DOCUMENT_TYPES",
            "60591-5^^1.2.3,REMB^^4.5.6",
        ),
        ("SAMU_GATEWAY__SERVER__SHUTDOWN_GRACE_SECS", "3"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    let config = Config::read_with_env(&file, env).unwrap();
    assert_eq!(config.centre.structure_id, "0750000001");
    let dmp = config.dmp.unwrap();
    assert_eq!(dmp.vihf_version, "3.0");
    assert_eq!(dmp.document_types, ["60591-5^^1.2.3", "REMB^^4.5.6"]);
    assert_eq!(config.server.shutdown_grace_secs, 3);
}

/// The management listener may not share a port the public listener holds on its
/// address: a wildcard public listener holds it on loopback too.
#[test]
fn a_management_port_the_public_listener_holds_is_refused() {
    let f = Fixture::new();
    for (listen, management, refused) in [
        ("0.0.0.0:8443", "127.0.0.1:8443", true),
        ("[::]:8443", "[::1]:8443", true),
        ("127.0.0.1:8443", "127.0.0.1:8443", true),
        ("0.0.0.0:8443", "127.0.0.1:9100", false),
        ("192.0.2.1:8443", "127.0.0.1:8443", false),
        // Another family's wildcard does not hold it; the management side's counts too
        // (configtest refuses a non-loopback management address anyway).
        ("0.0.0.0:8443", "[::1]:8443", false),
        ("[::]:8443", "127.0.0.1:8443", true),
    ] {
        let env = [
            ("SAMU_GATEWAY__SERVER__LISTEN", listen),
            ("SAMU_GATEWAY__SERVER__MANAGEMENT_LISTEN", management),
        ];
        let outcome = f.load(&f.toml(TWO_DESKS), &env);
        let named = outcome.err().is_some_and(|e| {
            problem_lines(e)
                .iter()
                .any(|l| l.starts_with("server.management_listen"))
        });
        assert_eq!(named, refused, "{listen} and {management}");
    }
}

/// A CRL the record service's certificate is to be checked against must read as one:
/// `configtest` names the entry, before anything binds.
#[test]
fn server_crls_that_are_not_crls_are_named() {
    let f = Fixture::new();
    let text = f.toml(TWO_DESKS)
        + &format!(
            "\n[upstream]\nprotocol = \"dmp\"\n\n[dmp]\nbase_url = \"https://dmp.example\"\nserver_ca = \"{ca}\"\nserver_crls = [\"{ca}\"]\nspecialty = \"SM26\"\nhomologation_number = \"H-1\"\n",
            ca = f.path("ca.pem")
        );
    let lines = problem_lines(f.load(&text, &[]).unwrap_err());
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("dmp.server_crls[0]") && l.contains("not a")),
        "{lines:?}"
    );
}

/// Earlier public keys are read by the `audit` commands and `configtest`, never by the
/// service: a listed file the service could not read (a `.pub` left in the root-only
/// credential store, or deleted after pruning) must not keep it from starting. A path
/// that is not absolute is refused all the same.
#[test]
fn earlier_public_keys_are_not_the_service_s_to_read() {
    let f = Fixture::new();
    let with = |path: &str| {
        f.toml(TWO_DESKS).replacen(
            "[audit]\n",
            &format!("[audit]\nearlier_public_keys = [\"{path}\"]\n"),
            1,
        )
    };
    let config = f.load(&with(&f.path("gone.pub")), &[]).unwrap();
    assert_eq!(config.audit.earlier_public_keys.len(), 1);
    let lines = problem_lines(f.load(&with("gone.pub"), &[]).unwrap_err());
    assert!(
        lines
            .iter()
            .any(|l| l.contains("audit.earlier_public_keys[0]") && l.contains("absolute")),
        "{lines:?}"
    );
}
