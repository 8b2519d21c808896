//! The inventory's synchronous bookkeeping: the views kept per workload, their findings, the
//! per-namespace counts behind the gauges, and the hand-over of changed releases from the
//! release feed. No I/O: the watches and the judging task in [`super`] drive it.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Releases whose revisions changed since the inventory last looked: the release feed's side
/// of the hand-over. Inserting never waits on the inventory.
#[derive(Debug, Default)]
pub struct Changes {
    pub(super) keys: Mutex<HashSet<ReleaseKey>>,
    pub(super) notify: Notify,
}

impl Changes {
    /// A revision of `key` was applied or deleted.
    pub fn touch(&self, key: &ReleaseKey) {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if !keys.contains(key) {
            keys.insert(key.clone());
        }
        drop(keys);
        self.notify.notify_one();
    }

    pub(super) fn take(&self) -> HashSet<ReleaseKey> {
        std::mem::take(&mut *self.keys.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// One workload as kept: its view and its last judgement.
#[derive(Debug)]
pub(super) struct Kept {
    pub(super) view: LiveWorkload,
    pub(super) against: Option<ReleaseKey>,
    pub(super) findings: Vec<Finding>,
}

/// Owner templates for judging Pods: the kept controllers' containers.
pub(super) struct Views<'a>(&'a BTreeMap<WorkloadKey, Kept>);

impl Templates for Views<'_> {
    fn template(&self, key: &WorkloadKey) -> Option<&[Container]> {
        if key.kind == WorkloadKind::Pod {
            return None;
        }
        self.0.get(key).map(|k| k.view.containers.as_slice())
    }
}

/// Per-namespace totals as published.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Drifted and added containers (break-glass ones are allowed, not counted).
    pub drifted: usize,
    /// Stale persisted image values of the namespace's releases' newest revisions.
    pub stale: usize,
}

/// The inventory's state: pure and synchronous (the watches and the task are around it).
#[derive(Debug, Default)]
pub struct State {
    pub(super) helm_managers: Vec<String>,
    /// Ordered by kind, namespace, name: a namespace's workloads of one kind are a range.
    pub(super) workloads: BTreeMap<WorkloadKey, Kept>,
    /// Workloads judged against each release (what a change of that release re-judges).
    pub(super) by_release: HashMap<ReleaseKey, HashSet<WorkloadKey>>,
    pub(super) drifted: BTreeMap<String, usize>,
    pub(super) stale_by_release: HashMap<ReleaseKey, Vec<StaleValue>>,
    pub(super) stale: BTreeMap<String, usize>,
    /// Namespaces whose totals or findings changed since [`State::take_dirty`].
    pub(super) dirty: BTreeSet<String>,
    /// The same, since [`State::take_report_dirty`] (the Report writer's own pace).
    pub(super) report_dirty: BTreeSet<String>,
}

pub(super) fn drifted(findings: &[Finding]) -> usize {
    findings
        .iter()
        .filter(|f| f.kind != FindingKind::BreakGlass)
        .count()
}

impl State {
    pub fn new(helm_managers: Vec<String>) -> Self {
        Self {
            helm_managers,
            ..Self::default()
        }
    }

    /// Workloads kept.
    pub fn len(&self) -> usize {
        self.workloads.len()
    }

    pub fn is_empty(&self) -> bool {
        self.workloads.is_empty()
    }

    /// Adds or replaces a workload and judges it (and, for a controller, the Pods below it,
    /// whose in-place edits are told apart from their owner's template).
    pub fn upsert(&mut self, view: LiveWorkload, releases: &impl Releases) {
        self.put(view, releases, true);
    }

    pub(super) fn put(&mut self, view: LiveWorkload, releases: &impl Releases, with_pods: bool) {
        let key = view.key();
        let is_controller = with_pods && key.kind != WorkloadKind::Pod;
        match self.workloads.get_mut(&key) {
            Some(k) if k.view == view => return,
            Some(k) => k.view = view,
            None => {
                self.workloads.insert(
                    key.clone(),
                    Kept {
                        view,
                        against: None,
                        findings: Vec::new(),
                    },
                );
            }
        }
        self.rejudge(std::slice::from_ref(&key), releases);
        if is_controller {
            let pods = self.pods_owned_by(&key);
            self.rejudge(&pods, releases);
        }
    }

