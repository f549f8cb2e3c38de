//! `erasure plan --draft` points at personal data: the columns that look personal beside each
//! table, the e-mail lookup (or the index it needs), and the placeholder pattern where a row
//! that must be kept cannot let go of what the erasure removes. Every test schema's draft passes
//! the check as drafted, and the placeholder patterns it writes erase as they say.

use erasure::deletion::{DeletionStatus, ErrorKey};
use erasure::plan::live::LiveSchema;
use erasure::plan::{Plan, TableName, draft};
use erasure::request::ErasureRequest;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{FreshDatabase, TestApp};

const SCHEMA: &str = "\
    CREATE SCHEMA crm; \
    CREATE TABLE crm.address (address_id integer PRIMARY KEY, street text NOT NULL, \
        city text NOT NULL, postcode text, country text NOT NULL); \
    CREATE TABLE crm.client (client_id integer PRIMARY KEY, email text NOT NULL, \
        full_name text NOT NULL, phone text, birth_date date, last_ip inet, profile jsonb, \
        status text NOT NULL DEFAULT 'active', created_at timestamptz NOT NULL DEFAULT now(), \
        address_id integer NOT NULL REFERENCES crm.address (address_id)); \
    CREATE UNIQUE INDEX client_email_idx ON crm.client (lower(email)); \
    CREATE INDEX client_address_idx ON crm.client (address_id); \
    CREATE TABLE crm.invoice (invoice_id integer PRIMARY KEY, \
        client_id integer NOT NULL REFERENCES crm.client (client_id), \
        total numeric(10, 2) NOT NULL, billing_name text NOT NULL, note text); \
    CREATE INDEX invoice_client_idx ON crm.invoice (client_id); \
    CREATE TABLE crm.invoice_line (line_id integer PRIMARY KEY, \
        invoice_id integer NOT NULL REFERENCES crm.invoice (invoice_id), \
        description text NOT NULL, amount numeric(10, 2) NOT NULL); \
    CREATE INDEX invoice_line_invoice_idx ON crm.invoice_line (invoice_id); \
    CREATE TABLE crm.visit (visit_id integer PRIMARY KEY, \
        client_id integer NOT NULL REFERENCES crm.client (client_id), \
        kind text NOT NULL, user_agent text); \
    CREATE INDEX visit_client_idx ON crm.visit (client_id);";

/// A plan for [`SCHEMA`] that deletes everything, for the commands that need one configured.
const PLAN: &str = r#"schema = "crm"
[subject]
table = "client"
key = "client_id"
counted_as = "client"
[[step]]
table = "invoice"
path = ["client_id -> client.client_id"]
action = "delete"
counted_as = "invoice"
[[step]]
table = "visit"
path = ["client_id -> client.client_id"]
action = "delete"
counted_as = "visit"
[[step]]
table = "invoice_line"
path = ["invoice_id -> invoice.invoice_id"]
action = "delete"
counted_as = "invoice_line"
"#;

async fn drafted(pool: &sqlx::PgPool) -> String {
    let live = LiveSchema::read(pool).await.unwrap();
    draft::draft(&live, &TableName::new("crm", "client")).unwrap()
}

