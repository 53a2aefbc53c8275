//! `docs/schema.sql` is the schema as the migrated database has it: every table, index and
//! `docket.*` function in its live definition, so that a reader finds the current
//! `docket.enqueue` in one file instead of the newest of several migrations. This test
//! fails when a migration changes the schema without the file being made again:
//!
//! ```sh
//! DOCKET_WRITE_SCHEMA=1 cargo test -p docket-queue --test it schema
//! ```

use std::fmt::Write as _;

use docket_testkit::TestDb;
use sqlx::PgPool;

const SCHEMA_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/schema.sql");

#[tokio::test]
async fn docs_schema_sql_is_the_migrated_schema() {
    let db = TestDb::new().await;
    let live = dump(&db.pool).await;
    if std::env::var_os("DOCKET_WRITE_SCHEMA").is_some() {
        std::fs::write(SCHEMA_FILE, &live).expect("write docs/schema.sql");
    }
    let checked_in = std::fs::read_to_string(SCHEMA_FILE).unwrap_or_default();
    assert!(
        checked_in == live,
        "docs/schema.sql is not the migrated schema; make it again with \
         `DOCKET_WRITE_SCHEMA=1 cargo test -p docket-queue --test it schema`"
    );
}

/// The `docket` schema as text, in a stable order: types, tables with their constraints
/// indexes and triggers, then functions.
async fn dump(pool: &PgPool) -> String {
    let mut out = String::from(
        "-- The docket schema as the migrated database has it. Generated: do not edit.\n\
         -- Made by `DOCKET_WRITE_SCHEMA=1 cargo test -p docket-queue --test it schema`;\n\
         -- the migrations in migrations/ stay the source of truth.\n",
    );

    let enums: Vec<(String, String)> = rows(
        pool,
        "select t.typname::text,
                string_agg(quote_literal(e.enumlabel), ', ' order by e.enumsortorder)
           from pg_type t
           join pg_enum e on e.enumtypid = t.oid
          where t.typnamespace = 'docket'::regnamespace
          group by t.typname
          order by t.typname",
    )
    .await;
    for (name, labels) in enums {
        write!(out, "\ncreate type docket.{name} as enum ({labels});\n").unwrap();
    }

    let tables: Vec<(String, String)> = rows(
        pool,
        "select c.relname::text,
                string_agg(
                    format('    %I %s%s%s', a.attname, format_type(a.atttypid, a.atttypmod),
                           case when a.attnotnull then ' not null' else '' end,
                           coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')),
                    E',\\n' order by a.attnum)
           from pg_class c
           join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
           left join pg_attrdef d on d.adrelid = c.oid and d.adnum = a.attnum
          where c.relnamespace = 'docket'::regnamespace and c.relkind in ('r', 'p')
          group by c.relname
          order by c.relname",
    )
    .await;
    for (table, columns) in tables {
        write!(out, "\ncreate table docket.{table} (\n{columns}\n);\n").unwrap();
        let constraints: Vec<(String, String)> = rows_for(
            pool,
            "select conname::text, pg_get_constraintdef(oid)
               from pg_constraint
              where conrelid = ('docket.' || quote_ident($1))::regclass
              order by contype, conname",
            &table,
        )
        .await;
        for (name, definition) in constraints {
            writeln!(
                out,
                "alter table docket.{table} add constraint {name} {definition};"
            )
            .unwrap();
        }
        let indexes: Vec<(String, String)> = rows_for(
            pool,
            "select i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
               from pg_index i
              where i.indrelid = ('docket.' || quote_ident($1))::regclass
                and not exists (select from pg_constraint k where k.conindid = i.indexrelid)
              order by 1",
            &table,
        )
        .await;
        for (_, definition) in indexes {
            writeln!(out, "{definition};").unwrap();
        }
        let triggers: Vec<(String, String)> = rows_for(
            pool,
            "select tgname::text, pg_get_triggerdef(oid)
               from pg_trigger
              where tgrelid = ('docket.' || quote_ident($1))::regclass and not tgisinternal
              order by 1",
            &table,
        )
        .await;
        for (_, definition) in triggers {
            writeln!(out, "{definition};").unwrap();
        }
    }

    let functions: Vec<(String, String)> = rows(
        pool,
        "select p.oid::regprocedure::text, pg_get_functiondef(p.oid)
           from pg_proc p
          where p.pronamespace = 'docket'::regnamespace
          order by 1",
    )
    .await;
    for (_, definition) in functions {
        write!(out, "\n{};\n", definition.trim_end()).unwrap();
    }
    out
}

async fn rows(pool: &PgPool, sql: &str) -> Vec<(String, String)> {
    sqlx::query_as(sql).fetch_all(pool).await.expect(sql)
}

async fn rows_for(pool: &PgPool, sql: &str, table: &str) -> Vec<(String, String)> {
    sqlx::query_as(sql)
        .bind(table)
        .fetch_all(pool)
        .await
        .expect(sql)
}
