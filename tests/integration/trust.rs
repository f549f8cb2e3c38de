//! Proof whose trust does not live in the database it proves: the keys that check receipts and
//! seals are pinned outside it; an owner of the database who rewrites the sealed history with
//! a key of their own is caught; a generated key's private half goes when a configured key
//! takes over; sealing does not wait on other databases' transactions; receipts read strictly.

use std::time::Duration;

use erasure::config::Secret;
use erasure::proof::seal;
use erasure::proof::signed;
use erasure::proof::signing::{KeySet, Signer};
use erasure::startup::Mode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::helpers::{Shape, TestApp};
use crate::http_api::Api;

async fn run(app: &TestApp, args: &[&str]) -> (i32, String, String) {
    let out = app.command().args(args).output().await.unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes `value` to a file of the test's own; its path.
fn scratch(app: &TestApp, name: &str, value: &Value) -> String {
    let dir = std::env::temp_dir().join(format!("erasure-test-{}", app.id));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
    path.display().to_string()
}

/// The 32 secret bytes of `signer`.
fn stolen_seed(signer: &Signer) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(signer.secret_base64())
        .unwrap()
}

/// The JWK set of `signers`' public halves.
fn key_set(signers: &[&Signer]) -> Value {
    let keys: Vec<Value> = signers
        .iter()
        .flat_map(|s| KeySet::of(s).to_jwks()["keys"].as_array().unwrap().clone())
        .collect();
    json!({ "keys": keys })
}

