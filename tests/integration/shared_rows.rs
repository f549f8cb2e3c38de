//! Real data on a real-shaped schema (tests/schemas/store/): rows two customers share, erased at
//! the same moment on two worker processes; rows of one customer hanging off another's; foreign
//! keys declared on some partitions only, a partition with no index, and triggers that stamp
//! `last_update`. For each: exact counts, everyone else's rows unchanged, none of the erased
//! customers' personal values left anywhere (the service's own tables included), and a check
//! after commit that agrees.

use std::time::Duration;

use erasure::deletion::{DeletionRow, DeletionStatus, ErrorKey};
use erasure::request::{Channel, ErasureRequest};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::faults::kill_9;
use crate::helpers::TestApp;

pub const SCHEMA: &str = include_str!("../schemas/store/schema.sql");
pub const PLAN: &str = include_str!("../schemas/store/plan.toml");
pub const PLAN_KEPT: &str = include_str!("../schemas/store/plan_kept.toml");

/// A store (address 1), a member of staff (address 2), and customer 1 and 2 living at the
/// store's and at the staff member's address.
const BASE: &str = "\
    INSERT INTO store.address (address_id, address, postal_code, phone) VALUES \
      (1, '1 Storefront Way', 'SF1', '+1-555-0001'), (2, '2 Staff Street', 'SS2', '+1-555-0002'); \
    INSERT INTO store.store (store_id, address_id) VALUES (1, 1); \
    INSERT INTO store.staff (staff_id, first_name, last_name, address_id, store_id) VALUES (1, 'Mike', 'Hillyer', 2, 1); \
    INSERT INTO store.customer (customer_id, store_id, first_name, last_name, email, address_id) VALUES \
      (1, 1, 'Stella', 'Storeside', 'stella@storeside.example', 1), \
      (2, 1, 'Stan', 'Staffside', 'stan@staffside.example', 2); \
    SELECT setval('store.address_address_id_seq', 1000), setval('store.customer_customer_id_seq', 1000);";

async fn run(app: &TestApp, sql: &str) {
    sqlx::raw_sql(sql).execute(&app.pool).await.unwrap();
}

/// Customers `100 + 2p` and `101 + 2p` for each pair `p`, each pair living at an address of its own (the pair's
/// number in its street and phone), each with two rentals and a payment for each, in the three
/// payment partitions.
fn pairs_sql(pairs: std::ops::Range<usize>) -> String {
    let mut sql = String::new();
    for p in pairs {
        let address = 100 + p;
        sql.push_str(&format!(
            "INSERT INTO store.address (address_id, address, postal_code, phone) VALUES \
               ({address}, '{p} Pairfield Lane', 'PF{p:03}', '+1-555-7{p:03}');"
        ));
        for member in 0..2 {
            let customer = 100 + 2 * p + member;
            sql.push_str(&format!(
                "INSERT INTO store.customer (customer_id, store_id, first_name, last_name, email, address_id) VALUES \
                   ({customer}, 1, 'Pat{customer}', 'Pairson{customer}', 'pat{customer}@pairs.example', {address}); \
                 INSERT INTO store.rental (rental_id, rental_date, inventory_id, customer_id, staff_id) VALUES \
                   ({r1}, '2022-01-05', 1, {customer}, 1), ({r2}, '2022-02-05', 2, {customer}, 1); \
                 INSERT INTO store.payment (customer_id, staff_id, rental_id, amount, payment_date) VALUES \
                   ({customer}, 1, {r1}, 2.99, '2022-01-05'), ({customer}, 1, {r2}, 0.99, '2022-03-05');",
                r1 = 10 * customer,
                r2 = 10 * customer + 1,
            ));
        }
    }
    sql
}

fn request(identifier: &str) -> ErasureRequest {
    ErasureRequest {
        request_id: Uuid::new_v4(),
        customer_id: identifier.to_owned(),
        requested_by: "dpo".into(),
        reason: None,
        requested_at: None,
        identifier_type: None,
    }
}

/// One checksum over every row of the schema but those `except` selects out.
async fn checksum(app: &TestApp, queries: &[&str]) -> String {
    let mut sums = Vec::new();
    for query in queries {
        let sum: Option<String> = sqlx::query_scalar(&format!(
            "SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM ({query}) t"
        ))
        .fetch_one(&app.pool)
        .await
        .unwrap();
        sums.push(sum.unwrap_or_default());
    }
    sums.join("/")
}

async fn assert_gone(app: &TestApp, values: &[String]) {
    for value in values {
        assert_eq!(
            app.rows_containing(value).await,
            Vec::<String>::new(),
            "{value} is still stored"
        );
    }
}

