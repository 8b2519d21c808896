//! Drift being overwritten: a trusted Helm write that replaces an image someone set by hand
//! (another manager owns it in `managedFields`, or the drift mark lists it) is allowed, and a
//! warning says which image goes, what replaces it, who set it and when.

use super::{Facts, mark};
use crate::image;
use crate::text;
use crate::workload::find;

/// Warnings for a Helm write that replaces images someone set by hand: which image goes, what
/// replaces it, who set it and when (and the user and reason the drift mark recorded).
pub fn overwritten_drift(req: &Facts) -> Vec<String> {
    let Some(old) = &req.old_containers else {
        return Vec::new();
    };
    let marks = mark::entries(req.old_drift_mark.as_deref().or(req.drift_mark.as_deref()));
    let mut out = Vec::new();
    for c in &req.containers {
        let Some(prev) = find(old, &c.name) else {
            continue;
        };
        if prev.image.same_as(&c.image) {
            continue;
        }
        let mark = marks.iter().find(|m| m.container == *c.name);
        let owner = req
            .old_image_owners
            .iter()
            .find(|o| o.container == *c.name && !o.manager.starts_with("helm"));
        let who = match (mark, owner) {
            (Some(m), _) => {
                let mut w = format!(
                    "set by {}",
                    text::field(m.manager.as_deref().unwrap_or("someone"))
                );
                if !m.user.is_empty() {
                    w.push_str(&format!(" ({})", text::shown(&m.user, 40)));
                }
                if !m.time.is_empty() {
                    w.push_str(&format!(" at {}", text::field(&m.time)));
                }
                if let Some(r) = &m.reason {
                    w.push_str(&format!(", reason: {}", text::shown(r, 40)));
                }
                w
            }
            (None, Some(o)) if o.time.is_empty() => format!("set by {}", text::field(&o.manager)),
            (None, Some(o)) => format!(
                "set by {} at {}",
                text::field(&o.manager),
                text::field(&o.time)
            ),
            (None, None) => continue,
        };
        out.push(text::warning(&format!(
            "helm-guard: helm replaces {} {} ({who}) with {}",
            text::field(&c.name),
            text::field(image::brief(prev.image.as_str())),
            text::field(&image::delta(prev.image.as_str(), c.image.as_str())),
        )));
    }
    out
}
