//! `erasure plan` passes ⇒ the worker can run it. For each business schema, every variant of
//! its plan that the check accepts (steps removed, actions switched, rows the customer
//! references dropped or switched, keeps added, guards removed) erases a customer on a copy of
//! the seeded database without failing, and the check after commit passes; the variants the
//! schema cannot run are refused, each gap named with its fix. And the conditions only the
//! schema decides (a kept table whose key blocks a delete, a trigger that writes back what the
//! plan clears, a fixed value on a unique column, a value the column's type cannot take, a step
//! that stamps a column never null) are named by the check.

use chrono::Utc;
use erasure::config::GracePeriod;
use erasure::deletion::DeletionStatus;
use erasure::erase::{Eraser, Limits, Outcome};
use erasure::keyed_hash::KeyedHash;
use erasure::plan::live::LiveSchema;
use erasure::plan::{Plan, PlanError, TableName, check};
use erasure::proof::verification::Verifier;
use erasure::request::{Channel, ErasureRequest};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{TestApp, database_server};

/// A database made from another (`CREATE DATABASE ... TEMPLATE`), dropped when the value goes.
struct Copy {
    name: String,
    pool: PgPool,
}

impl Copy {
    async fn of(template: &str) -> Self {
        let name = format!("erasure_test_{}", Uuid::new_v4().simple());
        let admin = PgPool::connect(&format!("{}/postgres", database_server()))
            .await
            .unwrap();
        // A template must have no other session: the seeding application's are done with.
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(template)
        .execute(&admin)
        .await
        .unwrap();
        sqlx::query(&format!(
            "CREATE DATABASE \"{name}\" TEMPLATE \"{template}\""
        ))
        .execute(&admin)
        .await
        .unwrap();
        admin.close().await;
        let pool = PgPool::connect(&format!("{}/{name}", database_server()))
            .await
            .unwrap();
        Self { name, pool }
    }

    async fn drop(self) {
        self.pool.close().await;
        let admin = PgPool::connect(&format!("{}/postgres", database_server()))
            .await
            .unwrap();
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.name
        ))
        .execute(&admin)
        .await
        .unwrap();
        admin.close().await;
    }
}

