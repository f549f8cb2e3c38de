//! Self-references and keys of several columns (tests/schemas/forum, tests/schemas/tenants): a
//! referral tree, a tree of replies with guests' and other members' replies in it, attachments
//! hanging off the tree, a trigger; a multi-tenant schema keyed (tenant_id, id) throughout. Each
//! with exact counts, everyone else's rows unchanged, none of the customer's values left, the
//! check after commit passing, the statement on the indexes, and the plan check naming what a
//! plan leaves uncovered.

use erasure::deletion::DeletionStatus;
use erasure::plan::live::LiveSchema;
use erasure::plan::{Plan, check};
use serde_json::json;

use crate::helpers::TestApp;
use crate::helpers::plans::{checksum_of, erase_one, gaps_of};
use crate::schemas::assert_paths_use_indexes;
use crate::shared_rows::verification_of_now;

const FORUM: (&str, &str) = (
    include_str!("../schemas/forum/schema.sql"),
    include_str!("../schemas/forum/plan.toml"),
);
const TENANTS: (&str, &str) = (
    include_str!("../schemas/tenants/schema.sql"),
    include_str!("../schemas/tenants/plan.toml"),
);

/// Ann (1) referred Ben (2), who referred Cal (3), who referred Dee (4). Ben's comments c1, c3,
/// c6 and c8; a guest answered c1 (c2, under which Ben wrote c3) and c8 (c9); Cal answered c1
/// (c4, under which a guest wrote c5 and Ben c6) and heads c7 (answered by Ben's c8); Ann
/// answered c3 (c10).
const SEED: &str = "\
    INSERT INTO forum.member (member_id, handle, email, referred_by) VALUES \
      (1, 'ann', 'ann@forum.example', NULL), (2, 'benbenson', 'ben.benson@forum.example', 1), \
      (3, 'cal', 'cal@forum.example', 2), (4, 'dee', 'dee@forum.example', 3); \
    INSERT INTO forum.comment (comment_id, member_id, parent_id, body) VALUES \
      (1, 2, NULL, 'Benson asks c1'), (2, NULL, 1, 'guest answers Benson'), \
      (3, 2, 2, 'Benson again c3'), (4, 3, 1, 'Cal answers c4'), (5, NULL, 4, 'guest answers Cal'), \
      (6, 2, 4, 'Benson answers Cal c6'), (7, 3, NULL, 'Cal asks c7'), (8, 2, 7, 'Benson answers c8'), \
      (9, NULL, 8, 'guest answers Benson c9'), (10, 1, 3, 'Ann answers c10'); \
    INSERT INTO forum.attachment (comment_id, file_name) VALUES \
      (1, 'benson-1.png'), (9, 'guest-9.png'), (4, 'cal-4.png')";