/// Addresses nothing points at (no customer, member of staff or store).
const ORPHANS: &str = "SELECT count(*) FROM store.address a WHERE \
      NOT EXISTS (SELECT 1 FROM store.customer c WHERE c.address_id = a.address_id) \
      AND NOT EXISTS (SELECT 1 FROM store.staff s WHERE s.address_id = a.address_id) \
      AND NOT EXISTS (SELECT 1 FROM store.store s WHERE s.address_id = a.address_id)";

/// Waits until the check after commit has run for `deletion_id`, and returns what it recorded.
pub async fn verification_of(app: &TestApp, deletion_id: &str) -> Value {
    for _ in 0..600 {
        let outcome: Option<Value> =
            sqlx::query_scalar("SELECT outcome FROM erasure.verifications WHERE deletion_id = $1")
                .bind(deletion_id)
                .fetch_optional(&app.pool)
                .await
                .unwrap();
        if let Some(outcome) = outcome {
            return outcome;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the check after commit of {deletion_id} did not run in 30 s");
}

/// Twenty pairs of customers sharing an address, every request published at once to two worker
/// processes erasing one request a statement (so that the two of a pair run side by side, in
/// separate transactions), the pairs' members interleaved in the queue.
async fn erase_twenty_pairs_on_two_workers(
    plan: &str,
    batch_max: &str,
) -> (TestApp, Vec<DeletionRow>) {
    let app = TestApp::with_schema(SCHEMA, plan).await;
    run(&app, BASE).await;
    run(&app, &pairs_sql(0..20)).await;
    let plan_path = app.settings.erasure.plan.clone().unwrap();
    let env = [
        ("ERASURE_ERASURE__PLAN", plan_path.to_str().unwrap()),
        ("ERASURE_DATABASE__REFERENCE_SCHEMA", "false"),
        ("ERASURE_WORKER__BATCH_MAX", batch_max),
        ("ERASURE_WORKER__CONCURRENCY", "4"),
    ];
    let mut workers = [
        crate::faults::spawn_worker(&app, &env),
        crate::faults::spawn_worker(&app, &env),
    ];
    let mut requests = Vec::new();
    for p in 0..20 {
        for member in 0..2 {
            let id = Uuid::new_v4();
            app.publish(&TestApp::request(id, &(100 + 2 * p + member).to_string()))
                .await;
            requests.push(id);
        }
    }
    let mut rows = Vec::new();
    for id in &requests {
        rows.push(app.wait_for_final(*id).await);
    }
    // The checks after commit, by the workers' own verifiers.
    for row in &rows {
        let outcome = verification_of(&app, &row.id).await;
        assert_eq!(outcome["outcome"], "passed", "{row:?}: {outcome}");
    }
    for worker in &mut workers {
        kill_9(worker).await;
    }
    (app, rows)
}

fn count(row: &DeletionRow, key: &str) -> i64 {
    row.data_json[key]
        .as_i64()
        .unwrap_or_else(|| panic!("{key} in {row:?}"))
}

#[tokio::test]
async fn pairs_sharing_an_address_erased_at_once_on_two_workers_leave_no_orphan() {
    let (app, rows) = erase_twenty_pairs_on_two_workers(PLAN, "1").await;
    for pair in rows.chunks(2) {
        for row in pair {
            assert_eq!(row.status, DeletionStatus::Done, "{row:?}");
            assert_eq!(
                (
                    count(row, "rentals"),
                    count(row, "payments"),
                    count(row, "customer")
                ),
                (2, 2, 1),
                "{row:?}"
            );
        }
        // The deletion that cleared the shared address counts it; the other counts it kept.
        let cleared: i64 = pair.iter().map(|r| count(r, "address")).sum();
        let kept: i64 = pair.iter().map(|r| count(r, "address_kept")).sum();
        assert_eq!((cleared, kept), (1, 1), "{pair:?}");
    }
    assert_eq!(app.count_of(ORPHANS).await, 0);
    assert_eq!(
        app.count_of("SELECT count(*) FROM store.address").await,
        2,
        "the store's and the staff's addresses stay"
    );
    let mut values = Vec::new();
    for p in 0..20 {
        values.push(format!("{p} Pairfield Lane"));
        values.push(format!("+1-555-7{p:03}"));
        values.push(format!("PF{p:03}"));
    }
    for customer in [100, 121, 139] {
        values.push(format!("Pairson{customer}"));
        values.push(format!("pat{customer}@pairs.example"));
    }
    assert_gone(&app, &values).await;
    app.cleanup().await;
}

#[tokio::test]
async fn pairs_of_kept_customers_sharing_an_address_erased_at_once_anonymize_it_once() {
    let (app, rows) = erase_twenty_pairs_on_two_workers(PLAN_KEPT, "1").await;
    for pair in rows.chunks(2) {
        for row in pair {
            assert_eq!(row.status, DeletionStatus::Done, "{row:?}");
            assert_eq!(
                (
                    count(row, "rentals"),
                    count(row, "payments"),
                    count(row, "customer")
                ),
                (2, 2, 1),
                "{row:?}"
            );
        }
        let cleared: i64 = pair.iter().map(|r| count(r, "address")).sum();
        let kept: i64 = pair.iter().map(|r| count(r, "address_kept")).sum();
        assert_eq!((cleared, kept), (1, 1), "{pair:?}");
    }
    // Every pair's address stays (the kept customer rows point at it), anonymized.
    assert_eq!(
        app.count_of(
            "SELECT count(*) FROM store.address WHERE address = 'erased' AND phone = '-' AND postal_code IS NULL"
        )
        .await,
        20
    );
    let mut values = Vec::new();
    for p in 0..20 {
        values.push(format!("{p} Pairfield Lane"));
        values.push(format!("+1-555-7{p:03}"));
    }
    values.push("Pairson117".into());
    values.push("pat117@pairs.example".into());
    assert_gone(&app, &values).await;
    app.cleanup().await;
}

#[tokio::test]
async fn a_shared_address_the_customers_point_at_without_a_foreign_key_stays_while_one_of_them_lives()
 {
    // Real schemas leave keys undeclared: nothing in the database says the customers use their
    // address, so the plan's own `from` column must count as a use.
    let schema =
        format!("{SCHEMA}\nALTER TABLE store.customer DROP CONSTRAINT customer_address_id_fkey;");
    let app = TestApp::with_schema(&schema, PLAN).await;
    run(&app, BASE).await;
    run(&app, &pairs_sql(0..2)).await;
    let others = [
        "SELECT * FROM store.customer WHERE customer_id <> 100",
        "SELECT * FROM store.address",
        "SELECT * FROM store.rental WHERE customer_id <> 100",
        "SELECT * FROM store.payment WHERE customer_id <> 100",
    ];
    let before = checksum(&app, &others).await;
    let first = app.erase_by_engine(request("100")).await;
    assert_eq!(
        first.data_json,
        json!({"rentals": 2, "payments": 2, "payments_of_others_unlinked": 0,
               "address": 0, "address_kept": 1, "customer": 1})
    );
    assert_eq!(
        checksum(&app, &others).await,
        before,
        "customer 101 still lives there"
    );
    assert_gone(&app, &["Pairson100".into(), "pat100@pairs.example".into()]).await;
    assert_eq!(
        verification_of_now(&app, &first.id).await["outcome"],
        "passed"
    );
    let second = app.erase_by_engine(request("101")).await;
    assert_eq!(
        (count(&second, "address"), count(&second, "address_kept")),
        (1, 0)
    );
    assert_gone(
        &app,
        &[
            "0 Pairfield Lane".into(),
            "+1-555-7000".into(),
            "Pairson101".into(),
        ],
    )
    .await;
    assert_eq!(
        verification_of_now(&app, &second.id).await["outcome"],
        "passed"
    );
    // The other pair's address and the store's are where they were.
    assert_eq!(
        app.count_of("SELECT count(*) FROM store.address WHERE address_id IN (1, 2, 101)")
            .await,
        3
    );
    app.cleanup().await;
}

#[tokio::test]
async fn a_kept_customers_shared_address_is_cleared_when_the_last_of_them_is_erased() {
    let app = TestApp::with_schema(SCHEMA, PLAN_KEPT).await;
    run(&app, BASE).await;
    run(&app, &pairs_sql(0..1)).await;
    // One after the other: the first keeps it (the second still lives there), the second
    // clears it, though the first's kept row still points at it.
    let first = app.erase_by_engine(request("100")).await;
    assert_eq!(
        (count(&first, "address"), count(&first, "address_kept")),
        (0, 1)
    );
    let second = app.erase_by_engine(request("PAT101@pairs.example")).await;
    assert_eq!(
        (count(&second, "address"), count(&second, "address_kept")),
        (1, 0)
    );
    assert_gone(&app, &["0 Pairfield Lane".to_string(), "Pairson100".into()]).await;
    // Asked again: nothing left to clear.
    let again = app.erase_by_engine(request("101")).await;
    assert!(again.already_erased, "{again:?}");
    // The store's address, shared with customer 1: kept, in use by the store.
    let storeside = app.erase_by_engine(request("1")).await;
    assert_eq!(
        (
            count(&storeside, "address"),
            count(&storeside, "address_kept")
        ),
        (0, 1)
    );
    assert_eq!(
        app.count_of("SELECT count(*) FROM store.address WHERE address = '1 Storefront Way'")
            .await,
        1
    );
    app.cleanup().await;
}

/// Customer 10 with rentals 100 and 101; customer 11 paid for rental 100, customer 10 for 101;
/// customer 12 unrelated. Payments in every partition (the third has no foreign key and no
/// index).
const OTHERS: &str = "\
    INSERT INTO store.address (address_id, address, postal_code, phone) VALUES \
      (10, '10 Tenant Terrace', 'TT10', '+1-555-1010'), (11, '11 Payer Place', 'PP11', '+1-555-1111'), \
      (12, '12 Quiet Close', 'QC12', '+1-555-1212'); \
    INSERT INTO store.customer (customer_id, store_id, first_name, last_name, email, address_id) VALUES \
      (10, 1, 'Tess', 'Tenant', 'tess@tenant.example', 10), (11, 1, 'Paul', 'Payer', 'paul@payer.example', 11), \
      (12, 1, 'Quin', 'Quiet', 'quin@quiet.example', 12); \
    INSERT INTO store.rental (rental_id, rental_date, inventory_id, customer_id, staff_id) VALUES \
      (100, '2022-01-10', 7, 10, 1), (101, '2022-02-10', 8, 10, 1), (110, '2022-01-11', 9, 11, 1), \
      (120, '2022-03-12', 9, 12, 1); \
    INSERT INTO store.payment (customer_id, staff_id, rental_id, amount, payment_date) VALUES \
      (11, 1, 100, 4.99, '2022-01-10'), (10, 1, 101, 1.99, '2022-02-10'), (10, 1, 101, 0.50, '2022-03-10'), \
      (11, 1, 110, 2.99, '2022-01-11'), (12, 1, 120, 3.99, '2022-03-12');";

/// Customer 10's personal values (name, email, address, phone), none of which an erasure of
/// customer 10 may leave.
const TENANT: [&str; 4] = [
    "Tenant",
    "tess@tenant.example",
    "10 Tenant Terrace",
    "+1-555-1010",
];

#[tokio::test]
async fn payments_others_made_on_the_customers_rentals_are_unlinked_not_erased() {
    let app = TestApp::with_schema(SCHEMA, PLAN).await;
    run(&app, BASE).await;
    run(&app, OTHERS).await;
    let others = [
        "SELECT * FROM store.customer WHERE customer_id <> 10",
        "SELECT * FROM store.address WHERE address_id <> 10",
        "SELECT * FROM store.rental WHERE customer_id <> 10",
        "SELECT payment_id, customer_id, staff_id, amount, payment_date FROM store.payment WHERE customer_id <> 10",
        "SELECT * FROM store.store",
        "SELECT * FROM store.staff",
    ];
    let before = checksum(&app, &others).await;
    let expected = json!({"rentals": 2, "payments": 2, "payments_of_others_unlinked": 1,
                          "address": 1, "address_kept": 0, "customer": 1});
    let preview = app
        .eraser()
        .preview("10", "dpo", Channel::Cli)
        .await
        .unwrap();
    assert_eq!(preview.data_json, expected);
    let row = app.erase_by_engine(request("10")).await;
    assert_eq!(row.status, DeletionStatus::Done, "{row:?}");
    assert_eq!(row.data_json, expected);
    // Customer 11's payment for the erased customer's rental stays, let go of the rental.
    assert_eq!(
        app.count_of("SELECT count(*) FROM store.payment WHERE customer_id = 11 AND rental_id IS NULL AND amount = 4.99")
            .await,
        1
    );
    assert_eq!(checksum(&app, &others).await, before);
    assert_gone(&app, &TENANT.map(String::from)).await;
    let outcome = verification_of_now(&app, &row.id).await;
    assert_eq!(outcome["outcome"], "passed", "{outcome}");
    app.cleanup().await;
}

/// Runs the check after commit for what is queued, and returns what it recorded for
/// `deletion_id`.
pub async fn verification_of_now(app: &TestApp, deletion_id: &str) -> Value {
    app.app
        .as_ref()
        .unwrap()
        .verifier
        .verify_queued(256)
        .await
        .unwrap();
    verification_of(app, deletion_id).await
}

/// The store under `plan` with the base rows, the others, and a payment customer 10 made on
/// customer 12's rental (rental 120).
async fn paid_for_another(plan: &str) -> TestApp {
    let app = TestApp::with_schema(SCHEMA, plan).await;
    run(&app, BASE).await;
    run(&app, OTHERS).await;
    run(&app, "INSERT INTO store.payment (customer_id, staff_id, rental_id, amount, payment_date) VALUES (10, 1, 120, 9.99, '2022-03-13')").await;
    app
}

#[tokio::test]
async fn a_row_of_another_customer_that_cannot_let_go_refuses_the_erasure_and_changes_nothing() {
    // Customer 10 paid for customer 12's rental: by the plan as written, that payment is
    // customer 10's and customer 12's both; its link to customer 10 cannot be null.
    let app = paid_for_another(PLAN).await;
    let everything = [
        "SELECT * FROM store.customer",
        "SELECT * FROM store.address",
        "SELECT * FROM store.rental",
        "SELECT * FROM store.payment",
    ];
    let before = checksum(&app, &everything).await;
    let preview = app
        .eraser()
        .preview("10", "dpo", Channel::Cli)
        .await
        .unwrap();
    let (key, message) = preview.blocked_by.clone().expect("refused");
    assert_eq!(key, ErrorKey::Conflict);
    assert!(
        message.starts_with("1 row of store.payment belongs to another customer by another path and points at this customer's rows by customer_id, which cannot be null"),
        "{message}"
    );
    assert!(message.contains("customer_id"), "{message}");
    let row = app.erase_by_engine(request("10")).await;
    assert_eq!(row.status, DeletionStatus::Failed);
    assert_eq!(row.error_key, Some(ErrorKey::Conflict));
    assert_eq!(row.error_message.as_deref(), Some(message.as_str()));
    assert_eq!(checksum(&app, &everything).await, before, "nothing changed");
    app.cleanup().await;

    // Marked: a payment is its payer's; one on the customer's rental is the customer's only
    // when no other subject owns it. The payment customer 10 made on customer 12's rental is
    // then customer 10's, and erased with it; customer 12's rental stays.
    let marked = PLAN.replace(
        r#"paths = [["customer_id -> customer.customer_id"], ["rental_id -> rental.rental_id"]]"#,
        r#"paths = [["customer_id -> customer.customer_id"], { path = ["rental_id -> rental.rental_id"], only_when_unowned = true }]"#,
    );
    assert_ne!(marked, PLAN);
    let app = paid_for_another(&marked).await;
    let row = app.erase_by_engine(request("10")).await;
    assert_eq!(row.status, DeletionStatus::Done, "{row:?}");
    assert_eq!(
        row.data_json,
        json!({"rentals": 2, "payments": 3, "payments_of_others_unlinked": 1,
               "address": 1, "address_kept": 0, "customer": 1})
    );
    assert_eq!(
        app.count_of("SELECT count(*) FROM store.rental WHERE rental_id = 120")
            .await,
        1
    );
    assert_eq!(
        app.count_of("SELECT count(*) FROM store.payment WHERE customer_id = 12")
            .await,
        1
    );
    app.cleanup().await;
}

#[tokio::test]
async fn a_row_of_another_customer_pointing_at_a_customer_row_that_stays_does_not_refuse() {
    // As above, customer 10 paid for customer 12's rental, but the plan keeps the customer row
    // (anonymized): the payment's link to customer 10 points at a row that stays, so nothing
    // forces that payment out and the erasure goes through, leaving it to customer 12.
    let app = paid_for_another(PLAN_KEPT).await;
    let others = [
        "SELECT * FROM store.customer WHERE customer_id <> 10",
        "SELECT * FROM store.address WHERE address_id <> 10",
        "SELECT * FROM store.rental WHERE customer_id <> 10",
        "SELECT payment_id, customer_id, staff_id, amount, payment_date FROM store.payment WHERE customer_id <> 10",
        "SELECT * FROM store.payment WHERE rental_id = 120",
    ];
    let before = checksum(&app, &others).await;
    let row = app.erase_by_engine(request("10")).await;
    assert_eq!(row.status, DeletionStatus::Done, "{row:?}");
    assert_eq!(
        row.data_json,
        json!({"rentals": 2, "payments": 2, "payments_of_others_unlinked": 1,
               "address": 1, "address_kept": 0, "customer": 1})
    );
    assert_eq!(checksum(&app, &others).await, before);
    assert_eq!(
        app.count_of("SELECT count(*) FROM store.payment WHERE customer_id = 10")
            .await,
        1,
        "only the payment on customer 12's rental is left"
    );
    assert_gone(&app, &TENANT.map(String::from)).await;
    app.cleanup().await;
}

#[tokio::test]
async fn a_not_null_link_to_another_customers_row_refuses_and_changes_nothing() {
    let not_null =
        format!("{SCHEMA}\nALTER TABLE store.payment ALTER COLUMN rental_id SET NOT NULL;");
    let app = TestApp::with_schema(&not_null, PLAN).await;
    run(&app, BASE).await;
    run(&app, OTHERS).await;
    let everything = [
        "SELECT * FROM store.customer",
        "SELECT * FROM store.rental",
        "SELECT * FROM store.payment",
        "SELECT * FROM store.address",
    ];
    let before = checksum(&app, &everything).await;
    let row = app.erase_by_engine(request("tess@TENANT.example")).await;
    assert_eq!(row.error_key, Some(ErrorKey::Conflict), "{row:?}");
    let message = row.error_message.clone().unwrap();
    assert!(
        message.starts_with("1 row of store.payment belongs to another customer by another path and points at this customer's rows by rental_id, which cannot be null"),
        "{message}"
    );
    assert_eq!(checksum(&app, &everything).await, before);
    // Nor can the customer who made that payment be erased: the payment hangs off customer
    // 10's rental too, and the plan says it is theirs as much as its payer's.
    let payer = app.erase_by_engine(request("11")).await;
    assert_eq!(payer.error_key, Some(ErrorKey::Conflict), "{payer:?}");
    assert_eq!(checksum(&app, &everything).await, before);
    app.cleanup().await;

    // With the rental path marked, a payment is its payer's: the payer's erasure takes it, and
    // then the tenant's erasure goes through.
    let marked = PLAN.replace(
        r#"["rental_id -> rental.rental_id"]]"#,
        r#"{ path = ["rental_id -> rental.rental_id"], only_when_unowned = true }]"#,
    );
    let app = TestApp::with_schema(&not_null, &marked).await;
    run(&app, BASE).await;
    run(&app, OTHERS).await;
    assert_eq!(
        app.erase_by_engine(request("10")).await.error_key,
        Some(ErrorKey::Conflict)
    );
    let payer = app.erase_by_engine(request("11")).await;
    assert_eq!(payer.status, DeletionStatus::Done, "{payer:?}");
    assert_eq!(payer.data_json["payments"], 2);
    let tenant = app.erase_by_engine(request("10")).await;
    assert_eq!(tenant.status, DeletionStatus::Done, "{tenant:?}");
    assert_eq!(tenant.data_json["payments"], 2);
    assert_eq!(app.count_of(ORPHANS).await, 0);
    app.cleanup().await;
}

#[tokio::test]
async fn the_check_after_commit_fails_on_a_row_left_behind_and_passes_what_is_only_stamped() {
    let app = TestApp::with_schema(SCHEMA, PLAN).await;
    run(&app, BASE).await;
    run(&app, OTHERS).await;
    run(&app, &pairs_sql(0..1)).await;
    let tenant = app.erase_by_engine(request("10")).await;
    let pat = app.erase_by_engine(request("100")).await;
    // A payment of the erased customer's appears after the commit, in the partition that has
    // no foreign key to hold it back: the check finds it, and names the table.
    run(&app, "INSERT INTO store.payment (customer_id, staff_id, rental_id, amount, payment_date) VALUES (10, 1, NULL, 5.55, '2022-03-20')").await;
    let outcome = verification_of_now(&app, &tenant.id).await;
    assert_eq!(
        outcome,
        json!({"outcome": "failed", "tables": ["store.payment"]})
    );
    assert_eq!(verification_of(&app, &pat.id).await["outcome"], "passed");
    app.cleanup().await;

    // Stamped only: a plan that keeps the customer's rentals, marking when they were taken out
    // of its history, finds nothing personal in them.
    let stamped = PLAN_KEPT.replace(
        "[[step]]\ntable = \"rental\"\npath = [\"customer_id -> customer.customer_id\"]\naction = \"delete\"",
        "[[step]]\ntable = \"rental\"\npath = [\"customer_id -> customer.customer_id\"]\naction = \"anonymize\"\nset_now = [\"erased_at\"]",
    );
    assert_ne!(stamped, PLAN_KEPT);
    let app = TestApp::with_schema(SCHEMA, &stamped).await;
    run(&app, BASE).await;
    run(&app, OTHERS).await;
    let row = app.erase_by_engine(request("12")).await;
    assert_eq!(row.data_json["rentals"], 1, "{row:?}");
    // A rental of the kept customer written after the commit, not stamped: it holds nothing
    // the plan clears either, so the check has nothing to find in it.
    run(&app, "INSERT INTO store.rental (rental_id, rental_date, inventory_id, customer_id, staff_id) VALUES (121, '2022-03-20', 9, 12, 1)").await;
    assert_eq!(
        verification_of_now(&app, &row.id).await,
        json!({"outcome": "passed"})
    );
    run(&app, "DELETE FROM store.rental WHERE rental_id = 121").await;
    // Asked again, there is nothing left to stamp or clear.
    let again = app.erase_by_engine(request("12")).await;
    assert!(again.already_erased, "{again:?}");
    assert_eq!(again.data_json["rentals"], 0);
    app.cleanup().await;
}

#[tokio::test]
async fn a_shared_address_nothing_uses_any_more_fails_the_check_and_the_sweep_clears_it() {
    let app = TestApp::with_schema(SCHEMA, PLAN).await;
    run(&app, BASE).await;
    // Customer 1 lives at the store's address: kept, in use by the store.
    let row = app.erase_by_engine(request("1")).await;
    assert_eq!(
        (count(&row, "address"), count(&row, "address_kept")),
        (0, 1)
    );
    // Before the check runs, the store moves out (its address goes to another row).
    run(&app, "INSERT INTO store.address (address_id, address, phone) VALUES (3, '3 New Street', '+1-555-0003'); \
               UPDATE store.store SET address_id = 3 WHERE store_id = 1").await;
    let outcome = verification_of_now(&app, &row.id).await;
    assert_eq!(
        outcome,
        json!({"outcome": "failed", "tables": ["store.address"]})
    );
    // The sweep cleared it and queued the deletion for another check.
    assert_eq!(
        app.count_of("SELECT count(*) FROM store.address WHERE address_id = 1")
            .await,
        0
    );
    let actions: Vec<(String, Value)> = sqlx::query_as(
        "SELECT action, detail FROM erasure.audit_log WHERE deletion_id = $1 ORDER BY id",
    )
    .bind(&row.id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        actions.last().unwrap(),
        &(
            "erasure.swept".to_string(),
            json!({"swept": {"store.address": 1}})
        )
    );
    app.app
        .as_ref()
        .unwrap()
        .verifier
        .verify_queued(256)
        .await
        .unwrap();
    assert_eq!(
        verification_of(&app, &row.id).await,
        json!({"outcome": "passed", "swept": {"store.address": 1}})
    );
    assert_gone(&app, &["1 Storefront Way".to_string(), "Storeside".into()]).await;
    app.cleanup().await;
}

/// A library where a fine is the borrower's of the loan it is on, whoever paid it: the path that
/// owns a fine ends at another step's table (or runs through it to the member), and that table
/// names its member `borrower`, not by the member's key. A fine paid without a loan is its
/// payer's. A reminder about a fine (which holds the address it went to) is the fine's owner's,
/// three tables from the member.
const LIBRARY: &str = "\
    CREATE SCHEMA lib; \
    CREATE TABLE lib.member (member_id integer PRIMARY KEY, full_name text NOT NULL, email text NOT NULL); \
    CREATE UNIQUE INDEX member_email_idx ON lib.member (lower(email)); \
    CREATE TABLE lib.loan (loan_id integer PRIMARY KEY, \
      borrower integer NOT NULL REFERENCES lib.member (member_id), title text NOT NULL); \
    CREATE INDEX loan_borrower_idx ON lib.loan (borrower); \
    CREATE TABLE lib.fine (fine_id integer PRIMARY KEY, payer_id integer REFERENCES lib.member (member_id), \
      loan_id integer REFERENCES lib.loan (loan_id), amount numeric(6, 2) NOT NULL, note text); \
    CREATE INDEX fine_payer_idx ON lib.fine (payer_id); \
    CREATE INDEX fine_loan_idx ON lib.fine (loan_id); \
    CREATE TABLE lib.reminder (reminder_id integer PRIMARY KEY, \
      fine_id integer NOT NULL REFERENCES lib.fine (fine_id), sent_to text NOT NULL); \
    CREATE INDEX reminder_fine_idx ON lib.reminder (fine_id);";

const LIBRARY_PLAN: &str = r#"
schema = "lib"

[subject]
table = "member"
key = "member_id"
lookups = [{ column = "email", case_insensitive = true }]
counted_as = "member"

[[step]]
table = "loan"
path = ["borrower -> member.member_id"]
action = "delete"
counted_as = "loans"

[[step]]
table = "fine"
paths = [["loan_id -> loan.loan_id"], { path = ["payer_id -> member.member_id"], only_when_unowned = true }]
action = "delete"
counted_as = "fines"

[[step]]
table = "reminder"
path = ["fine_id -> fine.fine_id"]
action = "delete"
counted_as = "reminders"
"#;

/// Ada (1) paid a fine on Bob's (2) loan, Bob one on Ada's; Ada has a fine with no loan.
const LIBRARY_ROWS: &str = "\
    INSERT INTO lib.member VALUES (1, 'Ada Lenderby', 'ada@lib.example'), \
      (2, 'Bob Borrowman', 'bob@lib.example'), (3, 'Cy Quietly', 'cy@lib.example'); \
    INSERT INTO lib.loan VALUES (10, 1, 'Notes on engines'), (11, 1, 'Sketches'), \
      (20, 2, 'Bob''s atlas'), (30, 3, 'Cy''s novel'); \
    INSERT INTO lib.fine VALUES (1, 1, 10, 1.00, 'late'), (2, 1, 20, 2.00, 'paid for a friend'), \
      (3, 2, 10, 3.00, 'paid for a friend'), (4, 3, 30, 4.00, NULL), (5, 1, NULL, 5.00, 'lost card'), \
      (6, 2, 20, 6.00, NULL); \
    INSERT INTO lib.reminder VALUES (1, 1, 'ada@lib.example'), (2, 3, 'bob@lib.example'), \
      (3, 6, 'bob@lib.example'), (4, 2, 'bob@lib.example');";

#[tokio::test]
async fn a_row_owned_through_another_steps_table_is_its_owners_whoever_else_it_points_at() {
    // The owning path as a hop to the loan step (which leads on to the member by its own
    // path), and as two hops through the loan table to the member: the same rows either way.
    let through_loan = LIBRARY_PLAN.replace(
        r#"[["loan_id -> loan.loan_id"], "#,
        r#"[["loan_id -> loan.loan_id", "borrower -> member.member_id"], "#,
    );
    assert_ne!(through_loan, LIBRARY_PLAN);
    for plan in [LIBRARY_PLAN, &through_loan] {
        let app = TestApp::with_schema(LIBRARY, plan).await;
        run(&app, LIBRARY_ROWS).await;
        let others = [
            "SELECT * FROM lib.member WHERE member_id <> 1",
            "SELECT * FROM lib.loan WHERE borrower <> 1",
            "SELECT * FROM lib.fine WHERE fine_id IN (4, 6)",
            "SELECT fine_id, loan_id, amount, note FROM lib.fine WHERE fine_id = 2",
            "SELECT * FROM lib.reminder WHERE reminder_id IN (3, 4)",
        ];
        let before = checksum(&app, &others).await;
        let ada = app.erase_by_engine(request("ADA@lib.example")).await;
        assert_eq!(ada.status, DeletionStatus::Done, "{ada:?}");
        // Her loans, the fine on her loan she paid, the one Bob paid on it, and the one with no
        // loan, and the reminders about the first two; the fine she paid on Bob's loan is Bob's,
        // and lets go of her.
        assert_eq!(
            ada.data_json,
            json!({"loans": 2, "fines": 3, "fines_of_others_unlinked": 1, "reminders": 2,
                   "member": 1}),
            "{plan}"
        );
        assert_eq!(checksum(&app, &others).await, before);
        let left: Vec<(i32, Option<i32>)> =
            sqlx::query_as("SELECT fine_id, payer_id FROM lib.fine ORDER BY fine_id")
                .fetch_all(&app.pool)
                .await
                .unwrap();
        assert_eq!(left, [(2, None), (4, Some(3)), (6, Some(2))]);
        assert_gone(&app, &["Ada Lenderby".into(), "ada@lib.example".into()]).await;
        assert_eq!(
            verification_of_now(&app, &ada.id).await["outcome"],
            "passed"
        );
        // Bob's erasure then takes his loan, both fines on it (the one Ada paid included) and
        // their reminders.
        let bob = app.erase_by_engine(request("2")).await;
        assert_eq!(
            bob.data_json,
            json!({"loans": 1, "fines": 2, "fines_of_others_unlinked": 0, "reminders": 2,
                   "member": 1}),
            "{plan}"
        );
        assert_gone(&app, &["Bob Borrowman".into(), "bob@lib.example".into()]).await;
        assert_eq!(
            app.count_of("SELECT count(*) FROM lib.fine WHERE fine_id = 4")
                .await,
            1
        );
        app.cleanup().await;
    }
}
