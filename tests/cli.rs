//! The commands as users run them: the built binary, real files, stdin/stdout, exit codes.

mod common;

use common::{EXPORTER, PG11, PG15, rollback};

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

use helm_guard::demo::build::{History, postgres_chart};
use helm_guard::values::coalesce::UpgradeValues;

const CANARY: &str = "CANARY-cli-pa55word";

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_helm-guard"))
}

fn run(cmd: &mut Command, stdin: Option<&str>) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("RUST_LOG")
        .spawn()
        .expect("spawn");
    let input = stdin.unwrap_or("").to_owned();
    let mut pipe = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(input.as_bytes());
    });
    let out = child.wait_with_output().expect("wait");
    let _ = writer.join();
    out
}

fn history() -> History {
    common::history(CANARY)
}

/// Writes the release as `kubectl get -o json` (a List of Secrets) and, for revision 2, as a
/// ConfigMap in multi-document YAML (JSON is YAML) next to an unrelated object.
fn write_releases(dir: &Path) {
    let h = history();
    std::fs::write(dir.join("secrets.json"), h.secrets_list().to_string()).expect("write");
    let other = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: unrelated\n  namespace: db\n";
    let yaml = format!("{other}---\n{}\n", h.revisions[1].config_map());
    std::fs::write(dir.join("cm.yaml"), yaml).expect("write");
    std::fs::write(dir.join("notes.txt"), "not read: wrong extension").expect("write");
}

fn stdout_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).expect("stdout is JSON")
}

#[test]
fn review_exit_codes_and_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_releases(dir.path());
    let review = dir.path().join("request.json");
    std::fs::write(&review, rollback().review("r-1").to_string()).expect("write");
    let releases = dir.path().to_str().expect("utf-8 path");

    // Denied in enforce: exit 1, the response on stdout.
    let out = run(
        bin()
            .args(["review", "--mode", "enforce", "--releases", releases])
            .arg(&review),
        None,
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = stdout_json(&out);
    assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(v["kind"], "AdmissionReview");
    assert_eq!(v["response"]["uid"], "r-1");
    assert_eq!(v["response"]["allowed"], false);

    // Allowed in audit: exit 0; the mutating answer carries a base64 patch.
    let out = run(
        bin()
            .args([
                "review",
                "--mode",
                "audit",
                "--mutate",
                "--releases",
                releases,
            ])
            .arg(&review),
        None,
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout_json(&out)["response"]["patch"].is_string());

    // YAML on stdin (`-`), break-glass: allowed.
    let yaml = rollback()
        .with_break_glass("INC-7")
        .review("r-2")
        .to_string();
    let out = run(
        bin().args(["review", "--releases", releases, "-"]),
        Some(&yaml),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // No releases at all is valid: the release is unknown, allowed with a warning.
    let out = run(bin().args(["review"]).arg(&review), None);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout_json(&out)["response"]["warnings"][0]
            .as_str()
            .expect("warning")
            .contains("not found")
    );

    assert!(!String::from_utf8_lossy(&out.stdout).contains(CANARY));
}

#[test]
fn review_bad_input_is_exit_2_with_nothing_on_stdout() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_releases(dir.path());
    let good = rollback().review("r-3").to_string();
    let cases: Vec<(Vec<String>, Option<String>, &str)> = vec![
        (
            vec!["review".into()],
            Some("{not an admission review".into()),
            "stdin",
        ),
        (
            vec!["review".into()],
            Some("apiVersion: v1\nkind: Pod\n".into()),
            "not an admission.k8s.io/v1 AdmissionReview",
        ),
        (
            vec![
                "review".into(),
                "--releases".into(),
                "/nonexistent/releases".into(),
            ],
            Some(good.clone()),
            "/nonexistent/releases",
        ),
        (
            vec!["review".into(), "/nonexistent/request.json".into()],
            None,
            "/nonexistent/request.json",
        ),
    ];
    for (args, stdin, want) in cases {
        let out = run(bin().args(&args), stdin.as_deref());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}: stdout must stay empty");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("CANARY"), "{err}");
    }
}

/// A release Secret named `sh.helm.release.v1.<release>.v<revision>` in `db` whose data is a
/// gzip bomb (40 MiB of zeros, over the 32 MiB bound), or not Helm's encoding at all.
fn broken_record(release: &str, revision: u32, bomb: bool) -> Value {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    let helm_string = if bomb {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&vec![0u8; 40 << 20]).expect("gzip");
        STANDARD.encode(gz.finish().expect("gzip"))
    } else {
        format!("not-helm {CANARY}")
    };
    json!({"apiVersion": "v1", "kind": "Secret", "type": "helm.sh/release.v1",
           "metadata": {"name": format!("sh.helm.release.v1.{release}.v{revision}"), "namespace": "db",
                        "labels": {"owner": "helm", "name": release}},
           "data": {"release": STANDARD.encode(helm_string)}})
}

/// One bad record never blocks the rest: named on stderr (no content), skipped; the judged
/// object's own broken release is answered as a missing one, saying why.
#[test]
fn one_bad_release_record_never_blocks_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_releases(dir.path());
    let bomb = dir.path().join("shop2-gzip-bomb.json");
    std::fs::write(&bomb, broken_record("shop2", 1, true).to_string()).expect("write");
    let garbage = dir.path().join("x.json");
    std::fs::write(&garbage, broken_record("x", 1, false).to_string()).expect("write");
    let request = rollback().review("r-8").to_string();

    // The good release still judges: denied in enforce (exit 1), both bad records named.
    let out = run(
        bin()
            .args(["review", "--mode", "enforce", "--releases"])
            .arg(dir.path()),
        Some(&request),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(stdout_json(&out)["response"]["allowed"], false);
    assert!(err.contains("sh.helm.release.v1.shop2.v1"), "{err}");
    assert!(err.contains("sh.helm.release.v1.x.v1"), "{err}");
    assert!(
        !err.contains("CANARY") && !err.contains("not-helm"),
        "{err}"
    );

    // pins reads the rest too.
    let out = run(bin().args(["pins", "--releases"]).arg(dir.path()), None);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The object's own release is the broken one: as if missing, with the reason.
    let own = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        own.path().join("db.json"),
        broken_record("db", 2, true).to_string(),
    )
    .expect("write");
    let out = run(
        bin()
            .args(["review", "--mode", "enforce", "--releases"])
            .arg(own.path()),
        Some(&request),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let warning = stdout_json(&out)["response"]["warnings"][0]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        warning.contains("release db/db could not be read")
            && warning.contains("sh.helm.release.v1.db.v2"),
        "{warning}"
    );
    // Denied when the cluster requires a readable release.
    let out = run(
        bin()
            .args([
                "review",
                "--mode",
                "enforce",
                "--on-missing-release",
                "deny",
                "--releases",
            ])
            .arg(own.path()),
        Some(&request),
    );
    assert_eq!(out.status.code(), Some(1));
    let msg = stdout_json(&out)["response"]["status"]["message"].to_string();
    assert!(msg.contains("could not be read"), "{msg}");
}

