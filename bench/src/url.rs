//! Rewriting a libpq-style database URL: another database, or another host (a proxy).

/// A libpq-style URL cut into `scheme://user:password@`, `host:port`, `/database` and the
/// query string.
struct UrlParts<'a> {
    head: &'a str,
    host: &'a str,
    path: &'a str,
    query: Option<&'a str>,
}

impl<'a> UrlParts<'a> {
    fn of(url: &'a str) -> Self {
        let (base, query) = url
            .split_once('?')
            .map_or((url, None), |(b, q)| (b, Some(q)));
        let scheme_end = base.find("://").map_or(0, |i| i + 3);
        let authority_end = base[scheme_end..]
            .find('/')
            .map_or(base.len(), |i| scheme_end + i);
        let host_start = base[scheme_end..authority_end]
            .rfind('@')
            .map_or(scheme_end, |i| scheme_end + i + 1);
        Self {
            head: &base[..host_start],
            host: &base[host_start..authority_end],
            path: &base[authority_end..],
            query,
        }
    }
}

/// `url` naming database `name` instead (libpq form, which pgbench also reads).
pub fn with_database(url: &str, name: &str) -> String {
    let parts = UrlParts::of(url);
    let mut out = format!("{}{}/{name}", parts.head, parts.host);
    if let Some(query) = parts.query {
        out = format!("{out}?{query}");
    }
    out
}

/// `url` with its host and port replaced by `address` and TLS off, so that a proxy between
/// the client and the server can read the stream.
pub fn with_host(url: &str, address: &str) -> String {
    let parts = UrlParts::of(url);
    let mut params: Vec<&str> = parts
        .query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter(|p| !p.is_empty() && !p.starts_with("sslmode="))
        .collect();
    params.push("sslmode=disable");
    format!("{}{address}{}?{}", parts.head, parts.path, params.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bench_database_replaces_only_the_name() {
        assert_eq!(
            with_database(
                "postgres://postgres@localhost:5432/erasure",
                "erasure_bench"
            ),
            "postgres://postgres@localhost:5432/erasure_bench"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "x"),
            "postgres://u:p@h/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h:1", "x"), "postgres://h:1/x");
    }

    #[test]
    fn the_proxy_address_replaces_host_and_port_and_turns_tls_off() {
        assert_eq!(
            with_host(
                "postgres://u:p@db:5432/erasure?sslmode=require&application_name=x",
                "127.0.0.1:9"
            ),
            "postgres://u:p@127.0.0.1:9/erasure?application_name=x&sslmode=disable"
        );
        assert_eq!(
            with_host("postgres://localhost/erasure", "127.0.0.1:9"),
            "postgres://127.0.0.1:9/erasure?sslmode=disable"
        );
    }
}