#[tokio::test]
async fn the_draft_marks_personal_columns_proposes_the_email_lookup_and_writes_placeholders() {
    let fresh = FreshDatabase::new(SCHEMA, PLAN).await;
    let text = drafted(&fresh.pool).await;
    Plan::parse(&text).expect("the draft parses");
    let expected = [
        // The subject: every personal column but its keys, the e-mail's value unique to each
        // kept row; `status` holds a code, `created_at` nothing of anyone.
        "[subject]\ntable = \"client\"\nkey = \"client_id\"\n\
         # personal? birth_date (date), email (text, NOT NULL), full_name (text, NOT NULL), last_ip (inet), phone (text), profile (jsonb)\n\
         #   if the customer row must be kept: action = \"anonymize\" with set_null = [\"birth_date\", \"last_ip\", \"phone\", \"profile\"] \
         and set_value = { email = \"erased-{key}\", full_name = \"erased\" }\n",
        // A unique index on lower(email): proposed, compared in any case.
        "\nlookups = [{ column = \"email\", case_insensitive = true }]\ncounted_as = \"client\"\n",
        // Invoices are kept by law: the placeholder customer their key is repointed to.
        "# crm.invoice.client_id cannot be null. To keep those rows and still erase the crm.client row they point at,\n\
         # repoint them at a placeholder row that stays, created once:\n\
         #   INSERT INTO crm.client (client_id, address_id, email, full_name) VALUES (0, /* a crm.address.address_id that stays */, 'placeholder', 'placeholder');\n\
         # and in this step: action = \"anonymize\" with set_value = { client_id = \"0\" } (beside the personal columns it clears).\n\
         # personal? billing_name (text, NOT NULL), note (text)\n\
         #   if its rows must be kept: action = \"anonymize\" with set_null = [\"note\"] and set_value = { billing_name = \"erased\" }\n\
         [[step]]\ntable = \"invoice\"\n",
        // Lines kept without their invoice: the placeholder invoice, itself the placeholder
        // customer's.
        "# crm.invoice_line looks like an accounting record. If the law says to keep it, anonymize its rows\n\
         # instead (action = \"anonymize\", with set_null / set_value / remove_keys for its personal columns); its key to crm.invoice cannot be null, so keep those rows too\n\
         # (action = \"anonymize\" in their step), or repoint the key at a placeholder (below).\n\
         # crm.invoice_line.invoice_id cannot be null. To keep those rows and still erase the crm.invoice row they point at,\n\
         # repoint them at a placeholder row that stays, created once:\n\
         #   INSERT INTO crm.invoice (invoice_id, billing_name, client_id, total) VALUES (0, 'placeholder', /* a crm.client.client_id that stays */, 0);\n\
         # and in this step: action = \"anonymize\" with set_value = { invoice_id = \"0\" } (beside the personal columns it clears).\n\
         # personal? description (text, NOT NULL)\n\
         #   if its rows must be kept: action = \"anonymize\" with set_value = { description = \"erased\" }\n\
         [[step]]\ntable = \"invoice_line\"\n",
        // Free text by type; `kind` holds a code.
        "\n# personal? user_agent (text)\n\
         #   if its rows must be kept: action = \"anonymize\" with set_null = [\"user_agent\"]\n\
         [[step]]\ntable = \"visit\"\n",
        // The address: a kept customer cannot null its key, so it must anonymize the row.
        "# anonymize (a kept subject cannot null address_id, so it must anonymize it).\n\
         # personal? city (text, NOT NULL), postcode (text), street (text, NOT NULL)\n\
         #   if the row must be kept: action = \"anonymize\" with set_null = [\"postcode\"] and set_value = { city = \"erased\", street = \"erased\" }\n\
         # [[referenced]]\n",
    ];
    for part in expected {
        assert!(text.contains(part), "missing:\n{part}\nin:\n{text}");
    }
    assert_eq!(text.matches("# personal?").count(), 5, "{text}");

    // Without a unique index, the e-mail is no lookup yet: the draft says which index it needs.
    sqlx::query("DROP INDEX crm.client_email_idx")
        .execute(&fresh.pool)
        .await
        .unwrap();
    let text = drafted(&fresh.pool).await;
    assert!(
        text.contains(
            "# email looks like an e-mail a request may name the customer by; as a lookup it needs a unique index:\n\
             #   CREATE UNIQUE INDEX ON crm.client (lower(email));\n\
             # then: lookups = [{ column = \"email\", case_insensitive = true }]\n\
             counted_as = \"client\""
        ),
        "{text}"
    );
    assert!(!text.contains("\nlookups ="), "{text}");
}

#[tokio::test]
async fn every_test_schema_drafts_a_plan_that_passes_the_check() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemas");
    let mut schemas: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    schemas.sort();
    assert!(schemas.len() >= 4, "{schemas:?}");
    for dir in schemas {
        let schema = std::fs::read_to_string(dir.join("schema.sql")).unwrap();
        let plan = std::fs::read_to_string(dir.join("plan.toml")).unwrap();
        let subject = Plan::parse(&plan).unwrap().subject.table.to_string();
        let fresh = FreshDatabase::new(&schema, &plan).await;
        let output = fresh.run(&["plan", "--draft", "--subject", &subject]).await;
        assert!(output.status.success(), "{dir:?}: {output:?}");
        let draft = String::from_utf8(output.stdout).unwrap();
        assert!(draft.contains("# personal? "), "{dir:?}:\n{draft}");
        fresh.write_plan(&draft);
        let checked = fresh.run(&["plan"]).await;
        assert!(
            checked.status.success(),
            "{dir:?}: the draft does not pass:\n{}\n{draft}",
            String::from_utf8_lossy(&checked.stderr)
        );
    }
}