    /// Forgets a workload (deleted).
    pub fn remove(&mut self, key: &WorkloadKey) {
        if let Some(k) = self.workloads.remove(key) {
            self.set_judgement(key, None, Vec::new(), k.against, k.findings);
        }
    }

    /// A relist of `kind` in `namespace` (all namespaces when `None`) completed with `listed`:
    /// what that list no longer holds is forgotten, the rest upserted. Pods below a relisted
    /// controller are not re-judged one controller at a time (quadratic in a big namespace):
    /// the caller follows a completed list with a full pass ([`State::keys`]).
    pub fn relist(
        &mut self,
        kind: WorkloadKind,
        namespace: Option<&str>,
        listed: Vec<LiveWorkload>,
        releases: &impl Releases,
    ) {
        let seen: HashSet<WorkloadKey> = listed.iter().map(LiveWorkload::key).collect();
        let gone: Vec<WorkloadKey> = self
            .workloads
            .keys()
            .filter(|k| k.kind == kind && namespace.is_none_or(|ns| *k.namespace == *ns))
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        for k in &gone {
            self.remove(k);
        }
        for view in listed {
            self.put(view, releases, false);
        }
    }

    /// Every key, for a full pass.
    pub fn keys(&self) -> Vec<WorkloadKey> {
        self.workloads.keys().cloned().collect()
    }

    /// The workloads a change of these releases may judge differently: those judged against
    /// them, and every workload in the namespaces they live in or render into (a release that
    /// appears may now resolve workloads nothing resolved before).
    pub fn affected_by(
        &self,
        changed: &HashSet<ReleaseKey>,
        index: &impl Releases,
    ) -> Vec<WorkloadKey> {
        let mut namespaces: BTreeSet<&str> = BTreeSet::new();
        let mut out: BTreeSet<WorkloadKey> = BTreeSet::new();
        let rendered: Vec<WorkloadKey> = changed
            .iter()
            .filter_map(|k| index.release(k).and_then(|v| v.deployed))
            .flat_map(|rev| {
                rev.workloads
                    .iter()
                    .map(|w| w.key.clone())
                    .collect::<Vec<_>>()
            })
            .collect();
        for key in changed {
            namespaces.insert(&key.namespace);
            if let Some(set) = self.by_release.get(key) {
                out.extend(set.iter().cloned());
            }
        }
        for w in &rendered {
            namespaces.insert(&w.namespace);
        }
        for ns in namespaces {
            for kind in KINDS {
                out.extend(self.in_namespace(kind, ns).cloned());
            }
        }
        out.into_iter().collect()
    }

    /// The stale image values of a changed release's newest revision (what `pins` shows).
    pub fn set_stale(&mut self, release: &ReleaseKey, values: Vec<StaleValue>) {
        let count = values.len();
        let old = if values.is_empty() {
            self.stale_by_release.remove(release).unwrap_or_default()
        } else {
            self.stale_by_release
                .insert(release.clone(), values.clone())
                .unwrap_or_default()
        };
        if old == values {
            return;
        }
        let old = old.len();
        let ns = release.namespace.to_string();
        let total = self.stale.entry(ns.clone()).or_default();
        *total = (*total + count).saturating_sub(old);
        if *total == 0 {
            self.stale.remove(&ns);
        }
        self.report_dirty.insert(ns.clone());
        self.dirty.insert(ns);
    }

    /// Judges these workloads again.
    pub fn rejudge(&mut self, keys: &[WorkloadKey], releases: &impl Releases) {
        for key in keys {
            let Some(kept) = self.workloads.get(key) else {
                continue;
            };
            let Judgement { against, findings } = judge(
                &kept.view,
                releases,
                &Views(&self.workloads),
                &self.helm_managers,
            );
            let against = against.map(|(r, _)| r);
            let Some(kept) = self.workloads.get_mut(key) else {
                continue;
            };
            if kept.against == against && kept.findings == findings {
                continue;
            }
            let old_against = std::mem::replace(&mut kept.against, against.clone());
            let old = std::mem::replace(&mut kept.findings, findings.clone());
            self.set_judgement(key, against, findings, old_against, old);
        }
    }

