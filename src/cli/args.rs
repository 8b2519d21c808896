//! The command line as clap reads it: every command's flags, each with its `HELM_GUARD_*`
//! variable, and the small conversions from flags to settings.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::actor::ActorSettings;
use crate::helm::DecodeLimits;
use crate::policy::{MissingRelease, Mode, Settings, StaleValues};

/// A Kubernetes admission webhook that keeps Helm-managed workloads honest: it rejects (or
/// records) manual image changes that differ from what the deployed Helm release renders.
#[derive(Debug, Parser)]
#[command(name = "helm-guard", version, about, long_about = None)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once at startup: the size of the `serve` variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTPS admission webhook.
    Serve(ServeArgs),
    /// Judge one AdmissionReview offline (file or stdin, JSON or YAML) against release
    /// records in files; print the AdmissionReview response. Exit 0 allowed, 1 denied,
    /// 2 bad input.
    Review(ReviewArgs),
    /// Replay the seed story (Helm upgrade, manual rollback, break-glass) against the real
    /// HTTPS server on 127.0.0.1, with a bundled release. No cluster needed.
    Demo,
    /// List the image values persisted in each release's newest revision (what `helm get
    /// values` shows), with the revision each came from, whether it overrides the chart
    /// default, and the command that drops it.
    Pins(PinsArgs),
    /// Write a CA and a serving certificate for the webhook Service (ca.crt, tls.crt, tls.key).
    Certs(CertsArgs),
    /// Report the drift that already exists: every live workload against what its release
    /// renders, and the stale image values each release carries. Reads files, or the cluster
    /// like kubectl (KUBECONFIG or in-cluster) when no file is given. Read-only. Exit 0
    /// nothing matches --fail-on, 1 something does, 2 bad input or unreachable cluster.
    Scan(ScanArgs),
}

/// Guard mode of a namespace.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ModeArg {
    /// Deny image drift.
    Enforce,
    /// Allow, warn, mark the object.
    Audit,
    /// Allow silently.
    Off,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Enforce => Mode::Enforce,
            ModeArg::Audit => Mode::Audit,
            ModeArg::Off => Mode::Off,
        }
    }
}

/// What to do when an object names a Helm release whose records cannot be found.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum MissingArg {
    /// Allow with a warning.
    Allow,
    /// Deny.
    Deny,
}

/// What to do about stale persisted image values in a new release revision.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum StaleArg {
    /// Allow, with warnings naming each value, its revision and the fix.
    Warn,
    /// Deny the pending revision: the upgrade fails before any workload changes.
    Deny,
    /// Say nothing.
    Off,
}

/// `serve --reports`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportsArg {
    Openreports,
    Off,
}

/// Settings shared by `serve` and `review`.
#[derive(Debug, clap::Args)]
pub struct PolicyArgs {
    /// What to do when an object names a release with no readable records.
    #[arg(
        long,
        env = "HELM_GUARD_ON_MISSING_RELEASE",
        value_enum,
        default_value = "allow"
    )]
    pub on_missing_release: MissingArg,
    /// Field managers that claim to be Helm (trusted only while the release has a pending
    /// revision).
    #[arg(
        long,
        env = "HELM_GUARD_HELM_MANAGERS",
        value_delimiter = ',',
        default_value = "helm,helm-controller"
    )]
    pub helm_managers: Vec<String>,
    /// Users whose writes are never judged.
    #[arg(
        long,
        env = "HELM_GUARD_EXEMPT_USERS",
        value_delimiter = ',',
        default_value = "system:kube-controller-manager"
    )]
    pub exempt_users: Vec<String>,
    /// User-name prefixes whose writes are never judged.
    #[arg(
        long,
        env = "HELM_GUARD_EXEMPT_USER_PREFIXES",
        value_delimiter = ',',
        default_value = "system:serviceaccount:kube-system:"
    )]
    pub exempt_user_prefixes: Vec<String>,
    /// Groups whose writes are never judged (none by default).
    #[arg(long, env = "HELM_GUARD_EXEMPT_GROUPS", value_delimiter = ',')]
    pub exempt_groups: Vec<String>,
    /// When `helm upgrade` writes a revision that re-applies image values persisted by an
    /// earlier revision: warn (the warning reaches helm's stderr), deny (the upgrade fails
    /// before any workload changes), or say nothing.
    #[arg(
        long,
        env = "HELM_GUARD_STALE_VALUES",
        value_enum,
        default_value = "warn"
    )]
    pub stale_values: StaleArg,
    /// Largest decompressed Helm release record accepted, in bytes.
    #[arg(long, env = "HELM_GUARD_MAX_RELEASE_BYTES", default_value_t = 32 << 20)]
    pub max_release_bytes: usize,
}

