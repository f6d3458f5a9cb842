//! Bearer tokens, as extractors: a handler that takes [`Admin`] cannot run without the admin
//! token, one that takes [`Caller`] without the admin token or a storefront token
//! (FLASHSALE_API_TOKENS). Tokens are compared in constant time and never logged.

use std::future::{Ready, ready};

use actix_web::http::header::AUTHORIZATION;
use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::queue_tokens::QueueTokens;
use crate::http::tickets::Tickets;
use crate::support::settings::HttpSettings;

/// Proof that the request carried the admin token.
pub struct Admin;

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authorize(req))
    }
}

/// Who may call what: the admin token, the storefront tokens and the buyer tickets.
pub struct Access {
    pub admin_token: Option<SecretString>,
    /// Storefront bearer tokens (FLASHSALE_API_TOKENS); empty = purchases need none.
    pub api_tokens: Vec<SecretString>,
    /// Buyer tickets: the key, and whether a purchase needs one.
    pub tickets: Tickets,
    /// The waiting rooms' tokens (FLASHSALE_QUEUE_KEY).
    pub queue_tokens: QueueTokens,
}

impl Access {
    pub fn new(settings: &HttpSettings) -> Self {
        let ticket_key = settings
            .ticket_key
            .as_ref()
            .map(ExposeSecret::expose_secret);
        Self {
            admin_token: settings.admin_token.clone(),
            api_tokens: settings.api_tokens.clone(),
            tickets: Tickets::new(ticket_key, settings.require_ticket),
            queue_tokens: QueueTokens::new(
                settings.queue_key.as_ref().map(ExposeSecret::expose_secret),
            ),
        }
    }
}

fn authorize(req: &HttpRequest) -> Result<Admin, ApiError> {
    let state = state(req)?;
    let expected = state
        .access
        .admin_token
        .as_ref()
        .ok_or(ApiError::AdminDisabled)?
        .expose_secret();
    let presented = bearer(req).ok_or(ApiError::Unauthorized)?;
    if matches(presented, expected) {
        Ok(Admin)
    } else {
        Err(ApiError::Unauthorized)
    }
}

/// Whether the request carries the admin token (for views that show it more).
pub fn is_admin(req: &HttpRequest) -> bool {
    authorize(req).is_ok()
}

/// Proof that the request carried a storefront token or the admin token.
pub struct Caller;

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(state(req).and_then(|state| caller(req, state)))
    }
}

/// [`Caller`]'s check; purchases make it only when storefront tokens are configured.
pub fn caller(req: &HttpRequest, state: &AppState) -> Result<Caller, ApiError> {
    let presented = bearer(req).ok_or(ApiError::Unauthorized)?;
    let access = &state.access;
    let known = access
        .api_tokens
        .iter()
        .chain(access.admin_token.as_ref())
        // Every token is compared (no early exit): the time does not say which matched.
        .fold(false, |found, token| {
            matches(presented, token.expose_secret()) | found
        });
    if known {
        Ok(Caller)
    } else {
        Err(ApiError::Unauthorized)
    }
}

fn state(req: &HttpRequest) -> Result<&AppState, ApiError> {
    req.app_data::<web::Data<AppState>>()
        .map(|data| data.get_ref())
        .ok_or(ApiError::Internal)
}

fn bearer(req: &HttpRequest) -> Option<&[u8]> {
    req.headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "))
}

/// Constant time, so response timing does not reveal how much of a guess was right.
fn matches(presented: &[u8], expected: &str) -> bool {
    bool::from(presented.ct_eq(expected.as_bytes()))
}
