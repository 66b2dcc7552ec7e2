use super::*;

fn policy(patterns: &[&str]) -> HttpPolicy {
    let caller = Caller {
        plugin: "scrape".into(),
        version: "1.0.0".into(),
        manifest_file: "scrape.toml".into(),
        task_id: "t".into(),
    };
    let list: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
    HttpPolicy::new(
        caller,
        Arc::new(Allowlist::parse(&list).unwrap_or_default()),
        Instant::now() + Duration::from_secs(5),
        Arc::new(HttpShared::default()),
    )
}

fn dest(uri: &str) -> Option<Destination> {
    destination(&uri.parse().ok()?)
}

#[test]
fn refusals_name_the_destination_and_the_fix() {
    let none = policy(&[]);
    let d = dest("http://example.com/x").unwrap_or_else(|| unreachable!());
    let why = none.refusal(&d).unwrap_or_default();
    assert!(
        why.contains("scrape.toml") && why.contains("example.com"),
        "{why}"
    );

    let some = policy(&["127.0.0.1:*"]);
    assert_eq!(
        some.refusal(&dest("http://127.0.0.1:8080/").unwrap_or_else(|| unreachable!())),
        None
    );
    let why = some
        .refusal(&dest("https://evil.test/").unwrap_or_else(|| unreachable!()))
        .unwrap_or_default();
    assert!(
        why.contains("evil.test:443") && why.contains("allowlist"),
        "{why}"
    );
}

#[test]
fn destinations_take_the_default_port_of_their_scheme() {
    assert_eq!(
        dest("http://Example.COM/a?b").map(|d| d.to_string()),
        Some("http://example.com:80".to_string())
    );
    assert_eq!(
        dest("https://[::1]:8443/").map(|d| d.to_string()),
        Some("https://[::1]:8443".to_string())
    );
}
