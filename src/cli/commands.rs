//! The one-shot commands' wiring: `review`, `pins`, `scan`, `demo`, `certs`.

use std::process::ExitCode;

use anyhow::Context as _;

use super::args::{CertsArgs, FailOnArg, OutputArg, PinsArgs, ReviewArgs, ScanArgs, ScanOutputArg};
use super::runtime;
use crate::helm::DecodeLimits;
use crate::policy::Webhook;
use crate::review::{self, ReviewOptions};
use crate::{demo, text, tls};

/// `review`: one AdmissionReview judged offline.
pub(super) fn review(a: &ReviewArgs) -> ExitCode {
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

/// `pins`: persisted image values of releases.
pub(super) fn pins(a: &PinsArgs) -> ExitCode {
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

/// `demo`: the seed story against the real HTTPS server.
pub(super) fn demo() -> ExitCode {
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

pub(super) fn scan(a: &ScanArgs) -> i32 {
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

pub(super) fn certs(a: &CertsArgs) -> anyhow::Result<()> {
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
