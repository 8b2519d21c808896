//! `helm-guard scan`: the drift that already exists — every live workload judged against what
//! its release renders, and the stale image values each release carries — from files or from
//! the cluster. Read-only.
//!
//! ```text
//! --releases files | cluster Secrets/ConfigMaps owner=helm ──decode once──> store::Index
//! --objects files  | cluster workload lists (paged)        ──read──> LiveWorkload views
//!                                  policy::live::judge (the admission rules) ─┐
//!                  values::persisted ∩ values::analyze (what `pins` shows) ───┴─> Outcome
//!                                                              table | json | openreports
//! ```
//!
//! An undecodable release record is named on stderr and skipped; everything else still gets
//! scanned. Exit 0 when nothing matches `--fail-on`, 1 when something does, 2 on bad input or
//! an unreachable cluster. Nothing from release values but image references reaches the
//! output (the same gate as `pins`: [`crate::values::image_paths`]).

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::helm::{DecodeLimits, ReleaseKey, WorkloadKey};
use crate::policy::Releases;
use crate::policy::live::{Finding, FindingKind, LiveWorkload, Templates, judge};
use crate::store::{Index, object_files};
use crate::values::{self, ValuesSummary};
use crate::workload::{Container, WorkloadKind};

pub mod cluster;
pub mod output;
pub(crate) mod read;

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    OpenReports,
}

/// What makes the exit code 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailOn {
    /// Drifted or added containers (break-glass ones are allowed drift, not failures).
    Drift,
    /// Stale persisted image values.
    Stale,
    /// Either.
    Any,
    /// Nothing.
    Never,
}

/// Which namespaces are scanned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    All,
    Only(Vec<String>),
}

impl Scope {
    pub fn contains(&self, namespace: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(list) => list.iter().any(|n| n == namespace),
        }
    }
}

/// What `scan` was asked for.
#[derive(Clone, Debug)]
pub struct ScanOptions {
    pub releases: Vec<PathBuf>,
    pub objects: Vec<PathBuf>,
    pub namespaces: Vec<String>,
    pub all_namespaces: bool,
    pub format: Format,
    pub fail_on: FailOn,
    pub limits: DecodeLimits,
    pub helm_managers: Vec<String>,
    /// Also list ConfigMap release records (cluster mode).
    pub configmaps: bool,
}

impl ScanOptions {
    /// From files when any file is named; else from the cluster.
    pub fn from_files(&self) -> bool {
        !self.releases.is_empty() || !self.objects.is_empty()
    }
}

/// Why a scan could not run (exit 2).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScanError {
    #[error(transparent)]
    Load(#[from] crate::store::LoadError),
    #[error("{path}: not Kubernetes objects in JSON or YAML ({why})")]
    Parse { path: String, why: String },
    #[error("{0}")]
    Cluster(String),
}

/// What was read: the release index and the live workloads.
#[derive(Debug, Default)]
pub struct Inventory {
    pub index: Index,
    pub workloads: Vec<LiveWorkload>,
    /// Release records that did not decode (named on stderr as they were met).
    pub skipped_records: usize,
    /// Objects that could not be read at all (counted, never quoted).
    pub unreadable_objects: usize,
}

impl Inventory {
    /// Adds the release records of one document; undecodable ones are named on `err`.
    pub(crate) fn add_records(
        &mut self,
        source: &str,
        text: &str,
        limits: DecodeLimits,
        err: &mut impl Write,
    ) -> Result<Option<String>, ScanError> {
        let (items, cont) = read::items(text).map_err(|why| ScanError::Parse {
            path: source.to_owned(),
            why,
        })?;
        for r in read::records(&items, limits) {
            match r {
                read::Read::Record(rev) => self.index.apply(rev),
                read::Read::Undecodable(e) => {
                    self.skipped_records += 1;
                    let _ = writeln!(err, "helm-guard scan: skipped release record: {e}");
                }
                read::Read::Unreadable => self.unreadable_objects += 1,
                read::Read::Workload(_) | read::Read::Other => {}
            }
        }
        Ok(cont)
    }