/// A well-formed request for something helm-guard does not judge is allowed (exit 0).
#[test]
fn review_of_an_object_not_judged_is_allowed() {
    let mut service = rollback().review("r-9");
    service["request"]["kind"] = json!({"group": "", "version": "v1", "kind": "Service"});
    service["request"]["object"]["kind"] = json!("Service");
    let mut unmanaged = rollback().review("r-10");
    if let Some(a) = unmanaged["request"]["object"]["metadata"]["annotations"].as_object_mut() {
        a.clear();
    }
    unmanaged["request"]["name"] = json!("not-from-helm");
    for body in [service, unmanaged] {
        let out = run(
            bin().args(["review", "--mode", "enforce"]),
            Some(&body.to_string()),
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(stdout_json(&out)["response"]["allowed"], true);
    }
}

#[test]
fn demo_runs_the_seed_story() {
    let out = run(bin().arg("demo"), None);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("behaved as expected"), "{text}");
    assert!(!text.contains(helm_guard::demo::DEMO_PASSWORD));
}

#[test]
fn serve_without_a_cluster_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(
        bin()
            .args(["serve", "--tls-cert", "x", "--tls-key", "y"])
            .env("KUBECONFIG", dir.path().join("no-such-kubeconfig"))
            .env_remove("KUBERNETES_SERVICE_HOST")
            .current_dir(dir.path()),
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Kubernetes API"), "{err}");
    // Each cause once: kube's errors repeat their sources in their own text.
    let line = err
        .lines()
        .find(|l| l.starts_with("helm-guard serve:"))
        .unwrap_or_default();
    assert_eq!(
        line.matches("No such file or directory").count(),
        1,
        "{line}"
    );
}

#[test]
fn certs_writes_a_usable_bundle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(
        bin()
            .args([
                "certs",
                "--service",
                "hg",
                "--namespace",
                "ops",
                "--out-dir",
            ])
            .arg(dir.path()),
        None,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("hg.ops.svc.cluster.local"));
    let read = |f: &str| std::fs::read(dir.path().join(f)).expect(f);
    helm_guard::tls::install_provider();
    helm_guard::tls::server_config(&read("tls.crt"), &read("tls.key")).expect("cert and key match");
    helm_guard::tls::client_config(&read("ca.crt")).expect("CA");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("tls.key"))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "private key must not be group/world readable"
        );
    }
}

#[test]
fn help_documents_every_flag_and_its_variable() {
    let out = run(bin().args(["serve", "--help"]), None);
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--admin-listen",
        "--tls-cert",
        "--tls-key",
        "--default-mode",
        "--releases",
        "--max-body-bytes",
        "--deadline-ms",
        "--on-missing-release",
        "--helm-managers",
        "--exempt-users",
        "--max-release-bytes",
    ] {
        assert!(help.contains(flag), "{flag} missing from serve --help");
    }
    assert!(help.contains("HELM_GUARD_DEFAULT_MODE"));
}

/// db/db: rev 1 installed with `--set image.tag=11.22.0`; rev 2 a plain `helm upgrade` to a
/// chart whose default is 15.4.0 — the old tag comes back; rev 3 the same again, pending.
fn stale_history() -> History {
    let mut h = History::install(
        "db",
        "db",
        &postgres_chart("12.0.0", "11.22.0"),
        json!({"image": {"tag": "11.22.0"}, "auth": {"postgresPassword": CANARY}}),
    );
    h.begin_upgrade(
        &postgres_chart("14.0.0", "15.4.0"),
        json!({}),
        UpgradeValues::Default,
    );
    h.complete();
    h.begin_upgrade(
        &postgres_chart("14.0.1", "15.5.0"),
        json!({}),
        UpgradeValues::Default,
    );
    h
}

#[test]
fn pins_reports_persisted_image_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = stale_history();
    std::fs::write(dir.path().join("db.json"), h.secrets_list().to_string()).expect("write");
    let releases = dir.path().to_str().expect("utf-8");

    let out = run(bin().args(["pins", "--releases", releases]), None);
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "db/db",
        "image.tag",
        "11.22.0",
        "15.5.0",
        "yes",
        "--reset-then-reuse-values --set image.tag=null",
    ] {
        assert!(table.contains(needle), "{needle} missing:\n{table}");
    }
    let out = run(
        bin().args([
            "pins",
            "--output",
            "json",
            "--release",
            "db",
            "--releases",
            releases,
        ]),
        None,
    );
    let v = stdout_json(&out);
    assert_eq!(v[0]["path"], "image.tag");
    assert_eq!(v[0]["since"], 1);
    assert_eq!(v[0]["revision"], 3);
    assert_eq!(v[0]["chartDefault"], "15.5.0");
    let out = run(
        bin().args(["pins", "--namespace", "other", "--releases", releases]),
        None,
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("no image values"));
    assert!(!table.contains(CANARY));
}

#[test]
fn review_of_a_pending_release_record_warns_or_denies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let h = stale_history();
    // The store knows revisions 1 and 2; revision 3 is what Helm is writing now.
    let known = json!({"apiVersion": "v1", "kind": "List",
        "items": h.revisions[..2].iter().map(|r| r.secret()).collect::<Vec<_>>()});
    std::fs::write(dir.path().join("db.json"), known.to_string()).expect("write");
    let review =
        helm_guard::demo::fixtures::record_review("rec-1", &h.last().secret(), "CREATE", "alice");
    let request = dir.path().join("record.json");
    std::fs::write(&request, review.to_string()).expect("write");
    let releases = dir.path().join("db.json");

    let out = run(
        bin()
            .args(["review", "--releases"])
            .arg(&releases)
            .arg(&request),
        None,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = stdout_json(&out);
    let warnings = v["response"]["warnings"].to_string();
    assert!(
        warnings.contains("image.tag=11.22.0 pinned since revision 1"),
        "{warnings}"
    );
    assert!(warnings.contains("default is 15.5.0"), "{warnings}");

    let out = run(
        bin()
            .args(["review", "--stale-values", "deny", "--releases"])
            .arg(&releases)
            .arg(&request),
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("before any workload changes"), "{text}");
    assert!(!text.contains(CANARY));
}