    /// Book-keeping of one workload's judgement going from `old` to `new`.
    pub(super) fn set_judgement(
        &mut self,
        key: &WorkloadKey,
        against: Option<ReleaseKey>,
        findings: Vec<Finding>,
        old_against: Option<ReleaseKey>,
        old: Vec<Finding>,
    ) {
        if old_against != against {
            if let Some(r) = &old_against
                && let Some(set) = self.by_release.get_mut(r)
            {
                set.remove(key);
                if set.is_empty() {
                    self.by_release.remove(r);
                }
            }
            if let Some(r) = against {
                self.by_release.entry(r).or_default().insert(key.clone());
            }
        }
        if old == findings {
            return;
        }
        let ns = key.namespace.to_string();
        let (before, after) = (drifted(&old), drifted(&findings));
        if before != after {
            let total = self.drifted.entry(ns.clone()).or_default();
            *total = (*total + after).saturating_sub(before);
            if *total == 0 {
                self.drifted.remove(&ns);
            }
        }
        self.report_dirty.insert(ns.clone());
        self.dirty.insert(ns);
    }

    pub(super) fn in_namespace<'a>(
        &'a self,
        kind: WorkloadKind,
        ns: &'a str,
    ) -> impl Iterator<Item = &'a WorkloadKey> + 'a {
        self.workloads
            .range(WorkloadKey::new(kind, ns, "")..)
            .map(|(k, _)| k)
            .take_while(move |k| k.kind == kind && *k.namespace == *ns)
    }

    pub(super) fn pods_owned_by(&self, owner: &WorkloadKey) -> Vec<WorkloadKey> {
        self.workloads
            .range(WorkloadKey::new(WorkloadKind::Pod, &owner.namespace, "")..)
            .take_while(|(k, _)| k.kind == WorkloadKind::Pod && k.namespace == owner.namespace)
            .filter(|(_, w)| {
                w.view
                    .owners
                    .iter()
                    .any(|o| o.kind == owner.kind.as_str() && o.name == *owner.name)
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Totals of a namespace (zero when it has no findings).
    pub fn counts(&self, namespace: &str) -> Counts {
        Counts {
            drifted: self.drifted.get(namespace).copied().unwrap_or(0),
            stale: self.stale.get(namespace).copied().unwrap_or(0),
        }
    }

    /// Findings of one namespace, in workload order.
    pub fn findings(&self, namespace: &str) -> Vec<&Finding> {
        self.workloads
            .iter()
            .filter(|(k, _)| *k.namespace == *namespace)
            .flat_map(|(_, w)| w.findings.iter())
            .collect()
    }

    /// Namespaces whose totals or findings changed since the last call.
    pub fn take_dirty(&mut self) -> BTreeSet<String> {
        std::mem::take(&mut self.dirty)
    }

    /// Namespaces whose findings changed since the Report writer last asked.
    pub fn take_report_dirty(&mut self) -> BTreeSet<String> {
        std::mem::take(&mut self.report_dirty)
    }

    /// Every namespace with findings or stale values now.
    pub fn namespaces(&self) -> BTreeSet<String> {
        let mut all: BTreeSet<String> = self.stale.keys().cloned().collect();
        for (k, w) in &self.workloads {
            if !w.findings.is_empty() {
                all.insert(k.namespace.to_string());
            }
        }
        all
    }

    /// What a namespace's Report says, as a scan outcome of that namespace alone; `None` when
    /// there is nothing to report.
    pub fn outcome(&self, namespace: &str) -> Option<Outcome> {
        let findings: Vec<Finding> = self.findings(namespace).into_iter().cloned().collect();
        let mut stale: Vec<StaleValue> = self
            .stale_by_release
            .iter()
            .filter(|(k, _)| *k.namespace == *namespace)
            .flat_map(|(_, v)| v.iter().cloned())
            .collect();
        if findings.is_empty() && stale.is_empty() {
            return None;
        }
        stale.sort_by(|a, b| (&a.release, &a.pin.path).cmp(&(&b.release, &b.pin.path)));
        Some(Outcome {
            findings,
            stale,
            ..Outcome::default()
        })
    }
}
