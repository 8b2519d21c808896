//! The deploy kit agrees with the code. Every overlay under `deploy/overlays/` is rendered with
//! `kubectl kustomize` (what `kubectl apply -k` would send) and read back:
//!
//! - Service 443 → container port ↔ `--listen`; probe port ↔ `--admin-listen`;
//! - the container's args and `HELM_GUARD_*` env parse with the real CLI as `serve`;
//! - webhook paths are routes of the server, probe paths routes of the admin listener;
//! - every webhook entry excludes the system namespaces and helm-guard's own, fails open
//!   (except the one entry `enforce-fail-closed` closes), answers within 3 s;
//! - the ClusterRole grants exactly what the code calls; the pod runs restricted;
//! - `caBundle` is never a placeholder: absent from the kit, injected by the self-signed
//!   template or by cert-manager.
//!
//! Needs `kubectl` on PATH (it bundles kustomize).

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use clap::{CommandFactory, FromArgMatches};
use serde_json::{Value, json};

use helm_guard::cli::{Args, Command as Cmd, ServeArgs};
use helm_guard::server::{ADMIN_ROUTES, ROUTES};
use helm_guard::tls;

/// Overlays the docs promise; any other directory under deploy/overlays is checked too.
const OVERLAYS: [&str; 6] = [
    "cert-manager",
    "cluster-wide",
    "enforce-fail-closed",
    "monitoring",
    "opt-in",
    "reports",
];
/// Namespaces no webhook entry may ever match (helm-guard's own: no self-deadlock).
const EXCLUDED: [&str; 4] = [
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "helm-guard",
];
/// The one entry `enforce-fail-closed` turns to `failurePolicy: Fail`.
const FAIL_CLOSED: (&str, &str, &str) = (
    "enforce-fail-closed",
    "ValidatingWebhookConfiguration",
    "workloads.enforce.helm-guard.io",
);
const WEBHOOK_KINDS: [&str; 2] = [
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
];
const MODE_LABEL: &str = "helm-guard.io/mode";

// === rendering ===

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `kubectl kustomize <dir>`, with a clear failure when kubectl is missing.
fn kustomize(dir: &Path) -> String {
    let out = match Command::new("kubectl").arg("kustomize").arg(dir).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "kubectl not found on PATH: this test renders the deploy kit with `kubectl kustomize` \
             (install kubectl >= 1.27)"
        ),
        Err(e) => panic!("running kubectl kustomize {}: {e}", dir.display()),
    };
    assert!(
        out.status.success(),
        "kubectl kustomize {} failed ({}):\n{}",
        dir.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("kustomize output is UTF-8")
}

fn parse_docs(label: &str, yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(yaml)
        .unwrap_or_else(|e| panic!("{label}: rendered YAML does not parse: {e}"))
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

/// One rendered overlay.
struct Overlay {
    name: String,
    docs: Vec<Value>,
}

/// Every overlay, rendered once per test process.
fn overlays() -> &'static [Overlay] {
    static RENDERED: OnceLock<Vec<Overlay>> = OnceLock::new();
    RENDERED.get_or_init(|| {
        let dir = repo().join("deploy/overlays");
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("directory entry"))
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for want in OVERLAYS {
            assert!(
                names.iter().any(|n| n == want),
                "overlay {want} missing under {}",
                dir.display()
            );
        }
        names
            .into_iter()
            .map(|name| {
                let docs = parse_docs(&name, &kustomize(&dir.join(&name)));
                Overlay { name, docs }
            })
            .collect()
    })
}

// === reading the objects ===

fn str_at<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().expect("a list of strings").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

