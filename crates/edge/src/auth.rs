//! Which client key a request is sent with. SDKs name it in one of three places: the
//! `X-Sentry-Auth` header (or `Authorization`) in Sentry's
//! `Sentry sentry_key=…, sentry_version=7, sentry_client=…` form, the `sentry_key` query
//! parameter (browsers, which cannot set headers on beacons), or, when the request carries
//! neither, the `dsn` in the envelope's headers. A request naming its key both in a header and
//! in the query is refused, as Sentry does. A public key is 32 hexadecimal characters.

use http::HeaderMap;

/// Why a request carries no usable key (the text is what the client is told).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing authorization information")]
    Missing,
    #[error("multiple authorization payloads detected")]
    Multiple,
    #[error("unsupported protocol version ({0})")]
    Version(u32),
    #[error("invalid authorization header: {0}")]
    Invalid(String),
    #[error("invalid sentry_key: {0:?}")]
    BadKey(String),
    #[error("invalid dsn in envelope headers: {0}")]
    BadDsn(String),
}

/// The key and client a request names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// 32 lowercase hexadecimal characters.
    pub public_key: String,
    pub client: Option<String>,
}

fn checked_key(key: &str) -> Result<String, AuthError> {
    let key = key.trim();
    if key.len() == 32 && key.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(key.to_ascii_lowercase())
    } else {
        Err(AuthError::BadKey(key.chars().take(64).collect()))
    }
}

/// `Sentry sentry_key=…, sentry_version=7, …` (the `Sentry ` prefix is optional).
fn from_header(value: &str) -> Result<Credentials, AuthError> {
    let rest = value.trim();
    let rest = match rest.get(..7) {
        Some(p) if p.eq_ignore_ascii_case("sentry ") => &rest[7..],
        _ => rest,
    };
    let pairs = rest.split(',').filter_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        Some((name.trim().to_owned(), value.trim().to_owned()))
    });
    match credentials(pairs)? {
        Some(c) => Ok(c),
        None => Err(AuthError::Invalid(
            "missing public key in auth header".into(),
        )),
    }
}

/// The key, client and protocol version among `name=value` pairs.
fn credentials(
    pairs: impl Iterator<Item = (String, String)>,
) -> Result<Option<Credentials>, AuthError> {
    let mut key = None;
    let mut client = None;
    for (name, value) in pairs {
        match name.as_str() {
            "sentry_key" => key = Some(value),
            "sentry_client" => client = Some(value),
            "sentry_version" => {
                let major = value.split('.').next().unwrap_or("");
                match major.trim().parse::<u32>() {
                    Ok(v) if v > 7 => return Err(AuthError::Version(v)),
                    Ok(_) => {}
                    Err(_) => return Err(AuthError::Invalid("invalid value for version".into())),
                }
            }
            _ => {}
        }
    }
    match key {
        Some(k) => Ok(Some(Credentials {
            public_key: checked_key(&k)?,
            client,
        })),
        None => Ok(None),
    }
}

fn from_query(query: &str) -> Result<Option<Credentials>, AuthError> {
    credentials(
        url::form_urlencoded::parse(query.as_bytes())
            .map(|(n, v)| (n.into_owned(), v.into_owned())),
    )
}

/// The public key of a DSN (`scheme://public_key[:secret]@host/…/project_id`) and its project.
pub fn from_dsn(dsn: &str) -> Result<(String, Option<u64>), AuthError> {
    let url = url::Url::parse(dsn).map_err(|e| AuthError::BadDsn(e.to_string()))?;
    if url.username().is_empty() {
        return Err(AuthError::BadDsn("no public key".into()));
    }
    let project = url
        .path_segments()
        .and_then(|mut s| s.next_back().map(str::to_owned))
        .and_then(|p| p.parse().ok());
    Ok((checked_key(url.username())?, project))
}

