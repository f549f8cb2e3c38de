//! The plan language on the shapes it grew for (tests/schemas/lending): lookups of bigint,
//! uuid and citext columns; guards on a NULL, on typed comparisons and with several conditions;
//! personal data nested in jsonb. Each with exact counts, everyone else's rows unchanged, none of
//! the member's personal values left, and the check after commit passing; and the plan check
//! refusing guard values the column's type cannot hold.

use erasure::deletion::{DeletionStatus, ErrorKey};
use serde_json::{Value, json};

use crate::helpers::TestApp;
use crate::helpers::plans::{checksum_of, erase_one, gaps_of};
use crate::shared_rows::verification_of_now;

const LENDING: (&str, &str) = (
    include_str!("../schemas/lending/schema.sql"),
    include_str!("../schemas/lending/plan.toml"),
);

const SEED: &str = "\
    INSERT INTO lend.member (member_id, external_id, card, email, full_name) VALUES \
      (1, 9000000001, 'a1b2c3d4-0000-4000-8000-000000000001', 'Lena.Lendwell@Lend.Example', 'Lena Lendwell'), \
      (2, 9000000002, NULL, 'open@lend.example', 'Otto Open'), \
      (3, 9000000003, 'a1b2c3d4-0000-4000-8000-000000000003', 'cara@lend.example', 'Cara Card'), \
      (4, 42, NULL, 'fee@lend.example', 'Fay Fee'), \
      (5, 5, NULL, 'stay@lend.example', 'Stan Stay'); \
    INSERT INTO lend.loan (member_id, title, borrowed_at, returned_at, fee, fee_paid_at) VALUES \
      (1, 'Lendwell memoirs', '2025-01-01', '2025-01-20', 0, NULL), \
      (1, 'Atlas', '2025-02-01', '2025-02-10', 150, '2025-02-11'), \
      (1, 'Old fee', '2019-05-01', '2019-05-09', 500, NULL), \
      (2, 'Still out', '2026-11-01', NULL, 0, NULL), \
      (3, 'Returned', '2026-01-01', '2026-01-05', 2, NULL), \
      (4, 'Lost', '2025-06-01', '2025-06-30', 120, NULL), \
      (5, 'Kept going', '2026-01-01', '2026-01-02', 0, NULL); \
    INSERT INTO lend.contact_note (member_id, data) VALUES \
      (1, '{\"branch\": \"north\", \"name\": \"Lena Lendwell\", \"contact\": {\"email\": \"lena.private@mail.example\", \"phone\": \"+44-700-lena\", \"address\": {\"street\": \"9 Lendwell Lane\", \"city\": \"York\"}}}'), \
      (1, '{\"branch\": \"south\", \"contact\": {\"phone\": \"+44-701-lena\"}}'), \
      (5, '{\"branch\": \"north\", \"name\": \"Stan Stay\", \"contact\": {\"email\": \"stan@mail.example\"}}')";

