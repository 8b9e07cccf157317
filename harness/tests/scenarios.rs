//! Every shipped scenario passes.

use dps_harness::scenario;

#[actix_rt::test]
async fn every_shipped_scenario_passes() {
    let files = scenario::files_in(&scenario::shipped_dir()).unwrap();
    assert!(files.len() >= 10, "{files:?}");
    let mut failures = Vec::new();
    for file in &files {
        let report = scenario::run_file(file).await;
        if !report.passed() {
            failures.push(format!("{}: {:?}", report.name, report.failures));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[actix_rt::test]
async fn a_scenario_whose_expectations_are_wrong_fails_with_reasons() {
    let dir = std::env::temp_dir().join(format!("dps-scenario-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("wrong.json");
    std::fs::write(
        &file,
        r#"{"name": "wrong", "expect": {"outcome": "failed"}, "wire": {"connections": 3}}"#,
    )
    .unwrap();
    let report = scenario::run_file(&file).await;
    assert!(!report.passed());
    assert!(
        report.failures.iter().any(|f| f.starts_with("outcome")),
        "{:?}",
        report.failures
    );
    assert!(
        report.failures.iter().any(|f| f.starts_with("connections")),
        "{:?}",
        report.failures
    );
    std::fs::write(&file, "{not json").unwrap();
    assert!(!scenario::run_file(&file).await.passed());
    std::fs::remove_dir_all(&dir).unwrap();
}
