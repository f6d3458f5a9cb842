use actix_web::{HttpResponse, web};
use serde::Serialize;

use crate::http::AppState;
use crate::http::error::{ApiError, ErrorBody};

/// `GET /metrics`: Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"),
              (status = 404, description = "not_found: metrics are off", body = ErrorBody)))]
pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let handle = state.metrics.as_ref().ok_or(ApiError::RouteNotFound)?;
    // Readiness as of the scrape, for the alerts (a gauge a scrape refreshes).
    let (redis_up, nats_up) = dependencies(&state).await;
    crate::support::metrics::record_dependency("redis", redis_up);
    crate::support::metrics::record_dependency("nats", nats_up);
    state.operations.record_queue_gauges();
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(handle.render()))
}

/// Liveness: answers while the process serves, whatever its dependencies do.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "the process serves", body = String, content_type = "text/plain")))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok")
}

#[derive(Serialize, utoipa::ToSchema)]
struct Readiness {
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    redis: &'static str,
    nats: &'static str,
    outbox: Outbox,
}

/// Relay lag as last seen: order events accepted but not yet confirmed by JetStream.
#[derive(Serialize, utoipa::ToSchema)]
struct Outbox {
    pending: u64,
    oldest_age_ms: u64,
}

/// Readiness: Redis answers a PING and the NATS client is connected. The relay's lag is shown
/// but does not make a replica unready: purchases are safe while events wait.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Redis and NATS reachable", body = Readiness),
              (status = 503, description = "a dependency is down", body = Readiness)))]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let (redis_up, nats_up) = dependencies(&state).await;
    let word = |up: bool| if up { "up" } else { "down" };
    let mut body = Readiness {
        error: None,
        message: None,
        redis: word(redis_up),
        nats: word(nats_up),
        outbox: {
            let backlog = state.relay_status.backlog();
            Outbox {
                pending: backlog.pending,
                oldest_age_ms: backlog.oldest_age_ms,
            }
        },
    };
    if redis_up && nats_up {
        return HttpResponse::Ok().json(body);
    }
    let down: Vec<&str> = [("redis", redis_up), ("nats", nats_up)]
        .into_iter()
        .filter(|(_, up)| !up)
        .map(|(name, _)| name)
        .collect();
    body.error = Some("unavailable");
    body.message = Some(format!("not ready: {} down", down.join(" and ")));
    HttpResponse::ServiceUnavailable().json(body)
}

/// Whether Redis answers a PING and the NATS client is connected.
async fn dependencies(state: &AppState) -> (bool, bool) {
    let redis_up = state.operations.redis_answers().await;
    let nats_up = state.nats.connection_state() == async_nats::connection::State::Connected;
    (redis_up, nats_up)
}
