//! Bearer-token authentication. A token is looked up by its SHA-256; the organization it
//! belongs to is the only one the request can see (any other answers 404, as Sentry does).

use crate::error::ApiError;
use crate::State;
use axum::extract::{Request, State as AxState};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use sluice_core::storage::tokens::{self, Principal};
use sluice_core::storage::DbError;
use std::sync::Arc;

/// The prefix of tokens sluice issues (Sentry's user-token form: the prefix and 64 hex digits,
/// which clients such as sentry-cli accept without warnings).
pub const TOKEN_PREFIX: &str = "sntryu_";

/// A new random token.
pub fn new_token() -> String {
    format!(
        "{TOKEN_PREFIX}{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// What a token is stored as.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The part of a token that names it in lists (`sluice token list`, `revoke`).
pub fn display_prefix(token: &str) -> String {
    token.chars().take(TOKEN_PREFIX.len() + 8).collect()
}

/// Requires a live token; puts its [`Principal`] into the request.
pub async fn authenticate(
    AxState(state): AxState<Arc<State>>,
    mut request: Request,
    next: Next,
) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned);
    let Some(token) = token else {
        return ApiError::Unauthenticated.into_response();
    };
    let h = hash(&token);
    let found = state
        .db
        .run(move |c| {
            let p = tokens::authenticate(c, &h)?;
            if let Some(p) = &p {
                tokens::touch(c, p.token_id)?;
            }
            Ok::<_, DbError>(p)
        })
        .await;
    match found {
        Ok(Some(principal)) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Ok(None) => ApiError::InvalidToken.into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// The principal of an authenticated request.
pub type Auth = axum::Extension<Principal>;