    /// Adds the workloads of one document.
    pub(crate) fn add_workloads(
        &mut self,
        source: &str,
        text: &str,
    ) -> Result<Option<String>, ScanError> {
        let (items, cont) = read::items(text).map_err(|why| ScanError::Parse {
            path: source.to_owned(),
            why,
        })?;
        self.workloads.reserve(items.len());
        for r in read::workloads(&items) {
            match r {
                read::Read::Workload(w) => self.workloads.push(w),
                read::Read::Unreadable => self.unreadable_objects += 1,
                _ => {}
            }
        }
        Ok(cont)
    }
}

/// One stale image value persisted in a release's newest revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaleValue {
    pub release: ReleaseKey,
    pub revision: u32,
    pub chart: String,
    pub pin: values::Persisted,
    pub drop: String,
}

/// The result of a scan.
#[derive(Debug, Default)]
pub struct Outcome {
    pub findings: Vec<Finding>,
    pub stale: Vec<StaleValue>,
    /// Workloads judged against a release.
    pub workloads: usize,
    /// Releases in scope.
    pub releases: usize,
    pub skipped_records: usize,
}

impl Outcome {
    /// Drifted and added containers (not break-glass).
    pub fn drifted(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.kind != FindingKind::BreakGlass)
            .count()
    }

    pub fn break_glass(&self) -> usize {
        self.findings.len() - self.drifted()
    }

    /// Whether `fail_on` matches.
    pub fn fails(&self, fail_on: FailOn) -> bool {
        let drift = self.drifted() > 0;
        let stale = !self.stale.is_empty();
        match fail_on {
            FailOn::Drift => drift,
            FailOn::Stale => stale,
            FailOn::Any => drift || stale,
            FailOn::Never => false,
        }
    }
}

/// Live templates of the inventory's controllers, for judging Pods.
struct TemplateIndex<'a> {
    by_key: HashMap<WorkloadKey, usize>,
    workloads: &'a [LiveWorkload],
}

impl Templates for TemplateIndex<'_> {
    fn template(&self, key: &WorkloadKey) -> Option<&[Container]> {
        self.by_key
            .get(key)
            .and_then(|i| self.workloads.get(*i))
            .map(|w| w.containers.as_slice())
    }
}

/// Judges every workload in scope and collects the stale values of every release in scope.
pub fn evaluate(inv: &Inventory, scope: &Scope, helm_managers: &[String]) -> Outcome {
    let templates = TemplateIndex {
        by_key: inv
            .workloads
            .iter()
            .enumerate()
            .filter(|(_, w)| w.kind != WorkloadKind::Pod)
            .map(|(i, w)| (w.key(), i))
            .collect(),
        workloads: &inv.workloads,
    };
    // An object listed twice (overlapping `kubectl get` dumps) is judged once: the last
    // listing wins, as for templates.
    let mut in_scope: Vec<&LiveWorkload> = unique_workloads(inv)
        .into_iter()
        .filter(|w| scope.contains(&w.namespace))
        .collect();
    in_scope.reverse();
    let judged = read::par_map(&in_scope, |w| {
        judge(w, &inv.index, &templates, helm_managers)
    });
    let mut out = Outcome {
        skipped_records: inv.skipped_records,
        ..Outcome::default()
    };
    for j in judged {
        if j.against.is_some() {
            out.workloads += 1;
        }
        out.findings.extend(j.findings);
    }
    // Namespace first: the table reads per team.
    out.findings.sort_by_cached_key(|f| {
        (
            f.workload.namespace.clone(),
            f.workload.kind,
            f.workload.name.clone(),
            f.container.clone(),
        )
    });
    for key in inv.index.keys() {
        if !scope.contains(&key.namespace) {
            continue;
        }
        out.releases += 1;
        out.stale.extend(stale_values(&inv.index, &key));
    }
    out
}

/// Every workload once, the last listing of each first.
fn unique_workloads(inv: &Inventory) -> Vec<&LiveWorkload> {
    let mut seen = std::collections::HashSet::new();
    inv.workloads
        .iter()
        .rev()
        .filter(|w| seen.insert(w.key()))
        .collect()
}

