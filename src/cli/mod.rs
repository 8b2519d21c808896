//! Command line: `serve`, `review`, `pins`, `scan`, `demo`, `certs`. Every flag can also be set
//! through the environment as `HELM_GUARD_<FLAG>`; a flag on the command line wins over its
//! variable. [`args`] holds the flags, [`serve`] and [`commands`] the wiring of each command.

mod args;
mod commands;
mod json_line;
pub mod logs;
mod serve;

pub use args::*;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;

use crate::text;

/// Runs a parsed command line.
pub fn run(args: Args) -> ExitCode {
    match args.command {
        Command::Review(a) => {
            init_logs(LogFormat::Text, "warn", true);
            commands::review(&a)
        }
        Command::Pins(a) => {
            init_logs(LogFormat::Text, "warn", true);
            commands::pins(&a)
        }
        Command::Scan(a) => {
            init_logs(LogFormat::Text, "warn", true);
            ExitCode::from(commands::scan(&a) as u8)
        }
        Command::Demo => {
            init_logs(LogFormat::Text, "warn", true);
            commands::demo()
        }
        Command::Certs(a) => match commands::certs(&a) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("helm-guard certs: {}", text::error_chain(e.chain()));
                ExitCode::from(2)
            }
        },
        Command::Serve(a) => {
            // Flushes the log lines still queued when `serve` returns.
            let (_flush, direct) = init_logs(a.log_format, "info", false);
            let request_log = direct.map(direct_log);
            match serve_runtimes(&a).and_then(|(rt, cluster)| {
                let served = rt.block_on(serve::serve(
                    a,
                    request_log,
                    cluster.as_ref().map(|c| c.handle().clone()),
                ));
                // Its tasks were aborted by `serve`; nothing there is waited for.
                if let Some(c) = cluster {
                    c.shutdown_background();
                }
                served
            }) {
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

/// `serve`'s runtimes: one that answers admission requests, and, when the release index
/// comes from the cluster, one for the cluster side (watches, inventory, reports, Events).
///
/// Requests get a single-threaded event loop by default (`--serving-threads 1`). A review
/// is ~25 µs of CPU: one thread answers ~40k small reviews a second, far beyond any API
/// server's admission rate, and with one thread a request never waits for a hand-off
/// between cores, nor does the pod's own second worker compete with it for the CPU. On the
/// two cores it shares with a load generator this took the 4 KiB review's p99 from
/// 2.3–2.9 ms to 0.5–0.7 ms (docs/performance.md, fifth pass). The work that would stall
/// such a loop runs elsewhere: release records and reviews over 64 KiB on the blocking
/// pool, release decoding on its own threads (`watch::pool`), and the cluster side on the
/// second runtime, so a list page being parsed never delays an answer.
fn serve_runtimes(
    a: &ServeArgs,
) -> anyhow::Result<(tokio::runtime::Runtime, Option<tokio::runtime::Runtime>)> {
    let serving = if a.serving_threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(usize::from(a.serving_threads))
            .enable_all()
            .build()
    }
    .context("starting the serving runtime")?;
    let cluster = a
        .releases
        .is_empty()
        .then(|| {
            tokio::runtime::Builder::new_multi_thread()
                .thread_name("cluster")
                .enable_all()
                .build()
                .context("starting the cluster runtime")
        })
        .transpose()?;
    Ok((serving, cluster))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Sets up logging. `serve` logs JSON to stdout through a writer thread (`logs`), so a slow
/// stdout (a stalled log shipper) never blocks a request worker: lines are buffered (up to
/// 8 MiB) and, past that, dropped and counted rather than stall admission. The one-shot
/// commands log to stderr so that their stdout stays machine-readable. JSON lines (`json_line`) carry each key once:
/// the event's fields at the top level, the current span (a watch's resource and namespace)
/// as one `span` object, no span list repeating it.
/// Colours only on a terminal. With JSON to stdout, the writer is also returned for the
/// request path's direct `reviewed` lines ([`json_line::DirectLog`]).
fn init_logs(
    format: LogFormat,
    default: &str,
    stderr: bool,
) -> (Option<logs::Flush>, Option<logs::LogWriter>) {
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
        return (None, None);
    }
    let ansi = std::io::stdout().is_terminal();
    let (writer, guard) = match logs::batched(std::io::stdout()) {
        Ok(started) => started,
        Err(error) => {
            eprintln!("helm-guard: no log writer thread ({error}); logging to stderr");
            return init_logs(format, default, true);
        }
    };
    let direct = match format {
        LogFormat::Json => json_subscriber(builder, writer),
        LogFormat::Text => {
            let _ = builder.with_ansi(ansi).with_writer(writer).try_init();
            None
        }
    };
    (Some(guard), direct)
}

/// Installs `serve`'s JSON subscriber ([`json_line::JsonLine`]) over the writer thread, and
/// hands the writer back for the request path's direct lines (`None` when a global
/// subscriber was already set).
fn json_subscriber(
    builder: tracing_subscriber::fmt::SubscriberBuilder<
        tracing_subscriber::fmt::format::DefaultFields,
        tracing_subscriber::fmt::format::Format,
        tracing_subscriber::EnvFilter,
    >,
    writer: logs::LogWriter,
) -> Option<logs::LogWriter> {
    builder
        .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
        .event_format(json_line::JsonLine)
        .with_writer(writer.clone())
        .try_init()
        .ok()
        .map(|()| writer)
}

/// `serve --log-format json`'s logging, at `level`, over any writer: for the measuring
/// examples, so that what they measure logs as production does (the same formatter, writer
/// thread and direct request lines). The returned [`logs::Flush`] stops the writer thread.
#[doc(hidden)]
pub fn production_json_logs<W: std::io::Write + Send + 'static>(
    out: W,
    level: &str,
) -> std::io::Result<(logs::Flush, Option<Arc<dyn crate::server::RequestLog>>)> {
    let builder =
        tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::new(level));
    let (writer, guard) = logs::batched(out)?;
    let direct = json_subscriber(builder, writer);
    Ok((guard, direct.map(direct_log)))
}

/// The request path's `reviewed` lines, written straight into the log writer.
fn direct_log(writer: logs::LogWriter) -> Arc<dyn crate::server::RequestLog> {
    Arc::new(json_line::DirectLog::new(writer))
}