impl Overlay {
    fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.docs
            .iter()
            .filter(|d| str_at(d, "/kind") == Some(kind))
            .collect()
    }

    fn one(&self, kind: &str) -> &Value {
        match self.of_kind(kind).as_slice() {
            [one] => one,
            many => panic!("{}: {} {kind} objects, want 1", self.name, many.len()),
        }
    }

    fn deployment(&self) -> &Value {
        self.one("Deployment")
    }

    fn pod_spec(&self) -> &Value {
        self.deployment()
            .pointer("/spec/template/spec")
            .unwrap_or_else(|| panic!("{}: Deployment without a pod spec", self.name))
    }

    /// The helm-guard container (the only one, or the one named helm-guard).
    fn container(&self) -> &Value {
        let containers = self.pod_spec()["containers"]
            .as_array()
            .expect("containers");
        match containers.as_slice() {
            [one] => one,
            many => many
                .iter()
                .find(|c| c["name"] == "helm-guard")
                .unwrap_or_else(|| panic!("{}: no container named helm-guard", self.name)),
        }
    }

    /// `containerPort` of a port given by name or number, as a Service or probe gives it.
    fn container_port(&self, port: &Value) -> u16 {
        let ports = self.container()["ports"].as_array().cloned();
        let found = ports.into_iter().flatten().find(|p| match port {
            Value::String(name) => p["name"] == name.as_str(),
            number => &p["containerPort"] == number,
        });
        let found = found
            .unwrap_or_else(|| panic!("{}: port {port} names no port of the container", self.name));
        port_number(&found["containerPort"])
    }

    fn service(&self) -> &Value {
        self.one("Service")
    }

    /// The Service port object whose `port` is `number`.
    fn service_port(&self, number: u16) -> &Value {
        self.service()["spec"]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| port_number(&p["port"]) == number)
            .unwrap_or_else(|| panic!("{}: Service has no port {number}", self.name))
    }

    /// `(configuration kind, entry)` for every webhook entry.
    fn webhooks(&self) -> Vec<(&'static str, &Value)> {
        let mut out = Vec::new();
        for kind in WEBHOOK_KINDS {
            for config in self.of_kind(kind) {
                for hook in config["webhooks"].as_array().into_iter().flatten() {
                    out.push((kind, hook));
                }
            }
        }
        assert!(!out.is_empty(), "{}: no webhook entries", self.name);
        out
    }
}

fn port_number(v: &Value) -> u16 {
    v.as_u64()
        .and_then(|n| u16::try_from(n).ok())
        .unwrap_or_else(|| panic!("not a port number: {v}"))
}

fn hook_name(hook: &Value) -> &str {
    str_at(hook, "/name").unwrap_or("<unnamed>")
}

// === the real CLI ===

/// The container's command line as clap sees it, with each `HELM_GUARD_*` variable turned into
/// the flag clap would read it for (found through clap's own `env` attributes, not by guessing
/// names) and env lookups switched off, so the test reads nothing from its own environment.
fn container_argv(o: &Overlay) -> Vec<String> {
    let c = o.container();
    assert!(
        c.get("command").is_none(),
        "{}: `command` overrides the image ENTRYPOINT (/helm-guard); use args",
        o.name
    );
    let args = strings(c.get("args"));
    let cli = Args::command();
    let serve = cli
        .find_subcommand("serve")
        .expect("serve subcommand")
        .clone();
    let mut argv: Vec<String> = std::iter::once("helm-guard".to_owned())
        .chain(args.iter().cloned())
        .collect();
    for env in c["env"].as_array().into_iter().flatten() {
        let name = str_at(env, "/name").expect("env name");
        if !name.starts_with("HELM_GUARD_") {
            assert_eq!(
                name, "RUST_LOG",
                "{}: env {name} is read by nothing",
                o.name
            );
            continue;
        }
        // A value from the downward API is known only in the pod: parse a stand-in.
        let value = str_at(env, "/value")
            .or_else(|| str_at(env, "/valueFrom/fieldRef/fieldPath").map(|_| "from-the-pod"))
            .unwrap_or_else(|| panic!("{}: env {name} has neither a value nor a fieldRef", o.name));
        let arg = serve
            .get_arguments()
            .find(|a| a.get_env().is_some_and(|e| e == name))
            .unwrap_or_else(|| {
                panic!(
                    "{}: env {name} is read by no flag of `helm-guard serve`",
                    o.name
                )
            });
        let long = arg.get_long().expect("env flags have a long name");
        let flag = format!("--{long}");
        assert!(
            !args
                .iter()
                .any(|a| a == &flag || a.starts_with(&format!("{flag}="))),
            "{}: env {name} is ignored: {flag} is also on the command line (the flag wins)",
            o.name
        );
        if arg.get_action().takes_values() {
            argv.push(format!("{flag}={value}"));
        } else if value == "true" {
            argv.push(flag);
        }
    }
    argv
}