#[test]
fn serve_from_files_answers_over_tls_and_drains_on_sigterm() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().expect("tempdir");
    write_releases(dir.path());
    let certs = dir.path().join("certs");
    let out = run(
        bin()
            .args([
                "certs",
                "--service",
                "localhost",
                "--namespace",
                "x",
                "--out-dir",
            ])
            .arg(&certs),
        None,
    );
    assert_eq!(out.status.code(), Some(0));
    let mut child = bin()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--default-mode",
            "enforce",
        ])
        .arg("--tls-cert")
        .arg(certs.join("tls.crt"))
        .arg("--tls-key")
        .arg(certs.join("tls.key"))
        .arg("--releases")
        .arg(dir.path().join("secrets.json"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    // JSON logs on stdout: wait for the line that says where it listens.
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let listen = loop {
        let line = lines
            .next()
            .expect("serve logged before exiting")
            .expect("utf-8 log line");
        let v: Value = serde_json::from_str(&line).expect("JSON log line");
        if v["message"] == "serving" {
            break v["listen"].as_str().expect("listen").to_owned();
        }
    };
    let port = listen.rsplit(':').next().expect("port").to_owned();
    let ca = std::fs::read(certs.join("ca.crt")).expect("ca");
    let review = rollback().review("s-1");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (status, body) = rt.block_on(async {
        helm_guard::tls::install_provider();
        let client =
            helm_guard::demo::client::WebhookClient::new(&ca, &format!("https://localhost:{port}"))
                .expect("client");
        client
            .post_json("/validate", serde_json::to_vec(&review).expect("json"))
            .await
            .expect("request")
    });
    assert_eq!(status.as_u16(), 200);
    let v: Value = serde_json::from_slice(&body).expect("review");
    assert_eq!(
        v["response"]["allowed"], false,
        "default mode enforce denies the rollback"
    );

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let started = std::time::Instant::now();
    let status = child.wait().expect("wait");
    assert!(status.success(), "serve exits 0 after draining: {status:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let logs = rest.join("\n");
    assert!(logs.contains("shutting down"), "{logs}");
    assert!(!logs.contains(CANARY));
    // Logs parsers can trust: every line one JSON object, each key once at every level, no
    // colour codes; the denial left its structured line.
    for line in &rest {
        assert!(no_duplicate_keys(line), "duplicate key in {line}");
        assert!(!line.contains('\u{1b}'), "{line}");
    }
    let denial = rest
        .iter()
        .find(|l| l.contains("\"verdict\":\"denied\""))
        .unwrap_or_else(|| panic!("a log line for the denial: {logs}"));
    for key in ["uid", "namespace", "kind", "name", "operation", "actor"] {
        assert!(denial.contains(&format!("\"{key}\":")), "{key} in {denial}");
    }
}

/// Whether a JSON document has no object with a key twice (serde_json's `Value` would keep the
/// last one silently).
fn no_duplicate_keys(text: &str) -> bool {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
    struct Check;
    impl<'de> serde::Deserialize<'de> for Check {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(Check)
        }
    }
    impl<'de> Visitor<'de> for Check {
        type Value = Check;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Check, A::Error> {
            let mut seen = std::collections::HashSet::new();
            while let Some(k) = m.next_key::<String>()? {
                if !seen.insert(k.clone()) {
                    return Err(serde::de::Error::custom(format!("duplicate {k}")));
                }
                m.next_value::<Check>()?;
            }
            Ok(Check)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Check, A::Error> {
            while s.next_element::<Check>()?.is_some() {}
            Ok(Check)
        }
        fn visit_str<E>(self, _: &str) -> Result<Check, E> {
            Ok(Check)
        }
        fn visit_bool<E>(self, _: bool) -> Result<Check, E> {
            Ok(Check)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Check, E> {
            Ok(Check)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Check, E> {
            Ok(Check)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Check, E> {
            Ok(Check)
        }
        fn visit_unit<E>(self) -> Result<Check, E> {
            Ok(Check)
        }
    }
    let _ = IgnoredAny;
    serde_json::from_str::<Check>(text).is_ok()
}

/// The one-shot commands write no colour codes when stderr is not a terminal.
#[test]
fn review_logs_without_colour_codes_off_a_terminal() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_releases(dir.path());
    let out = bin()
        .args(["review", "--mode", "enforce", "--releases"])
        .arg(dir.path())
        .arg(dir.path().join("no-such-request.json"))
        .env("RUST_LOG", "trace")
        .stdin(Stdio::null())
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.is_empty());
    assert!(!err.contains('\u{1b}'), "{err}");
    assert!(no_duplicate_keys(r#"{"a":{"b":1,"c":[{"d":1}]}}"#));
    assert!(!no_duplicate_keys(r#"{"a":{"b":1,"b":2}}"#));
}

/// A `serve` process on 127.0.0.1 with the release files of [`write_releases`] and its own
/// certificates; its JSON log lines are collected by a thread (so that a busy server never
/// blocks on a full pipe).
struct Served {
    child: std::process::Child,
    port: u16,
    admin: std::net::SocketAddr,
    ca: Vec<u8>,
    logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    reader: std::thread::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

fn serve_in_background(extra: &[&str]) -> Served {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().expect("tempdir");
    write_releases(dir.path());
    let certs = dir.path().join("certs");
    let out = run(
        bin()
            .args(["certs", "--service", "localhost", "--namespace", "x"])
            .arg("--out-dir")
            .arg(&certs),
        None,
    );
    assert_eq!(out.status.code(), Some(0));
    let mut child = bin()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args(["--default-mode", "enforce"])
        .args(extra)
        .arg("--tls-cert")
        .arg(certs.join("tls.crt"))
        .arg("--tls-key")
        .arg(certs.join("tls.key"))
        .arg("--releases")
        .arg(dir.path().join("secrets.json"))
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn serve");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let (listen, admin) = loop {
        let line = lines
            .next()
            .expect("serve logged before exiting")
            .expect("utf-8 log line");
        let v: Value = serde_json::from_str(&line).expect("JSON log line");
        if v["message"] == "serving" {
            let admin = v["admin"].as_str().expect("admin");
            let admin = admin.trim_start_matches("Some(").trim_end_matches(')');
            break (
                v["listen"].as_str().expect("listen").to_owned(),
                admin.parse().expect("admin address"),
            );
        }
    };
    let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let reader = {
        let logs = logs.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                logs.lock().expect("logs").push(line);
            }
        })
    };
    Served {
        child,
        port: listen
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port"),
        admin,
        ca: std::fs::read(certs.join("ca.crt")).expect("ca"),
        logs,
        reader,
        _dir: dir,
    }
}

/// What one pooled client saw.
#[derive(Debug, Default)]
struct PoolStats {
    ok: usize,
    failed: usize,
    /// Connections opened.
    connections: usize,
    /// Requests answered on the first connection (reuse before the shutdown).
    first_connection: usize,
    /// Responses that closed their connection (HTTP/1 `Connection: close`), HTTP/2 GOAWAY
    /// seen (a connection that takes no new request, or refuses one unsent).
    told_to_go: usize,
    /// Requests answered after the first such response.
    after_told: usize,
    /// Requests that never left the client (connection already closing): resent, as Go's
    /// transport resends a request it has not written.
    resent: usize,
    /// The connection refused or reset when the grace period was over: the listeners had
    /// closed, as they should then. The client stops there.
    shut_out: Option<String>,
    errors: Vec<String>,
}

type Body = http_body_util::Full<axum::body::Bytes>;

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Body>),
    H2(hyper::client::conn::http2::SendRequest<Body>),
}

async fn open(
    port: u16,
    tls: std::sync::Arc<rustls::ClientConfig>,
    h2: bool,
) -> Result<Sender, String> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    assert_eq!(
        stream.get_ref().1.alpn_protocol() == Some(b"h2"),
        h2,
        "ALPN picks the protocol"
    );
    let io = hyper_util::rt::TokioIo::new(stream);
    if h2 {
        let (sender, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .map_err(|e| format!("h2 handshake: {e}"))?;
        tokio::spawn(conn);
        Ok(Sender::H2(sender))
    } else {
        let (sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| format!("h1 handshake: {e}"))?;
        tokio::spawn(conn);
        Ok(Sender::H1(sender))
    }
}

/// A client that behaves like the API server's connection pool: one connection reused for
/// every request, a new one only after the server said it closes (or had closed it). Runs
/// until SIGTERM was sent (`grace_ends` is set) and, after that, it has been told to go and
/// been answered `after` more times on new connections — or until a new connection is refused
/// when the grace period is over.
///
/// `grace_ends` is when the server's grace period ends at the earliest: the moment before the
/// signal was sent, plus the grace period. The listeners close at or after it, so a refused
/// connection seen before it is a server that stopped accepting early: a failure.
async fn pooled_client(
    port: u16,
    tls: std::sync::Arc<rustls::ClientConfig>,
    h2: bool,
    review: axum::body::Bytes,
    total: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    grace_ends: std::sync::Arc<std::sync::OnceLock<std::time::Instant>>,
    after: usize,
) -> PoolStats {
    use http_body_util::BodyExt as _;
    use std::sync::atomic::Ordering;
    let mut s = PoolStats::default();
    let mut sender: Option<Sender> = None;
    while !(grace_ends.get().is_some() && s.told_to_go > 0 && s.after_told >= after) {
        if s.failed > 0 && s.errors.len() > 3 {
            break;
        }
        let conn = match &mut sender {
            Some(c) => c,
            None => match open(port, tls.clone(), h2).await {
                Ok(c) => {
                    s.connections += 1;
                    sender.insert(c)
                }
                Err(e)
                    if grace_ends
                        .get()
                        .is_some_and(|t| std::time::Instant::now() >= *t) =>
                {
                    s.shut_out = Some(e);
                    break;
                }
                Err(e) => {
                    s.failed += 1;
                    s.errors.push(e);
                    continue;
                }
            },
        };
        let request = hyper::Request::post("/validate/enforce")
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Body::new(review.clone()))
            .expect("request");
        let (answer, closes) = match conn {
            Sender::H1(c) => {
                if c.ready().await.is_err() {
                    sender = None;
                    continue;
                }
                match c.try_send_request(request).await {
                    Ok(res) => {
                        let closes = res
                            .headers()
                            .get("connection")
                            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
                        (Ok(res), closes)
                    }
                    Err(e) => (Err(e), true),
                }
            }
            Sender::H2(c) => {
                if c.ready().await.is_err() {
                    // GOAWAY received: the pool opens a new connection.
                    s.told_to_go += 1;
                    sender = None;
                    continue;
                }
                match c.try_send_request(request).await {
                    Ok(res) => (Ok(res), false),
                    Err(e) => (Err(e), true),
                }
            }
        };
        match answer {
            Ok(res) => {
                let status = res.status();
                let body = res.into_body().collect().await.map(|b| b.to_bytes());
                match body {
                    Ok(b) if status == 200 && b.windows(6).any(|w| w == b"pool-1") => {
                        s.ok += 1;
                        total.fetch_add(1, Ordering::AcqRel);
                        if s.connections == 1 {
                            s.first_connection += 1;
                        }
                        if s.told_to_go > 0 {
                            s.after_told += 1;
                        }
                    }
                    other => {
                        s.failed += 1;
                        s.errors.push(format!("{status}: {other:?}"));
                    }
                }
                if closes {
                    s.told_to_go += 1;
                    sender = None;
                }
            }
            Err(e) if e.message().is_some() => {
                // HTTP/2: the connection closed after GOAWAY before it took the request, which
                // hyper hands back unsent; `ready()` does not always tell first.
                if h2 {
                    s.told_to_go += 1;
                }
                s.resent += 1;
                sender = None;
            }
            Err(e) => {
                s.failed += 1;
                s.errors.push(e.into_error().to_string());
                sender = None;
            }
        }
    }
    s
}

#[test]
fn sigterm_under_load_loses_no_request() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, OnceLock};
    use std::time::{Duration, Instant};
    const H1_CLIENTS: usize = 16;
    const H2_CLIENTS: usize = 4;
    const AFTER: usize = 5;
    // The default grace period (5 s) is what carries the clients over (passed here to know
    // when it ends); the drain limit is the default.
    const GRACE: Duration = Duration::from_secs(5);
    let mut served = serve_in_background(&["--shutdown-grace-seconds", "5"]);
    let review =
        axum::body::Bytes::from(serde_json::to_vec(&rollback().review("pool-1")).expect("json"));
    helm_guard::tls::install_provider();
    let base = helm_guard::tls::client_config(&served.ca).expect("CA");
    let alpn = |proto: &[u8]| {
        let mut c = (*base).clone();
        c.alpn_protocols = vec![proto.to_vec()];
        Arc::new(c)
    };
    let (h1_tls, h2_tls) = (alpn(b"http/1.1"), alpn(b"h2"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let total = Arc::new(AtomicUsize::new(0));
    let grace_ends = Arc::new(OnceLock::new());
    let port = served.port;
    let (stats, ready_while_draining) = rt.block_on(async {
        let clients: Vec<_> = (0..H1_CLIENTS + H2_CLIENTS)
            .map(|i| {
                let h2 = i >= H1_CLIENTS;
                tokio::spawn(pooled_client(
                    port,
                    if h2 { h2_tls.clone() } else { h1_tls.clone() },
                    h2,
                    review.clone(),
                    total.clone(),
                    grace_ends.clone(),
                    AFTER,
                ))
            })
            .collect();
        // Busy, kept-alive connections: then SIGTERM while requests are in flight.
        let busy = (H1_CLIENTS + H2_CLIENTS) * 20;
        tokio::time::timeout(Duration::from_secs(60), async {
            while total.load(Ordering::Acquire) < busy {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("clients get going (safety net)");
        let signalled = Instant::now();
        let killed = Command::new("kill")
            .args(["-TERM", &served.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(killed.success());
        let at_term = total.load(Ordering::Acquire);
        grace_ends.set(signalled + GRACE).expect("set once");
        // /readyz turns 503 on both listeners while the clients keep going.
        let admin = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let answer = plain_get(served.admin, "/readyz").await;
                if !answer.starts_with("HTTP/1.1 200") {
                    break answer;
                }
            }
        })
        .await
        .expect("readyz changes (safety net)");
        let client = helm_guard::demo::client::WebhookClient::new(
            &served.ca,
            &format!("https://localhost:{port}"),
        )
        .expect("client");
        let (tls_status, _) = client.get("/readyz").await.expect("readyz over TLS");
        let mut stats = Vec::new();
        for c in clients {
            stats.push(
                tokio::time::timeout(Duration::from_secs(60), c)
                    .await
                    .expect("clients finish (safety net)")
                    .expect("client task"),
            );
        }
        eprintln!(
            "requests before SIGTERM: {at_term}; after: {}",
            total.load(Ordering::Acquire) - at_term
        );
        (stats, (admin, tls_status.as_u16()))
    });
    let status = served.child.wait().expect("wait");
    let _ = served.reader.join();
    let logs = served.logs.lock().expect("logs").join("\n");
    assert!(status.success(), "serve exits 0 after draining: {status:?}");
    let (admin, tls_status) = ready_while_draining;
    assert!(admin.starts_with("HTTP/1.1 503"), "{admin}");
    assert_eq!(tls_status, 503);
    for (i, s) in stats.iter().enumerate() {
        eprintln!("client {i}: {s:?}");
    }
    for (i, s) in stats.iter().enumerate() {
        assert_eq!(s.failed, 0, "client {i}: {s:?}");
        assert!(
            s.first_connection >= 2,
            "client {i} reused its connection: {s:?}"
        );
        assert!(s.told_to_go > 0, "client {i} told to go: {s:?}");
        // Only a machine too slow to finish within the grace period is shut out before
        // `AFTER` answers on new connections; every connection it opened until then was
        // answered.
        assert!(
            s.after_told >= AFTER || s.shut_out.is_some(),
            "client {i}: {s:?}"
        );
        assert!(
            s.connections >= 2 || s.shut_out.is_some(),
            "client {i} reconnected: {s:?}"
        );
    }
    let ok: usize = stats.iter().map(|s| s.ok).sum();
    let resent: usize = stats.iter().map(|s| s.resent).sum();
    let shut_out = stats.iter().filter(|s| s.shut_out.is_some()).count();
    eprintln!(
        "answered: {ok}, failed: 0, resent unwritten: {resent}, \
         clients shut out after the grace period: {shut_out}"
    );
    assert!(logs.contains("drained: every connection closed"), "{logs}");
}

async fn plain_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr)
        .await
        .expect("admin port");
    let req = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    conn.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    conn.read_to_string(&mut out).await.expect("read");
    out
}

/// An occupied admin port is said once, with its address: no cause repeated.
#[test]
fn an_occupied_port_is_said_once() {
    helm_guard::tls::install_provider();
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = helm_guard::tls::generate(&["127.0.0.1".to_owned()], 1).expect("certs");
    std::fs::write(dir.path().join("tls.crt"), &bundle.cert_pem).expect("write");
    std::fs::write(dir.path().join("tls.key"), &bundle.key_pem).expect("write");
    std::fs::write(dir.path().join("rel.json"), r#"{"kind":"List","items":[]}"#).expect("write");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let out = run(
        bin()
            .args(["serve", "--tls-cert", "tls.crt", "--tls-key", "tls.key"])
            .args(["--listen", "127.0.0.1:0", "--releases", "rel.json"])
            .args(["--admin-listen", &format!("127.0.0.1:{port}")])
            .current_dir(dir.path()),
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.starts_with("helm-guard serve:"))
        .unwrap_or_default();
    assert!(line.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert_eq!(line.matches("in use").count(), 1, "{line}");
    drop(taken);
}

// === scan ===

const T_HELM: &str = "2026-11-26T10:00:00Z";
const T_SET: &str = "2026-11-27T08:00:00Z";

/// A `managedFields` entry owning the images of `containers` at the kind's pod-spec depth.
fn owns(manager: &str, time: &str, pod: bool, containers: &[&str]) -> Value {
    let mut list = serde_json::Map::new();
    for c in containers {
        list.insert(
            format!("k:{{\"name\":\"{c}\"}}"),
            json!({"f:image": {}, "f:name": {}}),
        );
    }
    let spec = json!({"f:containers": list});
    let fields = if pod {
        json!({"f:spec": spec})
    } else {
        json!({"f:spec": {"f:template": {"f:spec": spec}}})
    };
    json!({"manager": manager, "operation": "Update", "apiVersion": "apps/v1", "time": time,
           "fieldsType": "FieldsV1", "fieldsV1": fields})
}

fn containers(list: &[(&str, &str)]) -> Value {
    Value::Array(
        list.iter()
            .map(|(n, i)| json!({"name": n, "image": i, "env": [{"name": "X", "value": "y"}]}))
            .collect(),
    )
}

/// A StatefulSet `<ns>/db-postgresql` of release `<ns>/db`, as `kubectl get -o json` prints it.
fn statefulset(
    ns: &str,
    images: &[(&str, &str)],
    annotations: Value,
    managed: Vec<Value>,
) -> Value {
    let mut ann = json!({"meta.helm.sh/release-name": "db", "meta.helm.sh/release-namespace": ns});
    if let (Some(a), Some(extra)) = (ann.as_object_mut(), annotations.as_object()) {
        a.extend(extra.clone());
    }
    json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "db-postgresql", "namespace": ns, "annotations": ann,
                     "labels": {"app.kubernetes.io/managed-by": "Helm"}, "managedFields": managed},
        "spec": {"serviceName": "db-postgresql", "template": {"spec": {"containers": containers(images)}}},
        "status": {"replicas": 2}})
}