/// Every variant of `plan` one change away: each step, referenced row and guard removed; each
/// step replaced by a keep; each action switched (delete to anonymize, nulling every nullable
/// column, and back); a keep for each table that references a table of the plan without one of
/// its own; each keep removed.
fn variants(plan: &str, live: &LiveSchema) -> Vec<(String, String)> {
    let base: toml::Table = toml::from_str(plan).unwrap();
    let schema = base
        .get("schema")
        .and_then(|s| s.as_str())
        .unwrap_or("public")
        .to_owned();
    let table_of =
        |entry: &toml::Table| TableName::parse(entry["table"].as_str().unwrap(), &schema);
    let mut out = vec![("the plan as written".to_string(), plan.to_string())];
    let mut push =
        |name: String, doc: &toml::Table| out.push((name, toml::to_string(doc).unwrap()));
    for kind in ["step", "referenced", "guard", "keep"] {
        let Some(entries) = base.get(kind).and_then(|v| v.as_array()) else {
            continue;
        };
        for (i, entry) in entries.iter().enumerate() {
            let entry = entry.as_table().unwrap();
            let mut doc = base.clone();
            doc.get_mut(kind).unwrap().as_array_mut().unwrap().remove(i);
            push(format!("{kind} {i} removed"), &doc);
            if kind == "step" {
                let mut keep = toml::Table::new();
                keep.insert("table".into(), entry["table"].clone());
                keep.insert("reason".into(), "a variant".into());
                let mut kept = doc.clone();
                kept.entry("keep")
                    .or_insert_with(|| toml::Value::Array(Vec::new()))
                    .as_array_mut()
                    .unwrap()
                    .push(keep.into());
                push(format!("{kind} {i} kept instead"), &kept);
            }
            if (kind == "step" || kind == "referenced")
                && let Some(switched) = switched(entry, &table_of(entry), live, &[])
            {
                let mut doc = base.clone();
                doc.get_mut(kind).unwrap().as_array_mut().unwrap()[i] = switched.into();
                push(format!("{kind} {i} switched"), &doc);
            }
        }
    }
    let subject = base["subject"].as_table().unwrap();
    let lookups: Vec<String> = subject
        .get("lookups")
        .and_then(|l| l.as_array())
        .into_iter()
        .flatten()
        .filter_map(|l| l.get("column").and_then(|c| c.as_str()).map(str::to_owned))
        .chain(
            subject
                .get("lookup")
                .and_then(|l| l.as_str())
                .map(str::to_owned),
        )
        .collect();
    if let Some(switched) = switched(subject, &table_of(subject), live, &lookups) {
        let mut doc = base.clone();
        doc.insert("subject".into(), switched.into());
        push("subject switched".into(), &doc);
    }
    // A keep for every table that references a table of the plan and has no entry.
    let named: Vec<TableName> = ["step", "referenced", "keep"]
        .iter()
        .filter_map(|k| base.get(*k).and_then(|v| v.as_array()))
        .flatten()
        .map(|e| table_of(e.as_table().unwrap()))
        .chain([table_of(subject)])
        .collect();
    for fk in &live.foreign_keys {
        if named.contains(&fk.parent) && !named.contains(&fk.child) {
            let mut doc = base.clone();
            let keeps = doc
                .entry("keep")
                .or_insert_with(|| toml::Value::Array(Vec::new()))
                .as_array_mut()
                .unwrap();
            let mut keep = toml::Table::new();
            keep.insert("table".into(), fk.child.to_string().into());
            keep.insert("reason".into(), "a variant".into());
            keeps.push(keep.into());
            push(format!("keep {} added", fk.child), &doc);
        }
    }
    out
}

/// `entry` (a step, a referenced row or the subject) with its action switched: a delete
/// becomes an anonymize nulling every nullable column but the table's key (and clearing the
/// subject's lookups), an anonymize a delete. `None` when there is nothing to null.
fn switched(
    entry: &toml::Table,
    table: &TableName,
    live: &LiveSchema,
    lookups: &[String],
) -> Option<toml::Table> {
    let mut entry = entry.clone();
    let anonymizes = entry.get("action").and_then(|a| a.as_str()) == Some("anonymize");
    for key in ["set_null", "set_value", "set_now", "remove_keys"] {
        entry.remove(key);
    }
    if anonymizes {
        entry.insert("action".into(), "delete".into());
        return Some(entry);
    }
    let t = live.tables.get(table)?;
    let nullable: Vec<toml::Value> = t
        .columns
        .iter()
        .filter(|(name, c)| c.nullable && Some(*name) != t.primary_key.as_ref())
        .map(|(name, _)| name.clone().into())
        .collect();
    let mut values = toml::Table::new();
    for lookup in lookups {
        if !t.columns[lookup].nullable {
            values.insert(lookup.clone(), "erased-{key}".into());
        }
    }
    if nullable.is_empty() && values.is_empty() {
        return None;
    }
    entry.insert("action".into(), "anonymize".into());
    entry.insert("set_null".into(), nullable.into());
    if !values.is_empty() {
        entry.insert("set_value".into(), values.into());
    }
    Some(entry)
}