fn serve_args(o: &Overlay) -> ServeArgs {
    let argv = container_argv(o);
    let cli = Args::command().mut_subcommands(|s| s.mut_args(|a| a.env(None::<&str>)));
    let matches = cli.try_get_matches_from(&argv).unwrap_or_else(|e| {
        panic!(
            "{}: the container command line does not parse: {argv:?}\n{e}",
            o.name
        )
    });
    let args = Args::from_arg_matches(&matches).expect("matches → Args");
    match args.command {
        Cmd::Serve(serve) => serve,
        other => panic!("{}: the container runs {other:?}, not serve", o.name),
    }
}

// === the checks ===

#[test]
fn every_overlay_renders_the_whole_install() {
    for o in overlays() {
        for kind in [
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "PodDisruptionBudget",
            "Service",
            "NetworkPolicy",
            "ValidatingWebhookConfiguration",
            "MutatingWebhookConfiguration",
        ] {
            o.one(kind);
        }
        let ns = str_at(o.one("Namespace"), "/metadata/name");
        assert_eq!(ns, Some("helm-guard"), "{}", o.name);
        let d = o.deployment();
        assert!(
            d["spec"]["replicas"].as_u64() >= Some(2),
            "{}: replicas",
            o.name
        );
        let sa = str_at(o.one("ServiceAccount"), "/metadata/name");
        assert_eq!(
            str_at(d, "/spec/template/spec/serviceAccountName"),
            sa,
            "{}: Deployment runs as the kit's ServiceAccount",
            o.name
        );
        for kind in ["Deployment", "Service", "ServiceAccount", "NetworkPolicy"] {
            assert_eq!(
                str_at(o.one(kind), "/metadata/namespace"),
                ns,
                "{}: {kind} namespace",
                o.name
            );
        }
    }
    let by_name = |n: &str| {
        overlays()
            .iter()
            .find(|o| o.name == n)
            .expect("overlay rendered")
    };
    for kind in ["Issuer", "Certificate"] {
        assert!(!by_name("cert-manager").of_kind(kind).is_empty(), "{kind}");
    }
    for kind in ["ServiceMonitor", "PrometheusRule"] {
        by_name("monitoring").one(kind);
    }
}

#[test]
fn container_command_line_parses_with_the_real_cli() {
    for o in overlays() {
        let argv = container_argv(o);
        assert_eq!(
            argv.get(1).map(String::as_str),
            Some("serve"),
            "{}: {argv:?}",
            o.name
        );
        let a = serve_args(o);
        // The flags the kit relies on took effect (env translated, not dropped).
        assert!(
            matches!(a.default_mode, helm_guard::cli::ModeArg::Audit),
            "{}: default mode is audit unless changed ({:?})",
            o.name,
            a.default_mode
        );
        // The internal deadline answers before the API server gives up.
        for (_, hook) in o.webhooks() {
            let timeout = hook["timeoutSeconds"].as_u64().unwrap_or(10);
            assert!(
                a.deadline_ms < timeout * 1000,
                "{}: --deadline-ms {} is not below {}'s timeoutSeconds {timeout}",
                o.name,
                a.deadline_ms,
                hook_name(hook)
            );
        }
    }
}