/// A request from the DPO for the customer `identifier` names.
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

/// Runs the check after commit of what is queued; what it found for `deletion_id`.
async fn checked_after_commit(app: &TestApp, deletion_id: &str) -> serde_json::Value {
    let verifier = &app.app.as_ref().unwrap().verifier;
    verifier.verify_queued(256).await.unwrap();
    sqlx::query_scalar("SELECT outcome FROM erasure.verifications WHERE deletion_id = $1")
        .bind(deletion_id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

async fn rows(app: &TestApp, sql: &str) -> Vec<String> {
    sqlx::query_scalar(&format!("SELECT t::text FROM ({sql}) t ORDER BY 1"))
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

/// The placeholder rows the plans below repoint kept rows at, created once, as the draft
/// says: before the service starts, whose check asks for them.
const PLACEHOLDERS: &str = "\
    INSERT INTO crm.address VALUES (0, 'placeholder', 'placeholder', NULL, 'placeholder'); \
    INSERT INTO crm.client (client_id, address_id, email, full_name) \
        VALUES (0, 0, 'placeholder', 'placeholder'); \
    INSERT INTO crm.invoice VALUES (0, 0, 0, 'placeholder', NULL);";

const DATA: &str = "\
    INSERT INTO crm.address VALUES (1, '1 Ada Lane', 'Lyon', '69001', 'FR'), \
        (2, '2 Bob Road', 'Nice', '06000', 'FR'); \
    INSERT INTO crm.client (client_id, email, full_name, phone, address_id) VALUES \
        (1, 'ada@example.com', 'Ada Lovelace', '+33-1', 1), (2, 'bob@example.com', 'Bob Other', NULL, 2); \
    INSERT INTO crm.invoice VALUES (1, 1, 10, 'Ada Lovelace', 'paid by Ada'), \
        (2, 1, 20, 'Ada Lovelace', NULL), (3, 2, 30, 'Bob Other', NULL); \
    INSERT INTO crm.invoice_line VALUES (1, 1, 'Ada consulting', 10), (2, 2, 'Ada training', 20), \
        (3, 3, 'Bob consulting', 30); \
    INSERT INTO crm.visit VALUES (1, 1, 'web', 'Ada browser'), (2, 2, 'web', NULL);";

/// [`PLAN`] with the draft's choice for invoices made: kept, repointed at the placeholder
/// customer.
fn invoices_kept() -> String {
    PLAN.replace(
        "table = \"invoice\"\npath = [\"client_id -> client.client_id\"]\naction = \"delete\"",
        "table = \"invoice\"\npath = [\"client_id -> client.client_id\"]\naction = \"anonymize\"\n\
         set_null = [\"note\"]\nset_value = { client_id = \"0\", billing_name = \"erased\" }",
    )
}

#[tokio::test]
async fn a_placeholder_row_that_does_not_exist_is_a_gap() {
    let fresh = FreshDatabase::new(SCHEMA, &invoices_kept()).await;
    let output = fresh.run(&["plan"]).await;
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "error: the erasure plan does not fit the live schema:\n  \
         - set_value \"0\" points crm.invoice.client_id at a row of crm.client that does not exist \
         (client_id = \"0\"): create that placeholder row first, or every erasure keeping such a row \
         fails on foreign key invoice_client_id_fkey\n"
    );
    sqlx::raw_sql(PLACEHOLDERS)
        .execute(&fresh.pool)
        .await
        .unwrap();
    let output = fresh.run(&["plan"]).await;
    assert!(output.status.success(), "{output:?}");
}

#[tokio::test]
async fn invoices_repointed_at_a_placeholder_customer_stay_while_the_customer_goes() {
    let plan = invoices_kept()
        + "[[referenced]]\ntable = \"address\"\nkey = \"address_id\"\nfrom = \"address_id\"\n\
         action = \"delete\"\ncounted_as = \"address\"\n";
    let app = TestApp::with_schema(&format!("{SCHEMA} {PLACEHOLDERS}"), &plan).await;
    sqlx::raw_sql(DATA).execute(&app.pool).await.unwrap();
    let others = rows(&app, "SELECT * FROM crm.invoice WHERE invoice_id = 3").await;

    let row = app.erase_by_engine(request("1")).await;
    assert_eq!(row.status, DeletionStatus::Done, "{row:?}");
    assert_eq!(
        row.data_json,
        json!({"invoice": 2, "visit": 1, "invoice_line": 2, "address": 1, "address_kept": 0, "client": 1})
    );
    assert_eq!(
        rows(&app, "SELECT invoice_id, client_id, billing_name, note FROM crm.invoice WHERE invoice_id IN (1, 2)").await,
        ["(1,0,erased,)", "(2,0,erased,)"]
    );
    assert_eq!(
        rows(&app, "SELECT client_id FROM crm.client").await,
        ["(0)", "(2)"]
    );
    assert_eq!(
        rows(&app, "SELECT address_id FROM crm.address").await,
        ["(0)", "(2)"]
    );
    assert_eq!(
        rows(&app, "SELECT * FROM crm.invoice WHERE invoice_id = 3").await,
        others
    );
    assert_eq!(
        checked_after_commit(&app, &row.id).await["outcome"],
        "passed"
    );
    // Another customer's erasure leaves the invoices already repointed as they are.
    let bob = app.erase_by_engine(request("2")).await;
    assert_eq!(bob.data_json["invoice"], 1, "{bob:?}");
    let kept = rows(&app, "SELECT * FROM crm.invoice").await;
    assert_eq!(kept.len(), 4);
    assert_eq!(
        rows(
            &app,
            "SELECT count(*) FROM crm.invoice WHERE client_id <> 0"
        )
        .await,
        ["(0)"]
    );
    // An erasure naming the placeholder itself fails, changing nothing.
    let placeholder = app.erase_by_engine(request("0")).await;
    assert_eq!(
        placeholder.status,
        DeletionStatus::Failed,
        "{placeholder:?}"
    );
    assert_eq!(placeholder.error_key, Some(ErrorKey::PlanGap));
    assert_eq!(rows(&app, "SELECT * FROM crm.invoice").await, kept);
    assert_eq!(
        rows(&app, "SELECT client_id FROM crm.client").await,
        ["(0)"]
    );
    app.cleanup().await;
}

#[tokio::test]
async fn invoice_lines_repointed_at_a_placeholder_invoice_stay_while_the_invoices_go() {
    // The draft's choice for invoice lines, made: kept, repointed at the placeholder invoice
    // (the placeholder customer's); the invoices deleted.
    let plan = PLAN.replace(
        "table = \"invoice_line\"\npath = [\"invoice_id -> invoice.invoice_id\"]\naction = \"delete\"",
        "table = \"invoice_line\"\npath = [\"invoice_id -> invoice.invoice_id\"]\naction = \"anonymize\"\n\
         set_value = { invoice_id = \"0\", description = \"erased\" }",
    );
    let app = TestApp::with_schema(&format!("{SCHEMA} {PLACEHOLDERS}"), &plan).await;
    sqlx::raw_sql(DATA).execute(&app.pool).await.unwrap();

    let row = app.erase_by_engine(request("1")).await;
    assert_eq!(row.status, DeletionStatus::Done, "{row:?}");
    assert_eq!(
        row.data_json,
        json!({"invoice": 2, "visit": 1, "invoice_line": 2, "client": 1})
    );
    assert_eq!(
        rows(&app, "SELECT * FROM crm.invoice_line").await,
        [
            "(1,0,erased,10.00)",
            "(2,0,erased,20.00)",
            "(3,3,\"Bob consulting\",30.00)"
        ]
    );
    assert_eq!(
        rows(&app, "SELECT invoice_id FROM crm.invoice").await,
        ["(0)", "(3)"]
    );
    assert_eq!(
        checked_after_commit(&app, &row.id).await["outcome"],
        "passed"
    );
    app.cleanup().await;
}
