//! Who is writing: Kubernetes itself, Helm, a kubectl command, or something else.
//!
//! The evidence, in order: the authenticated user (Kubernetes' own controllers and configured
//! exemptions are never judged), then the field manager — `options.fieldManager` as the client
//! sent it, or, when the client sent none (`kubectl scale`, `kubectl rollout undo`, plain
//! client-go), the `managedFields` entry this very request added or touched (the API server
//! derives it from the User-Agent before admission runs). A field manager is chosen by the
//! client, so a Helm claim is only a claim: the policy trusts it only while the release has a
//! pending revision, which Helm always writes before it touches a workload.

use std::fmt;

/// Which users and managers mean what. Defaults follow Helm, Flux and Kubernetes.
#[derive(Clone, Debug)]
pub struct ActorSettings {
    /// Field managers that claim to be Helm (`helm` CLI, Flux `helm-controller`).
    pub helm_managers: Vec<String>,
    /// Users whose writes are never judged (Kubernetes' own controllers).
    pub exempt_users: Vec<String>,
    /// User-name prefixes whose writes are never judged (`kube-system` service accounts).
    pub exempt_user_prefixes: Vec<String>,
    /// Groups whose writes are never judged.
    pub exempt_groups: Vec<String>,
}

impl Default for ActorSettings {
    fn default() -> Self {
        Self {
            helm_managers: vec!["helm".into(), "helm-controller".into()],
            exempt_users: vec!["system:kube-controller-manager".into()],
            exempt_user_prefixes: vec!["system:serviceaccount:kube-system:".into()],
            exempt_groups: Vec::new(),
        }
    }
}

/// A `metadata.managedFields` entry, reduced to what identifies a writer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagedEntry {
    pub manager: String,
    pub operation: String,
    pub subresource: String,
    pub time: String,
}

/// The writer of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Actor {
    /// Kubernetes' own controllers, or a configured exemption: never judged.
    Exempt,
    /// A field manager that claims to be Helm.
    Helm,
    /// A kubectl command (`kubectl-edit`, `kubectl-set`, UA-derived `kubectl`, …).
    Kubectl,
    /// Anything else, including an unknown manager.
    Other,
}

impl Actor {
    /// A stable metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Exempt => "exempt",
            Self::Helm => "helm",
            Self::Kubectl => "kubectl",
            Self::Other => "other",
        }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// What a request says about its writer.
#[derive(Clone, Debug, Default)]
pub struct WriterFacts {
    pub user: String,
    pub groups: Vec<String>,
    /// `request.options.fieldManager`, as the client sent it.
    pub field_manager: Option<String>,
    /// `managedFields` of the new object (already includes this request's entry).
    pub new_managed: Vec<ManagedEntry>,
    /// `managedFields` of the old object (UPDATE only).
    pub old_managed: Vec<ManagedEntry>,
}

/// The classified writer: its class and the manager name it goes by (for messages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Writer {
    pub actor: Actor,
    pub manager: Option<String>,
}

/// Classifies the writer of a request.
pub fn classify(facts: &WriterFacts, settings: &ActorSettings) -> Writer {
    let manager = facts
        .field_manager
        .clone()
        .filter(|m| !m.is_empty())
        .or_else(|| own_entry(&facts.new_managed, &facts.old_managed).map(|e| e.manager.clone()));
    let exempt = settings.exempt_users.contains(&facts.user)
        || settings
            .exempt_user_prefixes
            .iter()
            .any(|p| facts.user.starts_with(p.as_str()))
        || facts
            .groups
            .iter()
            .any(|g| settings.exempt_groups.contains(g));
    let actor = if exempt {
        Actor::Exempt
    } else {
        match manager.as_deref() {
            Some(m) if settings.helm_managers.iter().any(|h| h == m) => Actor::Helm,
            Some(m) if is_kubectl(m) => Actor::Kubectl,
            _ => Actor::Other,
        }
    };
    Writer { actor, manager }
}

/// `kubectl` (UA-derived or SSA), `kubectl-<command>`, or a renamed binary (`kubectl.exe`).
fn is_kubectl(manager: &str) -> bool {
    manager == "kubectl" || manager.starts_with("kubectl-") || manager.starts_with("kubectl.")
}