#[test]
fn service_container_and_listen_ports_agree() {
    for o in overlays() {
        let a = serve_args(o);
        assert!(
            a.listen.ip().is_unspecified() && a.admin_listen.ip().is_unspecified(),
            "{}: --listen {} / --admin-listen {} must bind all addresses (the Service and the \
             kubelet connect to the pod IP)",
            o.name,
            a.listen,
            a.admin_listen
        );
        // Service 443 → targetPort → container port == --listen.
        let https = o.service_port(443);
        let target = https.get("targetPort").unwrap_or(&https["port"]);
        assert_eq!(
            o.container_port(target),
            a.listen.port(),
            "{}: Service 443 → {target} is not the --listen port",
            o.name
        );
        assert_ne!(a.listen.port(), a.admin_listen.port(), "{}", o.name);
        // Probes → the admin port == --admin-listen, over plain HTTP.
        let c = o.container();
        for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
            let Some(get) = c.get(probe).map(|p| &p["httpGet"]) else {
                continue;
            };
            assert_eq!(
                o.container_port(&get["port"]),
                a.admin_listen.port(),
                "{}: {probe} does not use the --admin-listen port",
                o.name
            );
            assert_ne!(
                str_at(get, "/scheme"),
                Some("HTTPS"),
                "{}: {probe}: the admin port is plain HTTP",
                o.name
            );
        }
        assert!(
            c.get("readinessProbe").is_some(),
            "{}: readinessProbe",
            o.name
        );
        // Every other Service port and the NetworkPolicy's ports name real container ports.
        for p in o.service()["spec"]["ports"]
            .as_array()
            .into_iter()
            .flatten()
        {
            o.container_port(p.get("targetPort").unwrap_or(&p["port"]));
        }
        let np = o.one("NetworkPolicy");
        for rule in np["spec"]["ingress"].as_array().into_iter().flatten() {
            for p in rule["ports"].as_array().into_iter().flatten() {
                o.container_port(&p["port"]);
            }
        }
        // Webhooks call this Service, on the port that leads to --listen.
        let svc_name = str_at(o.service(), "/metadata/name");
        let svc_ns = str_at(o.service(), "/metadata/namespace");
        for (kind, hook) in o.webhooks() {
            let s = &hook["clientConfig"]["service"];
            assert!(
                hook["clientConfig"].get("url").is_none(),
                "{}: {kind} {}: url",
                o.name,
                hook_name(hook)
            );
            assert_eq!(
                str_at(s, "/name"),
                svc_name,
                "{}: {}",
                o.name,
                hook_name(hook)
            );
            assert_eq!(
                str_at(s, "/namespace"),
                svc_ns,
                "{}: {}",
                o.name,
                hook_name(hook)
            );
            let port = s.get("port").map_or(443, port_number); // the API's default is 443
            let sp = o.service_port(port);
            assert_eq!(
                o.container_port(sp.get("targetPort").unwrap_or(&sp["port"])),
                a.listen.port(),
                "{}: {} calls Service port {port}, which does not lead to --listen",
                o.name,
                hook_name(hook)
            );
        }
        // The ServiceMonitor scrapes a Service port by name.
        for sm in o.of_kind("ServiceMonitor") {
            for ep in sm["spec"]["endpoints"].as_array().into_iter().flatten() {
                let name = str_at(ep, "/port").expect("endpoint port name");
                let sp = o.service()["spec"]["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|p| p["name"] == name)
                    .unwrap_or_else(|| panic!("{}: ServiceMonitor port {name}", o.name));
                assert_eq!(
                    o.container_port(sp.get("targetPort").unwrap_or(&sp["port"])),
                    a.admin_listen.port(),
                    "{}: metrics are on the admin port",
                    o.name
                );
            }
        }
    }
}