fn sts_pod(ns: &str, ordinal: u32, images: &[(&str, &str)], managed: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("db-postgresql-{ordinal}"), "namespace": ns,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db-postgresql",
                                 "uid": "u-1", "controller": true}],
            "managedFields": managed},
        "spec": {"containers": containers(images)}})
}

/// Three releases — `db/db` (deployed PG15), `legacy/db` (a carried `image.tag=11.22.0`
/// pin: stale), `ops/db` (deployed PG15) — plus one record that does not decode; and the
/// live objects: `db` drifted by `kubectl set image` with a container added by
/// `kubectl edit` and one Pod edited in place, `legacy` as rendered, `ops` drifted under
/// break-glass, and a Deployment no release renders.
fn write_scan_fixture(dir: &Path) -> (String, String) {
    let rel = dir.join("releases");
    let obj = dir.join("objects");
    std::fs::create_dir_all(&rel).expect("mkdir");
    std::fs::create_dir_all(&obj).expect("mkdir");
    std::fs::write(rel.join("db.json"), history().secrets_list().to_string()).expect("write");
    let mut legacy = History::install(
        "db",
        "legacy",
        &postgres_chart("12.0.0", "11.22.0"),
        json!({"image": {"tag": "11.22.0"}, "auth": {"postgresPassword": CANARY}}),
    );
    legacy.begin_upgrade(
        &postgres_chart("14.0.0", "15.4.0"),
        json!({}),
        UpgradeValues::Default,
    );
    legacy.complete();
    let ops = History::install(
        "db",
        "ops",
        &postgres_chart("14.0.0", "15.4.0"),
        json!({"auth": {"postgresPassword": CANARY}}),
    );
    let broken = json!({"apiVersion": "v1", "kind": "Secret", "type": "helm.sh/release.v1",
        "metadata": {"name": "sh.helm.release.v1.broken.v1", "namespace": "db",
                     "labels": {"owner": "helm", "name": "broken", "version": "1"}},
        "data": {"release": "bm90IGd6aXA="}});
    // Multi-document YAML (JSON documents are YAML) with a non-record ConfigMap between.
    let yaml = format!(
        "# kubectl get secrets -l owner=helm -A -o yaml\n{}\n---\n{}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: other\n---\n{}\n---\n{broken}\n",
        legacy.revisions[0].secret(),
        legacy.revisions[1].secret(),
        ops.revisions[0].secret(),
    );
    std::fs::write(rel.join("more.yaml"), yaml).expect("write");

    let db = statefulset(
        "db",
        &[
            ("postgresql", PG11),
            ("metrics", EXPORTER),
            ("debug", "busybox:1.36"),
        ],
        json!({"helm-guard.io/drift": json!([{"container": "postgresql", "chartImage": PG15,
            "liveImage": PG11, "manager": "kubectl-set", "user": "alice@example.com",
            "time": T_SET}]).to_string()}),
        vec![
            owns("helm", T_HELM, false, &["postgresql", "metrics"]),
            owns("kubectl-set", T_SET, false, &["postgresql"]),
            owns("kubectl-edit", "2026-11-27T09:00:00Z", false, &["debug"]),
        ],
    );
    let pod0 = sts_pod(
        "db",
        0,
        &[
            ("postgresql", PG11),
            ("metrics", EXPORTER),
            ("debug", "busybox:1.36"),
        ],
        vec![owns(
            "kube-controller-manager",
            T_SET,
            true,
            &["postgresql", "metrics", "debug"],
        )],
    );
    let pod1 = sts_pod(
        "db",
        1,
        &[
            ("postgresql", "docker.io/bitnami/postgresql:9.6"),
            ("metrics", EXPORTER),
        ],
        vec![owns(
            "kubectl-patch",
            "2026-11-27T10:00:00Z",
            true,
            &["postgresql"],
        )],
    );
    // The StatefulSet again, alone (an overlapping `kubectl get`): judged once.
    std::fs::write(obj.join("overlap.json"), db.to_string()).expect("write");
    let list = json!({"apiVersion": "v1", "kind": "List", "items": [db, pod0, pod1]});
    std::fs::write(obj.join("db.json"), list.to_string()).expect("write");
    let legacy_sts = statefulset(
        "legacy",
        &[("postgresql", PG11), ("metrics", EXPORTER)],
        json!({}),
        vec![owns("helm", T_HELM, false, &["postgresql", "metrics"])],
    );
    let ops_sts = statefulset(
        "ops",
        &[("postgresql", PG11), ("metrics", EXPORTER)],
        json!({"helm-guard.io/allow-drift": "INC-4711 rollback"}),
        vec![owns("kubectl-set", T_SET, false, &["postgresql"])],
    );
    std::fs::write(
        obj.join("more.yaml"),
        format!("# two StatefulSets\n{legacy_sts}\n---\n{ops_sts}\n"),
    )
    .expect("write");
    let unrelated = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "db"},
        "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.0"}]}}}});
    std::fs::write(obj.join("web.json"), unrelated.to_string()).expect("write");
    (
        rel.to_str().expect("utf-8").to_owned(),
        obj.to_str().expect("utf-8").to_owned(),
    )
}