/// The managedFields entry this request added or touched: one that is new, or whose time
/// changed (the API server stamps a manager's time only when its operation changed fields).
/// Status and scale subresource entries describe other requests and are skipped. With several
/// candidates the newest wins; RFC 3339 UTC times sort as strings.
fn own_entry<'a>(new: &'a [ManagedEntry], old: &[ManagedEntry]) -> Option<&'a ManagedEntry> {
    new.iter()
        .filter(|e| e.subresource.is_empty())
        .filter(|e| {
            !old.iter().any(|o| {
                o.manager == e.manager
                    && o.operation == e.operation
                    && o.subresource == e.subresource
                    && o.time == e.time
            })
        })
        .max_by(|a, b| a.time.cmp(&b.time))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(manager: &str, op: &str, time: &str) -> ManagedEntry {
        ManagedEntry {
            manager: manager.into(),
            operation: op.into(),
            subresource: String::new(),
            time: time.into(),
        }
    }

    /// (user, kind of user, field manager, managedFields, expected actor, expected manager)
    type Case<'a> = (
        &'a str,
        &'a str,
        Option<&'a str>,
        Vec<ManagedEntry>,
        Actor,
        Option<&'a str>,
    );

    #[test]
    fn classification_table() {
        let s = ActorSettings::default();
        let old = vec![entry("helm", "Update", "2026-01-01T00:00:00Z")];
        let cases: Vec<Case> = vec![
            (
                "alice",
                "user",
                Some("kubectl-edit"),
                vec![],
                Actor::Kubectl,
                Some("kubectl-edit"),
            ),
            (
                "alice",
                "user",
                Some("kubectl-set"),
                vec![],
                Actor::Kubectl,
                Some("kubectl-set"),
            ),
            (
                "alice",
                "user",
                Some("kubectl-patch"),
                vec![],
                Actor::Kubectl,
                Some("kubectl-patch"),
            ),
            (
                "alice",
                "user",
                Some("kubectl-replace"),
                vec![],
                Actor::Kubectl,
                None,
            ),
            (
                "alice",
                "user",
                Some("kubectl-client-side-apply"),
                vec![],
                Actor::Kubectl,
                None,
            ),
            (
                "alice",
                "user",
                Some("kubectl"),
                vec![],
                Actor::Kubectl,
                None,
            ),
            (
                "alice",
                "user",
                Some("kubectl-rollout"),
                vec![],
                Actor::Kubectl,
                None,
            ),
            (
                "alice",
                "user",
                Some("helm"),
                vec![],
                Actor::Helm,
                Some("helm"),
            ),
            (
                "flux",
                "sa",
                Some("helm-controller"),
                vec![],
                Actor::Helm,
                None,
            ),
            (
                "ci",
                "sa",
                Some("argocd-controller"),
                vec![],
                Actor::Other,
                None,
            ),
            // `rollout undo` sends no field manager: the UA-derived entry tells.
            (
                "alice",
                "user",
                None,
                vec![
                    old[0].clone(),
                    entry("kubectl", "Update", "2026-02-01T00:00:00Z"),
                ],
                Actor::Kubectl,
                Some("kubectl"),
            ),
            // Nothing to go on.
            ("alice", "user", None, old.clone(), Actor::Other, None),
            // Kubernetes' own controllers are exempt whatever they claim.
            (
                "system:serviceaccount:kube-system:deployment-controller",
                "sa",
                Some("helm"),
                vec![],
                Actor::Exempt,
                None,
            ),
            (
                "system:kube-controller-manager",
                "sa",
                None,
                vec![],
                Actor::Exempt,
                None,
            ),
            // Other service accounts (CI deployers) are judged like anyone else.
            (
                "system:serviceaccount:ci:deployer",
                "sa",
                Some("kubectl-set"),
                vec![],
                Actor::Kubectl,
                None,
            ),
        ];
        for (user, _, fm, new_managed, want, want_manager) in cases {
            let facts = WriterFacts {
                user: user.into(),
                groups: vec![],
                field_manager: fm.map(Into::into),
                new_managed,
                old_managed: old.clone(),
            };
            let w = classify(&facts, &s);
            assert_eq!(w.actor, want, "{user} {fm:?}");
            if let Some(m) = want_manager {
                assert_eq!(w.manager.as_deref(), Some(m));
            }
        }
    }

    #[test]
    fn exempt_groups_are_configurable() {
        let s = ActorSettings {
            exempt_groups: vec!["platform-admins".into()],
            ..ActorSettings::default()
        };
        let facts = WriterFacts {
            user: "bob".into(),
            groups: vec!["platform-admins".into()],
            field_manager: Some("kubectl-edit".into()),
            ..WriterFacts::default()
        };
        assert_eq!(classify(&facts, &s).actor, Actor::Exempt);
    }

    #[test]
    fn scale_subresource_entries_do_not_count() {
        let mut scale = entry("kubectl", "Update", "2026-03-01T00:00:00Z");
        scale.subresource = "scale".into();
        let facts = WriterFacts {
            user: "alice".into(),
            new_managed: vec![scale],
            ..WriterFacts::default()
        };
        let w = classify(&facts, &ActorSettings::default());
        assert_eq!(w.actor, Actor::Other);
        assert_eq!(w.manager, None);
    }
}
