//! Statements written as SQL text that each connection prepares once and keeps.
//!
//! diesel never caches a raw `sql_query` (its text could be built from input), so PostgreSQL
//! parses and plans it again on every call: for the pipeline's batched statements (CTEs over
//! `unnest` arrays) planning took up to as long as running them. [`prepared`] takes
//! only a `&'static str`, text fixed when the program was built, so a connection's cache holds
//! one entry per statement of the program and cannot grow with input; the values go in as
//! binds, as with `sql_query`. Statements whose text is assembled at run time (the API's
//! filters, sorting) stay with `sql_query`.

use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{HasSqlType, Untyped};
use diesel::{QueryResult, RunQueryDsl};
use std::marker::PhantomData;

/// A raw SQL statement the connection's statement cache keeps (see the module).
///
/// diesel's own raw statements mark themselves as not cacheable while their text is walked,
/// whatever path runs them, so this one writes its text itself: the segments between
/// placeholders, and each placeholder as a bind. A placeholder used twice becomes two binds of
/// the same value; `$n` inside a quoted literal or identifier is left alone.
#[must_use = "a statement runs only when executed or loaded"]
pub struct Prepared<'f> {
    sql: &'static str,
    binds: Vec<Box<dyn Bind + Send + 'f>>,
}

/// A statement whose text is `sql`, prepared once per connection.
///
/// The text must not hold comments, dollar quoting or `E'…'` strings: placeholders are found
/// by tracking plain quotes only (checked in debug builds, so the tests catch a new statement).
pub fn prepared<'f>(sql: &'static str) -> Prepared<'f> {
    debug_assert!(
        !["--", "/*", "$$", " E'", "(E'", ",E'"]
            .iter()
            .any(|s| sql.contains(s)),
        "statement text the placeholder scan does not handle: {sql}"
    );
    Prepared {
        sql,
        binds: Vec::new(),
    }
}

/// [`prepared`] for a statement whose text is assembled from constants (`format!` with
/// constant arguments, such as a shared column list): the text is built once, on first use.
/// Arguments that are not constants do not compile (the text is kept in a `static`).
#[macro_export]
macro_rules! prepared_format {
    ($($arg:tt)*) => {{
        static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| format!($($arg)*));
        $crate::storage::prepared::prepared(SQL.as_str())
    }};
}

impl<'f> Prepared<'f> {
    /// Binds the next parameter (`$1`, `$2`, … in order), as `SqlQuery::bind` does.
    pub fn bind<ST, V>(mut self, value: V) -> Prepared<'f>
    where
        Pg: HasSqlType<ST>,
        V: ToSql<ST, Pg> + Send + 'f,
        ST: Send + 'f,
    {
        self.binds.push(Box::new(Value::<ST, V> {
            value,
            sql_type: PhantomData,
        }));
        self
    }
}

trait Bind {
    fn walk<'b>(&'b self, out: AstPass<'_, 'b, Pg>) -> QueryResult<()>;
}

struct Value<ST, V> {
    value: V,
    sql_type: PhantomData<ST>,
}

impl<ST, V> Bind for Value<ST, V>
where
    Pg: HasSqlType<ST>,
    V: ToSql<ST, Pg>,
{
    fn walk<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_bind_param::<ST, V>(&self.value)
    }
}

impl QueryFragment<Pg> for Prepared<'_> {
    /// Writes the text between placeholders as it is and each `$n` as the n-th bind; `$n`
    /// inside single or double quotes is text.
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        let (sql, bytes) = (self.sql, self.sql.as_bytes());
        let (mut start, mut i) = (0, 0);
        let mut quote: Option<u8> = None;
        while i < bytes.len() {
            let b = bytes[i];
            i += 1;
            match quote {
                Some(q) if b == q => quote = None,
                Some(_) => {}
                None if b == b'\'' || b == b'"' => quote = Some(b),
                None if b == b'$' => {
                    let digits = bytes[i..].iter().take_while(|c| c.is_ascii_digit()).count();
                    let Ok(n) = sql[i..i + digits].parse::<usize>() else {
                        continue;
                    };
                    let Some(bind) = n.checked_sub(1).and_then(|k| self.binds.get(k)) else {
                        return Err(diesel::result::Error::QueryBuilderError(
                            format!("placeholder ${n} has no bound value").into(),
                        ));
                    };
                    out.push_sql(&sql[start..i - 1]);
                    bind.walk(out.reborrow())?;
                    i += digits;
                    start = i;
                }
                None => {}
            }
        }
        out.push_sql(&sql[start..]);
        Ok(())
    }
}

impl QueryId for Prepared<'_> {
    type QueryId = ();
    // No type-level id: the cache keys the statement by its SQL text and bind types.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for Prepared<'_> {
    type SqlType = Untyped;
}

impl<Conn> RunQueryDsl<Conn> for Prepared<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::query_builder::QueryBuilder;
    use diesel::sql_types::{Array, BigInt, Text};

    fn text(q: &Prepared<'_>) -> QueryResult<String> {
        let mut b = diesel::pg::PgQueryBuilder::default();
        q.to_sql(&mut b, &Pg)?;
        Ok(b.finish())
    }

    #[test]
    fn text_keeps_placeholders_in_order_and_is_cacheable() -> QueryResult<()> {
        let q = prepared("SELECT $1::bigint[] AS a, $2 AS b")
            .bind::<Array<BigInt>, _>(vec![1_i64, 2])
            .bind::<Text, _>("x");
        assert_eq!(text(&q)?, "SELECT $1::bigint[] AS a, $2 AS b");
        assert!(q.is_safe_to_cache_prepared(&Pg)?);
        // `execute` walks the statement by reference, which forwards only `walk_ast`.
        let by_ref: &Prepared<'_> = &q;
        assert!(QueryFragment::<Pg>::is_safe_to_cache_prepared(
            &by_ref, &Pg
        )?);
        let raw = diesel::sql_query("SELECT 1");
        assert!(!raw.is_safe_to_cache_prepared(&Pg)?);
        Ok(())
    }

    #[test]
    fn repeated_and_quoted_placeholders() -> QueryResult<()> {
        let q = prepared("SELECT $2, '$1', \"$1\", $1 + $2, $10x")
            .bind::<BigInt, _>(1_i64)
            .bind::<BigInt, _>(2_i64);
        // `$10` has no value: an error, not a statement with a missing parameter.
        assert!(text(&q).is_err());
        let q = prepared("SELECT $2, '$1', \"$1\", $1 + $2")
            .bind::<BigInt, _>(1_i64)
            .bind::<BigInt, _>(2_i64);
        assert_eq!(text(&q)?, "SELECT $1, '$1', \"$1\", $2 + $3");
        Ok(())
    }
}