#[test]
fn webhook_and_probe_paths_are_routes_of_the_server() {
    let route = |routes: &[(&str, &str)], method: &str, path: &str| {
        routes.iter().any(|&(m, p)| m == method && p == path)
    };
    for o in overlays() {
        for (kind, hook) in o.webhooks() {
            let name = hook_name(hook);
            let path = str_at(hook, "/clientConfig/service/path")
                .unwrap_or_else(|| panic!("{}: {name} has no path", o.name));
            assert!(
                route(ROUTES, "POST", path),
                "{}: {kind} {name}: POST {path} is not a route of helm_guard::server::ROUTES",
                o.name
            );
            let prefix = if kind.starts_with("Validating") {
                "/validate"
            } else {
                "/mutate"
            };
            assert!(
                path.starts_with(prefix),
                "{}: {kind} {name} calls {path}",
                o.name
            );
            // The mode in the path is the mode the namespaceSelector selects.
            let exprs = hook["namespaceSelector"]["matchExpressions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mode = exprs.iter().find(|e| e["key"] == MODE_LABEL);
            let want = match mode.and_then(|e| e["operator"].as_str()) {
                Some("In") => {
                    let values = strings(mode.and_then(|e| e.get("values")));
                    assert_eq!(values.len(), 1, "{}: {name}: one mode per entry", o.name);
                    format!("{prefix}/{}", values[0])
                }
                Some("DoesNotExist") => prefix.to_owned(),
                other => panic!("{}: {name}: {MODE_LABEL} operator {other:?}", o.name),
            };
            assert_eq!(
                path, want,
                "{}: {name}: path and namespace mode disagree",
                o.name
            );
        }
        let c = o.container();
        for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
            let Some(path) = c.get(probe).and_then(|p| str_at(p, "/httpGet/path")) else {
                continue;
            };
            assert!(
                route(ADMIN_ROUTES, "GET", path),
                "{}: {probe} GET {path} is not a route of helm_guard::server::ADMIN_ROUTES",
                o.name
            );
        }
        assert_eq!(
            str_at(c, "/readinessProbe/httpGet/path"),
            Some("/readyz"),
            "{}: readiness follows the initial sync (/readyz)",
            o.name
        );
    }
}