/// Seeds `seed` into the database of `app`, then, for every variant of `plan`: checks it
/// against the live schema; an accepted one erases `customer` on a copy of the database, which
/// must end DONE with its check after commit passed. Returns how many were accepted and
/// refused.
async fn every_accepted_variant_erases(
    app: TestApp,
    plan: &str,
    seed: &str,
    customer: &str,
) -> (usize, usize) {
    sqlx::raw_sql(seed).execute(&app.pool).await.unwrap();
    let live = LiveSchema::read(&app.pool).await.unwrap();
    let key = erasure::db::instance_source_id_key(&app.pool)
        .await
        .unwrap();
    let template = app.database.clone();
    let (mut accepted, mut refused) = (0, 0);
    let mut failures = Vec::new();
    for (name, text) in variants(plan, &live) {
        let Ok(parsed) = Plan::parse(&text) else {
            refused += 1;
            continue;
        };
        let copy = Copy::of(&template).await;
        match check::against_live_schema(parsed, &copy.pool).await {
            Err(PlanError::Gaps(_)) => refused += 1,
            Err(e) => panic!("{name}: {e}"),
            Ok(checked) => {
                accepted += 1;
                if let Some(failure) = erase_on(&copy.pool, checked, &key, customer).await {
                    failures.push(format!("{name}: {failure}\n{text}"));
                }
            }
        }
        copy.drop().await;
    }
    app.cleanup().await;
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    (accepted, refused)
}

/// Erases `customer` with `plan` on `pool` and checks it after commit; what went wrong, if
/// anything.
async fn erase_on(pool: &PgPool, plan: Plan, key: &[u8], customer: &str) -> Option<String> {
    let verifier = Verifier::new(pool.clone(), &plan);
    let eraser = Eraser::new(
        pool.clone(),
        plan,
        KeyedHash::new(key),
        Limits {
            max_attempts: 2,
            chunk_threshold: 20_000,
            chunk_rows: 50_000,
            chunk_time: std::time::Duration::from_millis(50),
            grace_period: GracePeriod::default(),
            preview_timeout: std::time::Duration::from_secs(5),
        },
    );
    let row = match erase_now(&eraser, customer).await {
        Ok(Outcome::Recorded(row)) => row,
        other => return Some(format!("{other:?}")),
    };
    if row.status != DeletionStatus::Done {
        return Some(format!("{row:?}"));
    }
    let checked = verifier.verify_queued(256).await.unwrap();
    match checked.iter().find(|c| c.deletion_id == row.id) {
        Some(c) if c.passed() => None,
        other => Some(format!("the check after commit: {other:?}")),
    }
}

const REFERENCE_SEED: &str = "\
    INSERT INTO customers (id, source_id, name, email, phone, address, metadata) VALUES \
      ('cust_v', 'src_v', 'Vic Variant', 'vic@variant.example', '+1-222', '{\"street\": \"1 Variant Road\"}', '{}'), \
      ('cust_w', 'src_w', 'Wil Other', 'wil@other.example', NULL, NULL, NULL); \
    INSERT INTO events (customer_id, type, metadata) VALUES ('cust_v', 'login', '{}'), ('cust_w', 'login', NULL); \
    INSERT INTO customer_events (customer_id, type, data) VALUES ('cust_v', 'viewed', '{}'); \
    INSERT INTO daily_events (customer_id, day, type, count) VALUES ('cust_v', '2026-01-01', 'login', 3); \
    INSERT INTO segments (id, name) VALUES ('vip', 'VIP'); \
    INSERT INTO segment_members (segment_id, customer_id) VALUES ('vip', 'cust_v'), ('vip', 'cust_w'); \
    INSERT INTO orders (id, customer_id, status, amount, currency, billing_name, billing_email) VALUES \
      ('ord_v1', 'cust_v', 'COMPLETED', 100, 'EUR', 'Vic Variant', 'vic@variant.example'), \
      ('ord_w1', 'cust_w', 'COMPLETED', 100, 'EUR', 'Wil Other', NULL); \
    INSERT INTO order_events (order_id, type, data) VALUES ('ord_v1', 'paid', '{}'), ('ord_w1', 'paid', NULL);";