fn scan(rel: &str, obj: &str, extra: &[&str]) -> Output {
    run(
        bin()
            .args(["scan", "--releases", rel, "--objects", obj])
            .args(extra),
        None,
    )
}

#[test]
fn scan_finds_every_kind_of_finding() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (rel, obj) = write_scan_fixture(dir.path());

    let out = scan(&rel, &obj, &["--output", "json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("Secret db/sh.helm.release.v1.broken.v1"),
        "the broken record is named: {stderr}"
    );
    let v = stdout_json(&out);
    assert_eq!(v["apiVersion"], "helm-guard.io/v1alpha1");
    assert_eq!(v["kind"], "ScanResult");
    assert_eq!(
        v["summary"],
        json!({"workloads": 5, "releases": 3, "driftedContainers": 3, "breakGlass": 1,
               "staleImageValues": 1, "skippedRecords": 1})
    );
    let findings = v["findings"].as_array().expect("findings");
    let by = |ns: &str, kind: &str, container: &str| {
        findings
            .iter()
            .find(|f| f["namespace"] == ns && f["kind"] == kind && f["container"] == container)
            .unwrap_or_else(|| panic!("{ns} {kind} {container} missing: {findings:#?}"))
    };
    assert_eq!(
        by("db", "StatefulSet", "postgresql"),
        &json!({"type": "drift", "namespace": "db", "kind": "StatefulSet", "name": "db-postgresql",
            "container": "postgresql", "init": false, "liveImage": PG11, "chartImage": PG15,
            "release": "db", "releaseNamespace": "db", "revision": 2, "since": T_SET,
            "manager": "kubectl-set", "user": "alice@example.com", "reason": null})
    );
    let added = by("db", "StatefulSet", "debug");
    assert_eq!(
        (&added["type"], &added["chartImage"], &added["manager"]),
        (&json!("added"), &Value::Null, &json!("kubectl-edit"))
    );
    let pod = by("db", "Pod", "postgresql");
    assert_eq!(
        (&pod["type"], &pod["name"], &pod["manager"]),
        (
            &json!("drift"),
            &json!("db-postgresql-1"),
            &json!("kubectl-patch")
        )
    );
    let glass = by("ops", "StatefulSet", "postgresql");
    assert_eq!(
        (&glass["type"], &glass["reason"]),
        (&json!("break-glass"), &json!("INC-4711 rollback"))
    );
    assert_eq!(findings.len(), 4, "{findings:#?}");
    let stale = &v["staleValues"][0];
    assert_eq!(
        (
            &stale["namespace"],
            &stale["path"],
            &stale["value"],
            &stale["since"]
        ),
        (
            &json!("legacy"),
            &json!("image.tag"),
            &json!("11.22.0"),
            &json!(1)
        )
    );
    assert_eq!(stale["chartDefault"], "15.4.0");
    assert_eq!(
        stale["drop"],
        "helm upgrade db <chart> --reset-then-reuse-values --set image.tag=null"
    );

    // The table: one row per finding, the stale values, the summary line.
    let out = scan(&rel, &obj, &[]);
    assert_eq!(out.status.code(), Some(1));
    let table = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "NAMESPACE",
        "statefulset/db-postgresql",
        "pod/db-postgresql-1",
        "(not rendered)",
        "db/db@2",
        "kubectl-set (alice@example.com)",
        "break-glass: INC-4711 rollback",
        "image.tag",
        "--reset-then-reuse-values --set image.tag=null",
        "5 workloads of 3 releases checked: 3 drifted containers, 1 stale image values",
    ] {
        assert!(table.contains(needle), "{needle} missing:\n{table}");
    }
    assert!(!table.contains("pod/db-postgresql-0"), "{table}");
    assert!(!table.contains("web"), "not Helm's: {table}");
}