#[test]
fn every_webhook_entry_excludes_system_and_own_namespaces() {
    for o in overlays() {
        let own = str_at(o.deployment(), "/metadata/namespace").expect("namespace");
        assert!(EXCLUDED.contains(&own), "{}: own namespace {own}", o.name);
        for (kind, hook) in o.webhooks() {
            let exprs = hook["namespaceSelector"]["matchExpressions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let excluded: BTreeSet<String> = exprs
                .iter()
                .filter(|e| e["key"] == "kubernetes.io/metadata.name" && e["operator"] == "NotIn")
                .flat_map(|e| strings(e.get("values")))
                .collect();
            for ns in EXCLUDED {
                assert!(
                    excluded.contains(ns),
                    "{}: {kind} {} does not exclude namespace {ns}",
                    o.name,
                    hook_name(hook)
                );
            }
        }
    }
}

#[test]
fn webhooks_fail_open_answer_fast_and_declare_no_side_effects() {
    let mut closed = 0;
    for o in overlays() {
        for (kind, hook) in o.webhooks() {
            let name = hook_name(hook);
            // Absent failurePolicy means Fail in admissionregistration/v1: it must be explicit.
            let want = if (o.name.as_str(), kind, name) == FAIL_CLOSED {
                closed += 1;
                "Fail"
            } else {
                "Ignore"
            };
            assert_eq!(
                str_at(hook, "/failurePolicy"),
                Some(want),
                "{}: {kind} {name} failurePolicy",
                o.name
            );
            // Absent timeoutSeconds means 10 s: it must be explicit too.
            let timeout = hook["timeoutSeconds"].as_u64();
            assert!(
                timeout.is_some_and(|t| (1..=3).contains(&t)),
                "{}: {kind} {name} timeoutSeconds {timeout:?} (want 1..=3)",
                o.name
            );
            assert_eq!(
                str_at(hook, "/sideEffects"),
                Some("NoneOnDryRun"),
                "{}: {name}",
                o.name
            );
            assert_eq!(
                strings(hook.get("admissionReviewVersions")),
                ["v1"],
                "{}: {name}",
                o.name
            );
            assert_eq!(
                str_at(hook, "/matchPolicy"),
                Some("Equivalent"),
                "{}: {name}",
                o.name
            );
        }
    }
    assert_eq!(closed, 1, "enforce-fail-closed closes exactly one entry");
}

#[test]
fn cluster_role_grants_exactly_what_the_code_calls() {
    // (apiGroup, resource, verb): the release watch and the Event recorder; with the
    // inventory (--inventory or --reports), list/watch on the guarded workload kinds; with
    // reports, the Reports and (in a Role of its own namespace) the Lease. Nothing else.
    let mut base = BTreeSet::new();
    for resource in ["secrets", "configmaps"] {
        for verb in ["get", "list", "watch"] {
            base.insert((String::new(), resource.to_owned(), verb.to_owned()));
        }
    }
    for group in ["", "events.k8s.io"] {
        for verb in ["create", "patch"] {
            base.insert((group.to_owned(), "events".to_owned(), verb.to_owned()));
        }
    }
    let mut inventory = BTreeSet::new();
    for (group, resources) in [
        (
            "apps",
            &["deployments", "statefulsets", "daemonsets", "replicasets"][..],
        ),
        ("batch", &["jobs", "cronjobs"][..]),
        ("", &["pods"][..]),
    ] {
        for r in resources {
            for verb in ["list", "watch"] {
                inventory.insert((group.to_owned(), (*r).to_owned(), verb.to_owned()));
            }
        }
    }
    let mut reports = BTreeSet::new();
    for verb in ["get", "list", "create", "patch", "delete"] {
        reports.insert((
            "openreports.io".to_owned(),
            "reports".to_owned(),
            verb.to_owned(),
        ));
    }
    for o in overlays() {
        let a = serve_args(o);
        let writes_reports = a.reports == helm_guard::cli::ReportsArg::Openreports;
        let mut want = base.clone();
        if a.inventory || writes_reports {
            want.extend(inventory.iter().cloned());
        }
        if writes_reports {
            want.extend(reports.iter().cloned());
            let sa_ns = str_at(o.one("ServiceAccount"), "/metadata/namespace");
            let role = o.one("Role");
            assert_eq!(
                str_at(role, "/metadata/namespace"),
                sa_ns,
                "{}: Lease Role",
                o.name
            );
            assert_eq!(
                role["rules"],
                json!([{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                        "verbs": ["get", "create", "patch"]}]),
                "{}: the Role grants the Lease only",
                o.name
            );
            let binding = o.one("RoleBinding");
            assert_eq!(
                str_at(binding, "/roleRef/name"),
                str_at(role, "/metadata/name")
            );
            assert_eq!(str_at(binding, "/metadata/namespace"), sa_ns);
        } else {
            for kind in ["Role", "RoleBinding"] {
                assert!(o.of_kind(kind).is_empty(), "{}: unexpected {kind}", o.name);
            }
        }
        let role = o.one("ClusterRole");
        let mut got = BTreeSet::new();
        for rule in role["rules"].as_array().into_iter().flatten() {
            for key in ["resourceNames", "nonResourceURLs"] {
                assert!(rule.get(key).is_none(), "{}: rule with {key}", o.name);
            }
            for g in strings(rule.get("apiGroups")) {
                for r in strings(rule.get("resources")) {
                    for v in strings(rule.get("verbs")) {
                        got.insert((g.clone(), r.clone(), v));
                    }
                }
            }
        }
        assert_eq!(got, want, "{}: ClusterRole rules", o.name);
        assert!(
            role.get("aggregationRule").is_none(),
            "{}: aggregationRule",
            o.name
        );
        let binding = o.one("ClusterRoleBinding");
        assert_eq!(
            str_at(binding, "/roleRef/name"),
            str_at(role, "/metadata/name"),
            "{}",
            o.name
        );
        let sa = o.one("ServiceAccount");
        let subjects = binding["subjects"].as_array().cloned().unwrap_or_default();
        assert!(
            subjects.len() == 1
                && subjects[0]["kind"] == "ServiceAccount"
                && str_at(&subjects[0], "/name") == str_at(sa, "/metadata/name")
                && str_at(&subjects[0], "/namespace") == str_at(sa, "/metadata/namespace"),
            "{}: the binding names only helm-guard's ServiceAccount: {subjects:?}",
            o.name
        );
    }
}

#[test]
fn pod_runs_restricted_with_the_certificate_read_only() {
    for o in overlays() {
        let pod = o.pod_spec();
        let c = o.container();
        // Container settings win over pod settings; either level satisfies the check.
        let either = |ptr: &str| {
            c["securityContext"]
                .pointer(ptr)
                .or_else(|| pod["securityContext"].pointer(ptr))
        };
        assert_eq!(
            either("/runAsNonRoot"),
            Some(&Value::Bool(true)),
            "{}: runAsNonRoot",
            o.name
        );
        assert_eq!(
            either("/seccompProfile/type").and_then(Value::as_str),
            Some("RuntimeDefault"),
            "{}: seccomp",
            o.name
        );
        let sc = &c["securityContext"];
        assert_eq!(
            sc["readOnlyRootFilesystem"], true,
            "{}: readOnlyRootFilesystem",
            o.name
        );
        assert_eq!(
            sc["allowPrivilegeEscalation"], false,
            "{}: allowPrivilegeEscalation",
            o.name
        );
        assert_eq!(
            strings(sc.pointer("/capabilities/drop")),
            ["ALL"],
            "{}: drop ALL",
            o.name
        );
        assert!(
            sc.pointer("/capabilities/add").is_none(),
            "{}: capabilities.add",
            o.name
        );
        assert!(
            sc.get("privileged").is_none_or(|p| p == false),
            "{}",
            o.name
        );

        // --tls-cert/--tls-key live on a read-only mount of the TLS Secret.
        let a = serve_args(o);
        let mount = c["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| str_at(m, "/mountPath").is_some_and(|p| a.tls_cert.starts_with(p)))
            .unwrap_or_else(|| panic!("{}: --tls-cert {:?} is on no mount", o.name, a.tls_cert));
        let dir = PathBuf::from(str_at(mount, "/mountPath").expect("mountPath"));
        assert_eq!(a.tls_cert.parent(), Some(dir.as_path()), "{}", o.name);
        assert_eq!(a.tls_key.parent(), Some(dir.as_path()), "{}", o.name);
        assert_eq!(mount["readOnly"], true, "{}: TLS mount read-only", o.name);
        // No subPath: subPath mounts never see Secret updates (no hot reload).
        assert!(mount.get("subPath").is_none(), "{}: subPath", o.name);
        let volume = pod["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == mount["name"])
            .unwrap_or_else(|| panic!("{}: no volume for the TLS mount", o.name));
        let secret = str_at(volume, "/secret/secretName")
            .unwrap_or_else(|| panic!("{}: the TLS volume is not a Secret", o.name));
        for file in [&a.tls_cert, &a.tls_key] {
            let name = file.file_name().and_then(|n| n.to_str());
            assert!(
                matches!(name, Some("tls.crt" | "tls.key")),
                "{}: {file:?} is not a key of a kubernetes.io/tls Secret",
                o.name
            );
        }
        for cert in o.of_kind("Certificate") {
            if cert["spec"]["isCA"] != true {
                assert_eq!(
                    str_at(cert, "/spec/secretName"),
                    Some(secret),
                    "{}: the serving Certificate writes the mounted Secret",
                    o.name
                );
            }
        }
    }
}

#[test]
fn ca_bundle_is_never_a_placeholder() {
    for o in overlays() {
        // The kit leaves caBundle out (a re-apply must not wipe an injected bundle); anything
        // there would be a placeholder that breaks every call.
        for (kind, hook) in o.webhooks() {
            assert!(
                hook["clientConfig"].get("caBundle").is_none(),
                "{}: {kind} {} carries a caBundle in the kit",
                o.name,
                hook_name(hook)
            );
        }
        let cert_manager = o.name == "cert-manager";
        for kind in WEBHOOK_KINDS {
            let config = o.one(kind);
            let inject = str_at(
                config,
                "/metadata/annotations/cert-manager.io~1inject-ca-from",
            );
            if !cert_manager {
                assert_eq!(inject, None, "{}: {kind} inject-ca-from", o.name);
                continue;
            }
            // cainjector copies the CA of this Certificate: it must exist, in that namespace.
            let (ns, name) = inject
                .and_then(|i| i.split_once('/'))
                .unwrap_or_else(|| panic!("{}: {kind} has no inject-ca-from", o.name));
            assert!(
                o.of_kind("Certificate").iter().any(|c| {
                    str_at(c, "/metadata/namespace") == Some(ns)
                        && str_at(c, "/metadata/name") == Some(name)
                }),
                "{}: inject-ca-from {ns}/{name} names no Certificate",
                o.name
            );
        }
    }
}

/// The self-signed template (certs/README.md) with real `helm-guard certs` output puts
/// base64(ca.crt) on every webhook entry and creates the Secret the Deployment mounts.
#[test]
fn self_signed_template_injects_the_real_ca() {
    tls::install_provider();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    // kustomize refuses absolute resource paths: point at the kit relatively.
    let deploy = relative(dir.path(), &repo().join("deploy"));
    let template =
        std::fs::read_to_string(repo().join("deploy/self-signed/certs-kustomization.yaml"))
            .expect("template");
    assert!(template.contains("../deploy/"), "template layout changed");
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        template.replace("../deploy/", &format!("{}/", deploy.display())),
    )
    .expect("kustomization");
    let b = tls::generate(&tls::service_sans("helm-guard", "helm-guard"), 30).expect("certs");
    for (file, body) in [
        ("ca.crt", &b.ca_pem),
        ("tls.crt", &b.cert_pem),
        ("tls.key", &b.key_pem),
    ] {
        std::fs::write(dir.path().join(file), body).expect("write");
    }
    let docs = parse_docs("self-signed", &kustomize(dir.path()));
    let rendered = Overlay {
        name: "self-signed".to_owned(),
        docs,
    };
    let want = STANDARD.encode(&b.ca_pem);
    for (kind, hook) in rendered.webhooks() {
        let bundle = str_at(hook, "/clientConfig/caBundle").map(|s| s.replace(['\n', ' '], ""));
        assert_eq!(
            bundle.as_deref(),
            Some(want.as_str()),
            "{kind} {}: caBundle is not base64(ca.crt)",
            hook_name(hook)
        );
    }
    let secret = rendered
        .of_kind("Secret")
        .into_iter()
        .find(|s| str_at(s, "/metadata/name") == Some("helm-guard-tls"))
        .expect("Secret helm-guard-tls");
    assert_eq!(str_at(secret, "/type"), Some("kubernetes.io/tls"));
    assert_eq!(
        str_at(secret, "/metadata/namespace"),
        str_at(rendered.deployment(), "/metadata/namespace")
    );
    let volumes = rendered.pod_spec()["volumes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        volumes
            .iter()
            .any(|v| str_at(v, "/secret/secretName") == Some("helm-guard-tls")),
        "the Deployment mounts the generated Secret"
    );
}

/// The path from `from` to `to` (both absolute), through `..` where they diverge.
fn relative(from: &Path, to: &Path) -> PathBuf {
    let (from, to) = (
        from.canonicalize().expect("canonical from"),
        to.canonicalize().expect("canonical to"),
    );
    let (f, t): (Vec<Component>, Vec<Component>) =
        (from.components().collect(), to.components().collect());
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..f.len() {
        out.push("..");
    }
    for c in &t[common..] {
        out.push(c.as_os_str());
    }
    out
}

/// The monitoring overlay scrapes a route the admin listener serves.
#[test]
fn service_monitor_scrapes_a_real_route() {
    for o in overlays() {
        for sm in o.of_kind("ServiceMonitor") {
            for ep in sm["spec"]["endpoints"].as_array().into_iter().flatten() {
                let path = str_at(ep, "/path").unwrap_or("/metrics");
                assert!(
                    ADMIN_ROUTES.iter().any(|&(m, p)| m == "GET" && p == path),
                    "{}: ServiceMonitor scrapes GET {path}, not in ADMIN_ROUTES",
                    o.name
                );
            }
        }
    }
}