#[tokio::test]
async fn typed_lookups_null_and_typed_guards_and_nested_json_keys() {
    let app = TestApp::with_schema(LENDING.0, LENDING.1).await;
    sqlx::raw_sql(SEED).execute(&app.pool).await.unwrap();
    let others = "SELECT 'm', m.*::text FROM lend.member m WHERE member_id <> 1 \
        UNION ALL SELECT 'l', l.*::text FROM lend.loan l WHERE member_id <> 1 \
        UNION ALL SELECT 'n', n.*::text FROM lend.contact_note n WHERE note_id > 2";
    let before = checksum_of(&app, others).await;

    // By its bigint external id, written with a sign and leading zeros: read as a bigint.
    let row = erase_one(&app, "+09000000001").await;
    assert_eq!(row.status, DeletionStatus::Done, "{row:?}");
    assert_eq!(row.related_object_id.as_deref(), Some("1"));
    assert_eq!(
        row.data_json,
        json!({"loans": 3, "contact_notes": 2, "member": 1})
    );
    assert_eq!(checksum_of(&app, others).await, before);
    // The notes are kept, their nested personal keys gone and the rest left.
    let notes: Vec<Value> = sqlx::query_scalar(
        "SELECT data FROM lend.contact_note WHERE member_id IS NULL ORDER BY note_id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        notes,
        [
            json!({"branch": "north", "contact": {"address": {"city": "York"}}}),
            json!({"branch": "south", "contact": {}})
        ]
    );
    for value in [
        "Lendwell",
        "Lena.Lendwell@Lend.Example",
        "lena.private@mail.example",
        "+44-700-lena",
        "+44-701-lena",
        "9000000001",
        "a1b2c3d4-0000-4000-8000-000000000001",
    ] {
        assert_eq!(
            app.rows_containing(value).await,
            Vec::<String>::new(),
            "{value}"
        );
    }
    assert_eq!(
        verification_of_now(&app, &row.id).await["outcome"],
        "passed"
    );
    // Asked again by its citext email in another case, and by its card: found erased.
    for again in [
        "LENA.LENDWELL@lend.example",
        "A1B2C3D4000040008000000000000001",
    ] {
        let again = erase_one(&app, again).await;
        assert!(again.already_erased, "{again:?}");
        assert_eq!(again.related_object_id.as_deref(), Some("1"));
    }

    // By its card in upper case without hyphens: a uuid, read as one.
    let cara = erase_one(&app, "A1B2C3D4000040008000000000000003").await;
    assert_eq!(cara.related_object_id.as_deref(), Some("3"), "{cara:?}");
    assert_eq!(cara.data_json["loans"], 1);
    // Identifiers that do not read as the lookup's type match nothing by it (and fail nothing).
    for nobody in ["99999999999999999999", "a1b2c3d4-0000", "x42"] {
        assert_eq!(
            erase_one(&app, nobody).await.error_key,
            Some(ErrorKey::NotFound),
            "{nobody}"
        );
    }

    // A loan with no return date holds the erasure; once returned, it goes.
    let open = erase_one(&app, "open@LEND.example").await;
    assert_eq!(open.error_key, Some(ErrorKey::Conflict), "{open:?}");
    assert_eq!(
        open.error_message.as_deref(),
        Some("the member has a loan not yet returned")
    );
    sqlx::query("UPDATE lend.loan SET returned_at = now() WHERE member_id = 2")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        erase_one(&app, "9000000002").await.status,
        DeletionStatus::Done
    );

    // An unpaid fee over 100 holds it (member 1's unpaid 500 was from 2019, outside the range,
    // and its paid 150 was paid: neither held); paid, it goes.
    let fee = erase_one(&app, "42").await;
    assert_eq!(
        fee.error_message.as_deref(),
        Some("the member owes a fee over 100"),
        "{fee:?}"
    );
    assert_eq!(
        app.count_of("SELECT count(*) FROM lend.loan WHERE member_id = 4")
            .await,
        1
    );
    sqlx::query("UPDATE lend.loan SET fee_paid_at = now() WHERE member_id = 4")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        erase_one(&app, "fee@lend.example").await.status,
        DeletionStatus::Done
    );
    // Member 5's own key (5) and external id (5) are one customer: found by its key.
    assert_eq!(
        app.count_of("SELECT count(*) FROM lend.member WHERE member_id = 5")
            .await,
        1
    );
    app.cleanup().await;
}

#[tokio::test]
async fn guard_values_the_column_cannot_hold_are_gaps() {
    let app = TestApp::with_schema(LENDING.0, LENDING.1).await;
    assert_eq!(
        gaps_of(&app, LENDING.1).await,
        "",
        "the plan as written passes"
    );
    let open = r#"when = { column = "returned_at", is_null = true }"#;
    for (when, expected) in [
        (
            r#"when = { column = "returned_at", in = [false] }"#,
            "guard open_loan: returned_at in [\"false\"] cannot be tested on lend.loan.returned_at, which is timestamp with time zone",
        ),
        (
            r#"when = { column = "returned_at", in = ["NULL"] }"#,
            "`in` compares returned_at with the text \"NULL\", never with a null; to test for a null, write is_null = true",
        ),
        (
            r#"when = { column = "fee", between = [1, "lots"] }"#,
            "cannot be tested on lend.loan.fee, which is numeric(8,2)",
        ),
        (
            r#"when = { column = "fee", ">" = "2026-01-01" }"#,
            "guard open_loan: fee > \"2026-01-01\" cannot be tested",
        ),
        (
            r#"when = { column = "returned_at", is_null = false }"#,
            "`is_null` takes true",
        ),
        (
            r#"when = { column = "returned_at" }"#,
            "the condition on returned_at tests nothing",
        ),
        (
            r#"when = { column = "returned_at", between = ["2020-01-01"] }"#,
            "`between` takes two values",
        ),
        (
            r#"when = { column = "no_such_column", is_null = true }"#,
            "no_such_column",
        ),
    ] {
        let plan = LENDING.1.replacen(open, when, 1);
        assert_ne!(plan, LENDING.1);
        let gaps = gaps_of(&app, &plan).await;
        assert!(gaps.contains(expected), "{when}: {gaps}");
    }
    // A lookup on a column a request's string cannot be compared with, and case_insensitive
    // on a number.
    let lookups =
        r#"lookups = [{ column = "external_id" }, { column = "card" }, { column = "email" }]"#;
    for (given, expected) in [
        (
            r#"lookups = [{ column = "external_id", case_insensitive = true }]"#,
            "lookup external_id is case_insensitive but lend.member.external_id is bigint",
        ),
        (
            r#"lookups = [{ column = "full_name" }]"#,
            "column lend.member.full_name has no",
        ),
    ] {
        let gaps = gaps_of(&app, &LENDING.1.replacen(lookups, given, 1)).await;
        assert!(gaps.contains(expected), "{given}: {gaps}");
    }
    // A remove_keys path with an empty part.
    let gaps = gaps_of(
        &app,
        &LENDING
            .1
            .replacen("\"contact.phone\"", "\"contact..phone\"", 1),
    )
    .await;
    assert!(
        gaps.contains("a key, or a path of keys joined by dots, none empty"),
        "{gaps}"
    );
    app.cleanup().await;
}