/// The credentials in the request's headers or query, if any (`Ok(None)`: look in the body).
pub fn from_request(
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Option<Credentials>, AuthError> {
    let mut found = None;
    for name in ["x-sentry-auth", "authorization"] {
        if let Some(v) = headers.get(name) {
            let v = v
                .to_str()
                .map_err(|_| AuthError::Invalid("not ASCII".into()))?;
            // `Authorization` may carry another scheme (a proxy's); only Sentry's counts.
            if name == "authorization"
                && !v.trim_start().to_ascii_lowercase().starts_with("sentry ")
            {
                continue;
            }
            if found.is_some() {
                return Err(AuthError::Multiple);
            }
            found = Some(from_header(v)?);
        }
    }
    if let Some(q) = query.filter(|q| q.contains("sentry_")) {
        if let Some(c) = from_query(q)? {
            if found.is_some() {
                return Err(AuthError::Multiple);
            }
            found = Some(c);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "31a5a894b4524f74a9a8d0e27e21ba91";

    fn headers(name: &str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap_or_else(|e| panic!("{e}")),
            value.parse().unwrap_or_else(|e| panic!("{e:?}")),
        );
        h
    }

    #[test]
    fn the_three_places() {
        let h = headers(
            "X-Sentry-Auth",
            &format!(
                "Sentry sentry_key={KEY}, sentry_version=7, sentry_client=sentry.python/2.75.0"
            ),
        );
        let c = from_request(&h, None).ok().flatten();
        assert_eq!(c.as_ref().map(|c| c.public_key.as_str()), Some(KEY));
        assert_eq!(
            c.and_then(|c| c.client).as_deref(),
            Some("sentry.python/2.75.0")
        );
        let c = from_request(
            &HeaderMap::new(),
            Some(&format!("sentry_version=7&sentry_key={KEY}")),
        );
        assert_eq!(c.ok().flatten().map(|c| c.public_key), Some(KEY.to_owned()));
        assert_eq!(from_request(&HeaderMap::new(), None), Ok(None));
        assert_eq!(
            from_dsn(&format!("https://{KEY}@o1.example.com/42")),
            Ok((KEY.to_owned(), Some(42)))
        );
        assert_eq!(
            from_dsn(&format!("http://{KEY}:secret@localhost:9000/sub/7")),
            Ok((KEY.to_owned(), Some(7)))
        );
    }

    #[test]
    fn two_sources_are_refused_and_other_authorization_schemes_ignored() {
        let mut h = headers("authorization", "Bearer abc");
        assert_eq!(from_request(&h, None), Ok(None));
        h.insert(
            "x-sentry-auth",
            format!("Sentry sentry_key={KEY}")
                .parse()
                .unwrap_or_else(|e| panic!("{e:?}")),
        );
        assert!(from_request(&h, Some("other=1")).is_ok_and(|c| c.is_some()));
        assert_eq!(
            from_request(&h, Some("sentry_key=00000000000000000000000000000000")),
            Err(AuthError::Multiple)
        );
        assert_eq!(
            from_request(
                &HeaderMap::new(),
                Some(&format!("sentry_key={KEY}&sentry_version=8"))
            ),
            Err(AuthError::Version(8))
        );
    }

    #[test]
    fn bad_keys_are_refused() {
        assert!(matches!(
            from_request(&headers("x-sentry-auth", "Sentry sentry_version=7"), None),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            from_request(&headers("x-sentry-auth", "Sentry sentry_key=nothex"), None),
            Err(AuthError::BadKey(_))
        ));
        assert!(matches!(
            from_request(&HeaderMap::new(), Some("sentry_key=%00")),
            Err(AuthError::BadKey(_))
        ));
        assert!(matches!(
            from_dsn("https://o1.example.com/42"),
            Err(AuthError::BadDsn(_))
        ));
        assert!(matches!(from_dsn("::"), Err(AuthError::BadDsn(_))));
    }
}
