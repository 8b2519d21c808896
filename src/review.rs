//! `helm-guard review`: one AdmissionReview, judged offline against release records in files.
//!
//! The contract CI pipelines rely on: the AdmissionReview response as JSON on stdout; exit 0
//! when allowed, 1 when denied, 2 when the input is bad (message on stderr, nothing on stdout).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::SystemTime;

use serde_json::Value;

use crate::admission::{self, Outcome, rfc3339};
use crate::helm::DecodeLimits;
use crate::policy::{Settings, Webhook};
use crate::store::load_files;

/// What `review` was asked to do.
#[derive(Clone, Debug)]
pub struct ReviewOptions {
    pub settings: Settings,
    pub webhook: Webhook,
    pub releases: Vec<PathBuf>,
    /// `None` or `-` reads stdin.
    pub input: Option<PathBuf>,
    pub limits: DecodeLimits,
}

/// Largest AdmissionReview read from a file or stdin.
const MAX_INPUT: u64 = 64 << 20;

/// Runs a review; returns the process exit code.
pub fn run(
    opts: &ReviewOptions,
    stdin: impl Read,
    mut stdout: impl Write,
    mut stderr: impl Write,
) -> i32 {
    match review(opts, stdin, &mut stderr) {
        Ok((review, allowed)) => {
            let text = serde_json::to_string_pretty(&review).unwrap_or_default();
            if writeln!(stdout, "{text}").is_err() {
                return 2;
            }
            if allowed { 0 } else { 1 }
        }
        Err(message) => {
            let _ = writeln!(stderr, "helm-guard review: {message}");
            2
        }
    }
}

fn review(
    opts: &ReviewOptions,
    stdin: impl Read,
    stderr: &mut impl Write,
) -> Result<(Value, bool), String> {
    let (index, report) = load_files(&opts.releases, opts.limits).map_err(|e| e.to_string())?;
    for skipped in &report.skipped {
        let _ = writeln!(stderr, "helm-guard review: skipping {skipped}");
    }
    let mut text = String::new();
    let (reader, what): (Box<dyn Read>, String) = match &opts.input {
        Some(p) if p.as_os_str() != "-" => (
            Box::new(std::fs::File::open(p).map_err(|e| format!("{}: {e}", p.display()))?),
            p.display().to_string(),
        ),
        _ => (Box::new(stdin), "stdin".to_owned()),
    };
    reader
        .take(MAX_INPUT + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("{what}: {e}"))?;
    if text.len() as u64 > MAX_INPUT {
        return Err(format!("{what}: larger than {MAX_INPUT} bytes"));
    }
    let value = crate::store::parse_document(&text).map_err(|e| format!("{what}: {e}"))?;
    let body = serde_json::to_vec(&value).map_err(|e| format!("{what}: {e}"))?;
    let reviewed = admission::review_body(
        opts.webhook,
        &body,
        &index,
        &opts.settings,
        &rfc3339(SystemTime::now()),
    );
    if let Outcome::Invalid(e) = &reviewed.outcome {
        return Err(format!("{what}: {e}"));
    }
    let response = serde_json::from_slice(&reviewed.to_json()).map_err(|e| e.to_string())?;
    Ok((response, reviewed.outcome.allowed()))
}
