//! A [`Report`] as text (for people), JSON, or JUnit XML (for CI).

use super::{CaseReport, Report, Run};
use std::fmt::Write as _;

/// Output format of `wasmhive test`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    Junit,
}

pub fn render(report: &Report, format: Format) -> String {
    match format {
        Format::Text => text(report),
        Format::Json => serde_json::to_string_pretty(report).unwrap_or_default(),
        Format::Junit => junit(report),
    }
}

fn figures(run: &Run) -> String {
    format!(
        "{:>9.1} ms  fuel {:>13}  mem {:>6.1} MiB",
        run.wall_ms,
        run.fuel,
        run.peak_memory_bytes as f64 / (1u64 << 20) as f64
    )
}

fn text(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "wasmhive test: {}", report.plugin);
    if let Some(old) = &report.against {
        let _ = writeln!(out, "      against: {old}");
    }
    let width = report.cases.iter().map(|c| c.name.len()).max().unwrap_or(0);
    for case in &report.cases {
        let verdict = if case.passed { "PASS" } else { "FAIL" };
        let _ = writeln!(
            out,
            "  {verdict}  {:<width$}  {}",
            case.name,
            figures(&case.run)
        );
        for f in &case.failures {
            let _ = writeln!(out, "        - {f}");
        }
        if let Some(cmp) = &case.against {
            if cmp.output_differences.is_empty() {
                let _ = writeln!(out, "        = same output as the old version");
            }
            for d in &cmp.output_differences {
                let _ = writeln!(out, "        ~ output {d}");
            }
            for b in &cmp.budget_changes {
                let _ = writeln!(out, "        ~ {b}");
            }
        }
    }
    let failed = report.cases.iter().filter(|c| !c.passed).count();
    let _ = writeln!(
        out,
        "{} passed, {failed} failed",
        report.cases.len() - failed
    );
    out
}

fn escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&apos;".to_string(),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => " ".to_string(),
            c => c.to_string(),
        })
        .collect()
}

fn junit_case(out: &mut String, suite: &str, case: &CaseReport) {
    let _ = write!(
        out,
        "  <testcase classname=\"{}\" name=\"{}\" time=\"{:.6}\"",
        escape(suite),
        escape(&case.name),
        case.run.wall_ms / 1000.0
    );
    if case.passed {
        let _ = writeln!(out, "/>");
        return;
    }
    let message = case.failures.first().cloned().unwrap_or_default();
    let _ = writeln!(
        out,
        ">\n    <failure message=\"{}\">{}</failure>\n  </testcase>",
        escape(&message),
        escape(&case.failures.join("\n"))
    );
}

fn junit(report: &Report) -> String {
    let failures = report.cases.iter().filter(|c| !c.passed).count();
    let time: f64 = report.cases.iter().map(|c| c.run.wall_ms / 1000.0).sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" time=\"{time:.6}\">",
        escape(&report.plugin),
        report.cases.len()
    );
    for case in &report.cases {
        junit_case(&mut out, &report.plugin, case);
    }
    out.push_str("</testsuite>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::mock::Captured;

    fn case(name: &str, failures: &[&str]) -> CaseReport {
        CaseReport {
            name: name.into(),
            file: format!("{name}.json"),
            passed: failures.is_empty(),
            failures: failures.iter().map(|f| f.to_string()).collect(),
            run: Run {
                output: serde_json::json!({}),
                succeeded: failures.is_empty(),
                wall_ms: 1.5,
                fuel: 1234,
                peak_memory_bytes: 1 << 20,
                captured: Captured::default(),
            },
            against: None,
        }
    }

    #[test]
    fn junit_counts_failures_and_escapes() {
        let report = Report {
            plugin: "greet 1.0.0 (greet.wasm)".into(),
            against: None,
            cases: vec![
                case("ok", &[]),
                case("bad <one>", &["fuel budget of 10 exceeded: used 10"]),
            ],
        };
        let xml = render(&report, Format::Junit);
        assert!(xml.contains("tests=\"2\" failures=\"1\""), "{xml}");
        assert!(xml.contains("name=\"bad &lt;one&gt;\""), "{xml}");
        assert!(
            xml.contains("<failure message=\"fuel budget of 10 exceeded: used 10\">"),
            "{xml}"
        );
        let text = render(&report, Format::Text);
        assert!(
            text.contains("FAIL  bad <one>") && text.contains("1 passed, 1 failed"),
            "{text}"
        );
    }
}