/// The image values `pins` shows for a release's newest revision that are stale: carried
/// over from an older revision, differing from the chart's default, the chart having moved
/// since (the rule the webhook warns with when Helm writes a revision).
pub fn stale_values(index: &Index, key: &ReleaseKey) -> Vec<StaleValue> {
    let history = index.history(key);
    let Some(newest) = history.iter().max_by_key(|r| r.revision) else {
        return Vec::new();
    };
    let summaries: Vec<&ValuesSummary> = history.iter().map(|r| &r.values).collect();
    // Unknown until the revisions it needs are read (a cold start leaves superseded ones
    // unread): reported as nothing rather than guessed.
    if values::unread_in_analysis(&summaries, &newest.values).is_some() {
        return Vec::new();
    }
    let stale = values::analyze(&summaries, &newest.values);
    if stale.is_empty() {
        return Vec::new();
    }
    values::persisted(&summaries, &newest.values)
        .into_iter()
        .filter(|p| stale.iter().any(|s| s.path == p.path))
        .map(|pin| StaleValue {
            release: key.clone(),
            revision: newest.revision,
            chart: format!("{}-{}", newest.chart.name, newest.chart.version),
            drop: values::drop_command(&key.name, &pin.path),
            pin,
        })
        .collect()
}

/// A progress line on stderr, only when stderr is a terminal and the scan takes over a second.
pub struct Progress {
    start: Instant,
    enabled: bool,
    shown: bool,
}

impl Progress {
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            enabled: std::io::stderr().is_terminal(),
            shown: false,
        }
    }

    pub fn tick(&mut self, what: &str, releases: usize, workloads: usize) {
        if self.enabled && self.start.elapsed() > Duration::from_secs(1) {
            self.shown = true;
            let _ = write!(
                std::io::stderr(),
                "\r\x1b[2Kscanning {what}: {releases} release records, {workloads} workloads"
            );
        }
    }

    pub fn finish(&mut self) {
        if self.shown {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
            self.shown = false;
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

/// Reads the files of a file-mode scan.
pub fn load(
    opts: &ScanOptions,
    progress: &mut Progress,
    err: &mut impl Write,
) -> Result<Inventory, ScanError> {
    let mut inv = Inventory::default();
    for f in object_files(&opts.releases)? {
        let text = read_file(&f)?;
        inv.add_records(&f.display().to_string(), &text, opts.limits, err)?;
        progress.tick("files", inv.index.len(), inv.workloads.len());
    }
    for f in object_files(&opts.objects)? {
        let text = read_file(&f)?;
        inv.add_workloads(&f.display().to_string(), &text)?;
        progress.tick("files", inv.index.len(), inv.workloads.len());
    }
    Ok(inv)
}

fn read_file(path: &std::path::Path) -> Result<String, ScanError> {
    std::fs::read_to_string(path).map_err(|source| {
        ScanError::Load(crate::store::LoadError::Io {
            path: path.to_owned(),
            source,
        })
    })
}

/// Writes the outcome in the chosen format and returns the exit code.
pub fn report(
    opts: &ScanOptions,
    outcome: &Outcome,
    now: std::time::SystemTime,
    out: &mut impl Write,
) -> i32 {
    let written = match opts.format {
        Format::Table => output::table(outcome, out),
        Format::Json => writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&output::json(outcome)).unwrap_or_default()
        ),
        Format::OpenReports => writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&output::openreports(outcome, now)).unwrap_or_default()
        ),
    };
    if written.is_err() {
        return 2;
    }
    i32::from(outcome.fails(opts.fail_on))
}

/// Runs a file-mode scan; returns the exit code.
pub fn run_files(opts: &ScanOptions, mut out: impl Write, mut err: impl Write) -> i32 {
    let mut progress = Progress::new();
    let inv = match load(opts, &mut progress, &mut err) {
        Ok(inv) => inv,
        Err(e) => {
            progress.finish();
            let _ = writeln!(err, "helm-guard scan: {e}");
            return 2;
        }
    };
    let scope = if opts.namespaces.is_empty() || opts.all_namespaces {
        Scope::All
    } else {
        Scope::Only(opts.namespaces.clone())
    };
    let outcome = evaluate(&inv, &scope, &opts.helm_managers);
    progress.finish();
    if inv.unreadable_objects > 0 {
        let _ = writeln!(
            err,
            "helm-guard scan: {} objects could not be read and were skipped",
            inv.unreadable_objects
        );
    }
    report(opts, &outcome, std::time::SystemTime::now(), &mut out)
}
