//! Logs and traces: tracing to stderr (text or JSON lines), and, when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, every span exported over OTLP/HTTP
//! (protobuf) to that collector as service `wasmhive` (`OTEL_SERVICE_NAME`
//! overrides). The standard `OTEL_*` variables apply (e.g.
//! `OTEL_BSP_SCHEDULE_DELAY` for the export interval).
//!
//! Each task attempt is a span `attempt` with `task.id`, `task.kind`,
//! `plugin`, `plugin.version`, `attempt` and, when it ends, `outcome`
//! (`succeeded` or the failure kind); guest log lines are events inside it.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Log line format on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Keeps the exporter alive; flushes what is pending when dropped.
#[must_use = "dropping the guard stops exporting spans"]
pub struct Guard(Option<SdkTracerProvider>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("wasmhive: could not flush the last spans to the OTLP collector: {e}");
        }
    }
}

/// The filter: `WASMHIVE_LOG` (an invalid one is an error, named), else
/// `RUST_LOG`, else `wasmhive=info`.
fn filter_from(wasmhive_log: Option<&str>) -> Result<EnvFilter, String> {
    match wasmhive_log.filter(|v| !v.trim().is_empty()) {
        Some(v) => EnvFilter::builder().parse(v).map_err(|e| {
            format!("WASMHIVE_LOG=`{v}` is not a log filter: {e} (e.g. `wasmhive=debug`, `info`)")
        }),
        None => {
            Ok(EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("wasmhive=info")))
        }
    }
}

/// Installs the global subscriber. Filter: `WASMHIVE_LOG` or `RUST_LOG`
/// (default `wasmhive=info`); an invalid `WASMHIVE_LOG` is an error. Colour
/// only when stderr is a terminal and `NO_COLOR` is unset.
pub fn init(format: LogFormat) -> Result<Guard, String> {
    let wasmhive_log = std::env::var("WASMHIVE_LOG").ok();
    filter_from(wasmhive_log.as_deref())?;
    let filter =
        || filter_from(wasmhive_log.as_deref()).unwrap_or_else(|_| EnvFilter::new("wasmhive=info"));
    use std::io::IsTerminal as _;
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(colour);
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    let (otel, provider) = match otlp() {
        Ok(Some(provider)) => {
            let tracer = provider.tracer("wasmhive");
            let layer = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(filter());
            (Some(layer), Some(provider))
        }
        Ok(None) => (None, None),
        Err(e) => {
            eprintln!("wasmhive: OpenTelemetry export is off: {e}");
            (None, None)
        }
    };
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter()))
        .with(otel)
        .init();
    Ok(Guard(provider))
}

/// The OTLP pipeline, when `OTEL_EXPORTER_OTLP_ENDPOINT` (or the traces
/// endpoint variable) is set.
fn otlp() -> Result<Option<SdkTracerProvider>, String> {
    let configured = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()));
    if !configured {
        return Ok(None);
    }
    use opentelemetry_otlp::WithExportConfig as _;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .build()
        .map_err(|e| e.to_string())?;
    let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "wasmhive".into());
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service)
        .build();
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_wasmhive_log_is_an_error_that_names_it() {
        let err = filter_from(Some("wasmhive=loud")).err().unwrap_or_default();
        assert!(err.contains("WASMHIVE_LOG=`wasmhive=loud`"), "{err}");
        assert!(filter_from(Some("wasmhive=debug,info")).is_ok());
        assert!(filter_from(None).is_ok());
        assert!(filter_from(Some("  ")).is_ok(), "empty: the default");
    }
}