#[test]
fn scan_exit_codes_follow_fail_on_and_namespaces() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (rel, obj) = write_scan_fixture(dir.path());
    let cases: &[(&[&str], i32)] = &[
        (&[], 1),
        (&["--fail-on", "never"], 0),
        (&["--fail-on", "stale"], 1),
        (&["--fail-on", "any"], 1),
        (&["-n", "db", "--fail-on", "stale"], 0),
        (&["-n", "legacy"], 0),
        (&["-n", "legacy", "--fail-on", "stale"], 1),
        (&["-n", "legacy", "-n", "db", "--fail-on", "stale"], 1),
        // Break-glass is allowed drift: reported, not a failure.
        (&["-n", "ops"], 0),
        (&["-n", "ops", "-A"], 1),
    ];
    for (args, want) in cases {
        let out = scan(&rel, &obj, args);
        assert_eq!(
            out.status.code(),
            Some(*want),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let summary = String::from_utf8_lossy(&scan(&rel, &obj, &["-n", "ops"]).stdout).to_string();
    assert!(
        summary.contains("1 workloads of 1 releases checked: 0 drifted containers, 0 stale image values, 1 under break-glass"),
        "{summary}"
    );

    // Bad input: exit 2, the reason on stderr, nothing on stdout.
    let garbage = dir.path().join("garbage.yaml");
    std::fs::write(&garbage, "a: [").expect("write");
    let missing = dir.path().join("missing.json");
    for (r, o) in [
        (garbage.to_str().expect("utf-8"), obj.as_str()),
        (rel.as_str(), missing.to_str().expect("utf-8")),
    ] {
        let out = scan(r, o, &[]);
        assert_eq!(out.status.code(), Some(2));
        assert!(out.stdout.is_empty());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with("helm-guard scan: "), "{stderr}");
    }
    let out = run(
        bin().args(["scan", "--output", "xml", "--objects", &obj]),
        None,
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn scan_openreports_follow_the_report_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (rel, obj) = write_scan_fixture(dir.path());
    let out = scan(&rel, &obj, &["--output", "openreports"]);
    assert_eq!(out.status.code(), Some(1));
    let list = stdout_json(&out);
    assert_eq!(
        (&list["apiVersion"], &list["kind"]),
        (&json!("v1"), &json!("List"))
    );
    let reports = list["items"].as_array().expect("items");
    let namespaces: Vec<&str> = reports
        .iter()
        .map(|r| r["metadata"]["namespace"].as_str().expect("namespace"))
        .collect();
    assert_eq!(namespaces, ["db", "legacy", "ops"]);
    let results_enum = ["pass", "fail", "warn", "error", "skip"];
    let mut rules = Vec::new();
    for r in reports {
        // Report: TypeMeta, ObjectMeta, source, summary, results (reports-api v1alpha1).
        assert_eq!(r["apiVersion"], "openreports.io/v1alpha1");
        assert_eq!(r["kind"], "Report");
        assert_eq!(r["metadata"]["name"], "helm-guard");
        assert_eq!(r["source"], "helm-guard");
        let results = r["results"].as_array().expect("results");
        for key in results_enum {
            let n = results.iter().filter(|x| x["result"] == key).count();
            assert_eq!(r["summary"][key], json!(n), "summary.{key}");
        }
        for x in results {
            // `policy` is the one required field of a result.
            assert_eq!(x["policy"], "helm-guard");
            assert_eq!(x["source"], "helm-guard");
            assert!(results_enum.contains(&x["result"].as_str().expect("result")));
            assert!(
                ["critical", "high", "medium", "low", "info"]
                    .contains(&x["severity"].as_str().expect("severity"))
            );
            assert!(x["scored"].is_boolean());
            assert!(x["message"].is_string());
            assert!(x["timestamp"]["seconds"].is_u64() && x["timestamp"]["nanos"].is_u64());
            let props = x["properties"].as_object().expect("properties");
            assert!(
                props.values().all(Value::is_string),
                "a string map: {props:?}"
            );
            for res in x["resources"].as_array().into_iter().flatten() {
                for k in ["apiVersion", "kind", "namespace", "name"] {
                    assert!(res[k].is_string(), "resources[].{k}");
                }
            }
            let rule = x["rule"].as_str().expect("rule");
            let want_result = match rule {
                "image-drift" => "fail",
                "stale-image-value" => "warn",
                "break-glass" => "skip",
                other => panic!("unexpected rule {other}"),
            };
            assert_eq!(x["result"], want_result);
            if rule != "stale-image-value" {
                for k in [
                    "release",
                    "revision",
                    "container",
                    "liveImage",
                    "manager",
                    "since",
                ] {
                    assert!(props.contains_key(k), "{rule}: {k} missing in {props:?}");
                }
                assert_eq!(x["resources"][0]["namespace"], r["metadata"]["namespace"]);
            }
            rules.push((
                r["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                rule.to_owned(),
            ));
        }
    }
    rules.sort();
    let want: Vec<(String, String)> = [
        ("db", "image-drift"),
        ("db", "image-drift"),
        ("db", "image-drift"),
        ("legacy", "stale-image-value"),
        ("ops", "break-glass"),
    ]
    .iter()
    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
    .collect();
    assert_eq!(rules, want);
    let glass = &reports[2]["results"][0];
    assert_eq!(glass["properties"]["reason"], "INC-4711 rollback");
    assert!(
        glass["message"]
            .as_str()
            .unwrap_or_default()
            .contains("INC-4711")
    );
    assert_eq!(
        reports[0]["results"]
            .as_array()
            .and_then(|r| r
                .iter()
                .find(|x| x["properties"]["container"] == "postgresql"
                    && x["resources"][0]["kind"] == "StatefulSet"))
            .map(|x| x["properties"]["user"].clone()),
        Some(json!("alice@example.com"))
    );
}

#[test]
fn scan_never_prints_release_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (rel, obj) = write_scan_fixture(dir.path());
    // The canary is in every release's values, and the manifests render it into a Secret.
    for format in ["table", "json", "openreports"] {
        for extra in [&[][..], &["-n", "legacy"][..], &["--fail-on", "any"][..]] {
            let out = scan(&rel, &obj, &[&["--output", format][..], extra].concat());
            for (stream, text) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
                let text = String::from_utf8_lossy(text);
                assert!(
                    !text.contains(CANARY),
                    "{format} {extra:?} {stream}: {text}"
                );
                let encoded = base64_of(CANARY);
                assert!(
                    !text.contains(&encoded),
                    "{format} {stream}: base64 of the canary"
                );
            }
        }
    }
}