#[tokio::test]
async fn a_tree_of_replies_and_a_tree_of_referrals() {
    let app = TestApp::with_schema(FORUM.0, FORUM.1).await;
    sqlx::raw_sql(SEED).execute(&app.pool).await.unwrap();
    let live = LiveSchema::read(&app.pool).await.unwrap();
    let plan = check::against(Plan::parse(FORUM.1).unwrap(), &live).unwrap();
    assert_paths_use_indexes(&app, &plan, &live, "2").await;
    let others = "SELECT member_id, handle, email FROM forum.member WHERE member_id <> 2 \
        UNION ALL SELECT comment_id, member_id::text, body FROM forum.comment WHERE comment_id IN (4, 5, 7, 10) \
        UNION ALL SELECT attachment_id, comment_id::text, file_name FROM forum.attachment WHERE comment_id = 4";
    let before = checksum_of(&app, others).await;

    let row = erase_one(&app, "benbenson").await;
    assert_eq!(row.status, DeletionStatus::Done, "{row:?}");
    assert_eq!(
        row.data_json,
        json!({"comments": 6, "comments_of_others_unlinked": 2, "attachments": 2,
               "member_links_cleared": 1, "member": 1})
    );
    assert_eq!(checksum_of(&app, others).await, before);
    // What is left: the others' comments, those under Ben's let go of his.
    let left: Vec<(i32, Option<i32>)> =
        sqlx::query_as("SELECT comment_id, parent_id FROM forum.comment ORDER BY comment_id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(left, [(4, None), (5, Some(4)), (7, None), (10, None)]);
    // Cal let go of his referral by Ben; Ann's and Dee's stay.
    let referrals: Vec<(i32, Option<i32>)> =
        sqlx::query_as("SELECT member_id, referred_by FROM forum.member ORDER BY member_id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(referrals, [(1, None), (3, None), (4, Some(3))]);
    for value in [
        "benbenson",
        "ben.benson@forum.example",
        "Benson",
        "benson-1.png",
        "guest-9.png",
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

    // Three levels of referrals, each erased in turn, the top last.
    let cal = erase_one(&app, "3").await;
    assert_eq!(cal.data_json["member_links_cleared"], 1, "{cal:?}");
    assert_eq!(cal.data_json["comments_of_others_unlinked"], 0);
    assert_eq!(cal.data_json["comments"], 3, "c4, c5 under it and c7");
    let dee = erase_one(&app, "dee").await;
    assert_eq!(dee.data_json["member_links_cleared"], 0);
    assert_eq!(erase_one(&app, "ann").await.data_json["comments"], 1);
    assert_eq!(app.count_of("SELECT count(*) FROM forum.member").await, 0);
    app.cleanup().await;
}

#[tokio::test]
async fn the_plan_check_names_self_references_left_uncovered() {
    let app = TestApp::with_schema(FORUM.0, FORUM.1).await;
    assert_eq!(gaps_of(&app, FORUM.1).await, "");
    // Without unlink: another member referred by the customer would stop its erasure.
    let gaps = gaps_of(&app, &FORUM.1.replace("unlink = [\"referred_by\"]\n", "")).await;
    assert!(
        gaps.contains("forum.member.referred_by references the subject itself (foreign key member_referred_by_fkey)")
            && gaps.contains("add unlink = [\"referred_by\"] to [subject]"),
        "{gaps}"
    );
    // Without the tree: the replies under the customer's comments stop it.
    let flat = FORUM.1.replace(
        "paths = [[\"member_id -> member.member_id\"], [\"parent_id -> comment.comment_id\"]]",
        "path = [\"member_id -> member.member_id\"]",
    );
    let gaps = gaps_of(&app, &flat).await;
    assert!(
        gaps.contains("table forum.comment references forum.comment (parent_id -> comment_id")
            && gaps.contains("a path from the table to itself"),
        "{gaps}"
    );
    // A tree with no way to the customer at its top.
    let rootless = FORUM.1.replace(
        "paths = [[\"member_id -> member.member_id\"], [\"parent_id -> comment.comment_id\"]]",
        "path = [\"parent_id -> comment.comment_id\"]",
    );
    let gaps = gaps_of(&app, &rootless).await;
    assert!(
        gaps.contains("reaches the subject only through its own rows"),
        "{gaps}"
    );
    // unlink on a column that is not a link to the subject.
    let gaps = gaps_of(
        &app,
        &FORUM
            .1
            .replace("unlink = [\"referred_by\"]", "unlink = [\"email\"]"),
    )
    .await;
    assert!(
        gaps.contains("unlink names forum.member.email, which is not a foreign key"),
        "{gaps}"
    );
    app.cleanup().await;
}

#[tokio::test]
async fn keys_of_two_columns_keep_each_tenant_to_itself() {
    let app = TestApp::with_schema(TENANTS.0, TENANTS.1).await;
    sqlx::raw_sql(
        "INSERT INTO mt.tenant VALUES (1, 'north'), (2, 'south'); \
         INSERT INTO mt.customer VALUES (1, 10, 'tina@north.example', 'Tina Tenantson'), \
           (1, 11, 'ned@north.example', 'Ned North'), (2, 20, 'sam@south.example', 'Sam South'); \
         INSERT INTO mt.orders VALUES (1, 1, 10, '1 Tenantson Road'), (1, 2, 10, '1 Tenantson Road'), \
           (1, 3, 11, '3 North Road'), (2, 1, 20, '1 South Road'), (2, 2, 20, '2 South Road'); \
         INSERT INTO mt.order_line VALUES (1, 1, 1, 'lamp'), (1, 1, 2, 'desk'), (1, 2, 1, 'chair'), \
           (1, 3, 1, 'rug'), (2, 1, 1, 'sofa'), (2, 1, 2, 'bed'), (2, 2, 1, 'shelf')",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let live = LiveSchema::read(&app.pool).await.unwrap();
    let plan = check::against(Plan::parse(TENANTS.1).unwrap(), &live).unwrap();
    assert_paths_use_indexes(&app, &plan, &live, "10").await;
    let others = "SELECT c.*::text FROM mt.customer c WHERE customer_id <> 10 \
        UNION ALL SELECT o.*::text FROM mt.orders o WHERE customer_id <> 10 \
        UNION ALL SELECT l.*::text FROM mt.order_line l WHERE (tenant_id, order_id) NOT IN ((1, 1), (1, 2)) \
        UNION ALL SELECT t.*::text FROM mt.tenant t";
    let before = checksum_of(&app, others).await;
    // Tenant 1's orders 1 and 2 are Tina's; tenant 2's orders 1 and 2 (the same numbers) are
    // Sam's, and stay, with their lines.
    let row = erase_one(&app, "10").await;
    assert_eq!(row.status, DeletionStatus::Done, "{row:?}");
    assert_eq!(
        row.data_json,
        json!({"orders": 2, "order_lines": 3, "customer": 1})
    );
    assert_eq!(checksum_of(&app, others).await, before);
    for value in ["Tenantson", "tina@north.example"] {
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

    // Without the order lines' step, the gap names the key of two columns and its hop.
    let without = TENANTS
        .1
        .split("[[step]]\ntable = \"order_line\"")
        .next()
        .unwrap();
    let gaps = gaps_of(&app, without).await;
    assert!(
        gaps.contains("add a [[step]] for table mt.order_line with a path \"(tenant_id, order_id) -> mt.orders.(tenant_id, order_id)\""),
        "{gaps}"
    );
    // A hop that compares the order number alone does not cover the key of two columns.
    let alone = TENANTS.1.replace(
        "\"(tenant_id, order_id) -> orders.(tenant_id, order_id)\"",
        "\"order_id -> orders.order_id\"",
    );
    assert!(gaps_of(&app, &alone).await.contains("no step covers it"));
    app.cleanup().await;
}