impl PolicyArgs {
    pub(super) fn settings(&self, mode: Mode) -> Settings {
        Settings {
            mode,
            missing_release: match self.on_missing_release {
                MissingArg::Allow => MissingRelease::Allow,
                MissingArg::Deny => MissingRelease::Deny,
            },
            stale_values: match self.stale_values {
                StaleArg::Warn => StaleValues::Warn,
                StaleArg::Deny => StaleValues::Deny,
                StaleArg::Off => StaleValues::Off,
            },
            actors: ActorSettings {
                helm_managers: self.helm_managers.clone(),
                exempt_users: self.exempt_users.clone(),
                exempt_user_prefixes: self.exempt_user_prefixes.clone(),
                exempt_groups: self.exempt_groups.clone(),
            },
            record_limits: self.limits(),
        }
    }

    pub(super) fn limits(&self) -> DecodeLimits {
        DecodeLimits {
            max_decompressed: self.max_release_bytes,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address of the HTTPS webhook listener.
    #[arg(long, env = "HELM_GUARD_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Address of the plain-HTTP admin listener (/healthz, /readyz) for probes.
    #[arg(long, env = "HELM_GUARD_ADMIN_LISTEN", default_value = "0.0.0.0:8080")]
    pub admin_listen: SocketAddr,
    /// PEM certificate chain of the webhook.
    #[arg(long, env = "HELM_GUARD_TLS_CERT")]
    pub tls_cert: PathBuf,
    /// PEM private key of the webhook.
    #[arg(long, env = "HELM_GUARD_TLS_KEY")]
    pub tls_key: PathBuf,
    /// Mode of the `/validate` and `/mutate` routes (the `/…/{mode}` routes name theirs).
    #[arg(
        long,
        env = "HELM_GUARD_DEFAULT_MODE",
        value_enum,
        default_value = "audit"
    )]
    pub default_mode: ModeArg,
    /// Load release records (Secrets/ConfigMaps as `kubectl get -o json|yaml` prints them)
    /// from these files or directories instead of watching the cluster (in-cluster config or
    /// KUBECONFIG).
    #[arg(long = "releases", env = "HELM_GUARD_RELEASES", value_delimiter = ',')]
    pub releases: Vec<PathBuf>,
    /// Namespaces whose release Secrets/ConfigMaps are watched (comma-separated); empty
    /// watches all namespaces. Ignored with --releases.
    #[arg(long, env = "HELM_GUARD_WATCH_NAMESPACES", value_delimiter = ',')]
    pub watch_namespaces: Vec<String>,
    /// Also watch ConfigMaps labelled owner=helm (releases stored with HELM_DRIVER=configmap).
    #[arg(long, env = "HELM_GUARD_CONFIGMAP_RELEASES", default_value_t = true, action = clap::ArgAction::Set)]
    pub configmap_releases: bool,
    /// Keep a live drift inventory: watch the guarded workload kinds (Deployments … Pods, in
    /// --watch-namespaces) and publish per-namespace drift gauges. Needs list/watch on those
    /// kinds (the `reports` kustomize component grants it); without it the inventory logs
    /// once and admission is unaffected. Off by default: watching every Pod is real API and
    /// memory load that the admission path does not need.
    #[arg(long, env = "HELM_GUARD_INVENTORY", default_value_t = false, action = clap::ArgAction::Set)]
    pub inventory: bool,
    /// Write OpenReports `Report`s (one per namespace with findings, named helm-guard) from the
    /// inventory; implies --inventory. Needs the OpenReports CRDs (without them: said once at
    /// start, admission unaffected) and the RBAC of the `reports` kustomize component. One
    /// replica writes at a time: the holder of the Lease `helm-guard-reports` in
    /// --pod-namespace.
    #[arg(long, env = "HELM_GUARD_REPORTS", value_enum, default_value = "off")]
    pub reports: ReportsArg,
    /// Seconds between two writes of one namespace's Report (changes in between coalesce).
    #[arg(
        long,
        env = "HELM_GUARD_REPORTS_INTERVAL_SECONDS",
        default_value_t = 10
    )]
    pub reports_interval_seconds: u64,
    /// This pod's namespace (from the downward API): where the reports Lease lives.
    #[arg(long, env = "HELM_GUARD_POD_NAMESPACE", default_value = "helm-guard")]
    pub pod_namespace: String,
    /// Longest fallback lookup of a release the store does not know yet, in milliseconds (one
    /// per release at a time; a missing release is not looked up again for 30 s).
    #[arg(long, env = "HELM_GUARD_LOOKUP_TIMEOUT_MS", default_value_t = 300)]
    pub lookup_timeout_ms: u64,
    /// Name of this pod (from the downward API), recorded as the Events' reporting instance.
    #[arg(long, env = "HELM_GUARD_POD_NAME")]
    pub pod_name: Option<String>,
    /// Events queued for sending at most; further Events are dropped and counted.
    #[arg(long, env = "HELM_GUARD_EVENT_QUEUE", default_value_t = 1024)]
    pub event_queue: usize,
    /// Largest AdmissionReview body accepted, in bytes (larger: HTTP 413, the webhook's
    /// failurePolicy decides).
    #[arg(long, env = "HELM_GUARD_MAX_BODY_BYTES", default_value_t = 16 << 20)]
    pub max_body_bytes: usize,
    /// Answer within this many milliseconds or give up with HTTP 503 (the failurePolicy
    /// decides); keep it below the webhook's timeoutSeconds.
    #[arg(long, env = "HELM_GUARD_DEADLINE_MS", default_value_t = 2500)]
    pub deadline_ms: u64,
    /// Longest shutdown after SIGTERM, in seconds: connections still open then are dropped.
    /// Keep it below terminationGracePeriodSeconds minus the preStop sleep.
    #[arg(long, env = "HELM_GUARD_DRAIN_SECONDS", default_value_t = 10)]
    pub drain_seconds: u64,
    /// After SIGTERM, keep accepting connections for this many seconds while /readyz answers
    /// 503 and every response says `Connection: close` (HTTP/2: GOAWAY), so clients still
    /// holding pooled connections move away without losing a request. Counted within
    /// --drain-seconds.
    #[arg(long, env = "HELM_GUARD_SHUTDOWN_GRACE_SECONDS", default_value_t = 5)]
    pub shutdown_grace_seconds: u64,
    /// Longest TLS handshake, in milliseconds.
    #[arg(long, env = "HELM_GUARD_HANDSHAKE_TIMEOUT_MS", default_value_t = 5000)]
    pub handshake_timeout_ms: u64,
    /// Longest time to receive an HTTP/1 request head, in milliseconds (for the first request
    /// of a connection: from the end of the TLS handshake). Both listeners.
    #[arg(long, env = "HELM_GUARD_HEADER_TIMEOUT_MS", default_value_t = 5000)]
    pub header_timeout_ms: u64,
    /// Close a connection with no request in flight after this many seconds (HTTP/2:
    /// GOAWAY). Keep it above the API server's 90 s idle-connection timeout, so that the
    /// client closes first. Both listeners. The request body is bounded by --deadline-ms.
    #[arg(long, env = "HELM_GUARD_IDLE_TIMEOUT_SECONDS", default_value_t = 120)]
    pub idle_timeout_seconds: u64,
    /// Connections open at once on the webhook listener. At the limit, the oldest connection
    /// that has not sent a request yet is closed to make room; if none, new connections wait
    /// in the listen backlog (logged at most every 10 s).
    #[arg(long, env = "HELM_GUARD_MAX_CONNECTIONS", default_value_t = 512)]
    pub max_connections: usize,
    /// Connections open at once on the admin listener.
    #[arg(long, env = "HELM_GUARD_ADMIN_MAX_CONNECTIONS", default_value_t = 32)]
    pub admin_max_connections: usize,
    /// Threads that answer admission requests. 1 (the default): one event loop, so a request
    /// never waits on a hand-off between cores and the pod does not compete with itself for
    /// its CPU; the cluster watches, the inventory, reports and Events run on a runtime of
    /// their own, and release records and large reviews on the blocking pool. One thread
    /// answers tens of thousands of small reviews a second; more only helps where the pod
    /// has several cores and a review rate no API server sends.
    #[arg(long, env = "HELM_GUARD_SERVING_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub serving_threads: u16,
    /// Log format.
    #[arg(
        long,
        env = "HELM_GUARD_LOG_FORMAT",
        value_enum,
        default_value = "json"
    )]
    pub log_format: LogFormat,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