#[tokio::test]
async fn every_plan_the_check_accepts_runs_on_the_reference_schema() {
    let (accepted, refused) = every_accepted_variant_erases(
        TestApp::new().await,
        erasure::plan::BUILT_IN,
        REFERENCE_SEED,
        "src_v",
    )
    .await;
    assert!(accepted >= 5, "{accepted} variants accepted");
    assert!(refused >= 5, "{refused} variants refused");
}

const STORE_SEED: &str = "\
    INSERT INTO store.address (address_id, address, postal_code, phone) VALUES \
      (1, '1 Storefront Way', 'SF1', '+1-555-0001'), (2, '2 Staff Street', 'SS2', '+1-555-0002'), \
      (3, '3 Home Road', 'HR3', '+1-555-0003'); \
    INSERT INTO store.store (store_id, address_id) VALUES (1, 1); \
    INSERT INTO store.staff (staff_id, first_name, last_name, address_id, store_id) VALUES (1, 'Mike', 'Hillyer', 2, 1); \
    INSERT INTO store.customer (customer_id, store_id, first_name, last_name, email, address_id) VALUES \
      (10, 1, 'Tess', 'Tenant', 'tess@tenant.example', 3), (11, 1, 'Paul', 'Payer', 'paul@payer.example', 3); \
    INSERT INTO store.rental (rental_id, rental_date, inventory_id, customer_id, staff_id) VALUES \
      (100, '2022-01-10', 7, 10, 1), (101, '2022-02-10', 8, 10, 1), (110, '2022-01-11', 9, 11, 1); \
    INSERT INTO store.payment (customer_id, staff_id, rental_id, amount, payment_date) VALUES \
      (11, 1, 100, 4.99, '2022-01-10'), (10, 1, 101, 1.99, '2022-02-10'), (10, 1, NULL, 0.50, '2022-03-10');";

#[tokio::test]
async fn every_plan_the_check_accepts_runs_on_the_business_schemas() {
    let cases: [(&str, &str, &str, &str); 5] = [
        (
            crate::shared_rows::SCHEMA,
            crate::shared_rows::PLAN,
            STORE_SEED,
            "10",
        ),
        (
            crate::shared_rows::SCHEMA,
            crate::shared_rows::PLAN_KEPT,
            STORE_SEED,
            "tess@tenant.example",
        ),
        (
            include_str!("../schemas/rentals/schema.sql"),
            include_str!("../schemas/rentals/plan.toml"),
            "INSERT INTO shop.address (address_id, street, city, phone) VALUES (1, '1 A St', 'Lyon', '+33-1'), (2, '2 B St', 'Lyon', NULL); \
             INSERT INTO shop.customer (customer_id, source_ref, email, first_name, last_name, address_id) VALUES \
               (1, 'ref-1', 'one@mail.example', 'One', 'First', 1), (2, 'ref-2', 'two@mail.example', 'Two', 'Second', 2); \
             INSERT INTO shop.store (store_id, address_id) VALUES (1, 2); \
             INSERT INTO shop.rental (rental_id, customer_id, open, note) VALUES (1, 1, false, 'note'), (2, 2, false, NULL); \
             INSERT INTO shop.payment (customer_id, rental_id, amount, paid_at, card_holder) VALUES \
               (1, 1, 3.00, '2025-06-01', 'ONE F'), (1, NULL, 1.00, '2026-03-01', 'ONE F'), (2, 2, 3.00, '2026-03-01', 'TWO S');",
            "ref-1",
        ),
        (
            include_str!("../schemas/accounts/schema.sql"),
            include_str!("../schemas/accounts/plan.toml"),
            "INSERT INTO app.addresses (id, line1, postcode, country) VALUES ('00000000-0000-4000-a000-000000000001', '1 Lane', 'L1', 'GB'); \
             INSERT INTO app.accounts (id, handle, display_name, email, address_id) VALUES \
               ('00000000-0000-4000-8000-000000000001', 'uma', 'Uma', 'uma@example.org', '00000000-0000-4000-a000-000000000001'); \
             INSERT INTO app.sessions (account_id, user_agent) VALUES ('00000000-0000-4000-8000-000000000001', 'laptop'); \
             INSERT INTO app.orders (id, account_id, state, ship_to) VALUES \
               ('00000000-0000-4000-b000-000000000001', '00000000-0000-4000-8000-000000000001', 'delivered', 'Uma'); \
             INSERT INTO billing.payments (id, order_id, card_last4, card_holder) VALUES \
               ('00000000-0000-4000-c000-000000000001', '00000000-0000-4000-b000-000000000001', '4242', 'UMA'); \
             INSERT INTO billing.refunds (payment_id, note) VALUES ('00000000-0000-4000-c000-000000000001', 'returned');",
            "uma",
        ),
        (
            include_str!("../schemas/clients/schema.sql"),
            include_str!("../schemas/clients/plan.toml"),
            "INSERT INTO crm.clients (external_id, full_name, email, phone, profile) VALUES ('ext-v', 'Vera V', 'vera@v.example', '+1', '{}'); \
             INSERT INTO crm.invoices (client_id, total, billing_name, billing_address, meta, issued_on) \
               SELECT id, 100, 'Vera V', 'Vera House', '{\"email\": \"vera@v.example\"}', date '2026-01-01' FROM crm.clients; \
             INSERT INTO crm.invoice_lines (invoice_id, description, amount) SELECT id, 'work', 100 FROM crm.invoices; \
             INSERT INTO crm.notes (client_id, body) SELECT id, 'Met Vera' FROM crm.clients; \
             INSERT INTO crm.holds (client_id, active) SELECT id, false FROM crm.clients;",
            "ext-v",
        ),
    ];
    for (schema, plan, seed, customer) in cases {
        let app = TestApp::with_schema(schema, plan).await;
        let (accepted, refused) = every_accepted_variant_erases(app, plan, seed, customer).await;
        assert!(accepted >= 3, "{accepted} variants accepted of\n{plan}");
        assert!(refused >= 1, "{refused} variants refused of\n{plan}");
    }
}