#[tokio::test]
async fn an_owner_who_rewrites_the_sealed_history_with_a_key_of_their_own_is_caught_by_the_pinned_keys()
 {
    let ours = Signer::generate();
    let mut app = TestApp::with_settings(|s| {
        s.proof.signing_key = Some(Secret::new(ours.secret_base64()));
        s.proof.seal_every_ms = 0;
    })
    .await;
    let pinned = scratch(&app, "pinned.json", &key_set(&[&ours]));
    app.settings.proof.trusted_keys = Some(pinned.clone());
    for i in 0..4 {
        app.seed_customer(&format!("cust_{i}"), &format!("src_{i}"), Shape::default())
            .await;
    }
    let base = app.start(Mode::All).await;
    for i in 0..4 {
        app.wait_for_final(app.request_erasure(&format!("cust_{i}")).await)
            .await;
    }
    let signer = &app.app.as_ref().unwrap().signer;
    while seal::seal_once(&app.pool, signer).await.unwrap().is_some() {}
    let (code, _, stderr) = run(&app, &["audit", "verify", "--key", &pinned]).await;
    assert_eq!(code, 0, "{stderr}");

    // The owner: edits and deletes sealed rows, plants a key with a correct thumbprint as its
    // id, and seals the whole log again with it.
    let forger = Signer::generate();
    sqlx::raw_sql(&format!(
        "ALTER TABLE erasure.audit_log DISABLE TRIGGER USER; \
         ALTER TABLE erasure.audit_seals DISABLE TRIGGER USER; \
         UPDATE erasure.audit_log SET requested_by = 'nobody' WHERE id = (SELECT min(id) FROM erasure.audit_log); \
         DELETE FROM erasure.audit_log WHERE id = (SELECT max(id) FROM erasure.audit_log); \
         DELETE FROM erasure.audit_seals; \
         INSERT INTO erasure.signing_keys (id, public_key) VALUES ('{}', decode('{}', 'hex'));",
        forger.id(),
        forger
            .public_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    ))
    .execute(&app.pool)
    .await
    .unwrap();
    while seal::seal_once(&app.pool, &forger).await.unwrap().is_some() {}

    // Against the database's own keys, the forged log is consistent, and the check says that
    // this is all it shows (exit 3).
    let (code, _, stderr) = run(&app, &["audit", "verify"]).await;
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("checked only against the keys the database itself holds"),
        "{stderr}"
    );
    // Against the pinned keys (given, or configured), the first bad seal is named.
    let (code, _, stderr) = run(&app, &["audit", "verify", "--key", &pinned]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("seal 1: no key with id \"{}\"", forger.id())),
        "{stderr}"
    );
    let (code, _, stderr) = app
        .command()
        .args(["audit", "verify"])
        .env("ERASURE_PROOF__TRUSTED_KEYS", &pinned)
        .output()
        .await
        .map(|o| {
            (
                o.status.code().unwrap_or(-1),
                (),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        })
        .unwrap();
    assert_eq!(code, 1, "{stderr}");
    // The planted key is not published, and a receipt it signs does not check against what is.
    let jwks: Value = reqwest::get(format!("{base}/v1/receipt-keys"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks, key_set(&[&ours]));
    let api = Api::new(&app, base.clone(), true).await;
    let done: Vec<String> = sqlx::query_scalar("SELECT id FROM erasure.deletions LIMIT 1")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    let (_, receipt) = api
        .get(&format!("/v1/permanent-deletions/{}/receipt", done[0]))
        .await;
    let Value::Object(mut members) = receipt else {
        panic!("a receipt")
    };
    members.insert("status".into(), json!("DONE"));
    let forged = Value::Object(signed::sign(members, &forger));
    let file = scratch(&app, "forged.json", &forged);
    let published = format!("{base}/v1/receipt-keys");
    let (code, _, stderr) = run(&app, &["receipt", "verify", &file, "--key", &published]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("no key with id"), "{stderr}");
    app.cleanup().await;
}

#[tokio::test]
async fn a_configured_key_taking_over_destroys_the_generated_private_half_and_retiring_it_refuses_forgeries()
 {
    // First run: no key configured; the service generates one, kept in the database.
    let mut app = TestApp::with_settings(|s| s.proof.seal_every_ms = 0).await;
    app.seed_customer("cust_before", "src_before", Shape::default())
        .await;
    let base = app.start(Mode::All).await;
    let api = Api::new(&app, base, true).await;
    let before = app
        .wait_for_final(app.request_erasure("cust_before").await)
        .await;
    let (_, old_receipt) = api
        .get(&format!("/v1/permanent-deletions/{}/receipt", before.id))
        .await;
    assert_eq!(old_receipt["key_custody"], "database");
    // Whoever can read the database can take the generated key.
    let stolen: Vec<u8> = sqlx::query_scalar(
        "SELECT private_key FROM erasure.signing_keys WHERE private_key IS NOT NULL",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let generated = Signer::from_seed(stolen.clone().try_into().unwrap());
    app.stop_workers().await;

    // A configured key takes over, the old public half pinned beside it.
    let configured = Signer::generate();
    let both = scratch(&app, "both.json", &key_set(&[&generated, &configured]));
    app.settings.proof.signing_key = Some(Secret::new(configured.secret_base64()));
    app.settings.proof.trusted_keys = Some(both.clone());
    let base = app.start(Mode::All).await;
    let api = Api::new(&app, base, true).await;
    assert_eq!(
        app.count_of("SELECT count(*) FROM erasure.signing_keys WHERE private_key IS NOT NULL")
            .await,
        0,
        "no private key is left in the database"
    );
    // Not in any version of a row either: the table's file holds no copy of the private half.
    let file: Vec<u8> = sqlx::query_scalar(
        "SELECT pg_read_binary_file(pg_relation_filepath('erasure.signing_keys'))",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let seed = stolen_seed(&generated);
    assert!(
        !file.windows(seed.len()).any(|w| w == seed.as_slice()),
        "the generated private half is still in the table's file"
    );
    app.seed_customer("cust_after", "src_after", Shape::default())
        .await;
    let after = app
        .wait_for_final(app.request_erasure("cust_after").await)
        .await;
    let (_, new_receipt) = api
        .get(&format!("/v1/permanent-deletions/{}/receipt", after.id))
        .await;
    assert_eq!(new_receipt["key_custody"], "configuration");
    // A receipt for a deletion that never happened, forged with the stolen key.
    let Value::Object(mut members) = old_receipt.clone() else {
        panic!("a receipt")
    };
    members.insert("deletion_id".into(), json!("del_neverhappened000000000"));
    let forged = Value::Object(signed::sign(members, &generated));
    let (old_file, new_file, forged_file) = (
        scratch(&app, "old.json", &old_receipt),
        scratch(&app, "new.json", &new_receipt),
        scratch(&app, "forged.json", &forged),
    );
    // While the old key stays pinned, what it signed checks, forgeries included.
    for file in [&old_file, &new_file, &forged_file] {
        let (code, _, stderr) = run(&app, &["receipt", "verify", file, "--key", &both]).await;
        assert_eq!(code, 0, "{file}: {stderr}");
    }
    // Retired (the key leaked): nothing it signed checks any more; what the new one signed does.
    let retired = scratch(&app, "retired.json", &key_set(&[&configured]));
    for file in [&old_file, &forged_file] {
        let (code, _, stderr) = run(&app, &["receipt", "verify", file, "--key", &retired]).await;
        assert_eq!(code, 1, "{file}: {stderr}");
    }
    let (code, _, stderr) = run(&app, &["receipt", "verify", &new_file, "--key", &retired]).await;
    assert_eq!(code, 0, "{stderr}");
    app.cleanup().await;
}

#[tokio::test]
async fn the_service_does_not_start_with_a_signing_key_it_does_not_publish() {
    let app = TestApp::new().await;
    let ours = Signer::generate();
    let other = Signer::generate();
    let pinned = scratch(&app, "pinned.json", &key_set(&[&other]));
    let mut settings = app.settings.clone();
    settings.proof.signing_key = Some(Secret::new(ours.secret_base64()));
    settings.proof.trusted_keys = Some(pinned);
    let err = erasure::startup::Application::build(settings)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains(&format!(
            "the signing key {} is not in proof.trusted_keys",
            ours.id()
        )),
        "{err}"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn an_idle_transaction_in_another_database_does_not_hold_sealing_back() {
    let app = TestApp::with_settings(|s| s.proof.seal_every_ms = 0).await;
    // Another database on the same server, with a transaction that has written and stays open.
    let other = crate::helpers::ScratchDatabase::create(&format!("{}_other", app.database)).await;
    let other_pool = PgPool::connect(&other.url).await.unwrap();
    let mut idle = other_pool.begin().await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *idle)
        .await
        .unwrap();
    app.seed_customer("cust_sealed", "src_sealed", Shape::default())
        .await;
    let eraser = app.eraser();
    let request = erasure::request::ErasureRequest {
        request_id: uuid::Uuid::new_v4(),
        customer_id: "cust_sealed".into(),
        requested_by: "dpo".into(),
        reason: None,
        requested_at: None,
        identifier_type: None,
    };
    eraser
        .erase(
            &eraser
                .receive(request, erasure::request::Channel::Cli, chrono::Utc::now())
                .unwrap(),
        )
        .await
        .unwrap();
    let signer = app.app.as_ref().unwrap().signer.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        seal::seal_once(&app.pool, &signer).await.unwrap();
        let unsealed = seal::oldest_unsealed(&app.pool).await.unwrap();
        if unsealed.is_zero() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "audit rows stayed unsealed behind another database's transaction"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    idle.rollback().await.unwrap();
    other_pool.close().await;
    drop(other);
    app.cleanup().await;
}

#[tokio::test]
async fn a_receipt_with_a_member_given_twice_is_refused() {
    let ours = Signer::generate();
    let app = TestApp::new().await;
    let keys = scratch(&app, "keys.json", &key_set(&[&ours]));
    let receipt = Value::Object(signed::sign(
        serde_json::from_value(json!({
            "object": "erasure_receipt", "version": 1, "deletion_id": "del_x", "status": "FAILED"
        }))
        .unwrap(),
        &ours,
    ));
    let file = scratch(&app, "receipt.json", &receipt);
    let (code, _, stderr) = run(&app, &["receipt", "verify", &file, "--key", &keys]).await;
    assert_eq!(code, 0, "{stderr}");
    // The same receipt with "status" twice: a reader that keeps the last sees DONE.
    let text = std::fs::read_to_string(&file).unwrap();
    let doubled = text.replacen(
        "\"status\": \"FAILED\"",
        "\"status\": \"FAILED\", \"status\": \"DONE\"",
        1,
    );
    assert_ne!(doubled, text);
    std::fs::write(&file, doubled).unwrap();
    let (code, _, stderr) = run(&app, &["receipt", "verify", &file, "--key", &keys]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("the member \"status\" appears twice"),
        "{stderr}"
    );
    std::fs::write(&file, format!("{text} trailing")).unwrap();
    let (code, _, stderr) = run(&app, &["receipt", "verify", &file, "--key", &keys]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("something follows"), "{stderr}");
    app.cleanup().await;
}