/// Log output format.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, clap::Args)]
pub struct ReviewArgs {
    /// Mode to judge in.
    #[arg(long, env = "HELM_GUARD_MODE", value_enum, default_value = "enforce")]
    pub mode: ModeArg,
    /// Answer as the mutating webhook (the response carries the JSON patch, if any).
    #[arg(long)]
    pub mutate: bool,
    /// Release records: files or directories of Secrets/ConfigMaps (JSON or YAML; single
    /// objects, Lists or multi-document YAML). May be repeated; none is valid.
    #[arg(long = "releases")]
    pub releases: Vec<PathBuf>,
    /// The AdmissionReview (JSON or YAML); `-` or absent reads stdin.
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

#[derive(Debug, clap::Args)]
pub struct PinsArgs {
    /// Release records: files or directories of Secrets/ConfigMaps (JSON or YAML).
    #[arg(long = "releases")]
    pub releases: Vec<PathBuf>,
    /// Only this release.
    #[arg(long)]
    pub release: Option<String>,
    /// Only releases in this namespace.
    #[arg(long)]
    pub namespace: Option<String>,
    /// The chart about to be installed (directory or packaged .tgz): show only the persisted
    /// image values that would override its defaults on a plain `helm upgrade`, and the
    /// command that drops each. Reads values.yaml and the subcharts'; renders nothing.
    #[arg(long)]
    pub chart: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub output: OutputArg,
    /// Largest decompressed Helm release record accepted, in bytes.
    #[arg(long, env = "HELM_GUARD_MAX_RELEASE_BYTES", default_value_t = 32 << 20)]
    pub max_release_bytes: usize,
}

/// Output format of `pins`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum OutputArg {
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct ScanArgs {
    /// Release records: files or directories of Secrets/ConfigMaps as `kubectl get secrets -l
    /// owner=helm -A -o yaml|json` prints them. May be repeated.
    #[arg(long = "releases")]
    pub releases: Vec<PathBuf>,
    /// Live workloads: files or directories as `kubectl get deploy,sts,ds,rs,cronjob,job,pod
    /// -A -o yaml|json` prints them. May be repeated.
    #[arg(long = "objects")]
    pub objects: Vec<PathBuf>,
    /// Only these namespaces (repeatable). Without it: every namespace in the files, or the
    /// current context's namespace in the cluster.
    #[arg(short = 'n', long = "namespace")]
    pub namespaces: Vec<String>,
    /// Every namespace.
    #[arg(short = 'A', long = "all-namespaces")]
    pub all_namespaces: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: ScanOutputArg,
    /// What makes the exit code 1.
    #[arg(long, value_enum, default_value = "drift")]
    pub fail_on: FailOnArg,
    /// Also read ConfigMap release records (HELM_DRIVER=configmap) from the cluster.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub configmap_releases: bool,
    /// Field managers that are Helm (a container they added is the chart's business).
    #[arg(
        long,
        env = "HELM_GUARD_HELM_MANAGERS",
        value_delimiter = ',',
        default_value = "helm,helm-controller"
    )]
    pub helm_managers: Vec<String>,
    /// Largest decompressed Helm release record accepted, in bytes.
    #[arg(long, env = "HELM_GUARD_MAX_RELEASE_BYTES", default_value_t = 32 << 20)]
    pub max_release_bytes: usize,
}

/// Output format of `scan`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ScanOutputArg {
    Table,
    Json,
    /// `openreports.io/v1alpha1` Reports, one per namespace, in a List.
    Openreports,
}

/// What makes `scan` exit 1.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum FailOnArg {
    /// Drifted or added containers.
    Drift,
    /// Stale persisted image values.
    Stale,
    /// Either.
    Any,
    /// Never.
    Never,
}

#[derive(Debug, clap::Args)]
pub struct CertsArgs {
    /// Name of the webhook Service.
    #[arg(long, default_value = "helm-guard")]
    pub service: String,
    /// Namespace of the webhook Service.
    #[arg(long, default_value = "helm-guard")]
    pub namespace: String,
    /// Where to write ca.crt, tls.crt and tls.key.
    #[arg(long, default_value = "certs")]
    pub out_dir: PathBuf,
    /// Validity of the serving certificate in days (the CA is valid ten years).
    #[arg(long, default_value_t = 365)]
    pub days: i64,
}