fn base64_of(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A packaged chart: `<name>/Chart.yaml` and `<name>/values.yaml`.
fn chart_tgz(path: &Path, version: &str, values: &str) {
    use flate2::Compression;
    use flate2::write::GzEncoder;
    let chart = format!("apiVersion: v2\nname: postgresql\nversion: {version}\n");
    let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    for (name, body) in [
        ("postgresql/Chart.yaml", chart.as_str()),
        ("postgresql/values.yaml", values),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, body.as_bytes())
            .expect("append");
    }
    let bytes = b.into_inner().expect("tar").finish().expect("gzip");
    std::fs::write(path, bytes).expect("write");
}

#[test]
fn pins_against_the_chart_about_to_be_installed() {
    let dir = tempfile::tempdir().expect("tempdir");
    // db/db persists image.tag=15.4.0 (set on the command line in revision 2).
    std::fs::write(
        dir.path().join("db.json"),
        history().secrets_list().to_string(),
    )
    .expect("write");
    let releases = dir.path().join("db.json");
    let releases = releases.to_str().expect("utf-8");
    let values = |tag: &str| {
        format!(
            "image:\n  registry: docker.io\n  repository: bitnami/postgresql\n  tag: {tag}\nauth:\n  postgresPassword: CANARY-in-chart\n"
        )
    };
    // A chart directory whose default moved on: the persisted tag would override it.
    let chart_dir = dir.path().join("postgresql");
    std::fs::create_dir_all(&chart_dir).expect("mkdir");
    std::fs::write(
        chart_dir.join("Chart.yaml"),
        "apiVersion: v2\nname: postgresql\nversion: 16.0.0\n",
    )
    .expect("write");
    std::fs::write(chart_dir.join("values.yaml"), values("16.1.0")).expect("write");
    let out = run(
        bin().args([
            "pins",
            "--releases",
            releases,
            "--chart",
            chart_dir.to_str().expect("utf-8"),
        ]),
        None,
    );
    assert_eq!(out.status.code(), Some(0));
    let table = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "db/db",
        "image.tag",
        "15.4.0",
        "16.1.0",
        "--reset-then-reuse-values --set image.tag=null",
    ] {
        assert!(table.contains(needle), "{needle} missing:\n{table}");
    }

    // A packaged chart whose default is the persisted value: nothing would be overridden.
    let tgz = dir.path().join("postgresql-16.0.0.tgz");
    chart_tgz(&tgz, "16.0.0", &values("15.4.0"));
    let out = run(
        bin().args([
            "pins",
            "--releases",
            releases,
            "--chart",
            tgz.to_str().expect("utf-8"),
            "--output",
            "json",
        ]),
        None,
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout_json(&out), json!([]));
    let out = run(
        bin().args([
            "pins",
            "--releases",
            releases,
            "--chart",
            tgz.to_str().expect("utf-8"),
        ]),
        None,
    );
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("no persisted image value overrides the defaults of chart postgresql-16.0.0")
    );

    // Not a chart: exit 2, named.
    let bad = dir.path().join("bad.tgz");
    std::fs::write(&bad, "CANARY-in-chart").expect("write");
    let out = run(
        bin().args([
            "pins",
            "--releases",
            releases,
            "--chart",
            bad.to_str().expect("utf-8"),
        ]),
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.tgz"), "{stderr}");
    for text in [table.to_string(), stderr.to_string()] {
        assert!(!text.contains("CANARY"), "{text}");
    }
}

#[test]
fn scan_without_a_reachable_cluster_is_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let no_config = run(
        bin()
            .args(["scan", "-A"])
            .env("KUBECONFIG", dir.path().join("no-such-kubeconfig"))
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("HOME", dir.path())
            .current_dir(dir.path()),
        None,
    );
    assert_eq!(no_config.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_config.stderr).contains("Kubernetes API"));

    // A kubeconfig naming a closed loopback port: the first list fails, nothing on stdout.
    let kubeconfig = dir.path().join("config");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:9\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\n    namespace: shop\nusers:\n- name: u\n  user: {}\n",
    )
    .expect("write");
    let out = run(
        bin()
            .args(["scan"])
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .current_dir(dir.path()),
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(out.stdout.is_empty());
    // The context's namespace, as kubectl would use it.
    assert!(
        stderr.contains("GET /api/v1/namespaces/shop/secrets"),
        "{stderr}"
    );
}
