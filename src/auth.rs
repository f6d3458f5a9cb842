//! The admin bearer token, as an extractor: a handler that takes [`Admin`] cannot run
//! without the right token.

use std::future::{Ready, ready};

use actix_web::http::header::AUTHORIZATION;
use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::startup::AppState;

/// Proof that the request carried the admin token.
pub struct Admin;

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authorize(req))
    }
}

fn authorize(req: &HttpRequest) -> Result<Admin, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or(ApiError::Internal)?;
    let expected = state
        .admin_token
        .as_deref()
        .ok_or(ApiError::AdminDisabled)?;
    let presented = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "))
        .ok_or(ApiError::Unauthorized)?;
    // Constant time, so response timing does not reveal how much of a guess was right.
    if bool::from(presented.ct_eq(expected.as_bytes())) {
        Ok(Admin)
    } else {
        Err(ApiError::Unauthorized)
    }
}