/// The gaps `erasure plan`'s check names for `plan` against the live schema of `app`.
async fn gaps_of(app: &TestApp, plan: &str) -> String {
    match check::against_live_schema(Plan::parse(plan).unwrap(), &app.pool).await {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn the_check_names_what_only_the_schema_decides() {
    let app = TestApp::with_schema(crate::shared_rows::SCHEMA, crate::shared_rows::PLAN).await;
    let plan = crate::shared_rows::PLAN;
    let kept = crate::shared_rows::PLAN_KEPT;
    assert_eq!(gaps_of(&app, plan).await, "");
    assert_eq!(gaps_of(&app, kept).await, "");

    // A kept table whose key blocks the delete of the customer's rows.
    let keep_payments = plan.replace(
        "[[step]]\ntable = \"payment\"\npaths = [[\"customer_id -> customer.customer_id\"], [\"rental_id -> rental.rental_id\"]]\naction = \"delete\"\ncounted_as = \"payments\"",
        "[[keep]]\ntable = \"payment\"\nreason = \"accounting records\"",
    );
    assert_ne!(keep_payments, plan);
    let gap = gaps_of(&app, &keep_payments).await;
    assert!(
        gap.contains("table store.payment is kept, but its foreign key payment_p2022_01_customer_id_fkey (customer_id -> store.customer) has no ON DELETE action"),
        "{gap}"
    );
    assert!(gap.contains("give store.payment a [[step]]"), "{gap}");

    // A trigger that writes back a column the plan clears.
    sqlx::raw_sql(
        "CREATE FUNCTION store.keep_email() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN NEW.email := COALESCE(NEW.email, OLD.email); RETURN NEW; END $$; \
         CREATE TRIGGER keep_email BEFORE UPDATE ON store.customer FOR EACH ROW EXECUTE FUNCTION store.keep_email();",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let gap = gaps_of(&app, kept).await;
    assert!(
        gap.contains("trigger keep_email on store.customer sets email on every update"),
        "{gap}"
    );
    assert!(!gap.contains("trigger last_updated"), "{gap}");
    sqlx::query("DROP TRIGGER keep_email ON store.customer")
        .execute(&app.pool)
        .await
        .unwrap();

    // One fixed value for every erased row of a unique column; a value the column's type
    // cannot take; a step that only stamps a column that is never null.
    sqlx::query("CREATE UNIQUE INDEX customer_last_name_idx ON store.customer (last_name)")
        .execute(&app.pool)
        .await
        .unwrap();
    let fixed = kept
        .replace("set_value = { first_name = \"erased\", last_name = \"erased\" }", "set_value = { first_name = \"erased\", last_name = \"erased\", active = \"maybe\" }")
        .replace(
            "[[step]]\ntable = \"rental\"\npath = [\"customer_id -> customer.customer_id\"]\naction = \"delete\"",
            "[[step]]\ntable = \"rental\"\npath = [\"customer_id -> customer.customer_id\"]\naction = \"anonymize\"\nset_now = [\"last_update\"]",
        );
    let gap = gaps_of(&app, &fixed).await;
    assert!(
        gap.contains("column store.customer.last_name is unique, and set_value gives every erased row the same value \"erased\""),
        "{gap}"
    );
    assert!(gap.contains("put {key} in the value"), "{gap}");
    assert!(
        gap.contains(
            "set_value \"maybe\" cannot be written to store.customer.active, which is boolean"
        ),
        "{gap}"
    );
    assert!(
        gap.contains(
            "step store.rental only stamps last_update (store.rental), which is never null"
        ),
        "{gap}"
    );
    let unique_per_customer =
        kept.replace("last_name = \"erased\"", "last_name = \"erased-{key}\"");
    assert_eq!(gaps_of(&app, &unique_per_customer).await, "");
    app.cleanup().await;
}

#[tokio::test]
async fn a_kept_subject_with_no_step_runs_and_prints_no_empty_condition() {
    let schema = "CREATE SCHEMA solo; \
        CREATE TABLE solo.people (id bigint PRIMARY KEY, name text, email text UNIQUE); \
        INSERT INTO solo.people VALUES (1, 'Solo Sam', 'sam@solo.example'), (2, 'Other Olga', 'olga@solo.example');";
    let plan = "schema = \"solo\"\n[subject]\ntable = \"people\"\nkey = \"id\"\nlookups = [{ column = \"email\" }]\n\
                action = \"anonymize\"\nset_null = [\"name\", \"email\"]\ncounted_as = \"person\"\n";
    let app = TestApp::with_schema(schema, plan).await;
    let sql = app.eraser().statement().render();
    assert!(!sql.contains("AND ()"), "{sql}");
    let preview = app
        .eraser()
        .preview("sam@solo.example", "dpo", Channel::Cli)
        .await
        .unwrap();
    assert_eq!(preview.data_json, serde_json::json!({"person": 1}));
    let eraser = app.eraser();
    let Outcome::Recorded(row) = erase_now(eraser, "1").await.unwrap() else {
        panic!("recorded")
    };
    assert_eq!(row.status, DeletionStatus::Done, "{row:?}");
    assert_eq!(app.rows_containing("Solo Sam").await, Vec::<String>::new());
    app.cleanup().await;
}

#[tokio::test]
async fn a_constraint_the_plan_does_not_cover_fails_plan_gap_after_one_retry_naming_it() {
    let app = TestApp::with_schema(crate::shared_rows::SCHEMA, crate::shared_rows::PLAN).await;
    sqlx::raw_sql(STORE_SEED).execute(&app.pool).await.unwrap();
    // A table added after the plan was checked (the worker running), referencing customers.
    sqlx::raw_sql(
        "CREATE TABLE store.wishlist (id serial PRIMARY KEY, customer_id integer NOT NULL \
           CONSTRAINT wishlist_customer_fkey REFERENCES store.customer (customer_id), film text); \
         INSERT INTO store.wishlist (customer_id, film) VALUES (10, 'ACADEMY DINOSAUR');",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let eraser = app.eraser();
    let outcome = erase_now(eraser, "10").await.unwrap();
    let Outcome::Stopped(row) = outcome else {
        panic!("stopped: {outcome:?}")
    };
    assert_eq!(row.error_key, Some(erasure::deletion::ErrorKey::PlanGap));
    let message = row.error_message.clone().unwrap();
    assert!(
        message.starts_with("foreign key wishlist_customer_fkey of table wishlist"),
        "{message}"
    );
    assert!(message.contains("add a [[step]] for wishlist"), "{message}");
    // Nothing was erased, and the plan check now names the table.
    assert_eq!(
        app.count_of("SELECT count(*) FROM store.rental WHERE customer_id = 10")
            .await,
        2
    );
    let gap = gaps_of(&app, crate::shared_rows::PLAN).await;
    assert!(
        gap.contains("table store.wishlist references store.customer"),
        "{gap}"
    );
    app.cleanup().await;
}

/// An error no retry can pass (here a trigger's own exception) ends the request FAILED
/// `internal` after one try, naming the error by its code only.
#[tokio::test]
async fn an_error_no_retry_can_pass_fails_internal_after_one_try() {
    let app = TestApp::with_schema(crate::shared_rows::SCHEMA, crate::shared_rows::PLAN).await;
    sqlx::raw_sql(STORE_SEED).execute(&app.pool).await.unwrap();
    sqlx::raw_sql(
        "CREATE SEQUENCE store.erasure_attempts; \
         CREATE FUNCTION store.refuse() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN PERFORM nextval('store.erasure_attempts'); \
           RAISE EXCEPTION 'rentals of % are kept', OLD.customer_id; END $$; \
         CREATE TRIGGER refuse BEFORE DELETE ON store.rental \
           FOR EACH ROW WHEN (OLD.customer_id = 10) EXECUTE FUNCTION store.refuse();",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let eraser = app.eraser();
    let outcome = erase_now(eraser, "10").await.unwrap();
    let Outcome::Stopped(row) = outcome else {
        panic!("stopped: {outcome:?}")
    };
    assert_eq!(row.error_key, Some(erasure::deletion::ErrorKey::Internal));
    assert_eq!(
        row.error_message.as_deref(),
        Some("the erasure failed: database error P0001"),
        "the code, not the message (which holds the customer's key), and no count of tries"
    );
    let detail: serde_json::Value = sqlx::query_scalar(
        "SELECT detail FROM erasure.audit_log WHERE deletion_id = $1 AND action = 'erasure.failed'",
    )
    .bind(&row.id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        detail,
        serde_json::json!({"message": "the erasure failed: database error P0001"})
    );
    let tries: i64 = sqlx::query_scalar("SELECT last_value FROM store.erasure_attempts")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(tries, 1);
    assert_eq!(
        app.count_of("SELECT count(*) FROM store.rental WHERE customer_id = 10")
            .await,
        2
    );
    app.cleanup().await;
}

/// A constraint that refuses once may be a row committed meanwhile: each constraint is given
/// one more try before it counts as what the plan lacks, a second one too. A trigger on the
/// rentals refuses the first attempt by one constraint and the second by another (a sequence
/// counts the attempts: it is not rolled back with them); the third erases.
#[tokio::test]
async fn each_constraint_that_refuses_is_tried_again_once_so_two_passing_refusals_end_done() {
    let app = TestApp::with_schema(crate::shared_rows::SCHEMA, crate::shared_rows::PLAN).await;
    sqlx::raw_sql(STORE_SEED).execute(&app.pool).await.unwrap();
    sqlx::raw_sql(
        "CREATE SEQUENCE store.erasure_attempts; \
         CREATE FUNCTION store.refuse_twice() RETURNS trigger LANGUAGE plpgsql AS $$ \
         DECLARE n bigint := nextval('store.erasure_attempts'); BEGIN \
           IF n = 1 THEN RAISE foreign_key_violation USING CONSTRAINT = 'first_refusal', TABLE = 'rental'; \
           ELSIF n = 2 THEN RAISE foreign_key_violation USING CONSTRAINT = 'second_refusal', TABLE = 'rental'; \
           END IF; RETURN OLD; END $$; \
         CREATE TRIGGER refuse_twice BEFORE DELETE ON store.rental \
           FOR EACH ROW WHEN (OLD.customer_id = 10) EXECUTE FUNCTION store.refuse_twice();",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let paul = "SELECT string_agg(t::text, '|' ORDER BY t::text) FROM (\
          SELECT c::text FROM store.customer c WHERE customer_id = 11 \
          UNION ALL SELECT r::text FROM store.rental r WHERE customer_id = 11) t";
    let others: String = sqlx::query_scalar(paul).fetch_one(&app.pool).await.unwrap();
    let eraser = app.eraser();
    let outcome = erase_now(eraser, "10").await.unwrap();
    let Outcome::Recorded(row) = outcome else {
        panic!("recorded: {outcome:?}")
    };
    assert_eq!(row.status, DeletionStatus::Done, "{row:?}");
    let attempts: i64 = sqlx::query_scalar("SELECT last_value FROM store.erasure_attempts")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        attempts, 4,
        "two refused attempts, then one that deleted both rentals"
    );
    assert_eq!(
        app.count_of("SELECT count(*) FROM store.rental WHERE customer_id = 10")
            .await,
        0
    );
    let after: String = sqlx::query_scalar(paul).fetch_one(&app.pool).await.unwrap();
    assert_eq!(after, others, "customer 11 untouched");
    assert_eq!(
        app.rows_containing("tess@tenant.example").await,
        Vec::<String>::new()
    );

    // The same constraint refusing twice is what the plan lacks: FAILED plan_gap, naming it.
    sqlx::raw_sql(
        "SELECT setval('store.erasure_attempts', 1, false); \
         CREATE OR REPLACE FUNCTION store.refuse_twice() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN IF nextval('store.erasure_attempts') <= 2 THEN \
           RAISE foreign_key_violation USING CONSTRAINT = 'first_refusal', TABLE = 'rental'; \
         END IF; RETURN OLD; END $$; \
         DROP TRIGGER refuse_twice ON store.rental; \
         CREATE TRIGGER refuse_twice BEFORE DELETE ON store.rental \
           FOR EACH ROW WHEN (OLD.customer_id = 11) EXECUTE FUNCTION store.refuse_twice();",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let outcome = erase_now(eraser, "11").await.unwrap();
    let Outcome::Stopped(row) = outcome else {
        panic!("stopped: {outcome:?}")
    };
    assert_eq!(row.error_key, Some(erasure::deletion::ErrorKey::PlanGap));
    let message = row.error_message.clone().unwrap();
    assert!(
        message.starts_with("foreign key first_refusal of table rental"),
        "{message}"
    );
    assert_eq!(
        app.count_of("SELECT count(*) FROM store.rental WHERE customer_id = 11")
            .await,
        1
    );
    app.cleanup().await;
}

/// Carries out an erasure of `customer` asked on the command line, as a worker slot would.
async fn erase_now(eraser: &Eraser, customer: &str) -> Result<Outcome, erasure::erase::EraseError> {
    let request = ErasureRequest {
        request_id: Uuid::new_v4(),
        customer_id: customer.to_owned(),
        requested_by: "dpo".into(),
        reason: None,
        requested_at: None,
        identifier_type: None,
    };
    eraser
        .erase(&eraser.receive(request, Channel::Cli, Utc::now()).unwrap())
        .await
}
