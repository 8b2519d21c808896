//! Command line: `serve`, `review`, `demo`, `certs`. Every flag can also be set through the
//! environment as `HELM_GUARD_<FLAG>`; a flag on the command line wins over its variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};

use crate::actor::ActorSettings;
use crate::helm::DecodeLimits;
use crate::policy::{MissingRelease, Mode, Settings, StaleValues, Webhook};
use crate::review::{self, ReviewOptions};
use crate::server::{self, AppState};
use crate::store::{Index, SharedIndex, load_files};
use crate::{demo, events, lookup, reload, text, tls, transport, watch};

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
    fn settings(&self, mode: Mode) -> Settings {
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

    fn limits(&self) -> DecodeLimits {
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

/// Runs a parsed command line.
pub fn run(args: Args) -> ExitCode {
    match args.command {
        Command::Review(a) => {
            init_logs(LogFormat::Text, "warn", true);
            let opts = ReviewOptions {
                settings: a.policy.settings(a.mode.into()),
                webhook: if a.mutate {
                    Webhook::Mutate
                } else {
                    Webhook::Validate
                },
                releases: a.releases.clone(),
                input: a.file.clone(),
                limits: a.policy.limits(),
            };
            let code = review::run(
                &opts,
                std::io::stdin().lock(),
                std::io::stdout().lock(),
                std::io::stderr().lock(),
            );
            ExitCode::from(code as u8)
        }
        Command::Pins(a) => {
            init_logs(LogFormat::Text, "warn", true);
            let opts = crate::pins::PinsOptions {
                releases: a.releases.clone(),
                release: a.release.clone(),
                namespace: a.namespace.clone(),
                json: matches!(a.output, OutputArg::Json),
                limits: DecodeLimits {
                    max_decompressed: a.max_release_bytes,
                },
                chart: a.chart.clone(),
            };
            let code = crate::pins::run(&opts, std::io::stdout().lock(), std::io::stderr().lock());
            ExitCode::from(code as u8)
        }
        Command::Scan(a) => {
            init_logs(LogFormat::Text, "warn", true);
            ExitCode::from(scan(&a) as u8)
        }
        Command::Demo => {
            init_logs(LogFormat::Text, "warn", true);
            let result = runtime().and_then(|rt| {
                rt.block_on(async {
                    let mut out = std::io::stdout().lock();
                    demo::run(&mut out).await.context("demo")
                })
            });
            match result {
                Ok(0) => ExitCode::SUCCESS,
                Ok(_) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("helm-guard demo: {}", text::error_chain(e.chain()));
                    ExitCode::from(2)
                }
            }
        }
        Command::Certs(a) => match certs(&a) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("helm-guard certs: {}", text::error_chain(e.chain()));
                ExitCode::from(2)
            }
        },
        Command::Serve(a) => {
            // Flushes the log lines still queued when `serve` returns.
            let _flush = init_logs(a.log_format, "info", false);
            match runtime().and_then(|rt| rt.block_on(serve(a))) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    let error = text::error_chain(e.chain());
                    tracing::error!(%error, "serve failed");
                    eprintln!("helm-guard serve: {error}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

async fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let ready = Arc::new(AtomicBool::new(false));
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = crate::metrics::Metrics::register(&mut registry);
    let mut extras = server::Extras {
        metrics: metrics.clone(),
        registry: Arc::new(registry),
        fallback: None,
        events: None,
    };
    let mut background = Vec::new();
    let index: SharedIndex = if a.releases.is_empty() {
        let client = kube::Client::try_default()
            .await
            .context("connecting to the Kubernetes API (in-cluster config or KUBECONFIG)")?;
        let index: SharedIndex = Arc::new(RwLock::new(Index::default()));
        let feed = watch::Feed::new(
            index.clone(),
            a.policy.limits(),
            metrics.store.clone(),
            ready.clone(),
        );
        let config = watch::WatchConfig {
            namespaces: a.watch_namespaces.clone(),
            configmaps: a.configmap_releases,
            limits: a.policy.limits(),
        };
        background.extend(watch::spawn(&client, &config, &feed));
        if a.inventory || a.reports == ReportsArg::Openreports {
            let changes = Arc::new(crate::inventory::Changes::default());
            feed.notify_changes(changes.clone());
            let (state, tasks) = crate::inventory::spawn(
                &client,
                &crate::inventory::InventoryConfig {
                    namespaces: a.watch_namespaces.clone(),
                    helm_managers: a.policy.helm_managers.clone(),
                },
                index.clone(),
                changes,
                metrics.inventory.clone(),
            );
            background.extend(tasks);
            tracing::info!("drift inventory: watching the guarded workload kinds");
            if a.reports == ReportsArg::Openreports {
                let lease = crate::reports::LeaseConfig {
                    namespace: a.pod_namespace.clone(),
                    identity: a
                        .pod_name
                        .clone()
                        .unwrap_or_else(|| format!("helm-guard-{}", std::process::id())),
                };
                match crate::reports::start(
                    &client,
                    state,
                    &lease,
                    Duration::from_secs(a.reports_interval_seconds.max(1)),
                )
                .await
                {
                    Ok(tasks) => {
                        background.extend(tasks);
                        tracing::info!(lease_namespace = %lease.namespace, "reports: OpenReports written by the Lease holder");
                    }
                    // Said once; admission and the gauges go on.
                    Err(error) => tracing::warn!(%error, "reports: not writing OpenReports"),
                }
            }
        }
        extras.fallback = Some(Arc::new(lookup::Fallback::new(
            client.clone(),
            feed,
            lookup::FallbackConfig {
                timeout: Duration::from_millis(a.lookup_timeout_ms),
                configmaps: a.configmap_releases,
                ..lookup::FallbackConfig::default()
            },
            metrics.lookups.clone(),
        )));
        let (queue, task) = events::EventQueue::spawn(
            client,
            events::reporter(a.pod_name.as_deref()),
            a.event_queue,
            metrics.events.clone(),
        );
        extras.events = Some(queue);
        background.push(task);
        tracing::info!(namespaces = ?a.watch_namespaces, configmaps = a.configmap_releases, "watching release records");
        index
    } else {
        if a.inventory {
            tracing::warn!("--inventory needs the cluster; ignored with --releases");
        }
        let (loaded, report) =
            load_files(&a.releases, a.policy.limits()).context("loading releases")?;
        for skipped in &report.skipped {
            tracing::warn!(record = %skipped, "release record does not decode; skipped");
        }
        tracing::info!(
            records = report.records,
            releases = loaded.len(),
            "release store loaded from files"
        );
        metrics.store.set_releases(loaded.len());
        metrics.store.set_stale(false);
        ready.store(true, Ordering::Release);
        Arc::new(RwLock::new(loaded))
    };
    // The serving certificate is re-read periodically through its path, so a rotated Secret
    // (kubelet's atomic `..data` symlink swap) is picked up without a restart.
    let reloader = reload::CertReloader::load(a.tls_cert.clone(), a.tls_key.clone())
        .await
        .context("loading the serving certificate")?;
    let config = reloader.config();
    tracing::info!(not_after = ?reloader.not_after(), "serving certificate loaded");
    if let Some(t) = reloader.not_after() {
        metrics.tls_not_after.set(t);
    }
    let expiry = metrics.tls_not_after.clone();
    background.push(tokio::spawn(reloader.run(
        reload::DEFAULT_INTERVAL,
        move |outcome| {
            if let reload::ReloadOutcome::Reloaded { not_after: Some(t) } = outcome {
                expiry.set(*t);
            }
        },
    )));
    let state = AppState::with_extras(
        index,
        a.policy.settings(a.default_mode.into()),
        server::ServeLimits {
            max_body_bytes: a.max_body_bytes,
            deadline: Duration::from_millis(a.deadline_ms),
        },
        ready,
        extras,
    );
    let running = server::start_with(
        state,
        config,
        a.listen,
        Some(a.admin_listen),
        transport::Settings {
            handshake_timeout: Duration::from_millis(a.handshake_timeout_ms),
            header_timeout: Duration::from_millis(a.header_timeout_ms),
            idle_timeout: Duration::from_secs(a.idle_timeout_seconds),
            max_connections: a.max_connections.max(1),
            admin_max_connections: a.admin_max_connections.max(1),
        },
    )
    .await?;
    tracing::info!(listen = %running.addr, admin = ?running.admin_addr, "serving");
    server::shutdown_signal().await;
    tracing::info!(
        grace_seconds = a.shutdown_grace_seconds,
        drain_seconds = a.drain_seconds,
        "shutting down: /readyz answers 503, clients are told to close"
    );
    let drained = running
        .drain(
            Duration::from_secs(a.shutdown_grace_seconds),
            Duration::from_secs(a.drain_seconds),
        )
        .await;
    transport::log_drained(drained);
    for t in background {
        t.abort();
    }
    Ok(())
}

fn scan(a: &ScanArgs) -> i32 {
    use crate::scan::{self, FailOn, Format, Progress, ScanOptions, Scope};
    let opts = ScanOptions {
        releases: a.releases.clone(),
        objects: a.objects.clone(),
        namespaces: a.namespaces.clone(),
        all_namespaces: a.all_namespaces,
        format: match a.output {
            ScanOutputArg::Table => Format::Table,
            ScanOutputArg::Json => Format::Json,
            ScanOutputArg::Openreports => Format::OpenReports,
        },
        fail_on: match a.fail_on {
            FailOnArg::Drift => FailOn::Drift,
            FailOnArg::Stale => FailOn::Stale,
            FailOnArg::Any => FailOn::Any,
            FailOnArg::Never => FailOn::Never,
        },
        limits: DecodeLimits {
            max_decompressed: a.max_release_bytes,
        },
        helm_managers: a.helm_managers.clone(),
        configmaps: a.configmap_releases,
    };
    if opts.from_files() {
        return scan::run_files(&opts, std::io::stdout().lock(), std::io::stderr().lock());
    }
    let result = runtime().and_then(|rt| {
        rt.block_on(async {
            let client = kube::Client::try_default()
                .await
                .context("connecting to the Kubernetes API (KUBECONFIG or in-cluster config)")?;
            let scope = if a.all_namespaces {
                Scope::All
            } else if a.namespaces.is_empty() {
                Scope::Only(vec![client.default_namespace().to_owned()])
            } else {
                Scope::Only(a.namespaces.clone())
            };
            let mut progress = Progress::new();
            let mut err = std::io::stderr();
            let inv = scan::cluster::collect(
                &client,
                &scope,
                opts.limits,
                opts.configmaps,
                &mut progress,
                &mut err,
            )
            .await;
            progress.finish();
            let inv = inv?;
            let outcome = scan::evaluate(&inv, &scope, &opts.helm_managers);
            Ok(scan::report(
                &opts,
                &outcome,
                std::time::SystemTime::now(),
                &mut std::io::stdout().lock(),
            ))
        })
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("helm-guard scan: {e:#}");
            2
        }
    }
}

fn certs(a: &CertsArgs) -> anyhow::Result<()> {
    let bundle = tls::generate(&tls::service_sans(&a.service, &a.namespace), a.days)?;
    std::fs::create_dir_all(&a.out_dir)
        .with_context(|| format!("creating {}", a.out_dir.display()))?;
    let write = |name: &str, body: &str, private: bool| -> anyhow::Result<()> {
        let path = a.out_dir.join(name);
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        if private {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        #[cfg(not(unix))]
        let _ = private;
        use std::io::Write;
        opts.open(&path)
            .and_then(|mut f| f.write_all(body.as_bytes()))
            .with_context(|| format!("writing {}", path.display()))
    };
    write("ca.crt", &bundle.ca_pem, false)?;
    write("tls.crt", &bundle.cert_pem, false)?;
    write("tls.key", &bundle.key_pem, true)?;
    let dir = a.out_dir.display();
    println!(
        "wrote {dir}/ca.crt, {dir}/tls.crt, {dir}/tls.key (ECDSA P-256; serving certificate valid {} days)\n\
         SANs: {}\n\n\
         To install them and inject the CA into the webhook configurations:\n  \
         cp deploy/self-signed/certs-kustomization.yaml {dir}/kustomization.yaml\n  \
         kubectl apply --server-side -k {dir}/\n\n\
         Or by hand: caBundle is base64 of ca.crt:  base64 -w0 {dir}/ca.crt",
        a.days,
        tls::service_sans(&a.service, &a.namespace).join(", ")
    );
    Ok(())
}

/// Sets up logging. `serve` logs JSON to stdout through a writer thread, so a slow stdout
/// (a stalled log shipper) never blocks a request worker: lines queue (up to 128k) and, past
/// that, are dropped rather than stall admission. The one-shot commands log to stderr so
/// that their stdout stays machine-readable. JSON lines carry each key once: the event's
/// fields at the top level, the current span (a watch's resource and namespace) as one
/// `span` object, no span list repeating it.
/// Colours only on a terminal.
fn init_logs(
    format: LogFormat,
    default: &str,
    stderr: bool,
) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    use std::io::IsTerminal as _;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if stderr {
        let ansi = std::io::stderr().is_terminal();
        let _ = match format {
            LogFormat::Json => builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .with_writer(std::io::stderr)
                .try_init(),
            LogFormat::Text => builder
                .with_ansi(ansi)
                .with_writer(std::io::stderr)
                .try_init(),
        };
        return None;
    }
    let ansi = std::io::stdout().is_terminal();
    let (writer, guard) = tracing_appender::non_blocking(std::io::stdout());
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(writer)
            .try_init(),
        LogFormat::Text => builder.with_ansi(ansi).with_writer(writer).try_init(),
    };
    Some(guard)
}
