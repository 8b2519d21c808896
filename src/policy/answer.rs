//! The two answers built from one [`Assessment`]: the validating webhook decides and speaks
//! (denial, warnings, audit annotations, Events); the mutating webhook only keeps the drift
//! mark. Splitting them keeps each answer to what its webhook says — kubectl prints every
//! warning once per webhook, and the audit log would carry each annotation twice.
//!
//! Every answer is bounded whatever the request holds: at most [`NAMED`] containers are
//! spelled out in a denial or an Event (the rest are counted), at most [`super::MAX_WARNINGS`]
//! warnings of ≤ 256 bytes, and the mark and the `drift` audit annotation list at most
//! [`super::mark::MAX_ENTRIES`] entries.

use super::drift::Assessment;
use super::mark::{self, Recorder};
use super::overwritten::overwritten_drift;
use super::{
    ALLOW_DRIFT, Drift, EventIntent, Facts, MAX_WARNINGS, Mode, Settings, Verdict,
    mark::MAX_ENTRIES,
};
use crate::image;
use crate::text::{self, clip};

/// Most containers named in a denial message or an Event note.
const NAMED: usize = 5;

/// The validating webhook's answer.
pub fn validate(a: &Assessment, facts: &Facts, settings: &Settings, now: &str) -> Verdict {
    let mut v = Verdict::allow(a.actor);
    if a.trusted_helm {
        v.warnings = overwritten_drift(facts);
    }
    if a.violations.is_empty() {
        return v;
    }
    let recorder = recorder(a, facts, now);
    let release = &a.release;
    match (a.reason.as_deref(), settings.mode) {
        (Some(reason), _) => {
            for d in a.violations.iter().take(MAX_WARNINGS + 1) {
                v.warnings.push(text::warning(&format!(
                    "helm-guard: break-glass ({}): {} runs {}, chart {}",
                    text::shown(reason, 40),
                    d.container,
                    image::brief(&d.live_image),
                    renders(d),
                )));
            }
            v.audit_annotations
                .push(("allow-drift".into(), text::shown(reason, 200)));
            v.audit_annotations
                .push(("drift".into(), recorder.json(&a.violations, Some(reason))));
            v.events.push(event(
                "BreakGlassDrift",
                format!("image drift from release {release} allowed by {ALLOW_DRIFT}"),
                &a.violations,
            ));
        }
        (None, Mode::Enforce) => {
            v.allowed = false;
            v.message = Some(denial(a));
            v.events.push(event(
                "ImageDriftDenied",
                format!("denied image drift from release {release}"),
                &a.violations,
            ));
        }
        (None, _) => {
            for d in a.violations.iter().take(MAX_WARNINGS + 1) {
                v.warnings.push(text::warning(&format!(
                    "helm-guard: {} runs {}; release {} rev {} {}",
                    d.container,
                    image::brief(&d.live_image),
                    release.name,
                    a.revision,
                    renders(d),
                )));
            }
            v.warnings.push(text::warning(&format!(
                "helm-guard: the next helm upgrade reverts it; to keep it, set it in the values of {}",
                release.name
            )));
            v.audit_annotations
                .push(("drift".into(), recorder.json(&a.violations, None)));
            v.events.push(event(
                "ImageDriftAudited",
                format!("image drift from release {release}"),
                &a.violations,
            ));
        }
    }
    if a.violations.len() > MAX_ENTRIES {
        v.audit_annotations
            .push(("drift-total".into(), a.violations.len().to_string()));
    }
    // Lines for violations past the first dozen were never built; they are counted here.
    cap_warnings(&mut v, a.violations.len().saturating_sub(MAX_WARNINGS + 1));
    v
}

/// At most [`MAX_WARNINGS`] warnings (the API server ignores them past 4 KiB in total), and a
/// line saying how many more there were.
fn cap_warnings(v: &mut Verdict, unbuilt: usize) {
    if v.warnings.len() > MAX_WARNINGS {
        let more = v.warnings.len() - MAX_WARNINGS + unbuilt;
        v.warnings.truncate(MAX_WARNINGS);
        v.warnings.push(format!(
            "helm-guard: {} and {more} more; see the audit annotation",
            text::ELLIPSIS
        ));
    }
}

/// The mutating webhook's answer: only the mark.
pub fn mutate(a: &Assessment, facts: &Facts, settings: &Settings, now: &str) -> Verdict {
    let mut v = Verdict::allow(a.actor);
    if a.violations.is_empty() {
        if a.current.is_empty() && facts.drift_mark.is_some() {
            v.patch = mark::removal();
        }
        return v;
    }
    // Enforce without break-glass: the validating webhook denies; nothing to mark.
    if a.reason.is_some() || settings.mode != Mode::Enforce {
        v.patch = recorder(a, facts, now).patch(
            facts.drift_mark.as_deref(),
            facts.has_annotations,
            &a.current,
            &a.violations,
            a.reason.as_deref(),
        );
    }
    v
}

fn recorder<'a>(a: &'a Assessment, facts: &'a Facts, now: &'a str) -> Recorder<'a> {
    Recorder {
        manager: a.manager.as_deref(),
        user: &facts.writer.user,
        now,
    }
}

/// `renders …` for a warning: the tag or digest alone when the repository is the same.
fn renders(d: &Drift) -> String {
    if d.chart_image.is_empty() {
        "renders no such container".to_owned()
    } else {
        format!("renders {}", image::delta(&d.live_image, &d.chart_image))
    }
}

fn denial(a: &Assessment) -> String {
    use std::fmt::Write as _;
    // Written in place (`write!` into one buffer sized for the usual message), not through
    // a `format!` per piece: this is on the path of every denied request.
    let mut msg = String::with_capacity(512);
    let _ = write!(
        msg,
        "helm-guard: image drift from Helm release {} (revision {}) denied:",
        a.release, a.revision
    );
    for d in a.violations.iter().take(NAMED) {
        let _ = if d.chart_image.is_empty() {
            write!(
                msg,
                " container {:?} requested {}, which the chart does not render (it renders no container of that name);",
                d.container, d.live_image
            )
        } else {
            write!(
                msg,
                " container {:?} requested {}, the chart renders {};",
                d.container, d.live_image, d.chart_image
            )
        };
    }
    msg.pop();
    if a.violations.len() > NAMED {
        let _ = write!(
            msg,
            "; and {} more container(s)",
            a.violations.len() - NAMED
        );
    }
    let _ = write!(
        msg,
        ". Change the image in the values of release {} and run helm upgrade, or, in an \
         emergency, add the annotation {ALLOW_DRIFT}=\"<reason>\" in the same change.",
        a.release.name
    );
    msg
}

fn event(reason: &'static str, mut head: String, drifts: &[Drift]) -> EventIntent {
    head.push_str(": ");
    summary(&mut head, drifts);
    EventIntent {
        reason,
        note: text::warning_owned(head),
        warning: true,
        target: None,
    }
}

/// `container image (chart image), …` for at most [`NAMED`] drifts, appended to `out`.
fn summary(out: &mut String, drifts: &[Drift]) {
    use std::fmt::Write as _;
    for (i, d) in drifts.iter().take(NAMED).enumerate() {
        let chart = if d.chart_image.is_empty() {
            "not rendered"
        } else {
            clip(&d.chart_image, text::FIELD_MAX)
        };
        let sep = if i == 0 { "" } else { ", " };
        let _ = write!(out, "{sep}{} {} (chart {chart})", d.container, d.live_image);
    }
    if drifts.len() > NAMED {
        let _ = write!(out, " and {} more", drifts.len() - NAMED);
    }
}
